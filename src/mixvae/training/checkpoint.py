"""Checkpoints: atomic writes, loading without code execution, fallback to the previous good one.

A write goes to a temporary file in the same folder, is flushed to disk, and replaces the old
file by rename; the file it replaces is kept as ``<name>.prev.pt``. At any instant of a write
(or a kill during it) a complete checkpoint exists. Loading uses ``torch.load(weights_only=True)``,
which restores tensors and plain containers only and never runs code from the file.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import UserError
from ..safeio import open_regular


def _prev(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, _prev(path))
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def weights_only(state: dict) -> dict:
    """The part of a checkpoint that evaluating a model needs: module weights, the objective's state
    (e.g. a converted prior) and the loop's counters; no optimizer moments or random state."""
    return {k: v for k, v in state.items() if k in ("format", "modules", "objective", "loop")}


def _refusal(message: str) -> str | None:
    """What torch's weights-only unpickler refused, without its generic advice: the global it
    names (e.g. 'GLOBAL posix.system'), or the opcode it could not read; None if ``message`` is not
    a refusal of the weights-only unpickler."""
    if "Weights only load failed" not in message and "WeightsUnpickler" not in message:
        return None
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", message)
    if found:
        return (f"it holds objects other than tensors and plain containers (GLOBAL {found.group(1)}); "
                "refused without running any of it")
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    return f"not a torch checkpoint ({found.group(1).strip().rstrip('.') if found else 'its pickle cannot be read safely'})"


def _load(path: Path) -> dict:
    try:
        f = open_regular(path)          # never a device or FIFO: they would hang or never end
    except UserError as e:
        raise ValueError(getattr(e, "reason", str(e))) from None
    with f:
        try:
            with warnings.catch_warnings():       # torch warns about pickle protocols: not the user's business
                warnings.simplefilter("ignore")
                state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            refused = _refusal(str(e))
            if refused is not None:
                raise ValueError(refused) from None
            if not str(e).strip():      # e.g. an empty file: torch's error has no message
                raise ValueError(f"unreadable ({type(e).__name__}: the file is empty or truncated)") from None
            raise
    if not isinstance(state, dict):
        raise ValueError("not a mixvae checkpoint (expected a dictionary)")
    return state


def load_checkpoint(path: Path) -> dict:
    """Load ``path``; if it is missing, truncated or corrupt, fall back to ``<name>.prev.pt``."""
    errors = []
    for candidate in (path, _prev(path)):
        if not candidate.exists():
            continue
        try:
            state = _load(candidate)
        except Exception as e:  # corrupt, truncated, or holding objects weights_only refuses
            errors.append(f"{candidate}: {str(e).splitlines()[0][:200]}")
            continue
        if errors:
            print(f"mixvae: warning: {errors[0]}; using the previous checkpoint {candidate}", file=sys.stderr)
        return state
    if errors:
        raise UserError(f"cannot load checkpoint {path}: " + "; ".join(errors))
    raise UserError(f"checkpoint {path} does not exist")
