"""The `nlpseq` console script: `nlpseq task=ner ...` trains (Hydra), `nlpseq predict ...` predicts."""
from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "predict":
        from nlpseq.predict import main as predict_main

        sys.exit(predict_main(sys.argv[2:]))
    from nlpseq.__main__ import main as train_main

    train_main()
