#!/usr/bin/env bash
# Tiny Shakespeare benchmark on the CPU budget: train, then measure training and sampling throughput.
#   bash tasks/generation/benchmark.sh [RUN_DIR]          (from the repository root; ~30 minutes on 2 cores)
# Steps can be run alone: STEP=train|throughput|sampling|harness bash tasks/generation/benchmark.sh RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-outputs/generation/bench_cpu_$(date +%Y%m%d_%H%M%S)}
STEP=${STEP:-all}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# shared machine: one OpenMP thread per process (2 threads under contention are ~3x slower); override to compare
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if [[ $STEP == all || $STEP == train ]]; then
  start=$(date +%s)
  # hard wall cap: the recipe stops training itself at 25 minutes (trainer.max_time)
  timeout 1800 python -m nlpseq experiment=generation_shakespeare_cpu hydra.run.dir="$RUN" \
      callbacks.progress_bar.refresh_rate=0 2>&1 | tee "$RUN.train.log"
  echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$RUN.train.log"
  python tasks/generation/benchmark.py report --run "$RUN"
fi
if [[ $STEP == all || $STEP == throughput ]]; then
  python tasks/generation/benchmark.py throughput --steps 20 --repeats 2
fi
if [[ $STEP == all || $STEP == sampling ]]; then
  python tasks/generation/benchmark.py sampling --ckpt "$RUN/checkpoints/best.ckpt"
fi
if [[ $STEP == all || $STEP == harness ]]; then
  # the project's shared harness: nlpseq path vs a plain loop over the module's own training_step
  python -m nlpseq.bench experiment=generation_shakespeare_cpu bench.steps=30 bench.repeats=3 \
      bench.infer_sentences=128 bench.out="$RUN.bench.json"
fi
