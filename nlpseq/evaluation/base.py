"""What every task's scorer shares: the files of `data=`, the run's saved data settings, and the `Task`
interface (reading options, reader, scorer)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlpseq.errors import ConfigError

WARMUP = 8  # examples each model predicts once before it is timed


def data_specs(value) -> list:
    """The files of `data=`: a path, a {src, tgt} pair of aligned files (translation), or a list of them; a string
    holds several separated by commas (a path that exists as written is never split), an aligned pair written
    {src:FILE,tgt:FILE} as in the training config."""
    if isinstance(value, (list, tuple)):
        specs = [s for v in value for s in data_specs(v)]
    elif isinstance(value, dict):
        specs = [_pair(value)]
    elif isinstance(value, Path):
        specs = [str(value)]
    elif isinstance(value, str):
        specs = [value] if path_exists(value) else [_pair_text(p) if p.startswith("{") else p for p in _split_top(value)]
    else:
        raise ConfigError("data", f"expected a file path (or several), got {value!r}")
    if not specs:
        raise ConfigError("data", "no file given")
    return specs


def path_exists(path) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a NUL in the name, a name too long: the reader names the problem
        return False


def _split_top(text: str) -> list[str]:
    """Comma-separated parts, commas inside {...} kept."""
    parts, depth, cur = [], 0, ""
    for c in text:
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _pair_text(text: str) -> dict:
    if not text.endswith("}"):
        raise ConfigError("data", f"expected {{src:FILE,tgt:FILE}}, got {text!r}")
    pair = {}
    for item in text[1:-1].split(","):
        key, sep, path = item.partition(":")
        if not sep:
            raise ConfigError("data", f"expected {{src:FILE,tgt:FILE}}, got {text!r}")
        pair[key.strip()] = path.strip()
    return _pair(pair)


def _pair(pair: dict) -> dict:
    if set(pair) != {"src", "tgt"} or not all(isinstance(v, (str, Path)) and str(v) for v in pair.values()):
        raise ConfigError("data", f"two aligned files are given as {{src:FILE,tgt:FILE}}, got {pair}")
    return {"src": str(pair["src"]), "tgt": str(pair["tgt"])}


def spec_name(spec) -> str:
    return f"{spec['src']} / {spec['tgt']}" if isinstance(spec, dict) else str(spec)


def one_file(spec, task: str) -> str:
    if isinstance(spec, dict):
        raise ConfigError("data", f"{spec_name(spec)}: a pair of aligned files is translation data, not {task}")
    return spec


def run_settings(ckpt) -> dict:
    """The `data` settings of the run that wrote the checkpoint (<run>/.hydra/config.yaml beside
    <run>/checkpoints/), plain values only; {} when there is no such file or it cannot be read."""
    import yaml

    path = Path(ckpt)
    cfg = path.parent.parent / ".hydra" / "config.yaml"
    if path.parent.name != "checkpoints" or not cfg.is_file():
        return {}
    try:
        data = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return {}
    if not isinstance(data, dict):
        return {}

    def plain(v):
        if isinstance(v, str):
            return "${" not in v  # an interpolation: not resolvable here
        if isinstance(v, list):
            return all(isinstance(x, str) and "${" not in x for x in v)
        return v is None or isinstance(v, (bool, int))

    return {k: v for k, v in data.items() if isinstance(k, str) and plain(v)}


def columns(key: str, value) -> str | list[str]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigError(key, f"expected a column name or a list of alternatives, got {value!r}")


def with_fallbacks(configured, defaults: list[str]):
    """The run's column name(s), then the default alternatives it does not name."""
    first = [configured] if isinstance(configured, str) else list(configured)
    return first + [d for d in defaults if d not in first]



@dataclass
class Data:
    name: str
    examples: int
    payload: Any
    extra: dict = field(default_factory=dict)


class Task:
    """One task's reading options, reader and scorer."""

    name = ""
    metrics: tuple[str, ...] = ()   # headline first
    labels: dict[str, str] = {}     # metric -> table heading
    higher_is_better = True
    predict_skip: tuple[str, ...] = ()  # predictor.predict parameters that are not user options here

    def defaults(self, model, run: dict) -> dict:
        """Reading options: the checkpoint's own, then the run config's, then built-in defaults."""
        return {}

    def predict_options(self, predictor) -> list[str]:
        params = inspect.signature(predictor.predict).parameters
        return [k for k in params if k not in ("texts", "batch_size", *self.predict_skip)]

    def check(self, opts: dict, model) -> dict:
        return opts

    def read(self, spec, opts: dict, model) -> Data:
        raise NotImplementedError

    def warmup(self, predictor, data: Data, batch_size: int, options: dict) -> None:
        pass

    def score(self, predictor, data: Data, batch_size: int, options: dict) -> dict:
        """The metrics, plus `seconds` (the prediction alone) and the task's counts."""
        raise NotImplementedError

    def rate(self, row: dict, data: Data) -> None:
        row["sentences_per_s"] = data.examples / row["seconds"] if row["seconds"] > 0 else None
