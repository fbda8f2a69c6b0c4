"""Accuracy of sentiment checkpoints, one by one and as an ensemble (their probabilities averaged).

    python tasks/sentiment/ensemble.py --ckpt RUN1/checkpoints/best.ckpt RUN2/... \
        --data ../shared/data/sentiment/sst2/dev.tsv ../shared/data/sentiment/sst2/test.tsv

Files are read as training reads them (TSV/CSV with a header, or JSON lines; `--text-column` and
`--label-column` take alternatives). Prints one row per checkpoint, then the ensembles of the first
2, 3, ... checkpoints, and writes the same table as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import nlpseq
from nlpseq.data.tables import iter_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="sentiment checkpoints (best.ckpt of each run)")
    ap.add_argument("--data", nargs="+", required=True, help="labelled files to score")
    ap.add_argument("--text-column", nargs="+", default=["text", "sentence", "content"])
    ap.add_argument("--label-column", nargs="+", default=["label"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    try:
        # the predictors users get: each checkpoint alone, then nlpseq.load([first k]) for k = 2, 3, ...
        predictors = {ckpt: nlpseq.load(ckpt) for ckpt in args.ckpt}
        predictors.update({f"ensemble of the first {k}": nlpseq.load(args.ckpt[:k])
                           for k in range(2, len(args.ckpt) + 1)})
        labels = predictors[args.ckpt[0]].model.labels
        results = []
        for path in args.data:
            rows = list(iter_table(path, args.text_column, args.label_column))
            unknown = sorted({r["label"] for r in rows} - set(labels))
            if unknown:
                raise nlpseq.DataError(f"labels {unknown} are not among the checkpoints' {labels}", path)
            gold = torch.tensor([labels.index(r["label"]) for r in rows])
            texts = [r["text"] for r in rows]
            scores = {}
            for name, predictor in predictors.items():
                predicted = torch.tensor([labels.index(p.label)
                                          for p in predictor.predict(texts, batch_size=args.batch_size)])
                scores[name] = float((predicted == gold).float().mean())
            results.append({"data": path, "examples": len(rows), "accuracy": scores})
    except nlpseq.NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result['data']} ({result['examples']} examples)")
        for name, acc in result["accuracy"].items():
            print(f"  {acc:.4f}  {name}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
