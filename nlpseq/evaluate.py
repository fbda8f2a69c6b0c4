"""Scoring checkpoints on labelled data: `python -m nlpseq.evaluate ckpt=PATH[,PATH...] data=FILE[,FILE...]`.

Several checkpoints are scored as the ensemble `nlpseq.load([...])` makes of them and, by default, each alone
first, so the ensemble's gain shows. Every file is read by the project's own readers, as training reads it:

- sentiment: TSV/CSV (with a header) or JSON lines with a text and a label column -> accuracy, macro-F1 (over
  the labels found in the file or predicted, as `val/f1`);
- ner: CoNLL column files or JSON lines -> span precision/recall/F1 counted as conlleval counts them
  (`nlpseq.metrics.spans`), tag accuracy, F1 per type;
- translation: a TSV or JSONL file of pairs, or two aligned files given as {src:FILE,tgt:FILE} (quote it
  in the shell) -> sacreBLEU and chrF of the detokenized translations against the raw references;
- generation: plain text, lines or tables -> loss in nats per token (nats/char for character models),
  perplexity and bits per character. A plain-text file read whole (stream mode) is one stream after <s>,
  state carried, from `start` (a fraction of its characters; 0.9 = the recipes' validation split), as
  `tasks/generation/benchmark.py ensemble` reads it; in lines mode each line (or table row) is its own
  <s> text </s> with a fresh state (from its condition, for models trained with conditions). An ensemble
  scores each token by the mean of its members' probabilities.

CLI options (key=value): ckpt (required), data (required; several files separated by commas; a path that
exists as written is never split), batch_size (default 64), device (default cpu), output (a file, or - for
stdout: the results as JSON; default: a table on stdout), members (true|false: also score each checkpoint
alone; default true), the reading options of the task and the options of its predictor:

  sentiment    format (auto|tsv|csv|jsonl), text_column, label_column (a name or [alternatives])
  ner          format (auto|conll|jsonl), token_column, tag_column, separator (auto|space|tab), docstart,
               scheme (the file's tags: IOB1|IOB2|BIOES|auto), tokens_key, tags_key
  translation  format (auto|tsv|jsonl), src_key, tgt_key; beam_size, length_penalty, max_len_ratio, precision
  generation   format (auto|text|lines|jsonl|tsv|csv), mode (stream|lines), text_column, condition_column,
               start

Reading options the checkpoint carries (NER's token column, separator, -DOCSTART- handling and tag scheme)
are its defaults; others come from the run's saved config (<run>/.hydra/config.yaml beside
<run>/checkpoints/) where there is one, else from the defaults above; the command line overrides both.
"""
from __future__ import annotations

import inspect
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from nlpseq.errors import ConfigError, DataError, NlpseqError, check_bool, check_choice, check_float, check_int
from nlpseq.predict import RAW_KEYS, _ckpt_paths, _out_of_memory, load, parse_args

USAGE = ("usage: python -m nlpseq.evaluate ckpt=PATH[,PATH...] data=FILE[,FILE...] [batch_size=64] [device=cpu] "
         "[output=FILE|-] [members=true|false] [task options]")
COMMON = ("ckpt", "data", "batch_size", "device", "output", "members")
SENTIMENT_TEXT_COLUMNS = ["text", "sentence", "content"]  # as tasks/sentiment/ensemble.py
WARMUP = 8  # examples each model predicts once before it is timed


# ---------------------------------------------------------------- inputs

def data_specs(value) -> list:
    """The files of `data=`: a path, a {src, tgt} pair of aligned files (translation), or a list of them; a string
    holds several separated by commas (a path that exists as written is never split), an aligned pair written
    {src:FILE,tgt:FILE} as in the training config."""
    if isinstance(value, (list, tuple)):
        specs = [s for v in value for s in data_specs(v)]
    elif isinstance(value, dict):
        specs = [_pair(value)]
    elif isinstance(value, Path):
        specs = [str(value)]
    elif isinstance(value, str):
        specs = [value] if _exists(value) else [_pair_text(p) if p.startswith("{") else p for p in _split_top(value)]
    else:
        raise ConfigError("data", f"expected a file path (or several), got {value!r}")
    if not specs:
        raise ConfigError("data", "no file given")
    return specs


