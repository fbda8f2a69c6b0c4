"""Shared pieces of the fuzz tests: tiny trained checkpoints, the error property, odd text and file bytes.

Every fuzzed call must either succeed or raise an `NlpseqError` whose message is one non-empty line.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
from hypothesis import HealthCheck
from hypothesis import strategies as st

from nlpseq.errors import NlpseqError

SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much]

# ---------------------------------------------------------------- the property


def check_error(e: BaseException) -> None:
    """An escaped exception must be ours, with a one-line message (no traceback-worthy surprises)."""
    assert isinstance(e, NlpseqError), f"{type(e).__name__} escaped: {e!r}"[:2000]
    msg = str(e)
    assert msg.strip() and len(msg.splitlines()) == 1, f"message is not one line: {msg!r}"[:2000]


STATS: Counter = Counter()  # (function, "ok" or error message start): how deep the examples went


def outcome(fn, *args, **kwargs):
    """fn(...) or None when it raised a well-formed NlpseqError (anything else fails the test)."""
    name = getattr(fn, "__qualname__", str(fn))
    try:
        result = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- the property is about which exceptions escape
        check_error(e)
        STATS[name, re.sub(r"^.*?:\d*:? ", "", str(e))[:40]] += 1
        return None
    STATS[name, "ok"] += 1
    return result


def print_stats() -> None:
    """Outcomes per function, for NLPSEQ_FUZZ_STATS=1 runs (pytest -s)."""
    by_fn: dict = {}
    for (name, what), n in STATS.most_common():
        by_fn.setdefault(name, []).append(f"{n} {what}")
    for name, rows in by_fn.items():
        print(f"{name}: " + " | ".join(rows[:12]))


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------- odd text

EMOJI = ["👍", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "😀", "🇩🇪"]
RTL = ["مرحبا", "שלום", "\u202eabc\u202c", "\u200f", "سلام عليكم", "עִבְרִית"]
COMBINING = ["e\u0301", "\u0301", "a\u0308\u0323", "\u20dd", "ก\u0e31"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u00ad"]
SPACES = [" ", "\t", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\r"]
CONTROL = ["\x01", "\x1b", "\x7f", "\x00"]
OTHER = ["日本語", "Ωß", "\U0010ffff", "\ufffd", "Ǆ", "İ", "ﬁ", "①", "٣", "𝟘", "\U000e0001"]
PUNCT = ['"', "'", ",", ";", "\\", "{", "}", "[", "]", ":", ".", "-", "--", "-DOCSTART-", "''", '""', "n't", "!", "?"]
SURROGATES = ["\ud800", "\udfff", "\udc80", "a\udcffb"]  # lone: not encodable as UTF-8
WORDS = ["the", "cat", "Paris", "EU", "U.S.", "3,000.50", "O'Neill", "Saint-Denis", "don't", "x", "A", "Ein",
         "Mann", "fährt", "KING"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-ORG", "S-MISC", "B-", "O-PER", "I", "B", "B-PER-X",
        "b-per", "B-PE R", "-DOCSTART-", "", "B-👍", "I-مرحبا"]
ODD = EMOJI + RTL + COMBINING + ZERO_WIDTH + SPACES + CONTROL + OTHER + PUNCT

# Example content comes from pools of pre-generated pieces (seeded, so every run has the same pools),
# and hypothesis combines and mutates them: a few dozen draws per example instead of hundreds keeps
# 1000 examples per reader within seconds, and failures still shrink to few, simple lines.
POOL = 3000
POOL_SEED = int(os.environ.get("NLPSEQ_FUZZ_POOL_SEED", "0"))  # other pools for exploration runs


def _char(r: random.Random) -> str:
    while True:
        c = r.randrange(0x110000 if r.random() < 0.3 else 0x800)
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def rand_text(r: random.Random, parts: int = 8, surrogates: bool = True, long: bool = True) -> str:
    """Words, odd characters and random code points; now and then a lone surrogate or a long repeat."""
    out = []
    for _ in range(r.randint(0, parts)):
        k = r.random()
        out.append(r.choice(WORDS) if k < 0.4 else r.choice(ODD) if k < 0.75 else
                   "".join(_char(r) for _ in range(r.randint(1, 5))))
    text = r.choice([" ", " ", "", "  "]).join(out)
    if surrogates and r.random() < 0.04:
        i = r.randint(0, len(text))
        text = text[:i] + r.choice(SURROGATES) + text[i:]
    if long and r.random() < 0.03:
        text *= r.choice([40, 300])
    return text


def rand_cell(r: random.Random) -> str:
    return r.choice(WORDS + TAGS) if r.random() < 0.5 else rand_text(r, 3)


BLANK_LINES = ["", " ", "\t", "\u3000"]


def pool(make, seed: int, size: int = POOL) -> st.SearchStrategy[str]:
    """A strategy over `size` strings made by make(random.Random), and blank ones one time in seven
    (blank lines end sentences). Blanks first, then shorter first: shrinking goes to the simplest."""
    r = random.Random(seed + 1000 * POOL_SEED)
    made = sorted({make(r) for _ in range(size)} - set(BLANK_LINES), key=lambda x: (len(x), x))
    return st.sampled_from(BLANK_LINES * (len(made) // 24) + made)


TEXTS = pool(lambda r: rand_text(r, 10, surrogates=False), 1)
TEXTS_S = pool(lambda r: rand_text(r, 10), 2)   # with lone surrogates now and then
CELLS = pool(rand_cell, 3)
INPUTS = pool(lambda r: rand_text(r, 12, long=False), 4)  # predictor inputs (big ones: test_big_inputs)

# ---------------------------------------------------------------- file bytes

GARBAGE = [b"\xff", b"\xfe\xff", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
           b"\x00", b"\xef\xbb\xbf", b"\r", b"\x1f\x8b\x08"]
ENDINGS = ["\n", "\n", "\n", "\r\n", "\r\n\n", "\r", "\n\r\n", "\n\n"]
# One integer draw decides every file-level oddity (see _assemble): few draws per example keep 1000
# examples fast, and shrinking towards 0 turns each oddity off.
FLAGS = st.integers(0, 2**40)


def _assemble(lines, flags: int) -> bytes:
    """Lines joined by one ending (or mixed ones), with now and then a BOM, a huge line, an invalid
    byte sequence, truncation, or no content at all."""
    flags, ending = divmod(flags, len(ENDINGS))
    flags, mixed = divmod(flags, 12)
    flags, huge = divmod(flags, 12)
    flags, no_final = divmod(flags, 2)
    flags, bom = divmod(flags, 6)
    flags, garbage = divmod(flags, 5)
    flags, kind = divmod(flags, len(GARBAGE))
    flags, cut = divmod(flags, 25)
    at = flags % 1001 / 1000  # where: the huge line, the garbage, the cut
    lines = list(lines) if cut != 2 else []
    if lines and huge == 1:  # one line repeated to ~100k characters
        i = int(at * (len(lines) - 1))
        lines[i] = lines[i] * max(1, 100_000 // max(len(lines[i]), 1))
    endings = [ENDINGS[ending]] if mixed != 1 else ["\n", "\r\n", "\r", "\n\n"]
    text = "".join(line + endings[i % len(endings)] for i, line in enumerate(lines))
    if no_final:
        text = text.rstrip("\n")
    data = text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8 (CESU) bytes
    if bom == 1:
        data = b"\xef\xbb\xbf" + data
    elif bom == 2:  # saved as UTF-16 by some Windows tool
        data = text.encode("utf-16", "surrogatepass")
    if garbage == 1:  # invalid UTF-8, NUL, a stray BOM ... somewhere
        pos = int(at * len(data))
        data = data[:pos] + GARBAGE[kind] + data[pos:]
    if cut == 1:  # truncated, maybe inside a multi-byte character
        data = data[:int(at * len(data))]
    return data


def file_bytes(line: st.SearchStrategy[str], max_lines: int = 8) -> st.SearchStrategy[bytes]:
    return st.builds(_assemble, st.lists(line, min_size=1, max_size=max_lines), FLAGS)


# ---------------------------------------------------------------- JSON lines

RAW_JSON = ["{", "}", "[]", "[1, 2]", '"text"', "null", '{"text": }', "{'text': 'a'}", "[" * 3000,
            '{"a":' * 3000, "1" * 5000, '{"text": ' + "9" * 5000 + "}", "NaN", '{"text": NaN, "label": Infinity}',
            '{"text": "\\ud800", "label": "x"}', '{"text": "a", "label": "\\udfff"}',
            '{"text": "\\ud83d\\ude00", "label": "\\u0000"}', '{"tokens": ["\\ud800"], "tags": ["O"]}',
            '{"text": "a"} trailing', '\ufeff{"text": "a", "label": "b"}', '{"text": "a",}', '{"text": "a\nb"}']


def rand_json_value(r: random.Random, depth: int = 0):
    k = r.random()
    if k < 0.5 or depth > 2:
        return r.choice([None, True, False, 0, -1, 2**70, 1.5, float("nan"), float("inf"), rand_cell(r), rand_cell(r)])
    if k < 0.75:
        return [rand_json_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {r.choice(["a", "text", "de", "\u200b"]): rand_json_value(r, depth + 1) for _ in range(r.randint(0, 3))}


def json_line_maker(good: dict):
    """make(r) of JSON lines: objects with (most of) the keys of `good`, values from good[key](r) mostly
    (anything sometimes), and now and then a broken, cut-short, deeply nested or huge-number line."""
    def make(r: random.Random) -> str:
        if r.random() < 0.08:
            return r.choice(RAW_JSON)
        obj = {}
        for key, value in good.items():
            k = r.random()
            if k < 0.05:
                continue  # missing
            obj[key] = value(r) if k < 0.9 else rand_json_value(r)
        if r.random() < 0.1:
            obj[r.choice(["extra", "\u200b", "text ", "👍"])] = rand_json_value(r)
        text = json.dumps(obj, ensure_ascii=r.random() < 0.5)  # lone surrogates: \ud800 escapes either way
        return text[:r.randint(0, len(text))] if r.random() < 0.05 else text
    return make


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- tiny trained checkpoints

SMALL = {
    "sentiment": ["model.embedding.dim=16", "model.encoder.hidden_size=16"],
    "ner": ["model.embedding.dim=16", "model.encoder.hidden_size=16", "model.char_encoder.dim=8",
            "model.char_encoder.hidden_size=8"],
    "translation": ["model.embedding.dim=16", "model.encoder.hidden_size=16", "model.decoder.hidden_size=16",
                    "data.tokenizer.vocab_size=300", "model.search.beam_size=2"],
    "generation": ["model.embedding.dim=16", "model.decoder.hidden_size=16", "data.seq_len=30"],
}
STEPS = {"sentiment": 5, "ner": 5, "translation": 40, "generation": 10}  # translation: enough to learn </s>


def _build(task: str, path: Path) -> Path:
    """Train a tiny model of `task` on the shipped sample for a few steps and save an nlpseq checkpoint."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from nlpseq.config import conf_dir, register_resolvers
    from nlpseq.models.base import FORMAT_VERSION

    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task={task}", "seed=0", *SMALL[task]])
    torch.manual_seed(0)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare()
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    if hasattr(model, "on_train_epoch_start"):
        model.on_train_epoch_start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        step = 0
        while step < STEPS[task]:
            for batch in dm.train_dataloader():
                optim.zero_grad()
                model.training_step(batch, step).backward()
                optim.step()
                step += 1
                if step == STEPS[task]:
                    break
    model.eval()
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
            "nlpseq": {"task": task, "format_version": FORMAT_VERSION}}
    torch.save(ckpt, path)
    return path


def temp_dir(prefix: str) -> Path:
    """A fresh directory, in memory where there is /dev/shm (a disk write costs more than a parse), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def checkpoint(task: str) -> Path:
    """A tiny trained checkpoint of `task`, built once per test session."""
    return _build(task, temp_dir(f"nlpseq_fuzz_{task}_") / "tiny.ckpt")


@functools.cache
def predictor(task: str):
    import nlpseq

    return nlpseq.load(checkpoint(task))


# ---------------------------------------------------------------- memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_rss_growth(fn, *args, **kwargs):
    """(result, seconds, MB by which the resident set grew at its peak during the call), sampled every 2 ms."""
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - start
        done.set()
        t.join()
    return result, seconds, max(peak[0], _rss_mb()) - base
