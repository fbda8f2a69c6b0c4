"""NER scoring: CoNLL column files or JSON lines -> span precision/recall/F1 counted as conlleval counts them
(`nlpseq.metrics.spans`), tag accuracy, F1 per type."""
from __future__ import annotations

import time

from nlpseq.errors import ConfigError, DataError, check_bool, check_choice, check_int
from nlpseq.evaluation.base import Data, Task, WARMUP, one_file, spec_name


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

        path = one_file(spec, self.name)
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

    def warmup(self, predictor, data, batch_size, options):
        predictor.tag_tokens(data.payload[0][:WARMUP], batch_size, data.extra["scheme"])

    def score(self, predictor, data, batch_size, options):
        from nlpseq.metrics.spans import span_counts, span_scores

        sentences, gold = data.payload
        start = time.perf_counter()
        predicted = predictor.tag_tokens(sentences, batch_size, data.extra["scheme"])
        seconds = time.perf_counter() - start
        # iobes=True: conlleval's 2004 rules plus the IOBES variant's for S/E tags (identical on B/I/O tags)
        s = span_scores(span_counts(gold, predicted))
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "accuracy": s["accuracy"],
                "per_type": {t: v["f1"] for t, v in s["per_type"].items()}, "phrases": s["phrases"],
                "found": s["found"], "correct": s["correct"], "tokens": s["tokens"], "seconds": seconds}
