"""Generation scoring: held-out text -> nats per token, perplexity and bits per character of the model (an
ensemble: the mean of its members' probabilities)."""
from __future__ import annotations

import math
import time

import torch

from nlpseq.errors import ConfigError, DataError, check_choice, check_float
from nlpseq.evaluation.base import Data, Task, WARMUP, columns, one_file, spec_name


class Generation(Task):
    name = "generation"
    metrics = ("loss", "ppl", "bpc")
    labels = {"loss": "nats/token", "ppl": "perplexity", "bpc": "bits/char"}
    higher_is_better = False
    LOGITS = 1 << 24   # logits held at once (floats): bounds memory for large vocabularies
    WINDOW = 2048      # tokens per forward of one long sequence, the state carried (as the benchmark script)

    def defaults(self, model, run):
        given = {**run, **getattr(model, "reader", {})}  # the checkpoint's settings (newer ones), else the run's
        mode = given.get("mode") or ("lines" if model.conditions else "stream")
        return {"format": "auto", "mode": mode, "text_column": given.get("text_column", "text"),
                "condition_column": given.get("condition_column"), "start": 0.0}

    def predict_options(self, predictor):
        return []  # nothing is generated: the members' forward passes score the text

    def check(self, opts, model):
        from nlpseq.data.lm import FORMATS, MODES

        check_choice("format", opts["format"], FORMATS)
        mode = check_choice("mode", opts["mode"], MODES)
        check_float("start", opts["start"], 0.0, 1.0, high_open=True)
        opts = {**opts, "text_column": columns("text_column", opts["text_column"])}
        if opts["condition_column"] is not None:
            opts["condition_column"] = columns("condition_column", opts["condition_column"])
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

        path = one_file(spec, self.name)
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
