"""Translation scoring: pairs (a TSV/JSONL table or two aligned files) -> sacreBLEU and chrF of the detokenized
translations against the raw references."""
from __future__ import annotations

import time

from nlpseq.errors import ConfigError, DataError, check_choice
from nlpseq.evaluation.base import Data, Task, WARMUP, spec_name


class Translation(Task):
    name = "translation"
    metrics = ("bleu", "chrf")
    labels = {"bleu": "BLEU", "chrf": "chrF"}
    predict_skip = ("n_best", "attention")

    def defaults(self, model, run):
        given = {**run, **getattr(model, "reader", {})}  # the checkpoint's fields (newer ones), else the run's
        return {"format": "auto", "src_key": given.get("src_key", "src"), "tgt_key": given.get("tgt_key", "tgt")}

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
