"""Scoring checkpoints on labelled data: `python -m nlpseq.evaluate ckpt=PATH[,PATH...] data=FILE[,FILE...]`.

Several checkpoints are scored as the ensemble `nlpseq.load([...])` makes of them and, by default, each alone
first, so the ensemble's gain shows. Every file is read by the project's own readers, as training reads it:

- sentiment: TSV/CSV (with a header) or JSON lines with a text and a label column -> accuracy, macro-F1 (over
  the labels found in the file or predicted, as `val/f1`);
- ner: CoNLL column files or JSON lines -> span precision/recall/F1 counted as conlleval counts them
  (`nlpseq.metrics.spans`), tag accuracy, F1 per type;
- translation: a TSV or JSONL file of pairs, or two aligned files given as {src:FILE,tgt:FILE} (quote it
  in the shell) -> sacreBLEU and chrF of the detokenized translations against the raw references;
- generation: plain text, lines or tables -> loss in nats per token (nats/char for character models),
  perplexity and bits per character. A plain-text file read whole (stream mode) is one stream after <s>,
  state carried, from `start` (a fraction of its characters; 0.9 = the recipes' validation split), as
  `tasks/generation/benchmark.py ensemble` reads it; in lines mode each line (or table row) is its own
  <s> text </s> with a fresh state (from its condition, for models trained with conditions). An ensemble
  scores each token by the mean of its members' probabilities.

CLI options (key=value): ckpt (required), data (required; several files separated by commas; a path that
exists as written is never split), batch_size (default 64), device (default cpu), output (a file, or - for
stdout: the results as JSON; default: a table on stdout), members (true|false: also score each checkpoint
alone; default true), the reading options of the task and the options of its predictor:

  sentiment    format (auto|tsv|csv|jsonl), text_column, label_column (a name or [alternatives])
  ner          format (auto|conll|jsonl), token_column, tag_column, separator (auto|space|tab), docstart,
               scheme (the file's tags: IOB1|IOB2|BIOES|auto), tokens_key, tags_key
  translation  format (auto|tsv|jsonl), src_key, tgt_key; beam_size, length_penalty, max_len_ratio, precision
  generation   format (auto|text|lines|jsonl|tsv|csv), mode (stream|lines), text_column, condition_column,
               start

Reading options the checkpoint carries (NER's token column, separator, -DOCSTART- handling and tag scheme;
sentiment's text and label columns) are its defaults; others come from the run's saved config
(<run>/.hydra/config.yaml beside <run>/checkpoints/) where there is one, else from the defaults above; the
command line overrides both.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import torch

from nlpseq.errors import ConfigError, check_bool, check_int
from nlpseq.evaluation import TASKS
from nlpseq.evaluation.base import data_specs, path_exists, run_settings
from nlpseq.predict import RAW_KEYS, _ckpt_paths, load, parse_args
from nlpseq.utils.commands import run_command

USAGE = ("usage: python -m nlpseq.evaluate ckpt=PATH[,PATH...] data=FILE[,FILE...] [batch_size=64] [device=cpu] "
         "[output=FILE|-] [members=true|false] [task options]")
COMMON = ("ckpt", "data", "batch_size", "device", "output", "members")
# ---------------------------------------------------------------- evaluation

def _ckpt_list(ckpt) -> list[str]:
    if isinstance(ckpt, (list, tuple)):
        paths = [str(p) for p in ckpt]
    elif isinstance(ckpt, (str, Path)):
        parsed = _ckpt_paths(str(ckpt))
        paths = parsed if isinstance(parsed, list) else [parsed]
    else:
        raise ConfigError("ckpt", f"expected a checkpoint path (or several), got {ckpt!r}")
    if not paths or not all(paths):
        raise ConfigError("ckpt", "no checkpoint given")
    return paths


def _to_device(predictor, device: str) -> None:
    if not isinstance(device, str) or not device:
        raise ConfigError("device", f"expected a device name (cpu, cuda, cuda:1, ...), got {device!r}")
    try:
        predictor.to(torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as e:  # an unknown name, no CUDA build, no such GPU
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError("device", f"{device!r} cannot be used ({first})") from None


def evaluate(ckpt, data, batch_size: int = 64, device: str = "cpu", members: bool | None = None,
             progress: Callable[[str], None] | None = None, **options) -> dict:
    """Score a checkpoint, or several as an ensemble (and, with `members`, default True, each alone), on labelled
    files. `options`: the task's reading options and predictor options (module doc). Returns a dict: task,
    checkpoints, options, metrics (headline first), and per file its `models` (each member, then the ensemble:
    metrics, examples, seconds, sentences_per_s) and, for an ensemble scored with its members, `ensemble_gain`
    (the ensemble's metrics minus the members' mean). `progress` gets a line after each model and file."""
    paths = _ckpt_list(ckpt)
    specs = data_specs(data)
    check_int("batch_size", batch_size, minimum=1)
    members = len(paths) > 1 if members is None else check_bool("members", members) and len(paths) > 1
    predictor = load(paths if len(paths) > 1 else paths[0])
    _to_device(predictor, device)
    task = TASKS[predictor.task]()
    model = predictor.model
    read_opts = task.defaults(model, run_settings(paths[0]))
    predict_keys = task.predict_options(predictor)
    unknown = [k for k in options if k not in read_opts and k not in predict_keys]
    if unknown:
        known = ", ".join([*COMMON, *read_opts, *predict_keys])
        raise ConfigError(unknown[0], f"unknown option for {task.name} (known: {known})")
    read_opts = task.check({**read_opts, **{k: v for k, v in options.items() if k in read_opts}}, model)
    predict_opts = {k: v for k, v in options.items() if k in predict_keys}
    if task.name == "translation" and predict_opts.get("beam_size") is None:
        predict_opts["beam_size"] = model.search_cfg["beam_size"]  # recorded: the default comes from the checkpoint
    datasets = []
    for spec in specs:  # every file is read (and its labels checked) before any model is run
        try:
            datasets.append(task.read(spec, read_opts, model))
        except ConfigError as e:  # the readers name training's keys (data.format): here they are plain options
            if e.key.startswith("data.") and e.key[5:] in read_opts:
                raise ConfigError(e.key[5:], e.detail) from None
            raise
    if len(paths) == 1:
        runs = [(paths[0], paths, predictor)]
    else:  # each member alone (a predictor of its module alone, no second load), then the ensemble
        runs = [(p, [p], type(predictor)(m)) for p, m in zip(paths, predictor.members)] if members else []
        runs.append((f"ensemble of {len(paths)}", paths, predictor))
    results = []
    for data in datasets:
        rows = []
        for name, ckpts, p in runs:
            task.warmup(p, data, batch_size, predict_opts)
            row = {"model": name, "checkpoints": ckpts, **task.score(p, data, batch_size, predict_opts),
                   "examples": data.examples}
            task.rate(row, data)
            rows.append(row)
            if progress is not None:
                progress(f"{data.name}: {name}: " + ", ".join(
                    f"{task.labels[m]} {row[m]:.4f}" for m in task.metrics[:2] if row.get(m) is not None)
                    + f" ({row['seconds']:.1f} s)")
        result = {"data": data.name, "examples": data.examples, **data.extra, "models": rows}
        if members:
            result["ensemble_gain"] = {m: rows[-1][m] - sum(r[m] for r in rows[:-1]) / (len(rows) - 1)
                                       for m in task.metrics if rows[-1].get(m) is not None}
        results.append(result)
    return {"task": task.name, "checkpoints": paths, "device": device, "batch_size": batch_size,
            "options": {**read_opts, **predict_opts}, "metrics": list(task.metrics),
            "higher_is_better": task.higher_is_better, "results": results}


# ---------------------------------------------------------------- output

def _number(metric: str, value) -> str:
    if value is None:
        return "-"
    if metric in ("bleu", "chrf"):
        return f"{value:.2f}"
    if metric == "ppl":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _rate(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headings, rows, footnote) per file: the table `main` prints."""
    task = TASKS[report["task"]]
    metrics = [m for m in task.metrics if any(r.get(m) is not None for res in report["results"] for r in res["models"])]
    out = []
    for res in report["results"]:
        gen = report["task"] == "generation"
        headings = ["model", *(task.labels[m] for m in metrics), "examples",
                    *(["tokens", "tokens/s"] if gen else ["sentences/s"])]
        rows = [[r["model"], *(_number(m, r.get(m)) for m in metrics), f"{r['examples']:,}",
                 *([f"{r['tokens']:,}", _rate(r["tokens_per_s"])] if gen else [_rate(r["sentences_per_s"])])]
                for r in res["models"]]
        note = ""
        if "ensemble_gain" in res:
            note = "ensemble - mean of members: " + ", ".join(
                f"{task.labels[m]} {v:+.4f}" if m not in ("bleu", "chrf") else f"{task.labels[m]} {v:+.2f}"
                for m, v in res["ensemble_gain"].items())
        out.append((f"{res['data']} ({res['examples']:,} examples)", headings, rows, note))
    return out


