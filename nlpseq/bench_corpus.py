"""Corpora larger than memory, in the benchmark harness: `python -m nlpseq.bench task=<task>
bench.large_corpus=0.25,1,4 [bench.in_memory=0.01] [bench.corpus_dir=/tmp] [bench.steps=50] [overrides]`.

For each size (GB; translation: both files together) it writes a training corpus in the format of the task's
shipped sample, made of the sample's own units in shuffled order, block by block (TSV rows with the header for
sentiment; CoNLL sentences in documents of 20 behind `-DOCSTART-` lines for NER; aligned sentence pairs for
translation; speeches for generation), so it looks like the sample but is not one short text repeated, and is
cut at a unit boundary, so it stays valid. Then it trains on it in a subprocess,
`python -m nlpseq task=<task> data.train=CORPUS data.out_of_core=true ...` for `bench.steps` batches (one epoch
capped by trainer.limit_train_batches; one validation batch of the sample's validation split; no test phase;
the task's model unless overridden; generation a tiny LSTM on 16 x 100-character windows), watching its memory
(nlpseq.utils.procmem): peak resident set (the whole process; out of core it also counts the pages of the
memory-mapped cache that training has read, page cache the kernel can drop) and peak anonymous memory (what a
corpus really costs). `bench.in_memory` sizes run the same with `data.out_of_core=false` for comparison (keep
them small: the in-memory path holds the parsed corpus as Python objects).

From the run's log it reports the data preparation (the vocabulary pass(es) and the encoding pass: seconds and
MB/s of corpus), the training examples encoded (tokens for generation), the seconds from launch to the start
of training, the last `train/tokens_per_sec` of metrics.csv and the size of the run's cache. The summary is
`anon_growth`: peak anonymous memory at the smallest and the largest out-of-core corpus and its growth per GB
of corpus between them (flat memory: near 0; the in-memory path costs tens of GB per GB).

What memory may still grow with out of core: NER keeps a dict of the distinct words while encoding (these
corpora have the sample's few hundred at every size, so the vocabulary's cost is not measured here), and the
shuffled batch order is an int32 index of a few bytes per example (generation's stream needs none).
Corpora and run directories are deleted after each size unless `bench.keep=1`.
"""
from __future__ import annotations

import csv
import datetime
import json
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nlpseq.errors import NlpseqError
from nlpseq.utils.procmem import run_watched

BLOCK = 8 << 20  # bytes per generated block (all files together); four distinct blocks are written in turn
DOC_SENTENCES = 20  # NER: a -DOCSTART- line before every this many sentences (the sample: one every ~20)
DOCSTART = b"-DOCSTART- O\n\n"
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")  # hydra's job log line prefix
MEMORY_FROM = ("/proc/<pid>/status: VmHWM (peak resident set) and the largest RssAnon polled every 0.1 s "
               "(anonymous memory: what is not page cache of mapped files)")

# a unit is one example's bytes per file (one file, or source and target) and whether it counts as an example
Unit = tuple[tuple[bytes, ...], bool]


def sample_dir(task: str) -> Path:
    from nlpseq.config import conf_dir

    return Path(conf_dir()).parent / "tasks" / task / "sample"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise NlpseqError(f"{path}: cannot read the shipped sample the corpus is made from ({e.strerror})") from None


@dataclass
class CorpusSpec:
    """How one task's corpus is made and trained on."""

    files: tuple[str, ...]                        # file names in the corpus folder
    data_overrides: Callable[[list[Path]], list[str]]  # the corpus files -> the overrides that train on them
    units: Callable[[Path], tuple[bytes, list[Unit]]]  # sample folder -> (header of each file, units)
    group: Callable[[list[Unit], random.Random], list[Unit]] = None  # a shuffled pass (default: shuffle)
    unit_name: str = "examples"
    run_overrides: Callable[[Path], list[str]] = field(default=lambda sample: [])  # settings of the short run


def _sentiment_units(sample: Path) -> tuple[bytes, list[Unit]]:
    lines = _read(sample / "train.tsv").splitlines()
    return (lines[0] + "\n").encode("utf-8"), [(((r + "\n").encode("utf-8"),), True) for r in lines[1:] if r.strip()]


