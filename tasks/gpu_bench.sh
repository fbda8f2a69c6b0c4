#!/usr/bin/env bash
# The GPU benchmark round: nlpseq.bench for the four real-data recipes in fp32 and bf16-mixed (and NER and
# sentiment with data.pin_memory=true), plus a CLI
# train -> checkpoint -> `python -m nlpseq.predict device=cuda` round trip, on one CUDA machine.
#   bash tasks/gpu_bench.sh [OUTDIR]        (default: gpu_bench/; results.jsonl + log.txt)
# Needs the benchmark data at ../shared/data (see the experiment recipes). Each bench run has its own
# time limit (BENCH_TIMEOUT seconds, default 150) so one slow or failing run does not take the rest down;
# results.jsonl gets one JSON object per finished run, as soon as it finishes. BENCH_EXTRA adds options to
# every bench run (a dry run on a CPU: BENCH_EXTRA="bench.steps=8 bench.repeats=1 bench.infer_sentences=64");
# GPU_BENCH_PLAN=FILE runs FILE's lines ("name override ...") instead of the round; GPU_BENCH_CLI=0 skips the CLI
# and what follows it: with two or more GPUs, the NER recipe trained for one epoch on 1 and on 2 GPUs (DDP;
# GPU_BENCH_DDP=0 skips it, DDP_TIMEOUT seconds each, default 240).
set -u
out=${1:-gpu_bench}
mkdir -p "$out"
source "$(dirname "$0")/gpu_lib.sh"
limit=${BENCH_TIMEOUT:-150}
tmp=$(mktemp -d)
log="$out/log.txt"
results="$out/results.jsonl"

gpu_header "$log"

bench() {  # name, overrides...
  local name=$1; shift
  echo "=== $name: python -m nlpseq.bench $*" | tee -a "$log"
  local t0=$SECONDS
  if timeout "$limit" python3 -m nlpseq.bench "$@" ${BENCH_EXTRA:-} bench.out="$tmp/$name.json" >>"$log" 2>&1; then
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); r['name']=sys.argv[2]; print(json.dumps(r))" \
      "$tmp/$name.json" "$name" >>"$results"
    python3 - "$tmp/$name.json" <<'EOF' | tee -a "$log"
import json, sys
r = json.load(open(sys.argv[1]))
keys = ("train_tokens_per_sec_nlpseq", "train_tokens_per_sec_plain", "ratio_nlpseq_vs_plain", "overhead_ms_per_step",
        "rnn_kernel_tokens_per_sec",
        "ratio_nlpseq_vs_rnn_kernel", "share_of_roof", "rnn_kernel_share_of_roof", "padding_share",
        "infer_sentences_per_sec_b1", "infer_sentences_per_sec_b64", "batch64_speedup",
        "decode_greedy_sentences_per_sec_b64", "decode_beam5_sentences_per_sec_b64", "sample_tokens_per_sec_b64",
        "peak_cuda_mb")
print("   ", ", ".join(f"{k}={r[k]:.4g}" for k in keys if isinstance(r.get(k), (int, float))))
EOF
  else
    echo "   FAILED or timed out (rc $?)" | tee -a "$log"
    tail -15 "$log"
  fi
  echo "   ($((SECONDS - t0)) s)" | tee -a "$log"
}

if [ -n "${GPU_BENCH_PLAN:-}" ]; then  # a file of lines "name override ...": those runs instead of the round below
  run_plan bench "$GPU_BENCH_PLAN"
else
  bench ner_fp32 experiment=ner_conll2003
  bench sentiment_fp32 experiment=sentiment_sst2
  bench translation_fp32 experiment=translation_multi30k
  bench generation_fp32 experiment=generation_shakespeare
  bench ner_bf16 experiment=ner_conll2003 trainer.precision=bf16-mixed
  bench sentiment_bf16 experiment=sentiment_sst2 trainer.precision=bf16-mixed
  bench translation_bf16 experiment=translation_multi30k trainer.precision=bf16-mixed
  bench generation_bf16 experiment=generation_shakespeare trainer.precision=bf16-mixed
  # page-locked batches (off by default until measured): compare with ner_fp32 / sentiment_fp32
  bench ner_fp32_pinned experiment=ner_conll2003 data.pin_memory=true
  bench sentiment_fp32_pinned experiment=sentiment_sst2 data.pin_memory=true
fi

# the CLI on the GPU: train the sample NER model, then predict from its checkpoint on cuda
[ "${GPU_BENCH_CLI:-1}" = 1 ] || { rm -rf "$tmp"; exit 0; }
echo "=== CLI: train on gpu, predict device=cuda" | tee -a "$log"
run="$tmp/cli_ner"
if timeout 120 python3 -m nlpseq task=ner trainer.accelerator=gpu trainer.devices=1 trainer.max_epochs=2 \
     hydra.run.dir="$run" >>"$log" 2>&1; then
  ckpt=$(ls "$run"/checkpoints/*.ckpt 2>/dev/null | head -1)
  printf 'EU rejects German call to boycott British lamb .\nPeter Blackburn lives in Brussels .\n' |
    timeout 60 python3 -m nlpseq.predict ckpt="$ckpt" device=cuda 2>&1 | tee -a "$log"
else
  echo "   CLI training FAILED" | tee -a "$log"; tail -15 "$log"
fi

# a real multi-device run when the machine has more than one GPU: the same training on 1 and on 2 GPUs (DDP)
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -ge 2 ] && [ "${GPU_BENCH_DDP:-1}" = 1 ]; then
  for n in 1 2; do
    echo "=== DDP: ner_conll2003 on $n GPU(s), 1 epoch" | tee -a "$log"
    ddp="$tmp/ddp_$n"
    if timeout "${DDP_TIMEOUT:-240}" python3 -m nlpseq experiment=ner_conll2003 trainer.accelerator=gpu \
         trainer.devices=$n trainer.strategy=$([ $n = 1 ] && echo auto || echo ddp) trainer.max_epochs=1 test=false \
         hydra.run.dir="$ddp" >>"$log" 2>&1; then
      python3 - "$ddp/logs/metrics.csv" "$n" <<'EOF' | tee -a "$log"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
f1 = [float(r["val/f1"]) for r in rows if r.get("val/f1")]
print(f"    {sys.argv[2]} GPU(s): train tokens/s {tps[-1]:,.0f}" if tps else "    no throughput logged",
      f"val F1 {f1[-1]:.4f}" if f1 else "")
EOF
    else
      echo "   DDP run on $n GPU(s) FAILED" | tee -a "$log"; tail -15 "$log"
    fi
  done
fi
rm -rf "$tmp"
date -u +%FT%TZ | tee -a "$log"
