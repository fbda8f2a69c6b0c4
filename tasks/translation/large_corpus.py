"""Corpora larger than memory: train the translation task on growing parallel corpora, peak memory stays flat.

  python tasks/translation/large_corpus.py [--sizes 0.25 0.5 1] [--in-memory 0.01]
      [--dir /tmp] [--steps 50] [--out DIR/large_corpus.json] [--keep]

For each size (in GB, both files together) it writes two aligned plain-text training files, `train.de` and
`train.en` (the shipped sample's sentence pairs in shuffled order, block by block, the same order on both
sides, so they look like the sample but are not one short text repeated; cut at a pair boundary, so both
files have the same number of lines), then runs a short training in a subprocess,
`python -m nlpseq task=translation data.train.src=CORPUS.de data.train.tgt=CORPUS.en data.out_of_core=true ...`
(the default joint BPE and model, `--steps` training batches of 64 pairs, one validation batch of 32 pairs of
the sample's dev files decoded greedily for BLEU, no validation samples printed, no test phase). It
reports the data preparation (the vocabulary passes, sources then targets, and the encoding pass, from the
run's log: seconds and MB/s of corpus), the training pairs encoded, the seconds from the launch to the start
of training (imports, data, model: the one preparation figure the in-memory path has, since it logs no
timings), training target tokens/s (`train/tokens_per_sec` in metrics.csv: the target tokens predicted, </s>
included) and the training process's memory (nlpseq.utils.procmem): its peak resident set (whole process:
Python, torch, the data and the model; out of core it also counts the pages of the memory-mapped cache that
training has read, page cache the kernel can drop) and its peak anonymous memory (what a corpus really costs).
`--in-memory` sizes run the same with
`data.out_of_core=false`, for comparison (keep them small: the in-memory path holds the parsed pairs and
Python id lists of the whole corpus). Corpora and run directories are deleted after each size unless --keep.
A failed training run stops the script (exit status 1) with the run's last output lines.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tasks" / "translation" / "sample"
BLOCK = 8 << 20  # bytes per generated block and side; a few distinct blocks are written in turn
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")  # hydra's job log line prefix


def write_corpus(src: Path, tgt: Path, size: int, seed: int = 0) -> tuple[float, int, int]:
    """Two aligned text files of at most `size` bytes together: the sample's pairs in shuffled order (one
    permutation for both sides), cut at a pair boundary. Returns (seconds, bytes written, pairs)."""
    started = time.perf_counter()
    sources = (SAMPLE / "train.de").read_text(encoding="utf-8").splitlines()
    targets = (SAMPLE / "train.en").read_text(encoding="utf-8").splitlines()
    if len(sources) != len(targets):
        raise SystemExit(f"the sample is misaligned: {len(sources)} source lines, {len(targets)} target lines")
    pairs = [((s + "\n").encode("utf-8"), (t + "\n").encode("utf-8"))
             for s, t in zip(sources, targets) if s.strip() and t.strip()]
    rng = random.Random(seed)
    blocks = []  # (source bytes, target bytes, each side's bytes after each pair)
    for _ in range(4):
        parts, n = [], 0
        while n < min(BLOCK, size // 2):  # source bytes; the target side is about as long
            rng.shuffle(pairs)
            parts.extend(pairs)
            n += sum(len(s) for s, _ in pairs)
        blocks.append((b"".join(s for s, _ in parts), b"".join(t for _, t in parts),
                       np.cumsum([len(s) for s, _ in parts]), np.cumsum([len(t) for _, t in parts])))
    with open(src, "wb") as fs, open(tgt, "wb") as ft:
        written, n_pairs, i = 0, 0, 0
        while written < size:
            s, t, s_ends, t_ends = blocks[i % len(blocks)]
            k = len(s_ends)
            if s_ends[-1] + t_ends[-1] > size - written:  # the last block: the pairs that fit whole
                k = int(np.searchsorted(s_ends + t_ends, size - written, side="right"))
                if not k:
                    break
                s, t = s[: s_ends[k - 1]], t[: t_ends[k - 1]]
            fs.write(s)
            ft.write(t)
            written += len(s) + len(t)
            n_pairs += k
            i += 1
    return time.perf_counter() - started, written, n_pairs


def _seconds(log: str, pattern: str) -> float | None:
    found = re.search(pattern, log)
    return float(found.group(1)) if found else None


def _log_time(log: str, marker: str) -> datetime.datetime | None:
    """The timestamp of the first log line containing `marker`."""
    for line in log.splitlines():
        if marker in line and (m := STAMP.match(line)):
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


def train(src: Path, tgt: Path, run: Path, steps: int, out_of_core: bool) -> dict:
    # dev / test files: the config's defaults (the sample's); validation decodes one batch of 32 pairs greedily
    # (model.val_beam_size=1, the default) and prints no samples; test=false skips the beam-search test phase
    cmd = [sys.executable, "-m", "nlpseq", "task=translation", f"data.train.src={src}", f"data.train.tgt={tgt}",
           f"data.out_of_core={str(out_of_core).lower()}", "data.eval_batch_size=32", "model.val_beam_size=1",
           "model.val_samples=0", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
           "trainer.limit_val_batches=1", "trainer.enable_model_summary=false",
           "callbacks.progress_bar.refresh_rate=0", "test=false", f"hydra.run.dir={run}"]
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
    vocab = _seconds(log, r"vocabulary: [^;\n]*; streaming passes in ([\d.]+) s")
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
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.25, 0.5, 1], help="out-of-core corpora, GB")
    ap.add_argument("--in-memory", type=float, nargs="*", default=[], help="in-memory comparison corpora, GB")
    ap.add_argument("--dir", default="/tmp", help="where corpora and run directories go")
    ap.add_argument("--steps", type=int, default=50, help="training batches per run")
    ap.add_argument("--out", help="JSON results (default: DIR/large_corpus.json)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and run directories")
    args = ap.parse_args()
    args.out = args.out or str(Path(args.dir) / "large_corpus.json")
    work = Path(args.dir) / f"nlpseq_large_translation_{os.getpid()}"
    work.mkdir(parents=True)
    results = []
    try:
        for gb, ooc in [(g, False) for g in args.in_memory] + [(g, True) for g in args.sizes]:
            corpus, run = work / f"corpus_{gb:g}GB", work / f"run_{gb:g}GB_{'ooc' if ooc else 'mem'}"
            corpus.mkdir()
            src, tgt = corpus / "train.de", corpus / "train.en"
            gen_s, size, n_pairs = write_corpus(src, tgt, int(gb * 1e9))
            row = {"corpus_gb": gb, "corpus_bytes": size, "corpus_pairs": n_pairs, "out_of_core": ooc,
                   "generate_s": round(gen_s, 1), **train(src, tgt, run, args.steps, ooc)}
            row["prep_mb_per_s"] = round(size / 1e6 / row["prep_s"], 1) if row["prep_s"] else None
            if row["train_examples"] is not None and row["train_examples"] != n_pairs:
                print(f"warning: {row['train_examples']:,} training pairs encoded from {n_pairs:,} written",
                      file=sys.stderr)
            results.append(row)
            print(json.dumps(row), flush=True)
            if not args.keep:
                shutil.rmtree(corpus)
                shutil.rmtree(run)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs", "python": platform.python_version(), "command": " ".join(sys.argv),
            "steps": args.steps, "memory_from": "/proc/<pid>/status: VmHWM (peak resident set) and the largest RssAnon polled "
            "every 0.1 s (anonymous memory: what is not page cache of mapped files)"}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n", encoding="utf-8")
    print("\n| corpus (both sides) | path | data prep (vocab + encode) | prep MB/s | launch to training "
          "| train pairs | train target tokens/s | peak RSS | peak anonymous |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        corpus = f"{r['corpus_gb']:g} GB" if r["corpus_gb"] >= 0.1 else f"{r['corpus_gb'] * 1000:g} MB"
        prep = (f"{r['prep_s']:.1f} s ({r['vocab_pass_s']:.1f} + {r['encode_pass_s']:.1f})"
                if r["prep_s"] is not None else "-")
        path = "out of core" if r["out_of_core"] else "in memory"
        to_training = f"{r['to_training_s']:.1f} s" if r["to_training_s"] is not None else "-"
        examples = f"{r['train_examples']:,}" if r["train_examples"] is not None else f"({r['corpus_pairs']:,} written)"
        anon = f"{r['peak_anon_mb']:,.0f} MB" if r["peak_anon_mb"] is not None else "-"
        tps = f"{r['train_tokens_per_s']:,}" if r["train_tokens_per_s"] is not None else "-"
        print(f"| {corpus} | {path} | {prep} | {r['prep_mb_per_s'] or '-'} | {to_training} | {examples} "
              f"| {tps} | {r['peak_rss_mb']:,.0f} MB | {anon} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