def _ner_units(sample: Path) -> tuple[bytes, list[Unit]]:
    """The sample's sentences, each its token lines and the blank line that ends it (-DOCSTART- lines dropped)."""
    out = []
    for block in re.split(r"\n[ \t]*\n", _read(sample / "train.conll")):
        lines = [line for line in block.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
        if lines:
            out.append(((("\n".join(lines) + "\n\n").encode("utf-8"),), True))
    return b"", out


def _ner_documents(units: list[Unit], rng: random.Random) -> list[Unit]:
    rng.shuffle(units)
    out = []
    for i in range(0, len(units), DOC_SENTENCES):
        out.append(((DOCSTART,), False))
        out.extend(units[i: i + DOC_SENTENCES])
    return out


def _translation_units(sample: Path) -> tuple[bytes, list[Unit]]:
    sources, targets = _read(sample / "train.de").splitlines(), _read(sample / "train.en").splitlines()
    if len(sources) != len(targets):
        raise NlpseqError(f"{sample}: the sample is misaligned ({len(sources)} source lines, {len(targets)} target)")
    return b"", [(((s + "\n").encode("utf-8"), (t + "\n").encode("utf-8")), True)
                 for s, t in zip(sources, targets) if s.strip() and t.strip()]


def _generation_units(sample: Path) -> tuple[bytes, list[Unit]]:
    speeches = [s.strip("\n") for s in _read(sample / "train.txt").split("\n\n") if s.strip()]
    return b"", [(((s + "\n\n").encode("utf-8"),), True) for s in speeches]


SPECS: dict[str, CorpusSpec] = {
    "sentiment": CorpusSpec(("train.tsv",), lambda p: [f"data.train={p[0]}"], _sentiment_units, unit_name="rows"),
    "ner": CorpusSpec(("train.conll",), lambda p: [f"data.train={p[0]}"], _ner_units, _ner_documents,
                      unit_name="sentences"),
    "translation": CorpusSpec(
        ("train.de", "train.en"), lambda p: [f"data.train.src={p[0]}", f"data.train.tgt={p[1]}"],
        _translation_units, unit_name="pairs",
        # validation decodes one batch of 32 pairs greedily and prints no samples
        run_overrides=lambda sample: ["data.eval_batch_size=32", "model.val_beam_size=1", "model.val_samples=0"]),
    "generation": CorpusSpec(
        ("train.txt",), lambda p: [f"data.train={p[0]}"], _generation_units, unit_name="speeches",
        # a tiny model: the data path is what is measured
        run_overrides=lambda sample: [f"data.validation={sample / 'valid.txt'}", "data.batch_size=16",
                                      "data.seq_len=100", "model.embedding.dim=16", "model.decoder.hidden_size=64",
                                      "model.samples.prompts=[]"]),
}


def write_corpus(task: str, folder: Path, size: int, seed: int = 0) -> tuple[list[Path], int, int]:
    """The task's corpus files in `folder`, at most `size` bytes together. Returns (paths, bytes, examples)."""
    spec, sample = SPECS[task], sample_dir(task)
    header, units = spec.units(sample)
    if not units:
        raise NlpseqError(f"{sample}: no training examples in the shipped sample")
    rng = random.Random(seed)
    n_files = len(spec.files)
    blocks = []  # per block: the bytes of each file, each file's bytes after each unit, examples after each unit
    for _ in range(4):
        parts, n = [], 0
        while n < min(BLOCK, size):
            shuffled = spec.group(units, rng) if spec.group else rng.sample(units, len(units))
            parts.extend(shuffled)
            n += sum(len(b) for unit, _ in shuffled for b in unit)
        file_ends = [np.cumsum([len(unit[f]) for unit, _ in parts]) for f in range(n_files)]
        blocks.append(([b"".join(unit[f] for unit, _ in parts) for f in range(n_files)], file_ends,
                       sum(file_ends), np.cumsum([counted for _, counted in parts]),
                       np.array([counted for _, counted in parts])))
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in spec.files]
    handles = [open(p, "wb") for p in paths]
    try:
        written, examples, i = 0, 0, 0
        if header:
            handles[0].write(header)
            written += len(header)
        while written < size:
            data, file_ends, ends, counts, counted = blocks[i % len(blocks)]
            k = len(ends)
            if ends[-1] > size - written:  # the last block: the units that fit whole, ending on an example
                k = int(np.searchsorted(ends, size - written, side="right"))
                while k and not counted[k - 1]:
                    k -= 1
                if not k:
                    break
                data = [d[: e[k - 1]] for d, e in zip(data, file_ends)]
            for h, d in zip(handles, data):
                h.write(d)
            written += sum(len(d) for d in data)
            examples += int(counts[k - 1])
            i += 1
    finally:
        for h in handles:
            h.close()
    return paths, written, examples


def _seconds(log: str, pattern: str) -> float | None:
    found = re.search(pattern, log)
    return float(found.group(1)) if found else None


def _log_time(log: str, marker: str) -> datetime.datetime | None:
    """The timestamp of the first log line containing `marker`."""
    for line in log.splitlines():
        if marker in line and (m := STAMP.match(line)):
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


