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
        """Drop records of steps after ``step`` (written after the checkpoint we resume from), the
        final evaluation's record (a resumed run is evaluated again when it ends), and a last line
        cut short by a crash; TensorBoard drops its events of those steps too. Other damaged lines
        (not a JSON record) are dropped with one warning line naming them."""
        self._purge_step = step + 1
        if self.path is None or not self.path.exists():
            return
        records, bad = read_records(self.path)
        if bad:
            import sys
            print(f"mixvae: warning: {self.path}: dropped {len(bad)} damaged line(s) (line {_names(bad)})",
                  file=sys.stderr)
        keep = [line for r, line in records if r.get("step", 0) <= step and r.get("split") != "eval"]
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


def read_records(path: Path) -> tuple[list[tuple[dict, str]], list[int]]:
    """The records of a metrics.jsonl as (record, its line) pairs, and the numbers of the lines that
    are not records (not UTF-8, not JSON, not an object of numbers with an integer step and a split
    name; an "event" record, e.g. a rollback, also holds words), except a last line
    cut short by a crash, which is dropped silently. A path that is not a regular file is
    :class:`UserError`."""
    from ..safeio import read_regular
    lines = read_regular(path, limit=None).split(b"\n")
    partial = len(lines) - 1 if lines[-1] else None   # no newline at the end: a write was cut short
    records, bad = [], []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            r = json.loads(line)
            ok = isinstance(r, dict) and isinstance(r.get("step", 0), int) and all(   # numbers, the split's name,
                (isinstance(v, str) if k == "split" else v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                 or (isinstance(v, str) and r.get("split") == "event"))             # and an event's words
                for k, v in r.items())
        except ValueError:
            ok = False
        if ok:
            records.append((r, line))
        elif i != partial:
            bad.append(i + 1)
    return records, bad


def _names(numbers: list[int], n: int = 5) -> str:
    return ", ".join(map(str, numbers[:n])) + (f" and {len(numbers) - n} more" if len(numbers) > n else "")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "null" if v is None else v
    return out
