"""Generation inference: prompts (or a start symbol, or a condition) -> sampled, greedy or beam continuations.

    gen = nlpseq.load("best.ckpt")
    gen.generate("ROMEO:", max_new_tokens=200, temperature=0.8, top_p=0.9, seed=1)   # -> str (prompt + text)
    gen.generate(["", "JULIET:"], num_samples=3)                                    # -> list of lists of str
    gen.predict(["ROMEO:"], beam_size=5, num_samples=2)                             # -> [Generation]

Bad input has defined behaviour: an empty prompt starts from the start symbol alone; prompt characters
never seen in training become <unk> (listed in `Generation.unknown`); temperature 0 is greedy,
below 0 an error; top_p must lie in (0, 1]; a condition the model does not know is an error; a prompt
that is not valid Unicode (a lone surrogate) is an NlpseqError.

Big input: the model reads a prompt in windows of 4,096 tokens carrying its state (memory stays bounded), at
most its last MAX_PROMPT_TOKENS (1,000,000) tokens (`Generation.truncated` says it did not read all of it; the
output still starts with the whole prompt), and prompts are
batched in order, at most `batch_size` sequences and MAX_BATCH_TOKENS padded prompt tokens at a time,
so memory stays bounded for a 100,000-character prompt or 10,000 prompts in one call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence, TextIO

import torch

from nlpseq.data.files import parse_json
from nlpseq.errors import ConfigError, DataError, check_choice, check_int
from nlpseq.models.language_model import check_decoding, check_ensemble, continuation_text, generate_ids
from nlpseq.predictors.base import Predictor, _chunks, json_line
from nlpseq.text.tokenizer import UNK_ID

MAX_PROMPT_TOKENS = 1_000_000  # the model reads the last this many tokens of a longer prompt (in windows)
MAX_BATCH_TOKENS = 64 * 1024  # padded prompt tokens per batch, on top of batch_size


@dataclass
class Generation:
    """Continuations of one prompt: `texts[k]` follows the prompt (best first for beam search, which
    returns fewer than num_samples when fewer continuations exist, e.g. with max_new_tokens=0)."""

    prompt: str
    texts: list[str]
    scores: list[float]           # summed log-probabilities of the generated tokens (end symbol included)
    ended: list[bool]             # stopped at the end symbol (False: cut at max_new_tokens)
    condition: str | None = None
    unknown: list[str] = field(default_factory=list)  # prompt tokens never seen in training (fed as <unk>)
    truncated: bool = False       # the model read only the prompt's last MAX_PROMPT_TOKENS tokens

    @property
    def full_texts(self) -> list[str]:
        return [self.prompt + t for t in self.texts]


class GenerationPredictor(Predictor):
    task = "generation"

    @classmethod
    def ensemble(cls, models: Sequence[torch.nn.Module], paths: Sequence[str]) -> "GenerationPredictor":
        """Language models that generate together from the mean of their next-token probabilities; they must
        share their tokenizer and conditions (`nlpseq.models.language_model.check_ensemble`)."""
        check_ensemble(models, paths)
        return cls(models[0], models[1:])

    # ---------------------------------------------------------------- inputs
    def _conditions(self, condition, n: int) -> tuple[list[str | None], torch.Tensor | None]:
        known = self.model.conditions
        if condition is None or isinstance(condition, (str, int)) and not isinstance(condition, bool):
            conds = [None if condition is None else str(condition)] * n
        elif isinstance(condition, (list, tuple)):
            if len(condition) != n:
                raise ConfigError("condition", f"got {len(condition)} conditions for {n} prompts")
            conds = [None if c is None else str(c) for c in condition]
        else:
            raise ConfigError("condition", f"expected a string or a list of strings, got {type(condition).__name__}")
        if not known:
            if any(c is not None for c in conds):
                raise ConfigError("condition", "this model was trained without conditions")
            return conds, None
        ids = []
        for c in conds:
            if c is None:
                raise ConfigError("condition",
                                  f"this model was trained with conditions: pass one of {', '.join(known)}")
            if c not in known:
                raise ConfigError("condition", f"{c!r} is not a condition this model knows ({', '.join(known)})")
            ids.append(known.index(c))
        return conds, torch.tensor(ids, dtype=torch.long)

    def _encode(self, text: str) -> tuple[list[int], list[str], bool]:
        """(ids the model reads: the last MAX_PROMPT_TOKENS, unknown prompt tokens, whether ids were cut)."""
        enc = self.model.tokenizer.hf.encode(text, add_special_tokens=False)
        unknown = [text[s:e] for i, (s, e) in zip(enc.ids, enc.offsets) if i == UNK_ID]
        return list(enc.ids[-MAX_PROMPT_TOKENS:]), unknown, len(enc.ids) > MAX_PROMPT_TOKENS

    # ---------------------------------------------------------------- the work
    @torch.inference_mode()
    def _run(self, prompts: list[str], conds: list[str | None], cond_ids: torch.Tensor | None, batch_size: int,
             generator: torch.Generator | None, options: dict) -> list[Generation]:
        tok = self.model.tokenizer
        per_batch = max(1, batch_size // (options["num_samples"] if options["beam_size"] == 1 else 1))
        results: list[Generation] = []
        start, pending = 0, None
        while start < len(prompts):
            # in order: up to per_batch prompts, fewer when their padded length passes MAX_BATCH_TOKENS
            encoded, longest = [], 0
            while start + len(encoded) < len(prompts) and len(encoded) < per_batch:
                j = start + len(encoded)
                item, pending = pending or self._encode(prompts[j]), None
                if encoded and (len(encoded) + 1) * max(longest, len(item[0])) > MAX_BATCH_TOKENS:
                    pending = item  # starts the next batch
                    break
                encoded.append(item)
                longest = max(longest, len(item[0]))
            stop = start + len(encoded)
            c = cond_ids[start:stop].to(self.device) if cond_ids is not None else None
            out = generate_ids(self.members, [ids for ids, _, _ in encoded], c, generator=generator, **options)
            scores, ended = out.scores.tolist(), out.ended.tolist()
            for i, (prompt, (ids, unknown, cut), hyps) in enumerate(zip(prompts[start:stop], encoded, out.tokens)):
                texts = [continuation_text(tok, ids, h) for h in hyps]
                k = len(texts)
                results.append(Generation(prompt, texts, [round(s, 4) for s in scores[i][:k]], ended[i][:k],
                                          conds[start + i], unknown, cut))
            start = stop
        return results

    def _prepare(self, texts, condition, batch_size: int, options: dict):
        check_int("batch_size", batch_size, minimum=1)
        for key in ("temperature", "top_p", "length_penalty"):  # NaN passes every range check
            value = options[key]
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {value}")
        check_decoding(options["max_new_tokens"], options["temperature"], options["top_k"], options["top_p"],
                       options["num_samples"], options["beam_size"], options["length_penalty"])
        prompts, single = self.check_texts(texts, what="prompt")
        conds, cond_ids = self._conditions(condition, len(prompts))
        seed = options.pop("seed")
        generator = None
        if seed is not None:
            check_int("seed", seed)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return prompts, single, conds, cond_ids, generator

    def predict(self, texts="", batch_size: int = 64, max_new_tokens: int = 200, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                num_samples: int = 1, beam_size: int = 1, length_penalty: float = 1.0, condition=None,
                stop_at_eos: bool = True):
        """One `Generation` per prompt (a single one for a single string).

        condition: one label for all prompts, or a list with one per prompt (models trained with
        conditions only). seed: reproducible samples for the same prompts, options and batch_size.
        """
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       num_samples=num_samples, beam_size=beam_size, length_penalty=length_penalty,
                       stop_at_eos=stop_at_eos)
        prompts, single, conds, cond_ids, generator = self._prepare(texts, condition, batch_size, options)
        results = self._run(prompts, conds, cond_ids, batch_size, generator, options)
        return results[0] if single else results

    def generate(self, prompts="", max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, num_samples: int = 1, beam_size: int = 1,
                 length_penalty: float = 1.0, condition=None, stop_at_eos: bool = True, batch_size: int = 64):
        """Prompt + continuation as plain strings.

        A single prompt gives a string (a list of num_samples strings if num_samples > 1); a list of
        prompts gives a list of those.
        """
        results = self.predict(prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                               num_samples=num_samples, beam_size=beam_size, length_penalty=length_penalty,
                               condition=condition, stop_at_eos=stop_at_eos)

        def texts(g: Generation):
            return g.full_texts[0] if num_samples == 1 else g.full_texts

        return texts(results) if isinstance(results, Generation) else [texts(g) for g in results]

    # ---------------------------------------------------------------- the CLI
    def predict_file(self, lines: Iterable[str], out: TextIO, batch_size: int = 64, max_new_tokens: int = 200,
                     temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                     seed: int | None = None, num_samples: int = 1, beam_size: int = 1,
                     length_penalty: float = 1.0, condition=None, stop_at_eos: bool = True,
                     format: str = "jsonl", source: str | None = None) -> int:
        """One prompt per line (an empty line: the start symbol alone; a JSON object line
        {"prompt": ..., "condition": ...} allows newlines in prompts and a condition per prompt).

        format=jsonl writes one JSON object per prompt; format=text writes each sample (prompt included)
        followed by a blank line.
        """
        check_choice("format", format, ("jsonl", "text"))
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       num_samples=num_samples, beam_size=beam_size, length_penalty=length_penalty,
                       stop_at_eos=stop_at_eos)
        _, _, _, _, generator = self._prepare([], None, batch_size, options)
        n = 0
        where = source or "<input>"
        parsed = (_parse_line(line.rstrip("\r\n"), condition, where, i) for i, line in enumerate(lines, 1))
        for chunk in _chunks(parsed, 4096):
            prompts = [p for p, _ in chunk]
            conds, cond_ids = self._conditions([c for _, c in chunk], len(chunk))
            for result in self._run(prompts, conds, cond_ids, batch_size, generator, dict(options)):
                if format == "jsonl":
                    out.write(json_line(result))
                else:
                    for text in result.full_texts:
                        out.write(text + "\n\n")
                n += 1
        out.flush()
        return n


def _parse_line(line: str, default_condition, source: str = "<input>", lineno: int | None = None
                ) -> tuple[str, object]:
    if line.startswith("{"):
        try:
            obj = parse_json(line)
        except ValueError:
            return line, default_condition  # a prompt that merely starts with '{'
        if isinstance(obj, dict) and "prompt" in obj:
            prompt = obj["prompt"]
            if not isinstance(prompt, str):
                raise DataError(f"\"prompt\" must be a string, got {type(prompt).__name__}", source, lineno)
            return prompt, obj.get("condition", default_condition)
    return line, default_condition