def _manifest_meta(cache: Path, key: str) -> int | None:
    try:
        return int(json.loads((cache / "train.examples.json").read_text(encoding="utf-8"))["meta"][key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def parse_run(log: str, run: Path) -> dict:
    """What a training run's log, metrics.csv and cache say about its data preparation and speed."""
    vocab = _seconds(log, r"(?:one streaming pass|streaming passes) in ([\d.]+) s")
    encode = _seconds(log, r"train(?:\.examples)?: encoded \d+ (?:examples|characters to \d+ tokens) in ([\d.]+) s")
    prepared = _seconds(log, r"data prepared in ([\d.]+) s")  # generation logs it in both modes
    examples = re.search(r"train\.examples: (?:encoded|reusing) (\d+) (?:encoded )?examples", log)
    tokens = re.search(r"data prepared in [\d.]+ s: train ([\d,]+)", log)
    metrics = run / "logs" / "metrics.csv"
    rows = list(csv.DictReader(open(metrics, encoding="utf-8"))) if metrics.exists() else []
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    cache = run / "cache"
    out = {"prep_s": round(vocab + encode, 1) if vocab is not None and encode is not None else prepared,
           "vocab_pass_s": vocab, "encode_pass_s": encode,
           "train_examples": int(examples.group(1)) if examples else None,
           "train_tokens": int(tokens.group(1).replace(",", "")) if tokens else None,
           "train_tokens_per_s": round(tps[-1]) if tps else None,
           "cache_mb": round(sum(p.stat().st_size for p in cache.glob("train.*")) / 2**20, 1)
           if cache.exists() else None}
    if (distinct := _manifest_meta(cache, "distinct_words")) is not None:  # NER out of core
        out["distinct_words"] = distinct
    return out


def train(task: str, data: list[str], overrides: list[str], run: Path, steps: int, out_of_core: bool) -> dict:
    """One short training on a corpus in a subprocess, its memory watched."""
    spec = SPECS[task]
    cmd = [sys.executable, "-m", "nlpseq", f"task={task}", *spec.run_overrides(sample_dir(task)),
           "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=1",
           "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=0", "test=false",
           *overrides, *data, f"data.out_of_core={str(out_of_core).lower()}", f"hydra.run.dir={run}"]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread a process: steadier timings on a shared machine
    launched = datetime.datetime.now()
    watched = run_watched(cmd, env=env)
    if watched.returncode != 0:
        tail = "\n".join(watched.output.splitlines()[-40:])
        raise NlpseqError(f"training failed (exit {watched.returncode}): {' '.join(cmd)}\n"
                          f"--- last output lines ---\n{tail}")
    # the run's own log (hydra writes <run dir>/<job name>.log); the console copy otherwise
    logs = sorted(run.glob("*.log"))
    log = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs) if logs else watched.output
    started = _log_time(log, "run directory:")
    return {"wall_s": round(watched.wall_s, 1), "peak_rss_mb": watched.peak_rss_mb,
            "peak_anon_mb": watched.peak_anon_mb,
            "to_training_s": round((started - launched).total_seconds(), 1) if started else None,
            **parse_run(log, run)}


def parse_sizes(option: str, text: str) -> list[float]:
    """`0.25,1,4` or `[0.25,1,4]` -> [0.25, 1.0, 4.0] (GB)."""
    items = [s for s in text.strip().strip("[]").split(",") if s.strip()]
    try:
        sizes = [float(s) for s in items]
    except ValueError:
        raise NlpseqError(f"bench.{option}: expected sizes in GB separated by commas, e.g. 0.25,1,4; got {text!r}")
    if any(not s > 0 for s in sizes):
        raise NlpseqError(f"bench.{option}: sizes must be positive GB, got {text!r}")
    return sizes


def anon_growth(rows: list[dict]) -> dict | None:
    """Peak anonymous memory of the smallest and the largest out-of-core corpus, and its growth per GB between them."""
    ooc = sorted((r for r in rows if r["out_of_core"] and r["peak_anon_mb"] is not None), key=lambda r: r["corpus_gb"])
    if len(ooc) < 2 or ooc[-1]["corpus_gb"] == ooc[0]["corpus_gb"]:
        return None
    small, large = ooc[0], ooc[-1]
    return {"from_gb": small["corpus_gb"], "to_gb": large["corpus_gb"], "from_mb": small["peak_anon_mb"],
            "to_mb": large["peak_anon_mb"], "mb_per_gb": round((large["peak_anon_mb"] - small["peak_anon_mb"])
                                                               / (large["corpus_gb"] - small["corpus_gb"]), 1)}


def measure(task: str, overrides: list[str], sizes: list[float], in_memory: list[float], steps: int,
            directory: str, keep: bool) -> dict:
    """Writes and trains on each corpus in turn (in-memory sizes first); returns the rows and the summary."""
    if task not in SPECS:
        raise NlpseqError(f"bench.large_corpus: no corpus generator for task {task!r} (known: {', '.join(SPECS)})")
    base = Path(directory)
    if not base.is_dir():
        raise NlpseqError(f"bench.corpus_dir: {base} is not a directory")
    need = max(sizes + in_memory) * 1e9 * 2  # the corpus and its encoded cache, with room to spare
    free = shutil.disk_usage(base).free
    if free < need:
        raise NlpseqError(f"bench.corpus_dir: {base} has {free / 1e9:.1f} GB free; the largest corpus and its cache "
                          f"need about {need / 1e9:.1f} GB (set bench.corpus_dir or smaller sizes)")
    work = base / f"nlpseq_large_{task}_{os.getpid()}"
    work.mkdir()
    rows = []
    try:
        for gb, ooc in [(g, False) for g in in_memory] + [(g, True) for g in sizes]:
            corpus, run = work / f"corpus_{gb:g}GB", work / f"run_{gb:g}GB_{'ooc' if ooc else 'mem'}"
            started = time.perf_counter()
            paths, size, examples = write_corpus(task, corpus, int(gb * 1e9))
            row = {"corpus_gb": gb, "corpus_bytes": size, "corpus_examples": examples,
                   "corpus_unit": SPECS[task].unit_name, "out_of_core": ooc,
                   "generate_s": round(time.perf_counter() - started, 1),
                   **train(task, SPECS[task].data_overrides(paths), overrides, run, steps, ooc)}
            row["prep_mb_per_s"] = round(size / 1e6 / row["prep_s"], 1) if row["prep_s"] else None
            if task != "generation" and row["train_examples"] not in (None, examples):
                row["warning"] = f"{row['train_examples']:,} training examples encoded from {examples:,} written"
                print(f"warning: {row['warning']}", file=sys.stderr)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not keep:
                shutil.rmtree(corpus)
                shutil.rmtree(run)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"steps": steps, "corpus_dir": str(work) if keep else str(base), "memory_from": MEMORY_FROM,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"), "rows": rows,
            "anon_growth": anon_growth(rows)}


