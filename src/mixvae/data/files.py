"""Readers for the canonical file formats. Each returns numpy arrays and raises UserError with one
sentence naming the file and what was wrong. Nothing here executes code from a file: pickles go
through :class:`SafeUnpickler`, archives are read member by member without extracting, MATLAB
files are read by ``scipy.io.loadmat`` after their compressed parts have been measured.

What a hostile file cannot do (the limits are in :mod:`mixvae.safeio`):
- make a reader hang: only regular files are opened (never a device, FIFO or socket);
- make a reader allocate without bound: sizes are checked from what headers declare (a tar
  member's size, an IDX or .npy header's shape, an image's width x height) before reading,
  against MAX_FILE_BYTES per part, MAX_TOTAL_BYTES per data set and MAX_IMAGE_PIXELS per image;
- reach outside its folder or archive: members with absolute or '..' paths, and links (symbolic
  or hard) and special files inside an image folder or an archive, are refused;
- pass damaged: a compressed stream is read to its end, so its checksum (gzip CRC, zip CRC) is
  verified, and a truncated file is reported as such.
"""
from __future__ import annotations

import gzip
import io
import lzma
import math
import os
import pickle
import tarfile
import warnings
import zipfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from .. import safeio
from ..errors import UserError
from ..safeio import Budget, open_regular, read_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# what reading a damaged compressed or archived file raises (bz2 raises OSError or ValueError)
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error,
                lzma.LZMAError, ValueError, NotImplementedError, RuntimeError)


def _why(e: BaseException) -> str:
    """An exception's message, as one short line."""
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(e).__name__)


# ---------------------------------------------------------------------------------------- IDX
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not: magic 0x0000 0x08 (uint8) ndim, then big-endian
    dims. The header's size is checked against the limits before the data is read, and a gzipped
    file is read to its end (its CRC verified)."""
    try:
        with open_regular(path) as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] not in (1, 3):
                raise UserError(f"{path}: wrong magic number {head.hex() or '(empty file)'}; expected an IDX file of "
                                "uint8 (0x00000801 for labels or 0x00000803 for images)")
            ndim = head[3]
            raw_dims = stream.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise UserError(f"{path}: the header ends early; the file is truncated or corrupt")
            dims = [int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim)]
            expected = math.prod(dims)
            Budget(str(path)).take(expected, f"its header ({dims})")
            data = stream.read(expected)
            extra = stream.read(1)          # at the end of a gzip stream this verifies its CRC
    except UserError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read the gzip stream ({_why(e)}); the file is truncated or corrupt") from None
    if len(data) != expected or extra:
        held = f"{len(data)}" if not extra else f"more than {expected}"
        raise UserError(f"{path}: holds {held} bytes of data but its header promises {dims} = {expected}; "
                        "the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()


# ------------------------------------------------------------------------------- text matrices
def read_amat(path: Path, width: int = 784) -> np.ndarray:
    """Larochelle's .amat: one example per line, ``width`` space-separated 0/1 values."""
    with open_regular(path, limit=safeio.MAX_FILE_BYTES) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # numpy warns about an empty file; we say it below
                arr = np.loadtxt(f, dtype=np.float32)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot parse as an .amat text matrix ({_why(e)})") from None
    arr = np.atleast_2d(arr)
    if arr.shape[1] != width or arr.shape[0] == 0 or not np.isin(arr, (0.0, 1.0)).all():
        raise UserError(f"{path}: expected rows of {width} values in {{0, 1}}, got shape {arr.shape}")
    return arr.astype(np.uint8)


# ------------------------------------------------------------------------------------- pickles
class SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, dtypes and scalars plus plain containers; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def safe_unpickle(data: bytes, where: str, encoding: str = "latin1"):
    try:
        return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
    except Exception as e:  # any failure of a foreign file is the file's fault, reported in one line
        raise UserError(f"{where}: not a pickle of numpy arrays ({_why(e)})") from None


def _describe(obj) -> str:
    if isinstance(obj, np.ndarray):
        return f"an array of dtype {obj.dtype} and shape {obj.shape}"
    return f"a {type(obj).__name__}"


