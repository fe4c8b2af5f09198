"""Readers for the canonical file formats. Each returns numpy arrays and raises UserError with one
sentence naming the file and what was wrong. Nothing here executes code from a file: pickles go
through :class:`SafeUnpickler`, archives are read member by member without extracting.
"""
from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


# ---------------------------------------------------------------------------------------- IDX
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not: magic 0x0000 0x08 (uint8) ndim, then big-endian dims."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read the gzip stream ({e}); the file is truncated or corrupt") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise UserError(f"{path}: wrong magic number {raw[:4].hex()}; expected an IDX file of uint8 "
                        "(0x00000801 for labels or 0x00000803 for images)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise UserError(f"{path}: holds {len(raw) - offset} bytes of data but its header promises "
                        f"{dims} = {expected}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


# ------------------------------------------------------------------------------- text matrices
def read_amat(path: Path, width: int = 784) -> np.ndarray:
    """Larochelle's .amat: one example per line, ``width`` space-separated 0/1 values."""
    try:
        arr = np.loadtxt(path, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot parse as an .amat text matrix ({e})") from None
    arr = np.atleast_2d(arr)
    if arr.shape[1] != width or not np.isin(arr, (0.0, 1.0)).all():
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
        raise UserError(f"{where}: not a pickle of numpy arrays ({e})") from None


def read_frey_faces(path: Path) -> np.ndarray:
    """The VampPrior authors' freyfaces.pkl: a list whose first item is uint8 (1965, 560); -> (N, 28, 20)."""
    obj = safe_unpickle(path.read_bytes(), str(path))
    arr = obj[0] if isinstance(obj, (list, tuple)) and obj else obj
    arr = np.asarray(arr) if isinstance(arr, np.ndarray) else None
    if arr is None or arr.size % 560 != 0:
        raise UserError(f"{path}: expected a list whose first item is an array of 28x20 images (560 values each)")
    return arr.reshape(-1, 28, 20).astype(np.uint8)


# ------------------------------------------------------------------------------------ archives
def safe_member_name(name: str, where: str) -> PurePosixPath:
    """A tar member's path, refused if absolute or if it climbs out with '..'."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise UserError(f"{where}: archive member {name!r} points outside the archive; refusing to read it")
    return p


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive into ``target``; members with absolute or '..' paths, links and devices are refused."""
    target = target.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            safe_member_name(m.name, str(archive))
            if not (m.isfile() or m.isdir()):
                raise UserError(f"{archive}: archive member {m.name!r} is a link or device; refusing to extract")
            if not (target / m.name).resolve().is_relative_to(target):
                raise UserError(f"{archive}: archive member {m.name!r} points outside {target}")
        tar.extractall(target, members=members, filter="data")


def read_cifar_python(path: Path) -> dict[str, np.ndarray]:
    """cifar-10-python.tar.gz (pickled batches) -> train/test images (N, 32, 32, 3) uint8 and labels."""
    parts = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            name = safe_member_name(m.name, str(path)).name
            split = "train" if name.startswith("data_batch_") else "test" if name == "test_batch" else None
            if split is None or not m.isfile():
                continue
            batch = safe_unpickle(tar.extractfile(m).read(), f"{path}:{m.name}", encoding="bytes")
            parts[split][0].append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            parts[split][1].append(np.asarray(batch[b"labels"], dtype=np.int64))
    if not parts["train"][0] or not parts["test"][0]:
        raise UserError(f"{path}: expected data_batch_1..5 and test_batch inside the archive")
    out = {}
    for split, (imgs, labels) in parts.items():
        out[split] = np.concatenate(imgs).transpose(0, 2, 3, 1)
        out[f"{split}_labels"] = np.concatenate(labels)
    return out


def decode_image(data: bytes, where: str, size: int | None, channels: int | None) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 (H, W, C); resized to size x size (bicubic) if given."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: not a readable image ({e})") from None
    mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
    img = img.convert(mode)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


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
    shapes = set()
    from ..progress import bar
    decoding = bar(total=sum(len(v) for g in grouped.values() for v in g.values()), desc=f"decode {Path(where).name}",
                   unit="img", disable=len(entries) < 2000)
    for split, by_class in grouped.items():
        imgs, labels = [], []
        for cls in sorted(by_class):
            for rel, data in sorted(by_class[cls]):
                decoding.update(1)
                arr = decode_image(data, f"{where}/{rel}", size, channels)
                shapes.add(arr.shape)
                imgs.append(arr)
                labels.append(classes.index(cls))
        if len(shapes) > 1:
            raise UserError(f"{where}: images have different sizes {sorted(shapes)[:3]}; set data.image_size to resize them")
        out[split] = np.stack(imgs)
        out[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    decoding.close()
    return out


def image_entries_from_dir(root: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def image_entries_from_tar(path: Path) -> list[tuple[str, bytes]]:
    out = []
    try:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                rel = safe_member_name(m.name, str(path))
                if m.isfile() and rel.suffix.lower() in IMAGE_SUFFIXES:
                    out.append((rel.as_posix(), tar.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read the archive ({e}); the file is truncated or corrupt") from None
    return out


# ------------------------------------------------------------------------------------------ npz
def read_npz(path: Path) -> dict[str, np.ndarray]:
    """An .npz without pickled objects (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        raise UserError(f"{path}: holds pickled objects or is not a valid .npz ({e}); only plain arrays are read") from None
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read as .npz ({e})") from None