def _exists(path) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a NUL in the name, a name too long: the reader names the problem
        return False


def _split_top(text: str) -> list[str]:
    """Comma-separated parts, commas inside {...} kept."""
    parts, depth, cur = [], 0, ""
    for c in text:
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _pair_text(text: str) -> dict:
    if not text.endswith("}"):
        raise ConfigError("data", f"expected {{src:FILE,tgt:FILE}}, got {text!r}")
    pair = {}
    for item in text[1:-1].split(","):
        key, sep, path = item.partition(":")
        if not sep:
            raise ConfigError("data", f"expected {{src:FILE,tgt:FILE}}, got {text!r}")
        pair[key.strip()] = path.strip()
    return _pair(pair)


def _pair(pair: dict) -> dict:
    if set(pair) != {"src", "tgt"} or not all(isinstance(v, (str, Path)) and str(v) for v in pair.values()):
        raise ConfigError("data", f"two aligned files are given as {{src:FILE,tgt:FILE}}, got {pair}")
    return {"src": str(pair["src"]), "tgt": str(pair["tgt"])}


def spec_name(spec) -> str:
    return f"{spec['src']} / {spec['tgt']}" if isinstance(spec, dict) else str(spec)


def _one_file(spec, task: str) -> str:
    if isinstance(spec, dict):
        raise ConfigError("data", f"{spec_name(spec)}: a pair of aligned files is translation data, not {task}")
    return spec


def run_settings(ckpt) -> dict:
    """The `data` settings of the run that wrote the checkpoint (<run>/.hydra/config.yaml beside
    <run>/checkpoints/), plain values only; {} when there is no such file or it cannot be read."""
    import yaml

    path = Path(ckpt)
    cfg = path.parent.parent / ".hydra" / "config.yaml"
    if path.parent.name != "checkpoints" or not cfg.is_file():
        return {}
    try:
        data = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return {}
    if not isinstance(data, dict):
        return {}

    def plain(v):
        if isinstance(v, str):
            return "${" not in v  # an interpolation: not resolvable here
        if isinstance(v, list):
            return all(isinstance(x, str) and "${" not in x for x in v)
        return v is None or isinstance(v, (bool, int))

    return {k: v for k, v in data.items() if isinstance(k, str) and plain(v)}


def _columns(key: str, value) -> str | list[str]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigError(key, f"expected a column name or a list of alternatives, got {value!r}")


def _with_fallbacks(configured, defaults: list[str]):
    """The run's column name(s), then the default alternatives it does not name."""
    first = [configured] if isinstance(configured, str) else list(configured)
    return first + [d for d in defaults if d not in first]


# ---------------------------------------------------------------- tasks

@dataclass
class Data:
    name: str
    examples: int
    payload: Any
    extra: dict = field(default_factory=dict)


class Task:
    """One task's reading options, reader and scorer."""

    name = ""
    metrics: tuple[str, ...] = ()   # headline first
    labels: dict[str, str] = {}     # metric -> table heading
    higher_is_better = True
    predict_skip: tuple[str, ...] = ()  # predictor.predict parameters that are not user options here

    def defaults(self, model, run: dict) -> dict:
        """Reading options: the checkpoint's own, then the run config's, then built-in defaults."""
        return {}

    def predict_options(self, predictor) -> list[str]:
        params = inspect.signature(predictor.predict).parameters
        return [k for k in params if k not in ("texts", "batch_size", *self.predict_skip)]

    def check(self, opts: dict, model) -> dict:
        return opts

    def read(self, spec, opts: dict, model) -> Data:
        raise NotImplementedError

    def warmup(self, predictor, data: Data, batch_size: int, options: dict) -> None:
        pass

    def score(self, predictor, data: Data, batch_size: int, options: dict) -> dict:
        """The metrics, plus `seconds` (the prediction alone) and the task's counts."""
        raise NotImplementedError

    def rate(self, row: dict, data: Data) -> None:
        row["sentences_per_s"] = data.examples / row["seconds"] if row["seconds"] > 0 else None