def read_frey_faces(path: Path) -> np.ndarray:
    """The VampPrior authors' freyfaces.pkl: a list whose first item is uint8 (1965, 560); -> (N, 28, 20)."""
    obj = safe_unpickle(read_regular(path), str(path))
    arr = obj[0] if isinstance(obj, (list, tuple)) and obj else obj
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uif" or arr.size == 0 or arr.size % 560 != 0:
        raise UserError(f"{path}: holds {_describe(arr)}; expected a list whose first item is an array of 28x20 "
                        "images (560 values each, 0..255)")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.round(arr)):
        raise UserError(f"{path}: the images hold values other than whole numbers in 0..255")
    return arr.reshape(-1, 28, 20).astype(np.uint8)


def _histopathology_split(obj, key: str, where: str) -> np.ndarray:
    """One split of histopathology.pkl as float (N, 28, 28) in [0, 1], checked."""
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError):
        arr = None
    if (arr is None or arr.dtype.kind not in "uif" or arr.size == 0
            or arr.shape[1:] not in ((784,), (28, 28), (1, 28, 28), (28, 28, 1))):
        raise UserError(f"{where}: '{key}' holds {_describe(arr if arr is not None else obj)}; expected an array of "
                        "28x28 gray images, N x 784 or N x 28 x 28, with values in [0, 1]")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise UserError(f"{where}: '{key}' holds values outside [0, 1] (or NaN); expected gray images in [0, 1]")
    return arr.reshape(-1, 28, 28)