def print_tables(report: dict, stream=None) -> None:
    stream = stream or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but the plain table needs nothing
        Console = None
    for title, headings, rows, note in tables(report):
        if Console is not None:
            console = Console(file=stream, width=None if stream.isatty() else 200, highlight=False)
            table = Table(title=title, title_justify="left")
            for i, h in enumerate(headings):
                table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print(table)
            if note:
                console.print(note)
            continue
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        print(title, fmt(headings), *(fmt(r) for r in rows), *([note] if note else []), "", sep="\n", file=stream)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, __doc__, USAGE, _main, "evaluating", ("batch_size", "beam_size"),
                       "batch_size (or beam_size)")


def _main(argv: list[str], args: dict) -> int:
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(arg, f"expected key=value; {USAGE}")
    args.update(parse_args(argv, raw=(*RAW_KEYS, "data")))
    for key in ("ckpt", "data"):
        if key not in args or not str(args[key]).strip():
            raise ConfigError(key, f"missing; {USAGE}")
    options = dict(args)
    target = str(options.pop("output", ""))
    if target and target != "-":
        if Path(target).is_dir():
            raise ConfigError("output", f"{target} is a folder; name a file for the JSON results")
        files = [f for s in data_specs(args["data"]) for f in (s.values() if isinstance(s, dict) else [s])]
        if any(path_exists(f) and Path(f).resolve() == Path(target).resolve() for f in files):
            raise ConfigError("output", f"{target} is a data file (it would be overwritten)")
    report = evaluate(options.pop("ckpt"), options.pop("data"), progress=lambda line: print(line, file=sys.stderr),
                      **options)
    text = json.dumps(report, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return 0
    print_tables(report)
    if target:
        from nlpseq.utils.io import atomic_write_text

        atomic_write_text(target, text)
        print(f"wrote the results to {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