class Sentiment(Task):
    name = "sentiment"
    metrics = ("accuracy", "macro_f1")
    labels = {"accuracy": "accuracy", "macro_f1": "macro F1"}

    def defaults(self, model, run):
        return {"format": "auto",
                "text_column": _with_fallbacks(run["text_column"], SENTIMENT_TEXT_COLUMNS)
                if "text_column" in run else list(SENTIMENT_TEXT_COLUMNS),
                "label_column": _with_fallbacks(run["label_column"], ["label"]) if "label_column" in run else "label"}

    def check(self, opts, model):
        from nlpseq.data.tables import FORMATS

        check_choice("format", opts["format"], FORMATS)
        return {**opts, "text_column": _columns("text_column", opts["text_column"]),
                "label_column": _columns("label_column", opts["label_column"])}

    def read(self, spec, opts, model):
        from nlpseq.data.tables import iter_table

        path = _one_file(spec, self.name)
        known = set(model.labels)
        texts, gold = [], []
        for row in iter_table(path, opts["text_column"], opts["label_column"], opts["format"]):
            if row["label"] not in known:
                raise DataError(f"label {row['label']!r} was never seen in training (known: {list(model.labels)})",
                                path, row["line"])
            texts.append(row["text"])
            gold.append(row["label"])
        return Data(spec_name(spec), len(texts), (texts, gold))

    def warmup(self, predictor, data, batch_size, options):
        predictor.predict(data.payload[0][:WARMUP], batch_size=batch_size)

    def score(self, predictor, data, batch_size, options):
        texts, gold = data.payload
        start = time.perf_counter()
        predicted = [p.label for p in predictor.predict(texts, batch_size=batch_size)]
        seconds = time.perf_counter() - start
        return {"accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
                "macro_f1": macro_f1(gold, predicted), "seconds": seconds}


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the labels that occur in `gold` or `predicted` (torchmetrics' MulticlassF1Score(average=
    "macro"), the training `val/f1`, leaves out classes that are neither). A label's F1 is 2 tp / (gold + found)."""
    from collections import Counter

    correct = Counter(g for g, p in zip(gold, predicted) if g == p)
    n_gold, n_found = Counter(gold), Counter(predicted)
    labels = set(n_gold) | set(n_found)
    return sum(2 * correct[label] / (n_gold[label] + n_found[label]) for label in labels) / len(labels)


