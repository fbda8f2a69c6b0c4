"""Corpora larger than memory: train the sentiment task on growing TSV corpora, peak memory stays flat.

  python tasks/sentiment/large_corpus.py [--sizes 0.25 0.5 1 2] [--in-memory 0.01 0.02]
      [--dir /tmp] [--steps 50] [--out DIR/large_corpus.json] [--keep]

For each size (in GB) it writes a TSV training corpus with the header `text<TAB>label` (the shipped sample's
rows in shuffled order, block by block, so it looks like the sample but is not one short text repeated; cut
at a row boundary, so it stays valid TSV), then runs a short training in a subprocess,
`python -m nlpseq task=sentiment data.train=CORPUS data.out_of_core=true ...` (the default word tokenizer
and model, `--steps` training batches of 32 rows, one validation batch of the sample's dev.tsv, no test
phase). It reports the data preparation (vocabulary pass + encoding pass, from the run's log: seconds and
MB/s of corpus), the training examples encoded, the seconds from the launch to the start of training
(imports, data, model: the one preparation figure the in-memory path has, since it logs no timings), training
tokens/s (`train/tokens_per_sec` in metrics.csv) and the training process's memory (nlpseq.utils.procmem):
its peak resident set (whole process: Python, torch, the data and the model; out of core it also counts the
pages of the memory-mapped cache that training has read, page cache the kernel can drop) and its peak
anonymous memory (what a corpus really costs). `--in-memory`
sizes run the same with `data.out_of_core=false`, for comparison (keep them small: the in-memory path
holds the parsed table and Python id lists of the whole corpus). Corpora and run directories are deleted
after each size unless --keep. A failed training run stops the script (exit status 1) with the run's last
output lines.
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
SAMPLE = ROOT / "tasks" / "sentiment" / "sample"
BLOCK = 16 << 20  # bytes per generated block; a few distinct blocks are written in turn
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")  # hydra's job log line prefix


def write_corpus(path: Path, size: int, seed: int = 0) -> tuple[float, int, int]:
    """A TSV corpus of at most `size` bytes (header included): the sample's rows in shuffled order, cut at
    a row boundary. Returns (seconds, bytes written, data rows)."""
    started = time.perf_counter()
    lines = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0] + "\n", [r + "\n" for r in lines[1:] if r.strip()]
    rng = random.Random(seed)
    blocks = []
    for _ in range(4):
        parts, n = [], 0
        while n < min(BLOCK, size):
            rng.shuffle(rows)
            text = "".join(rows)
            parts.append(text)
            n += len(text.encode("utf-8"))
        blocks.append("".join(parts).encode("utf-8"))  # whole rows only
    with open(path, "wb") as f:
        f.write(header.encode("utf-8"))
        written, n_rows, i = len(header), 0, 0
        while written < size:
            block = blocks[i % len(blocks)]
            if len(block) > size - written:  # the last block: up to its last row end that fits
                block = block[: block.rfind(b"\n", 0, size - written) + 1]
                if not block:
                    break
            f.write(block)
            written += len(block)
            n_rows += block.count(b"\n")
            i += 1
    return time.perf_counter() - started, written, n_rows


def _seconds(log: str, pattern: str) -> float | None:
    found = re.search(pattern, log)
    return float(found.group(1)) if found else None


def _log_time(log: str, marker: str) -> datetime.datetime | None:
    """The timestamp of the first log line containing `marker`."""
    for line in log.splitlines():
        if marker in line and (m := STAMP.match(line)):
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


def train(corpus: Path, run: Path, steps: int, out_of_core: bool) -> dict:
    # dev.tsv / test.tsv: the config's defaults (the sample's); test=false skips the test phase
    cmd = [sys.executable, "-m", "nlpseq", "task=sentiment", f"data.train={corpus}",
           f"data.out_of_core={str(out_of_core).lower()}", "trainer.max_epochs=1",
           f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=1",
           "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=0", "test=false",
           f"hydra.run.dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    launched = datetime.datetime.now()
    watched = run_watched(cmd, cwd=ROOT, env=env)
    wall, output = watched.wall_s, watched.output
    if watched.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        sys.exit(f"training failed (exit {watched.returncode}): {' '.join(cmd)}\n--- last output lines ---\n{tail}")
    # the run's own log (hydra writes <run dir>/<job name>.log, here __main__.log); the console copy otherwise
    logs = sorted(run.glob("*.log"))
    log = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs) if logs else output
    vocab = _seconds(log, r"one streaming pass in ([\d.]+) s")
    encode = _seconds(log, r"train\.examples: encoded \d+ examples in ([\d.]+) s")
    examples = re.search(r"train\.examples: (?:encoded|reusing) (\d+) (?:encoded )?examples", log)
    training = _log_time(log, "run directory:")
    metrics = run / "logs" / "metrics.csv"
    rows = list(csv.DictReader(open(metrics))) if metrics.exists() else []
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    cache = run / "cache"
    return {"wall_s": round(wall, 1), "peak_rss_mb": watched.peak_rss_mb, "peak_anon_mb": watched.peak_anon_mb,
            "prep_s": round(vocab + encode, 1) if vocab is not None and encode is not None else None,
            "vocab_pass_s": vocab, "encode_pass_s": encode,
            "to_training_s": round((training - launched).total_seconds(), 1) if training else None,
            "train_examples": int(examples.group(1)) if examples else None,
            "train_tokens_per_s": round(tps[-1]) if tps else None,
            "cache_mb": round(sum(p.stat().st_size for p in cache.glob("train.examples.*")) / 2**20, 1)
            if cache.exists() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.25, 0.5, 1, 2], help="out-of-core corpora, GB")
    ap.add_argument("--in-memory", type=float, nargs="*", default=[], help="in-memory comparison corpora, GB")
    ap.add_argument("--dir", default="/tmp", help="where corpora and run directories go")
    ap.add_argument("--steps", type=int, default=50, help="training batches per run")
    ap.add_argument("--out", help="JSON results (default: DIR/large_corpus.json)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and run directories")
    args = ap.parse_args()
    args.out = args.out or str(Path(args.dir) / "large_corpus.json")
    work = Path(args.dir) / f"nlpseq_large_sentiment_{os.getpid()}"
    work.mkdir(parents=True)
    results = []
    try:
        for gb, ooc in [(g, False) for g in args.in_memory] + [(g, True) for g in args.sizes]:
            corpus, run = work / f"corpus_{gb:g}GB.tsv", work / f"run_{gb:g}GB_{'ooc' if ooc else 'mem'}"
            gen_s, size, n_rows = write_corpus(corpus, int(gb * 1e9))
            row = {"corpus_gb": gb, "corpus_bytes": size, "corpus_rows": n_rows, "out_of_core": ooc,
                   "generate_s": round(gen_s, 1), **train(corpus, run, args.steps, ooc)}
            row["prep_mb_per_s"] = round(size / 1e6 / row["prep_s"], 1) if row["prep_s"] else None
            if row["train_examples"] is not None and row["train_examples"] != n_rows:
                print(f"warning: {row['train_examples']:,} training examples encoded from {n_rows:,} rows",
                      file=sys.stderr)
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
    print("\n| corpus | path | data prep (vocab + encode) | prep MB/s | launch to training | train examples "
          "| train tokens/s | peak RSS | peak anonymous |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        corpus = f"{r['corpus_gb']:g} GB" if r["corpus_gb"] >= 0.1 else f"{r['corpus_gb'] * 1000:g} MB"
        prep = (f"{r['prep_s']:.1f} s ({r['vocab_pass_s']:.1f} + {r['encode_pass_s']:.1f})"
                if r["prep_s"] is not None else "-")
        path = "out of core" if r["out_of_core"] else "in memory"
        to_training = f"{r['to_training_s']:.1f} s" if r["to_training_s"] is not None else "-"
        examples = f"{r['train_examples']:,}" if r["train_examples"] is not None else f"({r['corpus_rows']:,} rows)"
        anon = f"{r['peak_anon_mb']:,.0f} MB" if r["peak_anon_mb"] is not None else "-"
        tps = f"{r['train_tokens_per_s']:,}" if r["train_tokens_per_s"] is not None else "-"
        print(f"| {corpus} | {path} | {prep} | {r['prep_mb_per_s'] or '-'} | {to_training} | {examples} "
              f"| {tps} | {r['peak_rss_mb']:,.0f} MB | {anon} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
