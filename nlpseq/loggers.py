"""Loggers of our own: Lightning's CSV logger that keeps what a run already wrote."""
from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; a resumed run (ckpt_path=last) appends to it
        # instead, so the history before the interruption is kept. Fresh runs always get a new directory.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class CSVLogger(_CSVLogger):
    """`logs/metrics.csv` in the run directory; resuming a run appends to it rather than starting over."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
