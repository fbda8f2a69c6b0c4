"""Where the Hydra config tree lives, and the resolvers it uses."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"  # source checkout / editable install
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"       # wheel install (see pyproject)


def conf_dir() -> str:
    for path in (_SOURCE_CONF, _PACKAGED_CONF):
        if (path / "config.yaml").is_file():
            return str(path)
    raise FileNotFoundError(f"nlpseq config tree not found in {_SOURCE_CONF} or {_PACKAGED_CONF}")


def register_resolvers() -> None:
    # the process id makes run directories of runs started in the same second distinct
    if not OmegaConf.has_resolver("nlpseq.pid"):
        OmegaConf.register_new_resolver("nlpseq.pid", lambda: str(os.getpid()), use_cache=True)
    # the folder that holds conf/ and tasks/: the shipped samples are found from any working directory
    if not OmegaConf.has_resolver("nlpseq.root"):
        OmegaConf.register_new_resolver("nlpseq.root", lambda: str(Path(conf_dir()).parent))


def quiet_warnings() -> None:
    """Silence library warnings that say nothing actionable to an nlpseq user."""
    import warnings

    for pattern in (r".*does not have many workers.*", r".*isinstance\(treespec, LeafSpec\).*",
                    r".*overridden `transfer_batch_to_device`.*", r".*The number of training batches.*",
                    r".*Checkpoint directory .* exists and is not empty.*"):
        warnings.filterwarnings("ignore", message=pattern)
