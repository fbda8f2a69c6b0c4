# What tasks/gpu_bench.sh and tasks/gpu_train.sh share (sourced, not run).
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1

gpu_header() {  # LOG: the date, the GPU and the torch / CUDA / cuDNN / Lightning versions, into LOG too
  {
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
    python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), 'lightning', pl.__version__, 'gpu', torch.cuda.is_available())"
  } 2>&1 | tee -a "$1"
}

run_plan() {  # FUNCTION PLAN: `FUNCTION name override ...` for each line of PLAN (blank and # lines skipped)
  local name args
  while read -r name args; do
    [ -z "$name" ] || [ "${name#\#}" != "$name" ] || "$1" "$name" $args </dev/null
  done <"$2"
}
