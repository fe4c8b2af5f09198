"""Tiny synthetic files in every canonical format that ``mixvae.data`` reads, one writer per format.

The layouts follow ``mixvae/data/files.py`` and ``datasets.py`` (and the real files in the shared
copy): gzipped IDX for MNIST / Fashion-MNIST, ``binarized_mnist.npz`` or the three ``.amat`` text
files, ``freyfaces.pkl`` (a Python 2 pickle read with latin1), ``cifar-10-python.tar.gz`` (Python 2
pickles of batches), the image-folder archive ``train/<class>/NNNN.jpg`` of the CIFAR-10 JPEG copy,
plain ``.npz`` and image folders. Every writer returns the arrays it wrote, so a test can compare
what a loader hands out with what is in the file.

:class:`FakeData` writes each data set once per test session, each in its own data folder.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

IDX_FILES = {"train": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_VALID = 10_000          # the loader holds out the last 10k training images of (Fashion-)MNIST


# ------------------------------------------------------------------------------------ pixels
def stroke_images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    """(n, h, w) uint8: one anti-aliased ring per image on a black background (digit-like, and
    mostly zeros, so the gzipped files stay small)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = rng.uniform(0.35 * h, 0.65 * h, (n, 1, 1)).astype(np.float32)
    cx = rng.uniform(0.35 * w, 0.65 * w, (n, 1, 1)).astype(np.float32)
    r = rng.uniform(0.15, 0.3, (n, 1, 1)).astype(np.float32) * min(h, w)
    dist = np.abs(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r)
    return (255 * np.clip(1.5 - dist, 0, 1)).round().astype(np.uint8)


