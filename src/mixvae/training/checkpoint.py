"""Checkpoints: atomic, checksummed writes; loading without code execution; fallback to the previous one.

A write goes to a temporary file in the same folder, is flushed to disk, and replaces the old file
by rename; the file it replaces is kept as ``<name>.prev.pt``, so at any instant of a write (or a
kill during it) a complete checkpoint exists. Each checkpoint carries the SHA-256 of its content
(every tensor's bytes, dtype and shape, and every other value, in a fixed order), checked on every
load: a file changed anywhere that matters is detected, not silently used. Loading uses
``torch.load(weights_only=True)``, which restores tensors and plain containers only and never runs
code from the file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import UserError
from ..safeio import open_regular

FORMAT = "mixvae-checkpoint-2"          # -2: carries "sha256"; -1 (mixvae 0.1) had no checksum
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _prev(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def content_digest(obj) -> str:
    """SHA-256 (hex) of a checkpoint's content: tensors by dtype, shape and bytes, containers by
    their items in key order, other values by type and repr. The same for a state and for that
    state after a save / load round trip."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` (a dict of tensors and plain values) with its checksum to ``path``, atomically.
    A failed write (disk full, permissions) raises :class:`UserError` naming the file; the previous
    checkpoint stays intact and no temporary file is left behind."""
    state = {**state, "format": FORMAT}
    state.pop("sha256", None)
    state["sha256"] = content_digest(state)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    except OSError as e:
        why = "the disk is full" if e.errno in _DISK_FULL else (e.strerror or str(e))
        kept = path if path.exists() else _prev(path)
        keeps = f"; the last good checkpoint {kept} is intact" if kept.exists() else ""
        raise UserError(f"cannot write checkpoint {path}: {why}{keeps}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
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
        return (f"unsafe, refused: it holds objects other than tensors and plain containers "
                f"(GLOBAL {found.group(1)}); refused without running any of it")
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    return f"not a torch checkpoint ({found.group(1).strip().rstrip('.') if found else 'its pickle cannot be read safely'})"


def read_checkpoint(path: Path) -> dict:
    """Load one checkpoint file and verify it; raise ``ValueError`` saying what is wrong with it."""
    if not path.exists():
        raise ValueError("missing")
    try:
        f = open_regular(path)          # never a device or FIFO: they would hang or never end
    except UserError as e:
        raise ValueError(getattr(e, "reason", str(e))) from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError("empty")
        try:
            with warnings.catch_warnings():       # torch warns about pickle protocols: not the user's business
                warnings.simplefilter("ignore")
                state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:   # truncated, corrupt, or holding objects weights_only refuses
            msg = str(e)
            refused = _refusal(msg)
            if refused is not None:
                raise ValueError(refused) from None
            detail = msg.splitlines()[0][:160] if msg.strip() else "the file is truncated"
            raise ValueError(f"unreadable ({type(e).__name__}: {detail})") from None
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith("mixvae-checkpoint"):
        raise ValueError("not a mixvae checkpoint")
    if state["format"] != "mixvae-checkpoint-1":   # checkpoints of mixvae 0.1 carry no checksum
        recorded = state.pop("sha256", None)
        if recorded is None or content_digest(state) != recorded:
            raise ValueError("damaged (its content does not match its checksum)")
    return state


def load_checkpoint(path: Path, fallback: bool = True) -> dict:
    """Load and verify ``path``. If it is missing, empty or damaged and ``fallback`` is set, use
    ``<name>.prev.pt`` with a warning on stderr; otherwise raise :class:`UserError` in one line."""
    return load_checkpoint_from(path, fallback)[0]


def load_checkpoint_from(path: Path, fallback: bool = True) -> tuple[dict, Path]:
    """:func:`load_checkpoint`, and the file that was read (``path`` or its previous copy)."""
    errors = []
    for candidate in (path, _prev(path)) if fallback else (path,):
        try:
            state = read_checkpoint(candidate)
        except ValueError as e:
            errors.append((candidate, str(e)))
            continue
        if errors:
            print(f"mixvae: warning: checkpoint {path}: {errors[0][1]}; using the previous checkpoint {candidate}",
                  file=sys.stderr)
        return state, candidate
    if all(why == "missing" for _, why in errors):
        raise UserError(f"checkpoint {path} does not exist")
    raise UserError(f"cannot load checkpoint {path}: " + "; ".join(f"{c.name}: {why}" for c, why in errors))