def _gb(gb: float) -> str:
    return f"{gb:g} GB" if gb >= 0.1 else f"{gb * 1000:g} MB"


def markdown_table(result: dict) -> str:
    """The rows as the Markdown table the task READMEs carry, and the memory growth under it."""
    rows = result["rows"]
    stream = any(r["train_tokens"] is not None for r in rows)  # generation: a token stream, no examples
    unit = "tokens" if stream else rows[0]["corpus_unit"] if rows else "examples"
    lines = [f"| corpus | path | data prep (vocab + encode) | prep MB/s | launch to training | train {unit} "
             "| train tokens/s | peak RSS | peak anonymous |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def count(value) -> str:
        return "-" if value is None else f"{value:,}"

    for r in rows:
        if r["vocab_pass_s"] is not None and r["encode_pass_s"] is not None:
            prep = f"{r['prep_s']:.1f} s ({r['vocab_pass_s']:.1f} + {r['encode_pass_s']:.1f})"
        else:
            prep = f"{r['prep_s']:.1f} s" if r["prep_s"] is not None else "-"
        to_training = f"{r['to_training_s']:.1f} s" if r["to_training_s"] is not None else "-"
        n = r["train_tokens"] if stream else r["train_examples"]
        trained = count(n) if n is not None else f"({r['corpus_examples']:,} written)"
        anon = f"{r['peak_anon_mb']:,.0f} MB" if r["peak_anon_mb"] is not None else "-"
        lines.append(f"| {_gb(r['corpus_gb'])} | {'out of core' if r['out_of_core'] else 'in memory'} | {prep} "
                     f"| {r['prep_mb_per_s'] or '-'} | {to_training} | {trained} | {count(r['train_tokens_per_s'])} "
                     f"| {r['peak_rss_mb']:,.0f} MB | {anon} |")
    if growth := result.get("anon_growth"):
        lines.append(f"\nout of core, peak anonymous memory {growth['from_mb']:,.0f} MB at {_gb(growth['from_gb'])}, "
                     f"{growth['to_mb']:,.0f} MB at {_gb(growth['to_gb'])}: {growth['mb_per_gb']:+,.1f} MB per GB of corpus")
    return "\n".join(lines)
