"""Tiny Shakespeare benchmark helpers (run from the repository root; see benchmark.sh).

  python tasks/generation/benchmark.py report --run RUN_DIR
      best validation loss / bpc and tokens trained from a finished run's metrics.csv
  python tasks/generation/benchmark.py throughput [--experiment generation_shakespeare_cpu] [--steps 20]
      training tokens/s of the nlpseq path (Lightning Trainer + LanguageModel + stream data module) against
      a plain PyTorch loop of the same LSTM (same windows, carried state, Adam, gradient clipping),
      alternated --repeats times so load on a shared machine hits both alike
  python tasks/generation/benchmark.py sampling --ckpt CKPT
      sampling tokens/s: one prompt, and 64 samples in one batch; greedy and beam 5
  python tasks/generation/benchmark.py ensemble --ckpt A B [...] [--text FILE] [--start 0.9]
      held-out loss (nats/char) of each checkpoint and of their ensemble (the mean of the members'
      next-token probabilities, as `nlpseq.load([A, B])` samples from): the text from --start (a fraction
      of its characters; 0.9 = the recipes' validation split) read as one stream after <s>, state carried
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def report(run: Path) -> None:
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    vals = [(float(r["val/loss"]), int(r["step"]), r) for r in rows if r.get("val/loss")]
    if not vals:
        print("no validation rows in metrics.csv")
        return
    loss, step, row = min(vals, key=lambda v: v[0])
    from omegaconf import OmegaConf

    data = OmegaConf.load(run / ".hydra" / "config.yaml").data  # this run's rows x window
    tokens = (max(int(r["step"]) for r in rows) + 1) * int(data.batch_size) * int(data.seq_len)
    print(f"best val/loss {loss:.4f} nats/char = {loss / math.log(2):.4f} bpc (ppl {math.exp(loss):.3f}) "
          f"at step {step}; {len(vals)} validations; ~{tokens:,} training tokens")


def _config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from nlpseq.config import conf_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


def _data_and_model(experiment: str):
    from hydra.utils import instantiate

    cfg = _config([f"experiment={experiment}"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare(None)
    model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
    return cfg, dm, model


class _Timer:
    """Times training batches only (first `skip` batches are warm-up)."""

    def __init__(self, skip: int = 2):
        import pytorch_lightning as pl

        timer = self

        class Callback(pl.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if batch_idx == skip:
                    timer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                timer.end, timer.batches = time.perf_counter(), batch_idx + 1 - skip

        self.callback = Callback()
        self.start = self.end = 0.0
        self.batches = 0


def lightning_tokens_per_s(cfg, dm, model, steps: int) -> float:
    import pytorch_lightning as pl

    timer = _Timer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps + 2,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer.callback],
                         gradient_clip_val=cfg.trainer.gradient_clip_val, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    return timer.batches * cfg.data.batch_size * cfg.data.seq_len / (timer.end - timer.start)


def plain_tokens_per_s(cfg, dm, steps: int) -> float:
    """The same network in plain PyTorch: nn.Embedding -> nn.LSTM -> dropout -> nn.Linear."""
    from nlpseq.data.lm import IGNORE, batchify

    m = cfg.model
    vocab = dm.tokenizer.vocab_size
    emb = torch.nn.Embedding(vocab, m.embedding.dim)
    lstm = torch.nn.LSTM(m.embedding.dim, m.decoder.hidden_size, m.decoder.num_layers, batch_first=True,
                         dropout=m.decoder.dropout if m.decoder.num_layers > 1 else 0.0)
    drop, out = torch.nn.Dropout(m.decoder.dropout), torch.nn.Linear(m.decoder.hidden_size, vocab)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=m.optim.lr)
    data = torch.from_numpy(batchify(dm.streams["train"], cfg.data.batch_size))
    T, state, start = cfg.data.seq_len, None, 0.0
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        x, y = data[:, i * T:(i + 1) * T], data[:, i * T + 1:(i + 1) * T + 1]
        y = y.masked_fill(y == 2, IGNORE)
        h, state = lstm(emb(x), state)
        state = tuple(s.detach() for s in state)
        logits = out(drop(h))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val)
        opt.step()
    return steps * cfg.data.batch_size * T / (time.perf_counter() - start)


def throughput(experiment: str, steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    cfg, dm, _ = _data_and_model(experiment)
    ours, plain = [], []
    for r in range(repeats):
        from hydra.utils import instantiate

        model = instantiate(cfg.model, _convert_="all", **dm.model_inputs())
        ours.append(lightning_tokens_per_s(cfg, dm, model, steps))
        plain.append(plain_tokens_per_s(cfg, dm, steps))
        print(f"repeat {r + 1}: nlpseq {ours[-1]:,.0f} tokens/s, plain PyTorch {plain[-1]:,.0f} tokens/s", flush=True)
    a, b = sum(ours) / len(ours), sum(plain) / len(plain)
    print(f"training tokens/s ({experiment}, {steps} steps of {cfg.data.batch_size}x{cfg.data.seq_len}, "
          f"torch threads {torch.get_num_threads()}): nlpseq {a:,.0f}, plain {b:,.0f}, ratio {a / b:.3f}")


def sampling(ckpt: str) -> None:
    import nlpseq

    gen = nlpseq.load(ckpt)
    gen.generate("ROMEO:", max_new_tokens=20, seed=0)  # warm-up
    cases = [("sample, 1 prompt", dict(prompts="ROMEO:", num_samples=1, temperature=0.8, top_p=0.9)),
             ("sample, 64 in one batch", dict(prompts="ROMEO:", num_samples=64, temperature=0.8, top_p=0.9)),
             ("greedy, 1 prompt", dict(prompts="ROMEO:", temperature=0.0)),
             ("beam 5, 1 prompt", dict(prompts="ROMEO:", beam_size=5))]
    for name, kw in cases:
        prompts = kw.pop("prompts")
        start = time.perf_counter()
        results = gen.predict([prompts], max_new_tokens=500, seed=1, stop_at_eos=False, **kw)
        dt = time.perf_counter() - start
        n = sum(len(gen.model.tokenizer.encode(t)) for t in results[0].texts)
        print(f"{name}: {n} tokens in {dt:.2f} s = {n / dt:,.0f} tokens/s", flush=True)
    print("sample (temperature 0.8, top_p 0.9, seed 1):")
    print(gen.generate("ROMEO:", max_new_tokens=400, temperature=0.8, top_p=0.9, seed=1))


def ensemble(ckpts: list[str], text_path: Path, start: float, window: int = 2048) -> None:
    import nlpseq
    from nlpseq.text.tokenizer import BOS_ID

    members = nlpseq.load(ckpts).members  # one tokenizer for all (checked)
    text = text_path.read_text(encoding="utf-8")
    held = text[int(len(text) * start):]
    seq = torch.tensor([BOS_ID, *members[0].tokenizer.hf.encode(held, add_special_tokens=False).ids])
    per_member = []  # log-probability of every held-out token, per member
    with torch.inference_mode():
        for model in members:
            state, out = None, []
            for a in range(0, len(seq) - 1, window):
                targets = seq[a + 1:a + 1 + window]
                logits, state = model(seq[a:a + len(targets)][None], state)
                out.append(torch.log_softmax(logits[0].float(), -1).gather(1, targets[:, None])[:, 0])
            per_member.append(torch.cat(out))
    print(f"{len(seq) - 1:,} held-out characters of {text_path} from {start:.0%}")
    for ckpt, lp in zip(ckpts, per_member):
        print(f"  {-lp.mean():.4f} nats/char  {ckpt}")
    mixed = torch.logsumexp(torch.stack(per_member), 0) - math.log(len(per_member))
    print(f"  {-mixed.mean():.4f} nats/char  ensemble of {len(per_member)} ({-mixed.mean() / math.log(2):.3f} bits/char)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("--run", type=Path, required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--experiment", default="generation_shakespeare_cpu")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--repeats", type=int, default=2)
    s = sub.add_parser("sampling")
    s.add_argument("--ckpt", required=True)
    e = sub.add_parser("ensemble")
    e.add_argument("--ckpt", nargs="+", required=True)
    e.add_argument("--text", type=Path, default=ROOT.parent / "shared" / "data" / "generation" / "tinyshakespeare" / "input.txt")
    e.add_argument("--start", type=float, default=0.9)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.cmd == "report":
        report(args.run)
    elif args.cmd == "throughput":
        throughput(args.experiment, args.steps, args.repeats)
    elif args.cmd == "ensemble":
        ensemble(args.ckpt, args.text, args.start)
    else:
        sampling(args.ckpt)


if __name__ == "__main__":
    main()
