"""nlpseq: recurrent sequence models for NLP on PyTorch Lightning and Hydra."""
from __future__ import annotations

__version__ = "0.1.0"

from nlpseq.errors import CheckpointError, ConfigError, DataError, NlpseqError


def load(path, map_location="cpu"):
    """Load an nlpseq checkpoint and return the predictor for its task (see nlpseq.predict). A list of
    checkpoint paths loads an ensemble of checkpoints of one task (README: Inference, Ensembles)."""
    from nlpseq.predict import load as _load

    return _load(path, map_location=map_location)


__all__ = ["load", "NlpseqError", "ConfigError", "DataError", "CheckpointError", "__version__"]
