#!/usr/bin/env bash
# The real-data recipes trained to the end on one GPU, for their quality figures (the task READMEs' benchmark
# sections): generation (Tiny Shakespeare, the full 2 x 1024 recipe), NER (CoNLL-2003), sentiment (SST-2),
# translation (Multi30k), in that order, each under its own time limit.
#   bash tasks/gpu_train.sh [OUTDIR]        (default: gpu_train/; log.txt with each run's results table)
# Needs the benchmark data at ../shared/data. TRAIN_TIMEOUT (seconds, default 420) bounds each run;
# GPU_TRAIN_EXTRA adds overrides to every run (a dry run on a CPU: GPU_TRAIN_EXTRA="trainer.accelerator=cpu
# trainer.max_epochs=1 trainer.limit_train_batches=3 trainer.limit_val_batches=2 trainer.limit_test_batches=2");
# GPU_TRAIN_PLAN=FILE runs FILE's lines ("name override ...") instead.
set -u
out=${1:-gpu_train}
mkdir -p "$out"
source "$(dirname "$0")/gpu_lib.sh"
limit=${TRAIN_TIMEOUT:-420}
tmp=$(mktemp -d)
log="$out/log.txt"

gpu_header "$log"

train() {  # name, overrides...
  local name=$1; shift
  echo "=== $name: python -m nlpseq $* trainer.accelerator=gpu trainer.devices=1" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" python3 -m nlpseq "$@" trainer.accelerator=gpu trainer.devices=1 hydra.run.dir="$tmp/$name" \
    ${GPU_TRAIN_EXTRA:-} >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$?
  # the results table, the best checkpoint's path and any error line reach the log; the progress bar does not
  sed -n '/nlpseq results/,$p' "$tmp/$name.out" | tee -a "$log"
  grep -h "^error:" "$tmp/$name.out" "$tmp/$name.err" | tee -a "$log"
  [ "$rc" = 0 ] || { echo "   FAILED or timed out (rc $rc)"; tail -5 "$tmp/$name.err"; } | tee -a "$log"
  # per-epoch validation metrics, for the learning curve
  [ -f "$tmp/$name/logs/metrics.csv" ] && python3 - "$tmp/$name/logs/metrics.csv" <<'EOF' | tee -a "$log"
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if any(k.startswith("val/") and r[k] for k in r)]
for r in rows:
    print("   epoch", r.get("epoch"), ", ".join(f"{k}={float(v):.4f}" for k, v in r.items() if k.startswith("val/") and v))
EOF
  echo "   ($((SECONDS - t0)) s)" | tee -a "$log"
}

if [ -n "${GPU_TRAIN_PLAN:-}" ]; then
  run_plan train "$GPU_TRAIN_PLAN"
else
  train generation experiment=generation_shakespeare
  train ner experiment=ner_conll2003
  train sentiment experiment=sentiment_sst2
  train translation experiment=translation_multi30k
fi
rm -rf "$tmp"
date -u +%FT%TZ | tee -a "$log"
