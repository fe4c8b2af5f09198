"""Where the loop's metrics go: ``metrics.jsonl`` (always) and TensorBoard event files in the run
folder (when the ``tensorboard`` package is installed; ``tensorboard --logdir runs/`` shows them).

Every record the loop writes is one JSON line; its numeric values also become TensorBoard scalars
named ``<split>/<key>`` at the record's step. Pictures and the hyperparameters go to TensorBoard
only (the pictures are PNG files in the run folder as well).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np


def _tensorboard_writer(folder: Path, purge_step: Optional[int]):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:   # tensorboard is optional: training works without it
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step, flush_secs=30)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` and mirrors numbers to TensorBoard.

    ``path`` None writes nothing (processes other than rank 0, runs without a folder)."""

    def __init__(self, path: Optional[Path], tensorboard: bool = True):
        self.path, self.tensorboard = path, tensorboard and path is not None
        self._writer, self._purge_step = None, None
        self.records: list[dict] = []   # this process's records, also without a file (the Python API's history)

    @property
    def writer(self):
        """The TensorBoard writer, opened at first use (None without tensorboard or a folder)."""
        if self._writer is None and self.tensorboard:
            self._writer = _tensorboard_writer(self.path.parent, self._purge_step)
            self.tensorboard = self._writer is not None
        return self._writer

    def write(self, record: dict) -> None:
        """Append ``record`` (keep it in ``records``, a line of metrics.jsonl, and its finite numbers
        as TensorBoard scalars ``<split>/<key>`` at ``record["step"]``)."""
        self.records.append(record)
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None and "step" in record:
            split = record.get("split", "train")
            for k, v in record.items():
                if k not in ("step", "epoch", "split") and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(v):
                    self.writer.add_scalar(f"{split}/{k}", v, record["step"])

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 picture."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def add_hparams(self, config: dict, metric: str = "valid/loss") -> None:
        """The run's flattened config as TensorBoard hyperparameters, with ``metric`` to compare runs by."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _flatten(config).items()}
        for summary in hparams(flat, {metric: float("nan")}):
            self.writer.file_writer.add_summary(summary)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written after the checkpoint we resume from), and a
        last line cut short by a crash; TensorBoard drops its events of those steps too."""
        self._purge_step = step + 1
        if self.path is None or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:
                continue
        self.path.write_text("".join(line + "\n" for line in keep))

    def flush(self) -> None:
        """Push pending TensorBoard events to disk (metrics.jsonl is written line by line)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (reopened if something is written later)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "null" if v is None else v
    return out
