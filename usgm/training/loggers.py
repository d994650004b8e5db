"""Loggers that never lose earlier rows of a run they continue."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, never deleted.

    Lightning's writer deletes ``metrics.csv`` when its folder is not empty, so a run resumed
    in its own run directory would lose every row logged before the interruption.
    """

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        # New rows are appended under the existing header; a new key makes the writer rewrite
        # the file with the merged header, keeping the old rows (their new columns empty).
        self.metrics_keys = list(header)


class AppendingCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` that appends to an existing ``metrics.csv``.

    Same arguments as Lightning's CSV logger.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use (on rank 0; a no-op object elsewhere)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
