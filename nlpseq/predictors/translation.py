"""Translation inference: source sentences -> translations (optionally n-best lists and attention matrices).

    p = nlpseq.load("best.ckpt")
    p.predict("Ein Mann fährt Fahrrad .")                      # Translation(source, translation, score, ...)
    p.predict(texts, beam_size=5, n_best=3, attention=True)    # + .nbest [Hypothesis] and .attention

`python -m nlpseq.predict ckpt=best.ckpt input=src.txt output=out.txt output_format=text beam_size=5`
translates a file (or stdin) line by line, in length-sorted batches; `plot_attention=attn.png` also
writes an attention heatmap per input line (see nlpseq.plots).

Bad input: an empty (or blank) line translates to an empty string without running the model;
characters never seen in training become <unk> (and are left out of the output); a string that is not
valid Unicode (a lone surrogate) is an NlpseqError.

Long input: a source longer than twice the longest training source (in tokens; 256 for checkpoints
that do not record it) is split into sentences (after . ! ? … and the like, followed by white space; after
。！？ directly), a sentence still too long into consecutive windows of that many tokens, and each
piece is translated on its own: `translation` joins the pieces' translations with spaces, `score` is
the mean of their scores, `pieces` says how many there were. So a 100,000-character text costs
memory and decoding steps in proportion to its length, never a 20k x 20k attention. With
attention=True (one matrix per input) such a source is truncated instead, with a warning, and
`truncated` is set.

Ensembles: `nlpseq.load([a, b, ...])` (or `ckpt=a,b` on the command line) decodes with several translators
that share their tokenizers, e.g. one recipe trained with different seeds: at every step the search takes the
mean of their next-token probabilities (OpenNMT's ensemble decoding); `attention` is their mean.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, TextIO

import torch

from nlpseq.data.collate import pad_ids
from nlpseq.errors import ConfigError, check_bool, check_choice, check_float, check_int
from nlpseq.models.seq2seq import check_ensemble, search
from nlpseq.predictors.base import Predictor, _chunks, batches_by_length, json_line
from nlpseq.text.tokenizer import EOS_ID

log = logging.getLogger("nlpseq")
TRUNCATE_FACTOR = 2  # sources longer than this times the longest training source are split (or cut)
DEFAULT_LIMIT = 256  # the same limit in tokens for checkpoints without the longest training source
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…؟۔।])\s+|(?<=[。！？])\s*")
OUTPUT_FORMATS = ("json", "text")


@dataclass
class Hypothesis:
    translation: str
    score: float


@dataclass
class Translation:
    """One translated sentence. `score`: the best hypothesis' log-probability (greedy) or its
    length-normalised log-probability (beam search). `nbest` (n_best > 1): hypotheses best first.
    `attention` (attention=True): weights [output token][source token] over `output_tokens` (the
    subword tokens produced, '</s>' last when the hypothesis ended) and `source_tokens` ('</s>' last)."""

    source: str
    translation: str
    score: float
    nbest: list[Hypothesis] | None = None
    attention: list[list[float]] | None = None
    source_tokens: list[str] | None = None
    output_tokens: list[str] | None = None
    truncated: bool = False
    pieces: int | None = None  # a long source translated in this many pieces (None: in one)


@dataclass
class _Options:
    beam_size: int
    n_best: int
    length_penalty: float
    max_len_ratio: float
    max_len_offset: int = field(default=10)


class TranslationPredictor(Predictor):
    task = "translation"

    @classmethod
    def ensemble(cls, models: Sequence[torch.nn.Module], paths: Sequence[str]) -> "TranslationPredictor":
        """Translators that decode together (the mean of their next-token probabilities at every step); they
        must share their tokenizers (`nlpseq.models.seq2seq.check_ensemble`)."""
        check_ensemble(models, paths)
        return cls(models[0], models[1:])

    def _options(self, beam_size, n_best, length_penalty, max_len_ratio) -> _Options:
        cfg = self.model.search_cfg
        for key, value in (("length_penalty", length_penalty), ("max_len_ratio", max_len_ratio)):
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range check
                raise ConfigError(key, f"must be a finite number, got {value}")
        beam = check_int("beam_size", cfg["beam_size"] if beam_size is None else beam_size, minimum=1)
        n = check_int("n_best", 1 if n_best is None else n_best, minimum=1)
        if n > beam:
            raise ConfigError("n_best", f"must be <= beam_size ({beam}), got {n}")
        lp = check_float("length_penalty", cfg["length_penalty"] if length_penalty is None else length_penalty, 0.0)
        ratio = check_float("max_len_ratio", cfg["max_len_ratio"] if max_len_ratio is None else max_len_ratio,
                            0.0, low_open=True)
        return _Options(beam, n, lp, ratio, cfg["max_len_offset"])

    @torch.inference_mode()
    def predict(self, texts, batch_size: int = 64, beam_size: int | None = None, n_best: int | None = None,
                length_penalty: float | None = None, max_len_ratio: float | None = None, attention: bool = False,
                precision: str = "fp32"):
        """One `Translation` per text (a single one for a single string). Unset search options come from
        the checkpoint's `search` settings (beam 5 by default); beam_size=1 is greedy search.
        precision="bf16" decodes with bfloat16 matrix multiplies (faster on CPUs with AVX512-BF16 and on GPUs;
        translations can differ slightly from fp32)."""
        check_int("batch_size", batch_size, minimum=1)
        check_bool("attention", attention)
        check_choice("precision", precision, ("fp32", "bf16"))
        opts = self._options(beam_size, n_best, length_penalty, max_len_ratio)
        texts, single = self.check_texts(texts)
        model = self.model
        results: list[Translation | None] = [None] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for i in set(range(len(texts))) - set(todo):
            results[i] = Translation(texts[i], "", 0.0, [Hypothesis("", 0.0)] if opts.n_best > 1 else None,
                                     [] if attention else None, [] if attention else None,
                                     [] if attention else None)
        ids = model.src_tokenizer.encode_batch([texts[i] for i in todo], add_eos=True)
        limit = TRUNCATE_FACTOR * model.max_src_length if model.max_src_length else DEFAULT_LIMIT
        pieces: list[tuple[int, list[int]]] = []  # (index into todo, source ids with </s>)
        truncated = set()
        for k, seq in enumerate(ids):
            if len(seq) <= limit:
                pieces.append((k, seq))
            elif attention:
                pieces.append((k, seq[:limit - 1] + [EOS_ID]))
                truncated.add(k)
            else:
                pieces.extend((k, p) for p in self._split(texts[todo[k]], limit))
        if truncated:
            log.warning("translation: %d source line(s) longer than %d tokens (twice the longest training "
                        "source) were truncated", len(truncated), limit)
        done: list[tuple | None] = [None] * len(pieces)  # per piece: (texts, scores, best ids, ended, weights)
        device = self.device
        for batch in batches_by_length([len(p) for _, p in pieces], batch_size):
            src, lengths = pad_ids([pieces[j][1] for j in batch])
            result, weights = search(self.members, src.to(device), lengths, opts.beam_size, opts.n_best,
                                     opts.length_penalty, opts.max_len_ratio, opts.max_len_offset,
                                     attention=attention, precision=precision)
            scores = result.scores.float().cpu().tolist()
            ended = result.ended[:, 0].cpu().tolist()
            for row, j in enumerate(batch):
                hyps = result.tokens[row] or [[]]
                w = weights[row].float().cpu() if attention and weights is not None else None
                done[j] = (model.detokenize(hyps), scores[row], hyps[0], ended[row], w)
        by_text: dict[int, list[int]] = {}
        for j, (k, _) in enumerate(pieces):
            by_text.setdefault(k, []).append(j)
        for k, js in by_text.items():
            if len(js) > 1:
                results[todo[k]] = self._joined(texts[todo[k]], [done[j] for j in js], opts.n_best)
                continue
            texts_out, scores, best, ended, w = done[js[0]]
            out = Translation(texts[todo[k]], texts_out[0], round(scores[0], 6), truncated=k in truncated)
            if opts.n_best > 1:
                out.nbest = [Hypothesis(t, round(x, 6)) for t, x in zip(texts_out, scores)]
            if attention:
                tok = model.tgt_tokenizer.id_to_token
                src_ids = pieces[js[0]][1]
                out.source_tokens = [model.src_tokenizer.id_to_token(i) for i in src_ids]
                out.output_tokens = [tok(i) for i in best] + (["</s>"] if ended else [])
                if w is not None:
                    out.attention = [[round(x, 5) for x in r] for r in w[:len(out.output_tokens), :len(src_ids)].tolist()]
            results[todo[k]] = out
        return results[0] if single else results

    def _split(self, text: str, limit: int) -> list[list[int]]:
        """Source ids (each with </s>, at most `limit` tokens) of the sentences of a long text, a sentence
        still too long cut into consecutive windows."""
        sentences = [x for x in _SENTENCE_BREAK.split(text) if x.strip()]
        out = []
        for seq in self.model.src_tokenizer.encode_batch(sentences):
            out.extend(seq[s:s + limit - 1] + [EOS_ID] for s in range(0, len(seq), limit - 1))
        return out or [[EOS_ID]]

    @staticmethod
    def _joined(source: str, done: list[tuple], n_best: int) -> Translation:
        """One Translation of a source translated in pieces: hypothesis i joins the pieces' i-th ones."""
        def join(i: int) -> tuple[str, float]:
            texts = [d[0][min(i, len(d[0]) - 1)] for d in done]
            scores = [d[1][min(i, len(d[1]) - 1)] for d in done]
            return " ".join(t for t in texts if t), round(sum(scores) / len(scores), 6)

        text, score = join(0)
        nbest = [Hypothesis(*join(i)) for i in range(n_best)] if n_best > 1 else None
        return Translation(source, text, score, nbest, pieces=len(done))

    def predict_file(self, lines: Iterable[str], out: TextIO, batch_size: int = 64, beam_size: int | None = None,
                     n_best: int | None = None, length_penalty: float | None = None,
                     max_len_ratio: float | None = None, output_format: str = "json",
                     plot_attention: str | None = None, precision: str = "fp32") -> int:
        """Translate each line. output_format=json: one JSON object per line (None fields left out);
        text: the translation per line (with n_best > 1: `i ||| translation ||| score`, n_best lines per input).
        plot_attention=PATH.png writes the attention heatmap of each line (PATH-<line>.png when several)."""
        check_choice("output_format", output_format, OUTPUT_FORMATS)
        plots: list[tuple[int, Translation]] = []
        n = 0
        for chunk in _chunks((line.rstrip("\r\n") for line in lines), 4096):
            results = self.predict(chunk, batch_size=batch_size, beam_size=beam_size, n_best=n_best,
                                   length_penalty=length_penalty, max_len_ratio=max_len_ratio,
                                   attention=plot_attention is not None, precision=precision)
            for r in results:
                if plot_attention is not None:
                    plots.append((n + 1, r))
                    if output_format == "json":  # the matrix goes to the picture, not the output
                        r = Translation(r.source, r.translation, r.score, r.nbest, truncated=r.truncated,
                                        pieces=r.pieces)
                if output_format == "text":
                    if r.nbest:
                        out.writelines(f"{n} ||| {h.translation} ||| {h.score}\n" for h in r.nbest)
                    else:
                        out.write(r.translation + "\n")
                else:
                    out.write(json_line({k: v for k, v in asdict(r).items() if v is not None}))
                n += 1
        out.flush()
        if plot_attention is not None:
            from nlpseq.plots import plot_attention as plot

            path = Path(plot_attention)
            for lineno, r in plots:
                target = path if len(plots) == 1 else path.with_name(f"{path.stem}-{lineno}{path.suffix}")
                plot(r, target)
        return n