def read_histopathology(path: Path) -> dict[str, np.ndarray]:
    """The VampPrior authors' histopathology.pkl (or the .pkl inside histopathology.pkl.tar.gz): a
    pickle of {'training', 'validation', 'test'}, each gray 28x28 patches in [0, 1] (N x 784 or
    N x 28 x 28). Returns 'train', 'valid', 'test' as uint8 levels k = min(floor(256 x), 255):
    the 256 bins of width 1/256 of the authors' discretised logistic (k / 255 for values on that
    grid), so the data are 8-bit and the default likelihood is the discretised logistic."""
    where = str(path)
    if path.name.endswith((".tar", ".tar.gz", ".tgz")):
        members = read_tar(path, lambda rel, m: rel.suffix == ".pkl")
        if len(members) != 1:
            raise UserError(f"{where}: holds {len(members)} .pkl members; expected one (histopathology.pkl)")
        rel, data = members[0]
        where = f"{path}:{rel}"
    else:
        data = read_regular(path)
    obj = safe_unpickle(data, where)
    if isinstance(obj, dict):
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    keys = ("training", "validation", "test")
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = sorted(map(repr, obj))[:5] if isinstance(obj, dict) else _describe(obj)
        raise UserError(f"{where}: expected a dictionary with keys 'training', 'validation' and 'test', got {found}")
    out = {}
    for key, split in zip(keys, ("train", "valid", "test")):
        x = _histopathology_split(obj[key], key, where).astype(np.float64)
        out[split] = np.minimum(np.floor(x * 256), 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------- MATLAB files
_MI_MATRIX, _MI_COMPRESSED = 14, 15


def _scan_mat_v5(f, size: int, where: str) -> None:
    """Walk the top-level elements of an opened MATLAB v5 file: every element must lie inside the
    file, and compressed elements are decompressed (and discarded) here, counted against the size
    limits, so that scipy afterwards cannot be made to inflate a zlib bomb; a damaged or truncated
    stream is reported."""
    budget = Budget(where)
    head = f.read(128)
    if len(head) < 128 or head[:10] == b"MATLAB 7.3" or head[126:128] not in (b"IM", b"MI"):
        kind = ("a MATLAB v7.3 (HDF5) file" if head[:10] == b"MATLAB 7.3" else
                "not a MATLAB v5 .mat file (its 128-byte header is missing)")
        raise UserError(f"{where}: {kind}; expected a MATLAB v5 .mat file (scipy.io.savemat, MATLAB -v6/-v7)")
    order = "little" if head[126:128] == b"IM" else "big"
    pos = 128
    while pos < size:
        tag = f.read(8)
        if len(tag) < 8:
            raise UserError(f"{where}: an element header at byte {pos} ends early; the file is truncated")
        first, nbytes = int.from_bytes(tag[:4], order), int.from_bytes(tag[4:], order)
        if first >> 16:                       # a small data element: 4 bytes of data in the tag
            pos += 8
            continue
        if pos + 8 + nbytes > size:
            raise UserError(f"{where}: the element at byte {pos} declares {nbytes} bytes but the file ends at byte "
                            f"{size}; the file is truncated")
        part = f"the element at byte {pos}"
        if first == _MI_COMPRESSED:
            part = f"the compressed element at byte {pos}, decompressed,"
            d, left, inflated = zlib.decompressobj(), nbytes, 0
            try:
                while left or d.unconsumed_tail:
                    src = d.unconsumed_tail
                    if not src:
                        src = f.read(min(left, 1 << 20))
                        left -= len(src)
                    piece = d.decompress(src, 1 << 22)
                    inflated += len(piece)
                    if inflated > budget.per_part:
                        budget.take(inflated, part)
                    budget.grow(len(piece), part)
                    if d.eof:
                        break
            except zlib.error as e:
                raise UserError(f"{where}: {part} is not a readable zlib stream ({_why(e)}); the file is corrupt") from None
            if not d.eof:
                raise UserError(f"{where}: the compressed {part} ends early; the file is truncated or corrupt")
        else:
            budget.take(nbytes, part)
        pos += 8 + nbytes
        f.seek(pos)


def read_mat(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Numeric 2-D arrays ``keys`` (and ``optional`` ones where present) of a MATLAB v5 .mat file,
    read with ``scipy.io.loadmat`` (which runs no code from the file) after the file's elements
    have been checked against the size limits (see :func:`_scan_mat_v5`); v4 and v7.3 files,
    missing keys and arrays that are not real numbers are refused with one line."""
    import scipy.io

    where = str(path)
    with open_regular(path, limit=safeio.MAX_FILE_BYTES) as f:
        size = os.fstat(f.fileno()).st_size
        _scan_mat_v5(f, size, where)
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = [name for name, _, _ in scipy.io.whosmat(f)]
                f.seek(0)
                mat = scipy.io.loadmat(f, variable_names=[k for k in keys + optional if k in found])
        except UserError:
            raise
        except Exception as e:   # whatever a damaged file makes scipy raise is the file's fault
            raise UserError(f"{where}: not a readable MATLAB v5 .mat file ({_why(e)})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise UserError(f"{where}: key {missing[0]!r} is missing; expected keys {', '.join(keys)} "
                        f"(the file holds {', '.join(found) or 'nothing'})")
    out = {}
    for k in keys + optional:
        if k not in mat:
            continue
        a = mat[k]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "uifb" or a.ndim != 2 or 0 in a.shape:
            raise UserError(f"{where}: key {k!r} holds {_describe(a)}; expected a 2-D array of real numbers")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise UserError(f"{where}: key {k!r} contains NaN or infinite values")
        out[k] = a
    return out


# ------------------------------------------------------------------------------------ archives
def safe_member_name(name: str, where: str) -> PurePosixPath:
    """A tar member's path, refused if absolute or if it climbs out with '..'."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise UserError(f"{where}: archive member {name!r} points outside the archive; refusing to read it")
    return p


def _check_member(m: tarfile.TarInfo, where: str, budget: Budget) -> PurePosixPath:
    """A member's path after the checks every archive gets: inside the archive, a plain file or a
    folder (no links, devices or FIFOs), within the size limits (from its header, before reading)."""
    rel = safe_member_name(m.name, where)
    if m.issym() or m.islnk():
        raise UserError(f"{where}: archive member {m.name!r} is a link; links in archives are refused")
    if not (m.isfile() or m.isdir()):
        raise UserError(f"{where}: archive member {m.name!r} is a device or FIFO; refusing to read it")
    budget.take(m.size, f"archive member {m.name!r}")
    budget.grow(tarfile.BLOCKSIZE, f"archive member {m.name!r}")     # its header
    return rel


def read_tar(path: Path, want: Callable[[PurePosixPath, tarfile.TarInfo], bool]) -> list[tuple[PurePosixPath, bytes]]:
    """(path, bytes) of the file members of a tar archive (plain, gzip, bzip2 or xz) for which
    ``want(path, member)`` is true, in archive order. Every member is checked (see
    :func:`_check_member`) before anything of it is read, and the compressed stream is read to its
    end, so a truncated or damaged archive is reported."""
    where = str(path)
    budget = Budget(where)
    out = []
    with open_regular(path) as f:
        try:
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                while (m := tar.next()) is not None:
                    rel = _check_member(m, where, budget)
                    if m.isfile() and want(rel, m):
                        data = tar.extractfile(m).read()
                        if len(data) != m.size:
                            raise UserError(f"{where}: archive member {m.name!r} ends early; the file is truncated")
                        out.append((rel, data))
                while chunk := tar.fileobj.read(1 << 20):    # the rest of the stream: checks its CRC
                    budget.grow(len(chunk), "the end of the archive")
        except UserError:
            raise
        except _READ_ERRORS as e:
            raise UserError(f"{where}: cannot read the archive ({_why(e)}); the file is truncated or corrupt") from None
    return out


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive into ``target``; members with absolute or '..' paths, links and devices,
    and members beyond the size limits are refused before anything is written."""
    target = target.resolve()
    where = str(archive)
    budget = Budget(where)
    with open_regular(archive) as f:
        try:
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, where, budget)
                    if not (target / m.name).resolve().is_relative_to(target):
                        raise UserError(f"{archive}: archive member {m.name!r} points outside {target}")
                tar.extractall(target, members=members, filter="data")
        except UserError:
            raise
        except _READ_ERRORS as e:
            raise UserError(f"{where}: cannot read the archive ({_why(e)}); the file is truncated or corrupt") from None


def _cifar_batch(batch, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one unpickled CIFAR-10 batch, checked."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        got = sorted(map(repr, batch))[:5] if isinstance(batch, dict) else _describe(batch)
        raise UserError(f"{where}: expected a CIFAR-10 batch (a dictionary with b'data' and b'labels'), got {got}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{where}: b'data' is {_describe(data)}; expected a uint8 array of N rows of 3072 pixels")
    try:
        labels = np.asarray(batch[b"labels"])
    except (ValueError, TypeError):
        labels = None
    if (labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != data.shape[0]
            or (labels.size and (labels.min() < 0 or labels.max() > 9))):
        raise UserError(f"{where}: b'labels' is {_describe(labels if labels is not None else batch[b'labels'])}; "
                        f"expected {data.shape[0]} class numbers in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar_python(path: Path) -> dict[str, np.ndarray]:
    """cifar-10-python.tar.gz (pickled batches) -> train/test images (N, 32, 32, 3) uint8 and labels."""
    parts = {"train": ([], []), "test": ([], [])}
    batch_name = lambda rel: rel.name.startswith("data_batch_") or rel.name == "test_batch"
    for rel, data in read_tar(path, lambda rel, m: batch_name(rel)):
        split = "test" if rel.name == "test_batch" else "train"
        where = f"{path}:{rel}"
        imgs, labels = _cifar_batch(safe_unpickle(data, where, encoding="bytes"), where)
        parts[split][0].append(imgs)
        parts[split][1].append(labels)
    if not parts["train"][0] or not parts["test"][0]:
        raise UserError(f"{path}: expected data_batch_1..5 and test_batch inside the archive")
    out = {}
    for split, (imgs, labels) in parts.items():
        out[split] = np.concatenate(imgs).transpose(0, 2, 3, 1)
        out[f"{split}_labels"] = np.concatenate(labels)
    return out


# -------------------------------------------------------------------------------------- images
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_image(data: bytes, where: str, size: int | None, channels: int | None) -> np.ndarray:
    """Decode PNG/JPEG/... bytes to uint8 (H, W, C); resized to size x size (bicubic) if given.

    The image's width x height is read from its header and refused above
    ``safeio.MAX_IMAGE_PIXELS`` before any pixel is decoded. 16-bit gray images are scaled to
    8 bits (value / 257); palette images become RGB, images with alpha lose it; gray modes give
    one channel, others three (``channels`` forces 1 or 3)."""
    with _pil_warnings():
        return _decode(data, where, size, channels)


@contextmanager
def _pil_warnings():
    """Pillow's notes silenced and its decompression-bomb warning an error, inside the block. The
    warning filters are one list for the whole process: set them in one thread, around all decoding."""
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # e.g. PIL's palette-transparency notes
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _decode(data: bytes, where: str, size: int | None, channels: int | None) -> np.ndarray:
    """:func:`decode_image` without touching the warning filters (safe in worker threads)."""
    from PIL import Image

    limit = safeio.MAX_IMAGE_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > limit or w < 1 or h < 1:
            raise UserError(f"{where}: its header says {w} x {h} pixels; expected between 1 and {limit} "
                            "pixels (mixvae.safeio.MAX_IMAGE_PIXELS); not decoding it")
        img.load()
        img = _eight_bit(img, where)
        mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if img.mode in _GRAY_MODES else "RGB")
        img = img.convert(mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{where}: its header claims more than {limit} pixels (mixvae.safeio.MAX_IMAGE_PIXELS); "
                        "not decoding it") from None
    except Exception as e:   # whatever a damaged image makes a decoder raise is the file's fault
        raise UserError(f"{where}: not a readable image ({_why(e)})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _eight_bit(img, where: str):
    """16-bit (and 32-bit integer) gray images as 8-bit gray, value / 257 rounded; float images refused."""
    from PIL import Image
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise UserError(f"{where}: a 32-bit image with values outside 0..65535; expected 8- or 16-bit images")
        return Image.fromarray(((a + 128) // 257).astype(np.uint8), "L")
    if img.mode == "F":
        raise UserError(f"{where}: a floating-point image; expected 8- or 16-bit images")
    return img


def read_image_tree(entries: list[tuple[str, bytes]], where: str, size: int | None,
                    channels: int | None) -> dict[str, np.ndarray]:
    """Decoded images from (relative path, bytes) pairs laid out as [split/]class/file.

    Returns ``{split: images, split_labels: labels}`` with split 'train', 'test' (if present) or
    'all' when there is no split level. Class indices follow the sorted class names.
    """
    grouped: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    for rel, data in entries:
        parts = PurePosixPath(rel).parts
        if len(parts) >= 3 and parts[-3] in ("train", "test", "valid", "val"):
            split = "valid" if parts[-3] == "val" else parts[-3]
        else:
            split = "all"
        cls = parts[-2] if len(parts) >= 2 else ""
        grouped.setdefault(split, {}).setdefault(cls, []).append((rel, data))
    if not grouped:
        raise UserError(f"{where}: found no images ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({c for g in grouped.values() for c in g})
    out: dict[str, np.ndarray] = {}
    shapes: dict[tuple, str] = {}
    decoded = Budget(where)
    from ..progress import bar
    decoding = bar(total=sum(len(v) for g in grouped.values() for v in g.values()), desc=f"decode {Path(where).name}",
                   unit="img", disable=len(entries) < 2000)
    # decoded by several threads (Pillow releases the GIL while it decodes and resizes), taken in
    # order, at most 2 per thread ahead of the one the budget checks
    jobs = [(split, cls, rel, data) for split, by_class in grouped.items()
            for cls in sorted(by_class) for rel, data in sorted(by_class[cls])]
    import torch
    workers = max(1, min(8, torch.get_num_threads()))         # as many as torch may use (train.threads)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="mixvae-decode")
    ahead: deque = deque()
    todo = iter(jobs)

    def submit_next() -> None:
        job = next(todo, None)
        if job is not None:
            ahead.append((job, pool.submit(_decode, job[3], f"{where}/{job[2]}", size, channels)))

    imgs: dict[str, list] = {}
    labels: dict[str, list] = {}
    try:
        with _pil_warnings():
            for _ in range(2 * workers):
                submit_next()
            while ahead:
                (split, cls, rel, _), future = ahead.popleft()
                arr = future.result()
                submit_next()
                decoding.update(1)
                decoded.take(arr.nbytes, f"the decoded image {rel}")
                shapes.setdefault(arr.shape, rel)
                if len(shapes) > 1:
                    (s1, r1), (s2, r2) = list(shapes.items())[:2]
                    fix = ("set data.channels to 1 or 3" if s1[:2] == s2[:2] else "set data.image_size to resize them")
                    raise UserError(f"{where}: images differ in size: {r1} is {s1[1]}x{s1[0]}x{s1[2]}, {r2} is "
                                    f"{s2[1]}x{s2[0]}x{s2[2]} (width x height x channels); {fix}")
                imgs.setdefault(split, []).append(arr)
                labels.setdefault(split, []).append(classes.index(cls))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)     # after a bad image: the rest is not decoded
    for split in imgs:
        out[split] = np.stack(imgs[split])
        out[f"{split}_labels"] = np.asarray(labels[split], dtype=np.int64)
    decoding.close()
    return out


def image_entries_from_dir(root: Path) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of the image files under ``root``. Symbolic links and special files
    (devices, FIFOs, sockets) anywhere below ``root`` are refused, never followed or opened; each
    file's size is checked before it is read (``root`` itself may be a link)."""
    where = str(root)
    budget = Budget(where)
    out = []

    def walk(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise UserError(f"{folder}: cannot list the folder ({e.strerror})") from None
        for e in entries:
            p = Path(e.path)
            why = safeio.is_link_or_special(p)
            if why is not None:
                raise UserError(f"{p} is {why}; links and special files inside an image folder are refused "
                                "(copy the file in, or point data.path at the folder that holds it)")
            if e.is_dir(follow_symlinks=False):
                walk(p)
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                budget.take(e.stat(follow_symlinks=False).st_size, f"the file {p.relative_to(root)}")
                out.append((p.relative_to(root).as_posix(), read_regular(p)))

    walk(root)
    return out


def image_entries_from_tar(path: Path) -> list[tuple[str, bytes]]:
    return [(rel.as_posix(), data) for rel, data in read_tar(path, lambda rel, m: rel.suffix.lower() in IMAGE_SUFFIXES)]


# ------------------------------------------------------------------------------------------ npz
def _npy_header(f, name: str, where: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes of data) from the header of one .npy member."""
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = read(f)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: array {name!r} has no valid .npy header ({_why(e)})") from None
    if dtype.hasobject:
        raise UserError(f"{where}: array {name!r} holds Python objects (dtype {dtype}); only plain arrays are "
                        "read (numpy.load(allow_pickle=False))")
    return shape, dtype, math.prod(shape) * dtype.itemsize


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """An .npz without pickled objects (allow_pickle=False). Each array's shape is read from its
    header and checked against the member's declared size and the limits before its data is read;
    reading checks each member's CRC."""
    where = str(path)
    budget = Budget(where)
    out = {}
    with open_regular(path) as f:
        try:
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if info.is_dir() or not info.filename.endswith(".npy"):
                        continue
                    name = info.filename[:-4]
                    budget.take(info.file_size, f"array {name!r}")
                    with z.open(info) as member:
                        shape, dtype, nbytes = _npy_header(member, name, where)
                        if nbytes > info.file_size:
                            raise UserError(f"{where}: array {name!r} declares shape {shape} of {dtype} ({nbytes} "
                                            f"bytes) but its member holds {info.file_size} bytes; the file is corrupt")
                    with z.open(info) as member:
                        out[name] = np.lib.format.read_array(member, allow_pickle=False)
        except UserError:
            raise
        except _READ_ERRORS as e:
            raise UserError(f"{where}: not a readable .npz (a zip of .npy arrays): {_why(e)}") from None
    if not out:
        raise UserError(f"{where}: holds no arrays; expected an .npz written by numpy.savez")
    return out
