"""Corpora larger than memory: train the NER task on growing CoNLL column files, peak memory stays flat.

  python tasks/ner/large_corpus.py [--sizes 0.1 0.25 0.5 1] [--in-memory 0.01]
      [--dir /tmp] [--steps 50] [--out DIR/large_corpus.json] [--keep]

For each size (in GB) it writes a CoNLL column training file in the format of the shipped sample (one token
and its tag a line, a blank line after each sentence, a `-DOCSTART- O` line at the top and before every
DOC_SENTENCES sentences, as the sample has one every ~20): the sample's sentences in shuffled order, block by
block, so it looks like the sample but is not one short text repeated; cut at a sentence boundary, so every
sentence is whole. Then it runs a short training in a subprocess,
`python -m nlpseq task=ner data.train=CORPUS data.out_of_core=true ...` (the default word tokenizer and
BiLSTM-CNN-CRF tagger, the tags read as IOB2 (data.scheme, so no scheme-detection pass), `--steps` training
batches of 32 sentences, one validation batch of 128 sentences of the sample's dev.conll (Viterbi decoding and
span F1: cheap), no test phase). It reports the data preparation (the vocabulary passes (the tokenizer's, then
entity types, words and characters) and the encoding pass, from the run's log: seconds and MB/s of corpus), the
training sentences encoded, the distinct words of the corpus (the rows of the `train.types` table, from the
`train.examples.json` manifest), the seconds from the launch to the start of training (imports, data, model:
the one preparation figure the in-memory path has, since it logs no timings), training tokens/s
(`train/tokens_per_sec` in metrics.csv: words of the training steps) and the training process's memory
(nlpseq.utils.procmem): its peak resident set (whole process: Python, torch, the data and the model; out of core
it also counts the pages of the memory-mapped cache that training has read, page cache the kernel can drop) and
its peak anonymous memory (what a corpus really costs).

What memory should and should not grow with: the NER out-of-core path keeps, besides the model, a dict of the
distinct words while encoding (word -> row of the types table; the vocabulary pass counts them too) and an int32
index of a few bytes per sentence for the shuffled batches (these sentences are ~90 bytes, ~11 M a GB). So
memory grows with the distinct words, not with the corpus, plus that per-sentence index. A corpus made by
shuffling the sample has the sample's 437 distinct words at every size, so this benchmark shows that the
corpus size costs nothing beyond that index; it does not measure the cost of a large vocabulary (a real corpus
gains distinct words as it grows: names, numbers, typos), which is the dict above and is not measured here.
`--in-memory` sizes run the same with `data.out_of_core=false`, for comparison (keep them small: the in-memory
path holds the parsed sentences of the whole corpus as Python lists). Corpora and run directories
are deleted after each size unless --keep. A failed training run stops the script (exit status 1) with the
run's last output lines.
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
SAMPLE = ROOT / "tasks" / "ner" / "sample"
BLOCK = 8 << 20  # bytes per generated block; a few distinct blocks are written in turn
DOC_SENTENCES = 20  # a -DOCSTART- line before every this many sentences (the sample: one every ~20)
DOCSTART = b"-DOCSTART- O\n\n"
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")  # hydra's job log line prefix


def sample_sentences() -> list[bytes]:
    """The sample's sentences, each its token lines and the blank line that ends it (-DOCSTART- lines dropped)."""
    text = (SAMPLE / "train.conll").read_text(encoding="utf-8")
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in block.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
        if lines:
            out.append(("\n".join(lines) + "\n\n").encode("utf-8"))
    if not out:
        raise SystemExit(f"no sentences in {SAMPLE / 'train.conll'}")
    return out


def write_corpus(path: Path, size: int, seed: int = 0) -> tuple[float, int, int]:
    """A column file of at most `size` bytes: the sample's sentences in shuffled order in documents of
    DOC_SENTENCES sentences, cut at a sentence boundary. Returns (seconds, bytes written, sentences)."""
    started = time.perf_counter()
    sentences = sample_sentences()
    rng = random.Random(seed)
    blocks = []  # (bytes, the block's bytes after each unit, the sentences up to each unit)
    for _ in range(4):
        parts, n = [], 0
        while n < min(BLOCK, size):
            rng.shuffle(sentences)
            for i in range(0, len(sentences), DOC_SENTENCES):  # a block starts with a document
                doc = sentences[i: i + DOC_SENTENCES]
                parts.append(DOCSTART)
                parts.extend(doc)
                n += len(DOCSTART) + sum(map(len, doc))
        is_sentence = np.array([p is not DOCSTART for p in parts])
        blocks.append((b"".join(parts), np.cumsum([len(p) for p in parts]), np.cumsum(is_sentence)))
    with open(path, "wb") as f:
        written, n_sentences, i = 0, 0, 0
        while written < size:
            block, ends, counts = blocks[i % len(blocks)]
            k = len(ends)
            if ends[-1] > size - written:  # the last block: the units (sentences, -DOCSTART- lines) that fit whole
                k = int(np.searchsorted(ends, size - written, side="right"))
                if not k or not counts[k - 1]:  # nothing fits, or only the block's -DOCSTART- line
                    break
                block = block[: ends[k - 1]]
            f.write(block)
            written += len(block)
            n_sentences += int(counts[k - 1])
            i += 1
    return time.perf_counter() - started, written, n_sentences


def _seconds(log: str, pattern: str) -> float | None:
    found = re.search(pattern, log)
    return float(found.group(1)) if found else None


