"""`python -m nlpseq task=ner ...`: the Hydra training entry point (see README for every option)."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from nlpseq.config import conf_dir, quiet_warnings, register_resolvers
from nlpseq.errors import NlpseqError

register_resolvers()
quiet_warnings()


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nlpseq.train import train

    try:
        return train(cfg)
    except NlpseqError as e:
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None  # the sweep summary lists the job as failed; other jobs go on
        sys.exit(2)


if __name__ == "__main__":
    main()