def face_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 28, 20) uint8 smooth grey images with noise (Frey-Faces-like value range)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:20].astype(np.float32)
    base = 60 + 4 * yy[None] + 3 * xx[None] * rng.uniform(0.5, 1.5, (n, 1, 1))
    return np.clip(base + rng.normal(0, 12, (n, 28, 20)), 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------- IDX
def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x00 0x00 0x08 ndim, big-endian dimensions, raw bytes."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """An IDX file, gzipped when the name ends in .gz (as the published MNIST files)."""
    data = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0) if path.suffix == ".gz" else data)
    return path


def write_mnist_like(root: Path, folder: str = "mnist", n_train: int = MNIST_VALID + 600, n_test: int = 100,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """The four gzipped IDX files of MNIST / Fashion-MNIST in ``root/folder``. n_train must exceed
    10,000: the loader always holds out the last 10k training images for validation."""
    rng = np.random.default_rng(seed)
    arrs = {"train": stroke_images(n_train, seed=seed), "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
            "test": stroke_images(n_test, seed=seed + 1), "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, name in IDX_FILES.items():
        write_idx(root / folder / name, arrs[key])
    return arrs


# ------------------------------------------------------------------------- binarised MNIST
def binary_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 784) uint8 in {0, 1} (thresholded strokes), the layout of the static binarised MNIST."""
    return (stroke_images(n, seed=seed) > 127).astype(np.uint8).reshape(n, 784)


def write_binarized_npz(root: Path, sizes=(40, 12, 10), seed: int = 0) -> dict[str, np.ndarray]:
    """``root/binarized-mnist/binarized_mnist.npz`` with train / valid / test, each (N, 784) uint8 0/1."""
    arrs = {s: binary_images(n, seed + i) for i, (s, n) in enumerate(zip(("train", "valid", "test"), sizes))}
    (root / "binarized-mnist").mkdir(parents=True, exist_ok=True)
    np.savez(root / "binarized-mnist" / "binarized_mnist.npz", **arrs)
    return arrs


def write_amat(path: Path, rows: np.ndarray) -> Path:
    """Larochelle's .amat text matrix: one example per line, space-separated 0/1 values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows.tolist()))
    return path


def write_binarized_amat(root: Path, sizes=(30, 10, 10), seed: int = 0) -> dict[str, np.ndarray]:
    """The three ``root/binarized-mnist/binarized_mnist_{train,valid,test}.amat`` files."""
    arrs = {s: binary_images(n, seed + i) for i, (s, n) in enumerate(zip(("train", "valid", "test"), sizes))}
    for split, rows in arrs.items():
        write_amat(root / "binarized-mnist" / f"binarized_mnist_{split}.amat", rows)
    return arrs


# -------------------------------------------------------------------------- Python 2 pickles
class Py2Pickler(pickle._Pickler):
    """A pickler that writes every ``bytes`` and ``str`` as a Python 2 string (STRING, or
    SHORT_BINSTRING / BINSTRING from protocol 1 on), as Python 2 wrote the original Frey Faces and
    CIFAR-10 files. Python 3 reads these back as str (encoding='latin1') or bytes (encoding='bytes').
    (Python 3's own protocol-2 pickles encode bytes through ``_codecs.encode``, which the
    library's safe unpickler rightly refuses.) numpy's functions are named as numpy 1 named them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if self.proto == 0:
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj, name=None):
        """numpy >= 2 names its internals numpy._core; the files were written as numpy.core."""
        module = getattr(obj, "__module__", "") or ""
        if not module.startswith("numpy._core"):
            return super().save_global(obj, name)
        module = module.replace("numpy._core", "numpy.core", 1)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def py2_pickle(obj, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def write_frey_faces(root: Path, n: int = 450, seed: int = 0) -> np.ndarray:
    """``root/frey-faces/freyfaces.pkl``: a protocol-0 Python 2 pickle of a list whose first item is
    a uint8 array (n, 560) of 28x20 images, the layout of the VampPrior authors' file. Returns the
    (n, 28, 20) images. The loader keeps the last 400 (after a seeded shuffle) for valid and test."""
    imgs = face_images(n, seed)
    (root / "frey-faces").mkdir(parents=True, exist_ok=True)
    (root / "frey-faces" / "freyfaces.pkl").write_bytes(py2_pickle([imgs.reshape(n, 560)], protocol=0))
    return imgs


# ---------------------------------------------------------------------------------- CIFAR-10
def color_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: each image one flat colour plus a brighter square (JPEG keeps flat
    regions almost exactly, so decoded JPEGs can be compared with what was written)."""
    rng = np.random.default_rng(seed)
    imgs = np.repeat(rng.integers(20, 200, (n, 1, 1, 3), dtype=np.uint8), size, 1).repeat(size, 2)
    q = size // 4
    imgs[:, q:3 * q, q:3 * q] += 50
    return imgs


def write_cifar_python(path: Path, per_batch: int = 6, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """``cifar-10-python.tar.gz``: ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``, each a
    Python 2 pickle of {'data': uint8 (N, 3072) channel-first rows, 'labels': [int], ...}, plus
    ``batches.meta``. Returns images (N, 32, 32, 3) and labels for train (5 batches) and test."""
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)}
    batches["test_batch"] = n_test
    out = {"train": [], "train_labels": [], "test": [], "test_labels": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i, (name, n) in enumerate(batches.items()):
            imgs = color_images(n, seed=seed + 10 + i)
            labels = rng.integers(0, 10, n).tolist()
            batch = {"batch_label": name.replace("_", " "), "labels": labels,
                     "data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072),
                     "filenames": [f"img_{i}_{j}.png" for j in range(n)]}
            _add_bytes(tar, f"cifar-10-batches-py/{name}", py2_pickle(batch))
            split = "test" if name == "test_batch" else "train"
            out[split].append(imgs)
            out[f"{split}_labels"].append(np.asarray(labels, dtype=np.int64))
        meta = {"label_names": list(CIFAR_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}
        _add_bytes(tar, "cifar-10-batches-py/batches.meta", py2_pickle(meta))
    return {k: np.concatenate(v) for k, v in out.items()}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def encode_image(arr: np.ndarray, fmt: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    img.save(buf, format=fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_tree(counts: dict[str, int], classes=CIFAR_CLASSES, size: int = 32, seed: int = 0):
    """{relative path: image} for a [split/]class/NNNN layout; ``counts`` maps split ('' for no split
    level) to images per class."""
    tree = {}
    for s, (split, n) in enumerate(counts.items()):
        for c, cls in enumerate(classes):
            imgs = color_images(n, size, seed=seed + 100 * s + c)
            for j in range(n):
                tree[f"{split}/{cls}/{j:04d}" if split else f"{cls}/{j:04d}"] = imgs[j]
    return tree


def write_image_tar(path: Path, counts=None, classes=CIFAR_CLASSES, size: int = 32, fmt: str = "JPEG",
                    seed: int = 0) -> dict[str, np.ndarray]:
    """An image-folder archive like the CIFAR-10 JPEG copy: directory entries, then
    ``<split>/<class>/NNNN.jpg``. Returns {relative path without suffix: image written}."""
    tree = image_tree(counts or {"train": 2, "test": 1}, classes, size, seed)
    ext = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        dirs = sorted({str(Path(rel).parent) for rel in tree} | {str(Path(rel).parent.parent) for rel in tree} - {"."})
        for d in dirs:
            _add_dir(tar, d)
        for rel, img in tree.items():
            _add_bytes(tar, rel + ext, encode_image(img, fmt))
    return tree


def write_image_folder(root: Path, counts=None, classes=("a", "b"), size: int = 12, fmt: str = "PNG",
                       seed: int = 0) -> dict[str, np.ndarray]:
    """The same layout as plain files under ``root`` (PNG by default: lossless)."""
    tree = image_tree(counts or {"train": 6, "test": 6}, classes, size, seed)
    ext = {"JPEG": ".jpg", "PNG": ".png"}[fmt]
    for rel, img in tree.items():
        p = root / (rel + ext)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_image(img, fmt))
    return tree


# --------------------------------------------------------------------------------------- npz
def write_npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------------------- a session's data
class FakeData:
    """Synthetic data folders for ``load_dataset(name, data_dir=...)``, written on first use.

    ``get(name)`` returns ``(data_dir, arrays)``; names: mnist, fashion-mnist, binarized-mnist,
    binarized-mnist-amat, frey-faces, cifar10 (pickled batches), cifar10-jpeg (the JPEG archive).
    """

    WRITERS = {
        "mnist": lambda d: write_mnist_like(d, "mnist", seed=1),
        "fashion-mnist": lambda d: write_mnist_like(d, "fashion-mnist", seed=2),
        "binarized-mnist": lambda d: write_binarized_npz(d, seed=3),
        "binarized-mnist-amat": lambda d: write_binarized_amat(d, seed=4),
        "frey-faces": lambda d: write_frey_faces(d, seed=5),
        "cifar10": lambda d: write_cifar_python(d / "cifar10" / "cifar-10-python.tar.gz", seed=6),
        "cifar10-jpeg": lambda d: write_image_tar(d / "cifar10-jpeg.tar.gz", seed=7),
    }

    def __init__(self, root: Path):
        self.root = root
        self._done: dict[str, tuple[Path, object]] = {}

    def get(self, name: str):
        if name not in self._done:
            folder = self.root / name
            folder.mkdir(parents=True)
            self._done[name] = (folder, self.WRITERS[name](folder))
        return self._done[name]


# ------------------------------------------------------------------------------ hostile files
def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no pixel data (a
    decoder that trusted it would allocate width x height x 3 bytes)."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def png16(values: np.ndarray) -> bytes:
    """A 16-bit gray PNG of (H, W) uint16 ``values``."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def tar_member_claiming(path: Path, name: str, size: int, mode: str = "w:gz") -> Path:
    """A tar archive with one member whose header declares ``size`` bytes, followed by only 512
    bytes of data (what a reader that trusted the header would try to hold in memory)."""
    header = tarfile.TarInfo(name)
    header.size, header.mtime = size, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if mode == "w:gz" else open
    with opener(path, "wb") as f:
        f.write(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(512))
    return path