class Ner(Task):
    name = "ner"
    metrics = ("f1", "precision", "recall", "accuracy")
    labels = {"f1": "F1", "precision": "precision", "recall": "recall", "accuracy": "tag acc."}
    predict_skip = ("pretokenized", "scheme")

    def defaults(self, model, run):
        reader = model.reader
        return {"format": "auto", "token_column": reader.get("token_column", run.get("token_column", 0)),
                "tag_column": run.get("tag_column", -1),
                "separator": reader.get("separator", run.get("separator", "auto")),
                "docstart": reader.get("docstart", run.get("docstart", True)), "scheme": model.data_scheme,
                "tokens_key": run.get("tokens_key", "tokens"), "tags_key": run.get("tags_key", "tags")}

    def check(self, opts, model):
        from nlpseq.data.conll import FORMATS, INPUT_SCHEMES, SEPARATORS
        from nlpseq.metrics.schemes import canonical_scheme

        check_choice("format", opts["format"], FORMATS)
        check_int("token_column", opts["token_column"])
        check_int("tag_column", opts["tag_column"])
        check_choice("separator", opts["separator"], SEPARATORS)
        check_bool("docstart", opts["docstart"])
        for key in ("tokens_key", "tags_key"):
            if not isinstance(opts[key], str) or not opts[key]:
                raise ConfigError(key, f"expected a key name, got {opts[key]!r}")
        return {**opts, "scheme": check_choice("scheme", canonical_scheme(opts["scheme"]), INPUT_SCHEMES)}

    def read(self, spec, opts, model):
        from nlpseq.data.conll import detect_format, detect_scheme, iter_tagged
        from nlpseq.metrics.schemes import split_tag

        path = _one_file(spec, self.name)
        fmt = detect_format(path, opts["format"])
        sentences = [s for s in iter_tagged(path, fmt, opts["token_column"], opts["tag_column"], opts["separator"],
                                            opts["scheme"], opts["docstart"], opts["tokens_key"], opts["tags_key"])
                     if s[1]]  # a JSONL sentence without tokens has nothing to score (training skips it too)
        if not sentences:
            raise DataError("no sentence with tokens", path)
        scheme = detect_scheme([tags for _, _, tags in sentences]) if opts["scheme"] == "auto" else opts["scheme"]
        known = {split_tag(label)[1] for label in model.labels if label != "O"}
        step = 0 if fmt == "jsonl" else 1  # token i of a column-file sentence is on line `line + i`
        for line, tokens, tags in sentences:
            for i, tag in enumerate(tags):
                if tag != "O" and split_tag(tag)[1] not in known:
                    raise DataError(f"entity type {split_tag(tag)[1]!r} (tag {tag!r}, token {tokens[i]!r}) was never "
                                    f"seen in training (known: {', '.join(sorted(known))})", path, line + step * i)
        return Data(spec_name(spec), len(sentences), ([s[1] for s in sentences], [s[2] for s in sentences]),
                    {"scheme": scheme, "tokens": sum(len(s[1]) for s in sentences)})

    @staticmethod
    def tag(predictor, sentences, batch_size: int, scheme: str) -> list[list[str]]:
        """Tags of the sentences (tokens as the file gives them, spaces included) in `scheme`, as
        `python -m nlpseq.predict` appends them to a column file."""
        from nlpseq.metrics.schemes import from_spans

        model = predictor.model
        reader, labels = predictor._span_reader(), model.labels
        out = []
        for ids, _ in predictor._tag(sentences, batch_size):
            out.append(from_spans(reader.spans(ids), len(ids), scheme) if scheme != model.scheme
                       else [labels[i] for i in ids])
        return out

    def warmup(self, predictor, data, batch_size, options):
        self.tag(predictor, data.payload[0][:WARMUP], batch_size, data.extra["scheme"])

    def score(self, predictor, data, batch_size, options):
        from nlpseq.metrics.spans import span_counts, span_scores

        sentences, gold = data.payload
        start = time.perf_counter()
        predicted = self.tag(predictor, sentences, batch_size, data.extra["scheme"])
        seconds = time.perf_counter() - start
        # iobes=True: conlleval's 2004 rules plus the IOBES variant's for S/E tags (identical on B/I/O tags)
        s = span_scores(span_counts(gold, predicted))
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "accuracy": s["accuracy"],
                "per_type": {t: v["f1"] for t, v in s["per_type"].items()}, "phrases": s["phrases"],
                "found": s["found"], "correct": s["correct"], "tokens": s["tokens"], "seconds": seconds}


class Translation(Task):
    name = "translation"
    metrics = ("bleu", "chrf")
    labels = {"bleu": "BLEU", "chrf": "chrF"}
    predict_skip = ("n_best", "attention")

    def defaults(self, model, run):
        return {"format": "auto", "src_key": run.get("src_key", "src"), "tgt_key": run.get("tgt_key", "tgt")}

    def check(self, opts, model):
        from nlpseq.data.parallel import PAIR_FORMATS

        check_choice("format", opts["format"], PAIR_FORMATS)
        for key in ("src_key", "tgt_key"):
            if not isinstance(opts[key], str) or not opts[key]:
                raise ConfigError(key, f"expected a column or field name, got {opts[key]!r}")
        return opts

    def read(self, spec, opts, model):
        from nlpseq.data.parallel import iter_split

        rows = list(iter_split(spec, opts["src_key"], opts["tgt_key"], opts["format"], option="data"))
        if not rows:
            raise DataError("no sentence pairs", spec_name(spec))
        return Data(spec_name(spec), len(rows), ([r[1] for r in rows], [r[2] for r in rows]))

    def warmup(self, predictor, data, batch_size, options):
        predictor.predict(data.payload[0][:WARMUP], batch_size=batch_size, **options)

    def score(self, predictor, data, batch_size, options):
        from nlpseq.metrics.bleu import corpus_scores

        sources, references = data.payload
        start = time.perf_counter()
        hypotheses = [t.translation for t in predictor.predict(sources, batch_size=batch_size, **options)]
        seconds = time.perf_counter() - start
        return {**corpus_scores(hypotheses, references), "seconds": seconds}


