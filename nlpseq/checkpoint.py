"""Reading nlpseq checkpoints safely: tensors and plain values only, with one-line errors.

`torch.load(weights_only=True)` refuses any pickled object other than tensors and plain containers,
so a crafted file cannot run code here.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from nlpseq.errors import CheckpointError
from nlpseq.models.base import FORMAT_VERSION
from nlpseq.registry import TASKS, model_class


def read_checkpoint(path, map_location="cpu") -> dict:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not p.is_file():
        raise CheckpointError(f"{path}: not a file")
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # zip (torch.save) or a raw pickle stream
        raise CheckpointError(f"{path}: not a checkpoint file (not written by torch.save)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused to load: the file holds pickled objects other than tensors "
                                  f"and plain values (not an nlpseq checkpoint, or unsafe)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt? {first})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("nlpseq"), dict):
        raise CheckpointError(f"{path}: not an nlpseq checkpoint (no nlpseq metadata)")
    meta = ckpt["nlpseq"]
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this nlpseq understands "
                              f"({FORMAT_VERSION}); upgrade nlpseq")
    if meta.get("task") not in TASKS:
        raise CheckpointError(f"{path}: unknown task {meta.get('task')!r} (known: {', '.join(TASKS)})")
    for key in ("state_dict", "hyper_parameters"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint lacks {key}")
    return ckpt


def load_module(path, task: str | None = None, map_location="cpu"):
    """The trained LightningModule of a checkpoint, in eval mode; `task` checks it is the expected one."""
    ckpt = read_checkpoint(path, map_location)
    found = ckpt["nlpseq"]["task"]
    if task is not None and found != task:
        raise CheckpointError(f"{path}: this is a {found} checkpoint, not {task}")
    cls = model_class(found)
    try:
        model = cls(**ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: checkpoint does not match the {found} model ({first})") from None
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.RNNBase):
            m.flatten_parameters()
    return model
