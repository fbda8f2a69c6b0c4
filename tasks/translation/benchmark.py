"""Multi30k de->en benchmark: train under a wall-time cap, then measure BLEU and speed on test_2016_flickr.

    python tasks/translation/benchmark.py --minutes 25 --threads 1 --out /tmp/mt_bench [extra overrides...]

1. trains `experiment=translation_multi30k` (plus any extra Hydra overrides) for at most --minutes
   (trainer.max_time; validation twice per epoch so a stopped run keeps a recent best checkpoint);
2. loads the best checkpoint and translates test_2016_flickr with greedy search and beam 5 (batch 64):
   sacreBLEU and chrF against the raw references, and sentences per second;
3. runs `python -m nlpseq.bench` on the same recipe: steady training target tokens/s of the nlpseq path
   and of a plain PyTorch loop over the same batches (their ratio), FLOP/s against a matmul roof, and
   (bench.ckpt = the trained checkpoint) greedy / beam-5 decoding speed at batch 64 on validation sources.
Results go to OUT/results.json and are printed as a markdown table.

    python tasks/translation/benchmark.py --ensemble OUT1 OUT2 [...] --out ENS   # no training

scores earlier runs' best checkpoints (OUTi/run/checkpoints/best.ckpt) alone and as one ensemble
(`nlpseq.load([...])`: every step searches on the members' mean next-token probability) on test_2016_flickr:
BLEU, chrF and decoding speed, greedy and beam 5, fp32; results in ENS/ensemble.json.

--threads sets torch's threads
(OMP_NUM_THREADS) in every step: on a machine shared with other jobs, 1 thread avoids OpenMP
spin-wait collapse (2 threads ran 3-4x slower than 1 under a load of 4 here).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "translation" / "multi30k"


def run(cmd: list[str], env: dict, log: Path, timeout: float) -> float:
    start = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=timeout)
    return time.time() - start


def evaluate(ckpt: Path | list[Path], threads: int, out_dir: Path | None = None,
             precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """BLEU, chrF and speed on test_2016_flickr of one checkpoint or an ensemble (a list); hypotheses are written
    to out_dir (default: the checkpoint's run directory)."""
    import sacrebleu
    import torch

    torch.set_num_threads(threads)
    import nlpseq

    predictor = nlpseq.load(ckpt)
    out_dir = out_dir or ckpt.parent.parent
    src = (DATA / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    ref = (DATA / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    for precision in precisions:  # warm-up
        predictor.predict(src[:64], beam_size=5, precision=precision)
    out = {}
    for precision in precisions:
        for name, beam in (("greedy", 1), ("beam5", 5)):
            start = time.perf_counter()
            hyps = [r.translation for r in predictor.predict(src, batch_size=64, beam_size=beam, precision=precision)]
            seconds = time.perf_counter() - start
            bleu = sacrebleu.BLEU()
            key = name if precision == "fp32" else f"{name}_bf16"
            out[key] = {"bleu": bleu.corpus_score(hyps, [ref]).score, "chrf": sacrebleu.corpus_chrf(hyps, [ref]).score,
                        "sentences_per_s": len(src) / seconds, "seconds": seconds}
            out["signature"] = str(bleu.get_signature())
            (out_dir / f"test_2016_flickr.{key}.en").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    return out


def training_log(run_dir: Path) -> dict:
    rows = list(csv.DictReader(open(run_dir / "logs" / "metrics.csv")))
    bleu = [(int(r["step"]), float(r["val/bleu"])) for r in rows if r.get("val/bleu")]
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    ends = [int(r["step"]) for r in rows if r.get("train/tokens_per_sec")]  # logged at each epoch's end
    last = max((int(r["step"]) for r in rows), default=0)
    return {"val_bleu_by_step": bleu, "epoch_tokens_per_s": tps, "last_step": last,
            "epochs": round(last / ends[0], 2) if ends and ends[0] else None}


def score_ensemble(runs: list[Path], out: Path, threads: int) -> int:
    ckpts = [run / "run" / "checkpoints" / "best.ckpt" for run in runs]
    missing = [str(c) for c in ckpts if not c.is_file()]
    if missing:
        print(f"error: no checkpoint at {', '.join(missing)}", file=sys.stderr)
        return 2
    results: dict = {"date": time.strftime("%Y-%m-%d"), "threads": threads, "members": [], "ensemble": None}
    for i, ckpt in enumerate([*ckpts, ckpts]):
        target = out / ("ensemble" if i == len(ckpts) else f"member{i}")
        target.mkdir(parents=True, exist_ok=True)
        scores = evaluate(ckpt, threads, target, precisions=("fp32",))
        if i < len(ckpts):
            results["members"].append({"ckpt": str(ckpt), **scores})
        else:
            results["ensemble"] = scores
        print(f"{'ensemble of ' + str(len(ckpts)) if i == len(ckpts) else ckpt}: BLEU greedy "
              f"{scores['greedy']['bleu']:.2f} / beam 5 {scores['beam5']['bleu']:.2f}; sentences/s "
              f"{scores['greedy']['sentences_per_s']:.0f} / {scores['beam5']['sentences_per_s']:.0f}")
    (out / "ensemble.json").write_text(json.dumps(results, indent=2))
    print(f"written to {out / 'ensemble.json'}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mt_bench"))
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/run (evaluate and bench only)")
    ap.add_argument("--bench-steps", type=int, default=40)
    ap.add_argument("--skip-bench", action="store_true", help="reuse OUT/bench.json")
    ap.add_argument("--ensemble", nargs="+", type=Path, metavar="OUT", help="score these runs' best checkpoints alone "
                    "and as one ensemble instead of training")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if not (DATA / "train.de").is_file():
        print(f"error: Multi30k not found in {DATA}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.ensemble:
        return score_ensemble(args.ensemble, args.out, args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    run_dir = args.out / "run"
    minutes = int(args.minutes)
    train_cmd = [sys.executable, "-m", "nlpseq", "experiment=translation_multi30k", f"hydra.run.dir={run_dir}",
                 f"++trainer.max_time=00:{minutes // 60:02d}:{minutes % 60:02d}:00",
                 "trainer.val_check_interval=0.5", "trainer.min_epochs=0", "test=false", "callbacks.progress_bar.refresh_rate=0",
                 *args.overrides]
    results: dict = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "train_command": " ".join(train_cmd[1:])}
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").is_file() else {}
    if not args.skip_train:
        results["train_wall_s"] = run(train_cmd, env, args.out / "train.log", timeout=args.minutes * 60 + 900)
    else:
        results["train_wall_s"] = previous.get("train_wall_s", 0.0)
    results.update(training_log(run_dir))
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    results["test"] = evaluate(ckpt, args.threads)
    bench_json = args.out / "bench.json"
    bench_cmd = [sys.executable, "-m", "nlpseq.bench", "experiment=translation_multi30k", f"bench.steps={args.bench_steps}",
                 "bench.warmup=5", "bench.repeats=1", "bench.infer_sentences=256", f"bench.out={bench_json}",
                 f"bench.ckpt={ckpt}", *args.overrides]
    if not args.skip_bench:
        results["bench_wall_s"] = run(bench_cmd, env, args.out / "bench.log", timeout=1800)
    results["bench"] = json.loads(bench_json.read_text())
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    t = results["test"]
    print(f"| date | {results['date']} |\n| threads | {args.threads} |\n| train wall | {results.get('train_wall_s', 0):.0f} s, "
          f"{results['epochs']} epochs ({results['last_step']} steps) |\n"
          f"| best val BLEU (greedy) | {max((b for _, b in results['val_bleu_by_step']), default=0):.2f} |\n"
          f"| test BLEU greedy / beam 5 | {t['greedy']['bleu']:.2f} / {t['beam5']['bleu']:.2f} |\n"
          f"| test chrF greedy / beam 5 | {t['greedy']['chrf']:.2f} / {t['beam5']['chrf']:.2f} |\n"
          f"| decoding sentences/s greedy / beam 5 (batch 64) | {t['greedy']['sentences_per_s']:.1f} / "
          f"{t['beam5']['sentences_per_s']:.1f} |\n"
          f"| precision=bf16: BLEU greedy / beam 5 | {t['greedy_bf16']['bleu']:.2f} / {t['beam5_bf16']['bleu']:.2f} |\n"
          f"| precision=bf16: sentences/s greedy / beam 5 | {t['greedy_bf16']['sentences_per_s']:.1f} / "
          f"{t['beam5_bf16']['sentences_per_s']:.1f} |\n"
          f"| training target tokens/s (epochs; bench nlpseq / plain) | {results['epoch_tokens_per_s']} ; "
          f"{results['bench']['train_tokens_per_sec_nlpseq']:.0f} / {results['bench']['train_tokens_per_sec_plain']:.0f} |")
    print(f"written to {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