class Generation(Task):
    name = "generation"
    metrics = ("loss", "ppl", "bpc")
    labels = {"loss": "nats/token", "ppl": "perplexity", "bpc": "bits/char"}
    higher_is_better = False
    LOGITS = 1 << 24   # logits held at once (floats): bounds memory for large vocabularies
    WINDOW = 2048      # tokens per forward of one long sequence, the state carried (as the benchmark script)

    def defaults(self, model, run):
        mode = run.get("mode") or ("lines" if model.conditions else "stream")
        return {"format": "auto", "mode": mode, "text_column": run.get("text_column", "text"),
                "condition_column": run.get("condition_column"), "start": 0.0}

    def predict_options(self, predictor):
        return []  # nothing is generated: the members' forward passes score the text

    def check(self, opts, model):
        from nlpseq.data.lm import FORMATS, MODES

        check_choice("format", opts["format"], FORMATS)
        mode = check_choice("mode", opts["mode"], MODES)
        check_float("start", opts["start"], 0.0, 1.0, high_open=True)
        opts = {**opts, "text_column": _columns("text_column", opts["text_column"])}
        if opts["condition_column"] is not None:
            opts["condition_column"] = _columns("condition_column", opts["condition_column"])
        if model.conditions:
            if mode != "lines":
                raise ConfigError("mode", f"this model was trained with conditions ({', '.join(model.conditions)}), "
                                          f"which start each example's state: use mode=lines")
            if opts["condition_column"] is None:
                raise ConfigError("condition_column", f"this model was trained with conditions "
                                                      f"({', '.join(model.conditions)}): name the file's condition "
                                                      f"column (condition_column=...)")
        elif opts["condition_column"] is not None:
            raise ConfigError("condition_column", "this model was trained without conditions")
        return opts

    def read(self, spec, opts, model):
        import numpy as np

        from nlpseq.data.lm import detect_format, read_documents
        from nlpseq.data.token_store import PIECE_CHARS, Encoder, pieces
        from nlpseq.text.tokenizer import BOS_ID, EOS_ID

        path = _one_file(spec, self.name)
        fmt = detect_format(path, opts["format"])
        if fmt == "text" and opts["mode"] == "lines" and opts["format"] == "auto":
            fmt = "lines"  # a line-mode model reads plain text one example per line, as it was trained
        if opts["start"] and fmt != "text":
            raise ConfigError("start", f"applies to a plain-text file read whole (format=text), not to {fmt} data")
        docs = read_documents(path, fmt, opts["text_column"], opts["condition_column"])
        tok = model.tokenizer
        encoder = Encoder(tok)

        def encode(text: str) -> np.ndarray:
            parts = list(pieces([text], tok.kind)) if len(text) > PIECE_CHARS else [text]
            ids = encoder.encode(parts) if parts else []
            return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)

        bos, eos = np.array([BOS_ID]), np.array([EOS_ID])
        conds = None
        if fmt == "text":  # one document: the stream after <s>, from `start` (the script's held-out reading)
            text = docs.texts[0]
            seqs = [np.concatenate([bos, encode(text[int(len(text) * opts["start"]):])])]
            if len(seqs[0]) < 2:
                raise DataError(f"no text to score{' after start=' + str(opts['start']) if opts['start'] else ''}",
                                path)
        else:
            seqs = [np.concatenate([bos, encode(t), eos]) for t in docs.texts]
            if opts["mode"] == "stream":  # one stream <s> a </s> <s> b </s> ..., as stream-mode training reads it
                seqs = [np.concatenate(seqs)]
            elif model.conditions:
                known = model.conditions
                for c, (where, line) in zip(docs.conditions, docs.where):
                    if c not in known:
                        raise DataError(f"condition {c!r} was never seen in training (known: {known})", where, line)
                conds = [known.index(c) for c in docs.conditions]
        return Data(spec_name(spec), len(docs), (seqs, conds),
                    {"tokens": sum(int((s[1:] != BOS_ID).sum()) for s in seqs)})

    def warmup(self, predictor, data, batch_size, options):
        seqs, conds = data.payload
        self.log_probs(predictor.model, [seqs[0][:WARMUP * 8]], conds[:1] if conds else None, batch_size)

    @torch.inference_mode()
    def log_probs(self, model, seqs: list, conds: list[int] | None, batch_size: int) -> list[torch.Tensor]:
        """Per sequence, the model's log-probability of each token after the first (`<s>` targets left out)."""
        from nlpseq.data.collate import pad_ids
        from nlpseq.predictors.base import batches_by_length
        from nlpseq.text.tokenizer import BOS_ID

        device = next(model.parameters()).device
        vocab = model.tokenizer.vocab_size
        window = max(1, min(self.WINDOW, self.LOGITS // vocab))
        out: list[torch.Tensor | None] = [None] * len(seqs)
        short = [i for i, s in enumerate(seqs) if len(s) - 1 <= window]
        for i in (i for i, s in enumerate(seqs) if len(s) - 1 > window):  # long: windows, the state carried
            seq = torch.as_tensor(seqs[i], device=device)
            state, parts = None, []
            cond = torch.tensor([conds[i]], device=device) if conds is not None else None
            for a in range(0, len(seq) - 1, window):
                targets = seq[a + 1:a + 1 + window]
                logits, state = model(seq[a:a + len(targets)][None], state, conditions=cond if state is None else None)
                parts.append(torch.log_softmax(logits[0].float(), -1).gather(1, targets[:, None])[:, 0])
            out[i] = torch.cat(parts).cpu()
        lengths = [len(seqs[i]) - 1 for i in short]
        for rows in batches_by_length(lengths, batch_size, max(window, self.LOGITS // vocab)):
            picked = [short[r] for r in rows]
            inputs, n = pad_ids([seqs[i][:-1].tolist() for i in picked])
            targets, _ = pad_ids([seqs[i][1:].tolist() for i in picked])
            cond = torch.tensor([conds[i] for i in picked], device=device) if conds is not None else None
            if len(picked) == 1:  # no padding: the same call as a window of a long sequence
                logits, _ = model(inputs.to(device), None, conditions=cond)
            else:
                logits, _ = model(inputs.to(device), None, lengths=n, conditions=cond)
            lp = torch.log_softmax(logits.float(), -1).gather(2, targets.to(device)[..., None])[..., 0].cpu()
            for row, i in enumerate(picked):
                out[i] = lp[row, :int(n[row])]
        return [lp[torch.as_tensor(s[1:]) != BOS_ID] for lp, s in zip(out, seqs)]

    def score(self, predictor, data, batch_size, options):
        seqs, conds = data.payload
        start = time.perf_counter()
        each = [self.log_probs(m, seqs, conds, batch_size) for m in predictor.members]
        if len(each) == 1:
            per_seq = each[0]
        else:  # the mean of the members' probabilities, as the ensemble samples from
            per_seq = [torch.logsumexp(torch.stack(lps), 0) - math.log(len(lps)) for lps in zip(*each)]
        seconds = time.perf_counter() - start
        total = torch.cat(per_seq).double()
        loss = float(-total.mean())
        row = {"loss": loss, "ppl": math.exp(min(loss, 700.0)),
               "bpc": loss / math.log(2.0) if predictor.model.is_char_level else None,
               "tokens": int(total.numel()), "seconds": seconds}
        return row

    def rate(self, row, data):
        super().rate(row, data)
        row["tokens_per_s"] = row["tokens"] / row["seconds"] if row["seconds"] > 0 else None


TASKS: dict[str, type[Task]] = {"sentiment": Sentiment, "ner": Ner, "translation": Translation,
                                "generation": Generation}


# ---------------------------------------------------------------- evaluation

def _ckpt_list(ckpt) -> list[str]:
    if isinstance(ckpt, (list, tuple)):
        paths = [str(p) for p in ckpt]
    elif isinstance(ckpt, (str, Path)):
        parsed = _ckpt_paths(str(ckpt))
        paths = parsed if isinstance(parsed, list) else [parsed]
    else:
        raise ConfigError("ckpt", f"expected a checkpoint path (or several), got {ckpt!r}")
    if not paths or not all(paths):
        raise ConfigError("ckpt", "no checkpoint given")
    return paths


def _to_device(predictor, device: str) -> None:
    if not isinstance(device, str) or not device:
        raise ConfigError("device", f"expected a device name (cpu, cuda, cuda:1, ...), got {device!r}")
    try:
        predictor.to(torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as e:  # an unknown name, no CUDA build, no such GPU
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError("device", f"{device!r} cannot be used ({first})") from None


def evaluate(ckpt, data, batch_size: int = 64, device: str = "cpu", members: bool | None = None,
             progress: Callable[[str], None] | None = None, **options) -> dict:
    """Score a checkpoint, or several as an ensemble (and, with `members`, default True, each alone), on labelled
    files. `options`: the task's reading options and predictor options (module doc). Returns a dict: task,
    checkpoints, options, metrics (headline first), and per file its `models` (each member, then the ensemble:
    metrics, examples, seconds, sentences_per_s) and, for an ensemble scored with its members, `ensemble_gain`
    (the ensemble's metrics minus the members' mean). `progress` gets a line after each model and file."""
    paths = _ckpt_list(ckpt)
    specs = data_specs(data)
    check_int("batch_size", batch_size, minimum=1)
    members = len(paths) > 1 if members is None else check_bool("members", members) and len(paths) > 1
    predictor = load(paths if len(paths) > 1 else paths[0])
    _to_device(predictor, device)
    task = TASKS[predictor.task]()
    model = predictor.model
    read_opts = task.defaults(model, run_settings(paths[0]))
    predict_keys = task.predict_options(predictor)
    unknown = [k for k in options if k not in read_opts and k not in predict_keys]
    if unknown:
        known = ", ".join([*COMMON, *read_opts, *predict_keys])
        raise ConfigError(unknown[0], f"unknown option for {task.name} (known: {known})")
    read_opts = task.check({**read_opts, **{k: v for k, v in options.items() if k in read_opts}}, model)
    predict_opts = {k: v for k, v in options.items() if k in predict_keys}
    if task.name == "translation" and predict_opts.get("beam_size") is None:
        predict_opts["beam_size"] = model.search_cfg["beam_size"]  # recorded: the default comes from the checkpoint
    datasets = []
    for spec in specs:  # every file is read (and its labels checked) before any model is run
        try:
            datasets.append(task.read(spec, read_opts, model))
        except ConfigError as e:  # the readers name training's keys (data.format): here they are plain options
            if e.key.startswith("data.") and e.key[5:] in read_opts:
                raise ConfigError(e.key[5:], e.detail) from None
            raise
    if len(paths) == 1:
        runs = [(paths[0], paths, predictor)]
    else:  # each member alone (a predictor of its module alone, no second load), then the ensemble
        runs = [(p, [p], type(predictor)(m)) for p, m in zip(paths, predictor.members)] if members else []
        runs.append((f"ensemble of {len(paths)}", paths, predictor))
    results = []
    for data in datasets:
        rows = []
        for name, ckpts, p in runs:
            task.warmup(p, data, batch_size, predict_opts)
            row = {"model": name, "checkpoints": ckpts, **task.score(p, data, batch_size, predict_opts),
                   "examples": data.examples}
            task.rate(row, data)
            rows.append(row)
            if progress is not None:
                progress(f"{data.name}: {name}: " + ", ".join(
                    f"{task.labels[m]} {row[m]:.4f}" for m in task.metrics[:2] if row.get(m) is not None)
                    + f" ({row['seconds']:.1f} s)")
        result = {"data": data.name, "examples": data.examples, **data.extra, "models": rows}
        if members:
            result["ensemble_gain"] = {m: rows[-1][m] - sum(r[m] for r in rows[:-1]) / (len(rows) - 1)
                                       for m in task.metrics if rows[-1].get(m) is not None}
        results.append(result)
    return {"task": task.name, "checkpoints": paths, "device": device, "batch_size": batch_size,
            "options": {**read_opts, **predict_opts}, "metrics": list(task.metrics),
            "higher_is_better": task.higher_is_better, "results": results}


# ---------------------------------------------------------------- output

def _number(metric: str, value) -> str:
    if value is None:
        return "-"
    if metric in ("bleu", "chrf"):
        return f"{value:.2f}"
    if metric == "ppl":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _rate(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headings, rows, footnote) per file: the table `main` prints."""
    task = TASKS[report["task"]]
    metrics = [m for m in task.metrics if any(r.get(m) is not None for res in report["results"] for r in res["models"])]
    out = []
    for res in report["results"]:
        gen = report["task"] == "generation"
        headings = ["model", *(task.labels[m] for m in metrics), "examples",
                    *(["tokens", "tokens/s"] if gen else ["sentences/s"])]
        rows = [[r["model"], *(_number(m, r.get(m)) for m in metrics), f"{r['examples']:,}",
                 *([f"{r['tokens']:,}", _rate(r["tokens_per_s"])] if gen else [_rate(r["sentences_per_s"])])]
                for r in res["models"]]
        note = ""
        if "ensemble_gain" in res:
            note = "ensemble - mean of members: " + ", ".join(
                f"{task.labels[m]} {v:+.4f}" if m not in ("bleu", "chrf") else f"{task.labels[m]} {v:+.2f}"
                for m, v in res["ensemble_gain"].items())
        out.append((f"{res['data']} ({res['examples']:,} examples)", headings, rows, note))
    return out


def print_tables(report: dict, stream=None) -> None:
    stream = stream or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but the plain table needs nothing
        Console = None
    for title, headings, rows, note in tables(report):
        if Console is not None:
            console = Console(file=stream, width=None if stream.isatty() else 200, highlight=False)
            table = Table(title=title, title_justify="left")
            for i, h in enumerate(headings):
                table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print(table)
            if note:
                console.print(note)
            continue
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        print(title, fmt(headings), *(fmt(r) for r in rows), *([note] if note else []), "", sep="\n", file=stream)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    args: dict = {}
    try:
        for arg in argv:
            if "=" not in arg:
                raise ConfigError(arg, f"expected key=value; {USAGE}")
        args = parse_args(argv, raw=(*RAW_KEYS, "data"))
        for key in ("ckpt", "data"):
            if key not in args or not str(args[key]).strip():
                raise ConfigError(key, f"missing; {USAGE}")
        target = str(args.pop("output", ""))
        options = dict(args)
        if target and target != "-":
            if Path(target).is_dir():
                raise ConfigError("output", f"{target} is a folder; name a file for the JSON results")
            files = [f for s in data_specs(args["data"]) for f in (s.values() if isinstance(s, dict) else [s])]
            if any(_exists(f) and Path(f).resolve() == Path(target).resolve() for f in files):
                raise ConfigError("output", f"{target} is a data file (it would be overwritten)")
        report = evaluate(options.pop("ckpt"), options.pop("data"), progress=lambda line: print(line, file=sys.stderr),
                          **options)
        text = json.dumps(report, indent=2) + "\n"
        if target == "-":
            sys.stdout.write(text)
            return 0
        print_tables(report)
        if target:
            from nlpseq.utils.io import atomic_write_text

            atomic_write_text(target, text)
            print(f"wrote the results to {target}", file=sys.stderr)
        return 0
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not _out_of_memory(e):
            raise
        sizes = ", ".join(f"{k}={args[k]}" for k in ("batch_size", "beam_size") if k in args)
        print(f"error: out of memory while evaluating ({sizes or 'default options'}); lower batch_size (or "
              f"beam_size). {str(e).splitlines()[0] if str(e) else ''}".rstrip(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
