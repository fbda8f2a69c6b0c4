"""Inference from a checkpoint alone: `nlpseq.load(path)` and `python -m nlpseq.predict ckpt=PATH input=FILE`.

Loading needs neither the training data nor the conf tree: the checkpoint carries the tokenizer, the
labels and the hyperparameters.

CLI options (key=value): ckpt (required; several checkpoints of one task separated by commas make an
ensemble, see README: Inference), input (a file, or - for stdin; default -), output (a file,
or - for stdout; default -), batch_size (default 64), device (cpu, cuda, ...; default cpu), and any
option the task's predictor accepts (see README: e.g. beam_size for translation, max_new_tokens for
generation).
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

from nlpseq.checkpoint import load_module
from nlpseq.errors import CheckpointError, ConfigError
from nlpseq.registry import predictor_class
from nlpseq.utils.commands import run_command

USAGE = "usage: python -m nlpseq.predict ckpt=PATH[,PATH...] [input=FILE|-] [output=FILE|-] [batch_size=64] [device=cpu] [task options]"


def load(path, map_location="cpu"):
    """The predictor for the checkpoint at `path` (its task is read from the checkpoint). A list of paths
    loads an ensemble of checkpoints of one task: each task's predictor `ensemble` says how they combine."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise ConfigError("ckpt", "an ensemble needs at least one checkpoint, got an empty list")
        if len(path) > 1:
            return _load_ensemble([str(p) for p in path], map_location)
        path = path[0]
    model = load_module(path, map_location=map_location)
    return predictor_class(model.task)(model)


def _load_ensemble(paths: list[str], map_location):
    models = [load_module(p, map_location=map_location) for p in paths]
    task = models[0].task
    for model, p in zip(models[1:], paths[1:]):
        if model.task != task:
            raise CheckpointError(f"{p}: a {model.task} checkpoint cannot join an ensemble of {task} checkpoints "
                                  f"({paths[0]})")
    return predictor_class(task).ensemble(models, paths)


def _ckpt_paths(value: str) -> str | list[str]:
    """ckpt=PATH, or ckpt=A,B,... for an ensemble (a path that exists as written is never split)."""
    if "\0" in value:
        raise ConfigError("ckpt", f"not a path: {value!r} holds a NUL character")
    if "," not in value or Path(value).exists():
        return value
    return [p for p in (part.strip() for part in value.split(",")) if p]


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


RAW_KEYS = ("ckpt", "input", "output", "device")  # options whose values are taken as written (paths, names)


def parse_args(argv: list[str], raw: tuple[str, ...] = RAW_KEYS) -> dict:
    args = {}
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(arg, f"expected key=value\n{USAGE}")
        key, value = arg.split("=", 1)
        args[key.strip()] = value if key in raw else _parse_value(value)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, __doc__, USAGE, _main, "predicting",
                       ("batch_size", "beam_size", "num_samples", "max_new_tokens"),
                       "batch_size (or beam_size / num_samples / max_new_tokens)")


def _main(argv: list[str], args: dict) -> int:
    args.update(parse_args(argv))
    if "ckpt" not in args:
        raise ConfigError("ckpt", f"missing; {USAGE}")
    args = dict(args)
    predictor = load(_ckpt_paths(args.pop("ckpt")))
    device = args.pop("device", "cpu")
    predictor.to(device)
    source, target = str(args.pop("input", "-")), str(args.pop("output", "-"))
    options = inspect.signature(predictor.predict_file).parameters
    for key in args:
        if key not in options or key in ("lines", "out", "path", "source", "target"):
            known = [k for k in options if k not in ("lines", "out", "path", "source", "target")]
            raise ConfigError(key, f"unknown option for {predictor.task} (known: ckpt, input, output, device, {', '.join(known)})")
    if source != "-" and not Path(source).is_file():
        raise ConfigError("input", f"{source}: file not found")
    if target != "-" and Path(target).exists() and Path(target).resolve() == Path(source).resolve():
        raise ConfigError("output", "must not be the input file (it would be overwritten)")
    return _run(predictor, source, target, args)


def _run(predictor, source: str, target: str, options: dict) -> int:
    from nlpseq.data.files import read_lines

    lines = (line for _, line in (read_lines(source, allow_empty=True) if source != "-" else _stdin_lines()))
    if "source" in inspect.signature(predictor.predict_file).parameters:  # lets errors name the input file
        options = {**options, "source": source if source != "-" else "<stdin>"}
    if target == "-":
        n = predictor.predict_file(lines, sys.stdout, **options)
    else:
        from nlpseq.utils.io import atomic_writer

        with atomic_writer(target) as out:
            n = predictor.predict_file(lines, out, **options)
    print(f"wrote {n} predictions to {'stdout' if target == '-' else target}", file=sys.stderr)
    return 0


def _stdin_lines():
    """(line number, line) of standard input, checked like a file (UTF-8, no NUL; a leading BOM dropped)."""
    from nlpseq.data.files import decode_line

    stream = getattr(sys.stdin, "buffer", None)
    for lineno, raw in enumerate(stream if stream is not None else sys.stdin, 1):
        yield lineno, decode_line(raw, "<stdin>", lineno)


if __name__ == "__main__":
    sys.exit(main())
