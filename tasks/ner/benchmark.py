"""CoNLL-2003 benchmark: train the recipe, score dev and test as conlleval does, time training and inference.

    python tasks/ner/benchmark.py                       # the full recipe (conf/experiment/ner_conll2003.yaml)
    python tasks/ner/benchmark.py --minutes 25 --threads 1 trainer.max_epochs=12   # a CPU-budget run

Steps: (1) `python -m nlpseq experiment=ner_conll2003 ...` in a subprocess (a hard wall cap: training
stops at --minutes through Lightning's max_time, then the best checkpoint is tested); (2) the best
checkpoint tags eng.testa and eng.testb through `python -m nlpseq.predict` (a predicted column appended),
and those files are scored with conlleval's counting (`nlpseq.metrics.spans`, 2004 rules); (3)
inference speed of `nlpseq.load(ckpt).predict` on the test sentences (pre-tokenized) at batch 32 and
batch 1; (4) training speed = the `train/tokens_per_sec` logged each epoch by the Throughput callback
(words per second of training steps, validation excluded). Results go to <out>/results.json and are printed as markdown.

    python tasks/ner/benchmark.py --ensemble RUN0 RUN1 RUN2 --out ENS   # score runs' best.ckpt, alone and together

With --ensemble nothing is trained: each run's best checkpoint, then the ensemble of all of them
(`ckpt=a,b,c`: one CRF with the members' averaged scores), tag dev and test through the predict CLI, scored
as in step (2); inference speed of the ensemble as in step (3). Results go to <out>/ensemble.json.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "ner" / "conll2003"


def score_column_file(path: Path) -> dict:
    """conlleval on a file whose last two columns are gold and predicted tags (IOB1/IOB2 both fine)."""
    from nlpseq.metrics.spans import span_counts, span_scores

    gold, pred, g, p = [], [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = line.split()
        if not cells or cells[0] == "-DOCSTART-":
            if g:
                gold.append(g), pred.append(p)
                g, p = [], []
            continue
        g.append(cells[-2])
        p.append(cells[-1])
    if g:
        gold.append(g), pred.append(p)
    return span_scores(span_counts(gold, pred, iobes=False))


def read_sentences(path: Path) -> list[list[str]]:
    out, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = line.split()
        if not cells or cells[0] == "-DOCSTART-":
            if cur:
                out.append(cur)
                cur = []
            continue
        cur.append(cells[0])
    if cur:
        out.append(cur)
    return out


def time_inference(ckpt: Path, sentences: list[list[str]], batch_size: int, limit: int | None, repeats: int = 2) -> float:
    import torch

    import nlpseq

    predictor = nlpseq.load(ckpt)
    data = sentences[:limit] if limit else sentences
    predictor.predict(data[:64], batch_size=batch_size)  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(data, batch_size=batch_size)
        best = max(best, len(data) / (time.perf_counter() - start))
    del torch
    return best


def predict_and_score(ckpt: str, split_file: Path, target: Path, env: dict) -> dict:
    """Tag a column file through the predict CLI (a predicted column appended) and score it like conlleval."""
    from nlpseq.metrics.spans import format_table

    t0 = time.time()
    subprocess.run([sys.executable, "-m", "nlpseq.predict", f"ckpt={ckpt}", f"input={split_file}",
                    f"output={target}", "batch_size=32"], cwd=ROOT, env=env, check=True)
    s = score_column_file(target)
    return {"f1": round(s["f1"], 4), "precision": round(s["precision"], 4), "recall": round(s["recall"], 4),
            "accuracy": round(s["accuracy"], 4), "per_type": {t: round(v["f1"], 4) for t, v in s["per_type"].items()},
            "predict_cli_s": round(time.time() - t0, 1), "table": format_table(s)}


def score_ensemble(runs: list[Path], out: Path, threads: int | None) -> int:
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    ckpts = [run / "checkpoints" / "best.ckpt" for run in runs]
    missing = [str(c) for c in ckpts if not c.is_file()]
    if missing:
        print(f"error: no checkpoint at {', '.join(missing)}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU",
                     "threads": threads or "default", "runs": [str(r) for r in runs], "members": [], "ensemble": {}}
    for i, ckpt in enumerate([*map(str, ckpts), ",".join(map(str, ckpts))]):
        scores = {split: predict_and_score(ckpt, DATA / name, out / f"{'ensemble' if i == len(ckpts) else i}.{split}.conll", env)
                  for split, name in (("dev", "eng.testa"), ("test", "eng.testb"))}
        if i < len(ckpts):
            results["members"].append({"ckpt": ckpt, **{k: v["f1"] for k, v in scores.items()}})
        else:
            results["ensemble"] = scores
        print(f"{'ensemble' if i == len(ckpts) else ckpt}: dev F1 {scores['dev']['f1']:.4f}, test F1 {scores['test']['f1']:.4f}")
    sentences = read_sentences(DATA / "eng.testb")
    results["ensemble"]["inference_sentences_per_s"] = {
        "batch_32": round(time_inference([str(c) for c in ckpts], sentences, 32, None)),
        "batch_1": round(time_inference([str(c) for c in ckpts], sentences, 1, 500, repeats=1))}
    (out / "ensemble.json").write_text(json.dumps(results, indent=2))
    for split in ("dev", "test"):
        print(f"\nensemble, {split}:\n{results['ensemble'][split]['table']}")
    print(json.dumps(results["ensemble"]["inference_sentences_per_s"]))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/ner_benchmark", help="run directory (must not hold a run)")
    ap.add_argument("--minutes", type=float, default=None, help="training wall-time cap (Lightning max_time)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (OMP_NUM_THREADS) for all steps")
    ap.add_argument("--skip-train", action="store_true", help="reuse the checkpoint already in --out")
    ap.add_argument("--ensemble", nargs="+", metavar="RUN", help="score these run directories' best.ckpt, alone and "
                    "as one ensemble, instead of training")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training run")
    args = ap.parse_args()
    if args.ensemble:
        return score_ensemble([Path(r).resolve() for r in args.ensemble], Path(args.out).resolve(), args.threads)
    out = Path(args.out).resolve()
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    results: dict = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU",
                     "threads": args.threads or "default", "overrides": args.overrides, "minutes_cap": args.minutes}

    # (1) training
    cmd = [sys.executable, "-m", "nlpseq", "experiment=ner_conll2003", f"hydra.run.dir={out}",
           "callbacks.progress_bar.refresh_rate=0", "trainer.enable_model_summary=false", *args.overrides]
    if args.minutes:
        total = int(args.minutes * 60)
        cmd.append(f"+trainer.max_time=00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}")
    results["command"] = " ".join(["python", "-m", "nlpseq", *cmd[3:]])
    if not args.skip_train:
        start = time.time()
        out.parent.mkdir(parents=True, exist_ok=True)
        log_path = out.parent / f"{out.name}.train.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=(args.minutes * 60 + 900) if args.minutes else None)
        results["train_wall_s"] = round(time.time() - start, 1)
        if proc.returncode != 0:
            print(f"training failed (exit {proc.returncode}); see {log_path}", file=sys.stderr)
            return 1
    ckpt = out / "checkpoints" / "best.ckpt"
    metrics = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    key = "train/tokens_per_sec"  # logged each epoch by nlpseq.callbacks.Throughput
    speeds = [float(r[key]) for r in metrics if r.get(key)]
    f1s = [(int(r["epoch"]), float(r["val/f1"])) for r in metrics if r.get("val/f1")]
    results["epochs"] = len(speeds)
    results["val_f1_per_epoch"] = [round(f, 4) for _, f in f1s]
    results["train_tokens_per_s"] = {"median": round(sorted(speeds)[len(speeds) // 2]) if speeds else None,
                                     "per_epoch": [round(s) for s in speeds]}

    # (2) dev and test through the predict CLI, scored like conlleval
    for split, name in (("dev", "eng.testa"), ("test", "eng.testb")):
        results[split] = predict_and_score(str(ckpt), DATA / name, out / f"{split}.pred.conll", env)

    # (3) inference speed
    sentences = read_sentences(DATA / "eng.testb")
    results["inference_sentences_per_s"] = {
        "batch_32": round(time_inference(ckpt, sentences, 32, None)),
        "batch_1": round(time_inference(ckpt, sentences, 1, 500, repeats=1)),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k not in ("dev", "test")}, indent=2))
    for split in ("dev", "test"):
        print(f"\n{split} ({'eng.testa' if split == 'dev' else 'eng.testb'}):\n{results[split]['table']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
