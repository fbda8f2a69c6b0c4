"""Corpora larger than memory: train the generation task on growing plain-text corpora, peak memory stays flat.

  python tasks/generation/large_corpus.py [--sizes 0.25 1 2 4] [--in-memory 0.001 0.002 0.004]
      [--dir /tmp] [--steps 50] [--out DIR/large_corpus.json] [--keep]

For each size (in GB) it writes a plain-text corpus (the shipped sample's speeches, reshuffled block by
block, so the text looks like the sample but is not one short text repeated), then runs a short training
in a subprocess, `python -m nlpseq task=generation data.train=CORPUS data.out_of_core=true ...` (char
tokenizer, a tiny LSTM, `--steps` windows of 16 rows x 100 characters, the sample's validation file),
It reports the data preparation (vocabulary pass + encoding pass, from the run's log: seconds and MB/s of
corpus), training tokens/s (`train/tokens_per_sec` in metrics.csv) and the training process's memory
(nlpseq.utils.procmem): its peak resident set (whole process: Python, torch, the data and the model, and the
pages of the memory-mapped id file that training has read, page cache the kernel can drop) and its peak
anonymous memory.
`--in-memory` sizes run the same with `data.out_of_core=false`, for comparison (keep them small: the
in-memory path needs ~500 bytes per character). Corpora and run directories are deleted after each size
unless --keep.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from pathlib import Path

from nlpseq.utils.procmem import run_watched

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tasks" / "generation" / "sample"
BLOCK = 16 << 20  # bytes per generated block; a few distinct blocks are written in turn


def write_corpus(path: Path, size: int, seed: int = 0) -> float:
    """A plain-text corpus of about `size` bytes: the sample's speeches in shuffled order. Returns seconds."""
    started = time.perf_counter()
    speeches = [s.strip("\n") for s in (SAMPLE / "train.txt").read_text(encoding="utf-8").split("\n\n") if s.strip()]
    rng = random.Random(seed)
    blocks = []
    for _ in range(4):
        parts, n = [], 0
        while n < min(BLOCK, size):
            rng.shuffle(speeches)
            text = "\n\n".join(speeches) + "\n\n"
            parts.append(text)
            n += len(text.encode("utf-8"))
        blocks.append("".join(parts).encode("utf-8"))
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size:
            block = blocks[i % len(blocks)][: size - written]
            f.write(block)
            written += len(block)
            i += 1
    return time.perf_counter() - started


def train(corpus: Path, run: Path, steps: int, out_of_core: bool) -> dict:
    cmd = [sys.executable, "-m", "nlpseq", "task=generation", f"data.train={corpus}",
           f"data.validation={SAMPLE / 'valid.txt'}", f"data.out_of_core={str(out_of_core).lower()}",
           "data.batch_size=16", "data.seq_len=100", "model.embedding.dim=16", "model.decoder.hidden_size=64",
           "model.samples.prompts=[]", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
           "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=0", "test=false",
           f"hydra.run.dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    watched = run_watched(cmd, cwd=ROOT, env=env)
    wall, log = watched.wall_s, watched.output
    if watched.returncode != 0:
        sys.exit(f"training failed (exit {watched.returncode}):\n{log[-3000:]}")
    prep = re.search(r"data prepared in ([\d.]+) s", log)
    vocab = re.search(r"one streaming pass in ([\d.]+) s", log)
    encode = re.search(r"train: encoded \d+ characters to \d+ tokens in ([\d.]+) s", log)
    tokens = re.search(r"data prepared in [\d.]+ s: train ([\d,]+)", log)
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    ids = run / "cache" / "train.ids"
    return {"wall_s": round(wall, 1), "peak_rss_mb": watched.peak_rss_mb, "peak_anon_mb": watched.peak_anon_mb,
            "prep_s": float(prep.group(1)) if prep else None,
            "vocab_pass_s": float(vocab.group(1)) if vocab else None,
            "encode_pass_s": float(encode.group(1)) if encode else None,
            "train_tokens": int(tokens.group(1).replace(",", "")) if tokens else None,
            "train_tokens_per_s": round(tps[-1]) if tps else None,
            "id_file_mb": round(ids.stat().st_size / 2**20, 1) if ids.exists() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.25, 1, 2, 4], help="out-of-core corpora, GB")
    ap.add_argument("--in-memory", type=float, nargs="*", default=[], help="in-memory comparison corpora, GB")
    ap.add_argument("--dir", default="/tmp", help="where corpora and run directories go")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", help="JSON results (default: DIR/large_corpus.json)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and run directories")
    args = ap.parse_args()
    args.out = args.out or str(Path(args.dir) / "large_corpus.json")
    work = Path(args.dir) / f"nlpseq_large_{os.getpid()}"
    work.mkdir(parents=True)
    results = []
    try:
        for gb, ooc in [(g, False) for g in args.in_memory] + [(g, True) for g in args.sizes]:
            size = int(gb * 1e9)
            corpus, run = work / f"corpus_{gb:g}GB.txt", work / f"run_{gb:g}GB_{'ooc' if ooc else 'mem'}"
            gen_s = write_corpus(corpus, size)
            row = {"corpus_gb": gb, "corpus_bytes": size, "out_of_core": ooc, "generate_s": round(gen_s, 1),
                   **train(corpus, run, args.steps, ooc)}
            row["prep_mb_per_s"] = round(size / 1e6 / row["prep_s"], 1) if row["prep_s"] else None
            results.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                corpus.unlink()
                shutil.rmtree(run)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs", "python": platform.python_version(), "command": " ".join(sys.argv),
            "steps": args.steps, "memory_from": "/proc/<pid>/status: VmHWM (peak resident set) and the largest RssAnon polled "
            "every 0.1 s (anonymous memory: what is not page cache of mapped files)"}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n", encoding="utf-8")
    print("\n| corpus | path | data prep (vocab + encode) | prep MB/s | train tokens | train tokens/s | peak RSS | peak anonymous |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        corpus = f"{r['corpus_gb']:g} GB" if r["corpus_gb"] >= 0.1 else f"{r['corpus_gb'] * 1000:g} MB"
        prep = (f"{r['prep_s']:.1f} s ({r['vocab_pass_s']:.1f} + {r['encode_pass_s']:.1f})" if r["out_of_core"]
                else f"{r['prep_s']:.1f} s")
        path = "out of core" if r["out_of_core"] else "in memory"
        anon = f"{r['peak_anon_mb']:.0f} MB" if r["peak_anon_mb"] is not None else "-"
        print(f"| {corpus} | {path} | {prep} | {r['prep_mb_per_s'] or '-'} "
              f"| {r['train_tokens']:,} | {r['train_tokens_per_s']} | {r['peak_rss_mb']:.0f} MB | {anon} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
