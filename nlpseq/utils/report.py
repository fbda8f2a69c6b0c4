"""End-of-run reporting: a rich table of metrics and where the best checkpoint is."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_results(monitor: str, best_score, val: dict[str, float], test: dict[str, float], best_path: str,
                  run_dir: Path) -> None:
    console = Console(stderr=False, highlight=False)
    table = Table(title="nlpseq results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if best_score is not None:
        table.add_row(f"best {monitor}", f"{float(best_score):.4f}")
    for key in sorted(val):
        table.add_row(key + " (last epoch)", f"{val[key]:.4f}")
    for key in sorted(test):
        table.add_row(key, f"{test[key]:.4f}")
    console.print(table)
    # plain prints: paths must never be wrapped (scripts grep for them)
    print(f"best checkpoint: {best_path or '(none saved)'}", flush=True)
    print(f"run directory: {run_dir}", flush=True)
