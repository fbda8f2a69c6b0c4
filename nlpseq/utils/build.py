"""Build a component from a plain config dict, checking its keys against the constructor's signature.

Unknown keys, keys the data decides (vocabulary size, label count) and bad values all fail with the
option's full config key, e.g. `model.encoder.hidden_size: expected an integer, got 'abc'`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from nlpseq.errors import ConfigError

T = TypeVar("T")


def check_keys(fn: Callable, cfg: dict, prefix: str, fixed: dict | None = None) -> None:
    params = inspect.signature(fn).parameters
    fixed = fixed or {}
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in cfg:
        if key in fixed:
            raise ConfigError(f"{prefix}.{key}", "is set from the data/model and cannot be configured")
        if key not in accepted:
            options = ", ".join(n for n in accepted if n not in fixed)
            raise ConfigError(f"{prefix}.{key}", f"unknown option (known: {options})")


def build(cls: Callable[..., T], cfg: dict | None, prefix: str, **fixed: Any) -> T:
    cfg = dict(cfg or {})
    check_keys(cls, cfg, prefix, fixed)
    try:
        return cls(**fixed, **cfg)
    except ConfigError as e:
        raise e.under(prefix) from None
