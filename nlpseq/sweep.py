"""Hydra callback that prints (and saves) one table of the monitored metric per job after a sweep."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        try:
            value = job_return.return_value
            status = "ok" if value is not None and math.isfinite(value) else "failed"
        except Exception as e:  # the job raised: Hydra keeps the exception in the return
            value, status = None, f"failed: {type(e).__name__}"
        self.rows.append({"job": config.hydra.job.num, "overrides": " ".join(job_return.overrides or []),
                          "metric": config.get("monitor", {}).get("metric", "?"), "value": value, "status": status,
                          "dir": config.hydra.runtime.output_dir})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console
        from rich.table import Table

        if not self.rows:
            return
        metric = self.rows[0]["metric"]
        table = Table(title=f"sweep summary: {metric}")
        for col in ("job", "overrides", metric, "status"):
            table.add_column(col, justify="right" if col == metric else "left")
        # show only the overrides that differ between jobs
        common = set.intersection(*(set(r["overrides"].split()) for r in self.rows))
        for r in sorted(self.rows, key=lambda r: r["job"]):
            varying = " ".join(o for o in r["overrides"].split() if o not in common)
            table.add_row(str(r["job"]), varying, "-" if r["value"] is None else f"{r['value']:.4f}", r["status"])
        Console(highlight=False).print(table)
        out = Path(config.hydra.sweep.dir) / "sweep_summary.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["job", "overrides", "metric", "value", "status", "dir"])
            writer.writeheader()
            writer.writerows(self.rows)
        print(f"sweep summary written to {out}")