def _log_time(log: str, marker: str) -> datetime.datetime | None:
    """The timestamp of the first log line containing `marker`."""
    for line in log.splitlines():
        if marker in line and (m := STAMP.match(line)):
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


def _distinct_words(cache: Path) -> int | None:
    """The rows of the distinct-word table, from the training store's manifest (out of core only)."""
    try:
        return int(json.loads((cache / "train.examples.json").read_text(encoding="utf-8"))["meta"]["distinct_words"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train(corpus: Path, run: Path, steps: int, out_of_core: bool) -> dict:
    # dev.conll / test.conll: the config's defaults (the sample's); validation is one batch of 128 sentences
    # (data.eval_batch_size), Viterbi-decoded and scored by span F1; test=false skips the test phase
    cmd = [sys.executable, "-m", "nlpseq", "task=ner", f"data.train={corpus}",
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
    vocab = _seconds(log, r"vocabulary: streaming passes in ([\d.]+) s")
    encode = _seconds(log, r"train\.examples: encoded \d+ examples in ([\d.]+) s")
    types = _seconds(log, r"train\.types: encoded \d+ examples in ([\d.]+) s")  # inside `encode` (written from it)
    examples = re.search(r"train\.examples: (?:encoded|reusing) (\d+) (?:encoded )?examples", log)
    entries = re.search(r"vocabulary: (\d+) \w+ entries", log)
    training = _log_time(log, "run directory:")
    metrics = run / "logs" / "metrics.csv"
    rows = list(csv.DictReader(open(metrics))) if metrics.exists() else []
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    cache = run / "cache"

    def cache_mb(pattern: str) -> float | None:
        return round(sum(p.stat().st_size for p in cache.glob(pattern)) / 2**20, 1) if cache.exists() else None

    return {"wall_s": round(wall, 1), "peak_rss_mb": watched.peak_rss_mb, "peak_anon_mb": watched.peak_anon_mb,
            "prep_s": round(vocab + encode, 1) if vocab is not None and encode is not None else None,
            "vocab_pass_s": vocab, "encode_pass_s": encode, "types_table_s": types,
            "to_training_s": round((training - launched).total_seconds(), 1) if training else None,
            "train_examples": int(examples.group(1)) if examples else None,
            "distinct_words": _distinct_words(cache),
            "vocab_entries": int(entries.group(1)) if entries else None,
            "train_tokens_per_s": round(tps[-1]) if tps else None,
            "cache_mb": cache_mb("train.examples.*"), "types_cache_mb": cache_mb("train.types.*")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.1, 0.25, 0.5, 1], help="out-of-core corpora, GB")
    ap.add_argument("--in-memory", type=float, nargs="*", default=[], help="in-memory comparison corpora, GB")
    ap.add_argument("--dir", default="/tmp", help="where corpora and run directories go")
    ap.add_argument("--steps", type=int, default=50, help="training batches per run")
    ap.add_argument("--out", help="JSON results (default: DIR/large_corpus.json)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and run directories")
    args = ap.parse_args()
    args.out = args.out or str(Path(args.dir) / "large_corpus.json")
    work = Path(args.dir) / f"nlpseq_large_ner_{os.getpid()}"
    work.mkdir(parents=True)
    results = []
    try:
        for gb, ooc in [(g, False) for g in args.in_memory] + [(g, True) for g in args.sizes]:
            corpus, run = work / f"corpus_{gb:g}GB.conll", work / f"run_{gb:g}GB_{'ooc' if ooc else 'mem'}"
            gen_s, size, n_sentences = write_corpus(corpus, int(gb * 1e9))
            row = {"corpus_gb": gb, "corpus_bytes": size, "corpus_sentences": n_sentences, "out_of_core": ooc,
                   "generate_s": round(gen_s, 1), **train(corpus, run, args.steps, ooc)}
            row["prep_mb_per_s"] = round(size / 1e6 / row["prep_s"], 1) if row["prep_s"] else None
            if row["train_examples"] is not None and row["train_examples"] != n_sentences:
                print(f"warning: {row['train_examples']:,} training sentences encoded from {n_sentences:,} written",
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
    print("\n| corpus | path | data prep (vocab + encode) | prep MB/s | launch to training | train sentences "
          "| distinct words | train tokens/s | peak RSS | peak anonymous |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        corpus = f"{r['corpus_gb']:g} GB" if r["corpus_gb"] >= 0.1 else f"{r['corpus_gb'] * 1000:g} MB"
        prep = (f"{r['prep_s']:.1f} s ({r['vocab_pass_s']:.1f} + {r['encode_pass_s']:.1f})"
                if r["prep_s"] is not None else "-")
        path = "out of core" if r["out_of_core"] else "in memory"
        to_training = f"{r['to_training_s']:.1f} s" if r["to_training_s"] is not None else "-"
        examples = (f"{r['train_examples']:,}" if r["train_examples"] is not None
                    else f"({r['corpus_sentences']:,} written)")
        distinct = f"{r['distinct_words']:,}" if r["distinct_words"] is not None else "-"
        anon = f"{r['peak_anon_mb']:,.0f} MB" if r["peak_anon_mb"] is not None else "-"
        tps = f"{r['train_tokens_per_s']:,}" if r["train_tokens_per_s"] is not None else "-"
        print(f"| {corpus} | {path} | {prep} | {r['prep_mb_per_s'] or '-'} | {to_training} | {examples} "
              f"| {distinct} | {tps} | {r['peak_rss_mb']:,.0f} MB | {anon} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
