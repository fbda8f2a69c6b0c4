"""Process-rank facts that hold before Lightning sets up distributed training."""
from __future__ import annotations

import os


def is_worker_process() -> bool:
    """True in every process but the first of a job: Lightning's DDP workers, torchrun/SLURM ranks > 0."""
    return any(int(os.environ.get(var, "0") or 0) != 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))
