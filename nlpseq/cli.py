"""The `nlpseq` console script: `nlpseq task=ner ...` trains (Hydra), `nlpseq predict ...` predicts,
`nlpseq evaluate ...` scores checkpoints on labelled files."""
from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "predict":
        from nlpseq.predict import main as predict_main

        sys.exit(predict_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        from nlpseq.evaluate import main as evaluate_main

        sys.exit(evaluate_main(sys.argv[2:]))
    from nlpseq.__main__ import main as train_main

    train_main()
