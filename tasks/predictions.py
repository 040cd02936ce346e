"""The one prediction writer of every task: ``tzoo predict`` writes the module's
``prediction_rows`` into the run folder, as CSV or JSON lines by the file's suffix
(``TaskModule.predict_file``), atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from tzoo.tasks.files import atomic_write

__all__ = ["PredictionWriter", "write_rows"]


class PredictionWriter(BasePredictionWriter):
    """At the end of ``predict``, rank 0 writes ``pl_module.prediction_rows(outputs, datamodule)``
    to ``<run folder>/<pl_module.predict_file>`` and says where."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        several = isinstance(predictions[0], list) and predictions[0] and isinstance(predictions[0][0], (list, dict))
        outputs = predictions[0] if several else predictions  # the first dataloader's, when there are several
        rows = pl_module.prediction_rows(list(outputs), getattr(trainer, "datamodule", None))
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        path = write_rows(rows, folder / pl_module.predict_file)
        print(f"wrote {len(rows)} predictions to {path}")


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """``rows`` as CSV (a header of the first row's keys) or JSON lines (``.jsonl``)."""
    buffer = io.StringIO()
    if path.suffix == ".jsonl":
        buffer.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(buffer.getvalue())
    return path
