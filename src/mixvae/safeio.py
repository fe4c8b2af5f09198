"""Opening files the user named without hanging on them or reading without bound.

Every file that mixvae reads as input (data files, configs, run-folder files, weights) is opened
with :func:`open_regular`: the path is opened without blocking (``O_NONBLOCK``: a FIFO does not wait
for a writer) and refused unless what was opened is a regular file, so ``/dev/zero``, a terminal, a
FIFO or a socket ends with one line instead of a hang or an endless read. Symbolic links given as
the path itself are followed (a data folder may well be a link); links *inside* a data folder or
archive are refused by the data readers.

The limits below bound what one data set may make mixvae read or decompress; they are checked
from sizes that files and archive headers declare, before the data is read.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from .errors import UserError

MAX_FILE_BYTES = 1 << 30        # one data file, archive member or decompressed stream: 1 GiB
MAX_TOTAL_BYTES = 4 << 30       # everything one data set reads or decompresses: 4 GiB
MAX_IMAGE_PIXELS = 1 << 26      # one image, from its header before decoding: 67,108,864 (8192 x 8192)
MAX_CONFIG_BYTES = 1 << 20      # a YAML config file: 1 MiB


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike, what: str = "", limit: int | None = None) -> io.BufferedReader:
    """``path`` opened for binary reading, or :class:`UserError` in one line if it is missing,
    unreadable, not a regular file (a folder, device, FIFO, socket), or larger than ``limit`` bytes.
    ``what`` prefixes the message (e.g. ``"data.path = "``)."""
    name = f"{what}{path}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{name} is a folder; expected a file") from None
    except OSError as e:
        raise UserError(f"{name}: cannot open it ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            e = UserError(f"{name} is {_kind(st.st_mode)}; expected a regular file, refusing to read it")
            e.reason = f"{_kind(st.st_mode)}, not a regular file; refusing to read it"
            raise e
        if limit is not None and st.st_size > limit:
            raise UserError(f"{name} holds {st.st_size} bytes, more than the limit of {limit} bytes for this file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "", limit: int | None = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :func:`open_regular`)."""
    with open_regular(path, what, limit) as f:
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as e:
            raise UserError(f"{what}{path}: cannot read it ({e.strerror})") from None
    if limit is not None and len(data) > limit:   # it grew while we read it
        raise UserError(f"{what}{path} holds more than the limit of {limit} bytes for this file")
    return data


def read_text(path: str | os.PathLike, what: str = "", limit: int | None = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file (see :func:`read_regular`); one line if it is not UTF-8."""
    try:
        return read_regular(path, what, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what}{path}: not a UTF-8 text file (byte {e.start} is {e.object[e.start:e.start + 1]!r})") from None


class Budget:
    """What one data set may read: each part at most ``MAX_FILE_BYTES``, all parts together at most
    ``MAX_TOTAL_BYTES``. :meth:`take` is called with a size declared by a header or ``stat``,
    before the bytes are read."""

    def __init__(self, where: str, per_part: int | None = None, total: int | None = None):
        self.where = where
        self.per_part = MAX_FILE_BYTES if per_part is None else per_part
        self.total = MAX_TOTAL_BYTES if total is None else total
        self.used = 0

    def take(self, size: int, part: str) -> None:
        """Account for a part of ``size`` bytes (checked against both limits)."""
        if size > self.per_part:
            raise UserError(f"{self.where}: {part} declares {size} bytes, more than the limit of {self.per_part} "
                            "bytes for one file (mixvae.safeio.MAX_FILE_BYTES); refusing to read it")
        self.grow(size, part)

    def grow(self, size: int, part: str) -> None:
        """Account for ``size`` more bytes of the whole (checked against the total limit only)."""
        self.used += size
        if self.used > self.total:
            raise UserError(f"{self.where}: holds more than the limit of {self.total} bytes in all "
                            f"(mixvae.safeio.MAX_TOTAL_BYTES), reached at {part}; refusing to read further")


def is_link_or_special(path: Path) -> str | None:
    """Why ``path`` (not followed if it is a link) is not a plain file or folder, or None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return _kind(mode)
