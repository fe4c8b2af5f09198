"""Data sets as in-memory tensors with train / valid / test splits, and their batches.

Images are stored as uint8 (8-bit and binary data) or float32 and handed out as float32 in
[0, 1] (or [-1, 1] with ``scale='symmetric'``), shape (B, C, H, W); vector data as (B, D).
Batch order, dynamic binarisation and 2D samples depend only on (seed, epoch, batch index),
so a run resumed at any batch sees exactly the batches an uninterrupted run would have seen,
and a batch is the same whatever the number of processes it is split over.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from .. import safeio
from ..errors import UserError
from ..registry import DATASETS
from . import files, toy2d
from .download import (AMAT_REMOTES, BINARIZED_MNIST_CONTENT_MD5, download, find_or_download,
                       resolve_data_dir)



def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0x7FFFFFFFFFFFFFFF
    return h


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


@dataclass
class Split:
    """One split. ``values``: (N, *shape) uint8 or float32; pixel = values / ``max_value``."""

    values: torch.Tensor
    max_value: float = 255.0
    labels: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.values.shape[0]

    def get(self, idx=None) -> torch.Tensor:
        v = self.values if idx is None else self.values[idx]
        return v.float() / self.max_value if self.max_value != 1.0 else v.float()

    def head(self, n: Optional[int]) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.values[:n], self.max_value, None if self.labels is None else self.labels[:n])


@dataclass
class Dataset:
    """A data set: splits, its kind and how training batches are made.

    kind: 'binary' (two values), '8bit' (k/255), 'discrete' (k/(L-1) for another number of levels
    L <= 256) or 'continuous' (any value in the range); ``levels``: L (2 for binary, 256 for 8-bit,
    None for continuous data).
    ``dynamic_binarize``: training batches are re-binarised with ``bernoulli(x)`` every batch
    (valid and test were binarised once, with a fixed seed, when loaded).
    """

    name: str
    kind: str
    train: Split
    valid: Split
    test: Split
    dynamic_binarize: bool = False
    symmetric: bool = False
    sampler: Optional[Callable[[int, torch.Generator], torch.Tensor]] = field(default=None, repr=False)
    epoch_size: int = 1000
    levels: Optional[int] = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.values.shape[1:])

    def spec(self) -> dict:
        """What a model needs to know about the data (name, kind, levels, shape, scale), as JSON."""
        return {"name": self.name, "kind": self.kind, "levels": self.levels, "shape": list(self.shape),
                "scale": "symmetric" if self.symmetric else "unit"}

    @classmethod
    def from_spec(cls, spec: dict) -> "Dataset":
        """A data set with no examples that describes data as :meth:`spec` did (to rebuild a model
        without its data)."""
        empty = Split(torch.zeros(0, *spec["shape"]), 1.0)
        levels = spec.get("levels") or {"binary": 2, "8bit": 256}.get(spec["kind"])
        return cls(spec["name"], spec["kind"], empty, empty, empty, symmetric=spec.get("scale") == "symmetric",
                   levels=levels)

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of the values the model sees ([0, 1], [-1, 1], or a 2D set's evaluation box)."""
        if self.name in toy2d.BOXES:
            return (-toy2d.BOXES[self.name], toy2d.BOXES[self.name])
        return (-1.0, 1.0) if self.symmetric else (0.0, 1.0)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> the model's range."""
        return to_model_range(x, self.symmetric)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """The model's range -> [0, 1] (for pictures)."""
        return from_model_range(x, self.symmetric)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        s = getattr(self, split)
        for i in range(0, len(s), batch_size):
            yield self.scale(s.get(slice(i, i + batch_size)))

    def steps_per_epoch(self, batch_size: int) -> int:
        if self.sampler is not None:
            return self.epoch_size
        return max(1, len(self.train) // batch_size)

    def train_batches(self, seed: int, epoch: int, batch_size: int, start: int = 0,
                      rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
        """Batches ``start..`` of ``epoch`` (global size ``batch_size``); process ``rank`` gets its part."""
        if self.sampler is None:
            perm = torch.randperm(len(self.train), generator=generator(seed, epoch, 0))
            n = min(batch_size, len(self.train))
        for i in range(start, self.steps_per_epoch(batch_size)):
            if self.sampler is not None:
                x = self.sampler(batch_size, generator(seed, epoch, i, 2))
            else:
                x = self.train.get(perm[i * n:(i + 1) * n])
                if self.dynamic_binarize:
                    x = (torch.rand(x.shape, generator=generator(seed, epoch, i, 1)) < x).float()
                x = self.scale(x)
            yield x.chunk(world)[rank] if world > 1 else x


# --------------------------------------------------------------------------------- construction
def _images(arr: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) numpy -> (N, C, H, W) tensor, dtype kept."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def _binarize_once(split: Split, seed: int) -> Split:
    x = split.get()
    b = (torch.rand(x.shape, generator=generator(seed, 7)) < x).to(torch.uint8)
    return Split(b, 1.0, split.labels)


def _split_off(values: torch.Tensor, labels, n_valid: int, seed: Optional[int]):
    """Hold out n_valid examples: the last ones (seed None) or a seeded random choice."""
    n = values.shape[0]
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=generator(seed, 11))
    tr, va = order[: n - n_valid], order[n - n_valid:]
    pick = (lambda t, i: None if t is None else t[i])
    return (values[tr], pick(labels, tr)), (values[va], pick(labels, va))


def _valid_count(n: int, valid_size: float, where: str) -> int:
    if valid_size >= 1 and valid_size != int(valid_size):
        raise UserError(f"{where}: data.valid_size = {valid_size} is not valid; expected a fraction < 1 or a whole "
                        "number of examples")
    k = int(round(valid_size * n)) if valid_size < 1 else int(valid_size)
    if not 0 <= k < n:
        raise UserError(f"{where}: data.valid_size = {valid_size:g} leaves no training examples out of {n}")
    if k == 0:
        raise UserError(f"{where}: data.valid_size = {valid_size:g} holds out no validation examples of {n}; expected at "
                        "least one (the validation loss chooses the best weights and stops training early)")
    return k


def _mnist_like(folder: str, data_dir: Path) -> tuple[dict, Path]:
    get = lambda n: files.read_idx(find_or_download(data_dir, folder, n))
    out = {"train": get("train-images-idx3-ubyte.gz"), "train_labels": get("train-labels-idx1-ubyte.gz"),
           "test": get("t10k-images-idx3-ubyte.gz"), "test_labels": get("t10k-labels-idx1-ubyte.gz")}
    for s in ("train", "test"):
        if out[s].ndim != 3 or out[s].shape[0] != out[f"{s}_labels"].shape[0]:
            raise UserError(f"{data_dir / folder}: {s} images {out[s].shape} and labels "
                            f"{out[f'{s}_labels'].shape} do not match")
    return out, data_dir / folder


def _binarized_mnist(data_dir: Path) -> dict:
    folder = data_dir / "binarized-mnist"
    npz = folder / "binarized_mnist.npz"
    if npz.is_file():
        arrs = files.read_npz(npz)
        missing = [k for k in ("train", "valid", "test") if k not in arrs]
        if missing:
            raise UserError(f"{npz}: missing arrays {missing}; expected train, valid and test")
        return {k: arrs[k].reshape(-1, 28, 28).astype(np.uint8) for k in ("train", "valid", "test")}
    out = {}
    for split, url in AMAT_REMOTES.items():
        path = folder / f"binarized_mnist_{split}.amat"
        if not path.is_file():
            if os.environ.get("MIXVAE_OFFLINE"):
                raise UserError(f"data file {path.name} is missing; looked for {npz} and {path}")
            download(url, path)
        arr = files.read_amat(path)
        if hashlib.md5(arr.tobytes()).hexdigest() != BINARIZED_MNIST_CONTENT_MD5[split]:
            raise UserError(f"{path}: contents differ from the canonical static binarised MNIST {split} split")
        out[split] = arr.reshape(-1, 28, 28)
    return out


def _cifar10(data_dir: Path, size, channels) -> dict:
    for rel in ("cifar10/cifar-10-python.tar.gz", "cifar-10-python.tar.gz"):
        if (data_dir / rel).is_file():
            return files.read_cifar_python(data_dir / rel)
    for rel in ("cifar10-jpeg.tar.gz", "cifar10/cifar10-jpeg.tar.gz"):
        if (data_dir / rel).is_file():
            return files.read_image_tree(files.image_entries_from_tar(data_dir / rel), str(data_dir / rel), size, channels)
    for rel in ("cifar10-jpeg", "cifar10/train"):
        p = data_dir / rel
        if p.is_dir():
            root = p.parent if p.name == "train" else p
            return files.read_image_tree(files.image_entries_from_dir(root), str(root), size, channels)
    return files.read_cifar_python(find_or_download(data_dir, "cifar10", "cifar-10-python.tar.gz"))


def _check_arrays(arrs: dict, where: str) -> dict:
    """Validate a user's arrays: shapes, finiteness, range, labels."""
    if "train" not in arrs or "test" not in arrs:
        raise UserError(f"{where}: expected arrays 'train' and 'test' (and optionally 'valid', '*_labels'); found {sorted(arrs)}")
    shape = None
    for s in ("train", "valid", "test"):
        if s not in arrs:
            continue
        a = arrs[s]
        if a.ndim not in (2, 3, 4) or (a.ndim == 4 and a.shape[-1] not in (1, 3)) or 0 in a.shape:
            raise UserError(f"{where}: array '{s}' has shape {a.shape}; expected N x H x W, N x H x W x C "
                            "(C = 1 or 3) or N x D, every size > 0")
        if shape is not None and a.shape[1:] != shape:
            raise UserError(f"{where}: array '{s}' has examples of shape {a.shape[1:]} but 'train' has {shape}")
        shape = a.shape[1:]
        if a.dtype == np.uint8:
            pass
        elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.bool_):
            if not np.isfinite(a).all():
                raise UserError(f"{where}: array '{s}' contains NaN or infinite values")
            if a.size and (a.min() < 0 or a.max() > 1):
                raise UserError(f"{where}: array '{s}' has values in [{a.min():.3g}, {a.max():.3g}]; expected uint8 or floats in [0, 1]")
        else:
            raise UserError(f"{where}: array '{s}' has dtype {a.dtype}; expected uint8 or float in [0, 1]")
        lab = arrs.get(f"{s}_labels")
        if lab is None:
            continue
        if lab.ndim != 1 or lab.shape[0] != a.shape[0]:
            raise UserError(f"{where}: '{s}_labels' has shape {lab.shape} but '{s}' has {a.shape[0]} examples")
        whole = lab.dtype.kind in "iub" or (lab.dtype.kind == "f" and bool(np.isfinite(lab).all())
                                           and np.array_equal(lab, np.round(lab)))
        if not whole or (lab.dtype.kind == "u" and lab.size and int(lab.max()) > np.iinfo(np.int64).max):
            raise UserError(f"{where}: '{s}_labels' has dtype {lab.dtype}"
                            f"{' with values that are not whole numbers' if lab.dtype.kind == 'f' else ''}; "
                            "expected integer class labels")
    return arrs


def _to_split(a: np.ndarray, labels) -> Split:
    lab = None if labels is None else torch.from_numpy(np.asarray(labels).astype(np.int64))
    if a.dtype == np.uint8:
        binary = a.max(initial=0) <= 1
        t = _images(a) if a.ndim >= 3 else torch.from_numpy(np.ascontiguousarray(a))
        return Split(t, 1.0 if binary else 255.0, lab)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = (t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()) if t.dim() >= 3 else t
    return Split(t, 1.0, lab)


def _kind(split: Split) -> tuple[str, Optional[int]]:
    """What the values are, and how many levels they take:
    'binary' (two values: 0 and the maximum, e.g. 0/1 or 0/255), 2;
    '8bit' (uint8 values k/255), 256;
    'discrete' (floats on a grid k/(L-1), 2 < L <= 256, e.g. scikit-learn's digits: L = 17), L;
    'continuous' (anything else), None."""
    v = split.values
    if v.dtype == torch.uint8:
        if split.max_value == 1.0:
            return "binary", 2
        present = torch.bincount(v.flatten(), minlength=256) > 0
        return ("binary", 2) if not present[1:255].any() else ("8bit", 256)
    flat = v.flatten()
    if flat.numel() > 1_000_000 and torch.unique(flat[:1_000_000]).numel() > 256:
        return "continuous", None          # quick answer for large continuous data
    u = torch.unique(flat).double()
    if u.numel() > 256 or u.numel() == 0 or u.min() < 0 or u.max() > 1:
        return "continuous", None
    for steps in range(1, 256):            # the coarsest grid k / steps holding every value
        if bool(((u * steps - (u * steps).round()).abs() < 1e-4).all()):
            levels = steps + 1
            return ("binary" if levels == 2 else "8bit" if levels == 256 else "discrete"), levels
    return "continuous", None


@dataclass
class LoadRequest:
    """What a registered loader gets: where the files are and the options of the ``data`` section."""

    root: Path                       # the data folder (--data-dir, $MIXVAE_DATA, or the cache)
    path: Optional[str]              # data.path, for loaders of a user's file or folder
    image_size: Optional[int]
    channels: Optional[int]
    split_seed: int
    valid_size: float


# Registered loaders: LoadRequest -> (arrays, where). Arrays: 'train', 'test' and optionally 'valid'
# and '<split>_labels', images N x H x W (x C), uint8 or floats in [0, 1]; ``where`` names the
# files in messages. info: ``validation='last'`` holds out the last ``valid_count`` training images
# (instead of a seeded choice); ``binarize='dynamic'`` re-binarises training batches by default.
@DATASETS.register("mnist", validation="last", valid_count=10_000, binarize="dynamic", pseudo_init=(0.05, 0.01))
def _mnist(r: LoadRequest):
    return _mnist_like("mnist", r.root)


@DATASETS.register("fashion-mnist", validation="last", valid_count=10_000, pseudo_init=(0.05, 0.01))
def _fashion_mnist(r: LoadRequest):
    return _mnist_like("fashion-mnist", r.root)


@DATASETS.register("binarized-mnist", pseudo_init=(0.05, 0.01))
def _static_mnist(r: LoadRequest):
    return _binarized_mnist(r.root), "binarized-mnist"


@DATASETS.register("frey-faces", pseudo_init=(0.5, 0.02))
def _frey_faces(r: LoadRequest):
    """The VampPrior split: a seeded shuffle, 1565 / 200 / 200."""
    imgs = files.read_frey_faces(find_or_download(r.root, "frey-faces", "freyfaces.pkl"))
    imgs = imgs[torch.randperm(len(imgs), generator=generator(r.split_seed, 13)).numpy()]
    return {"test": imgs[-200:], "valid": imgs[-400:-200], "train": imgs[:-400]}, "frey-faces"


def _mat_images(a: np.ndarray, key: str, where: str, per_column: bool, binary: bool) -> np.ndarray:
    """28x28 images of a .mat array, one per column (``per_column``) or per row, each stored
    column-major (MATLAB's order) -> (N, 28, 28): float32 in [0, 1], or uint8 0/1 if ``binary``."""
    layout = "784 x N (one image per column)" if per_column else "N x 784 (one image per row)"
    if a.shape[0 if per_column else 1] != 784:
        raise UserError(f"{where}: key {key!r} has shape {a.shape[0]} x {a.shape[1]}; expected {layout}")
    rows = a.T if per_column else a
    if a.size and (a.min() < 0 or a.max() > 1):
        raise UserError(f"{where}: key {key!r} has values in [{a.min():.3g}, {a.max():.3g}]; expected values in [0, 1]")
    if binary and not np.isin(rows, (0, 1)).all():
        raise UserError(f"{where}: key {key!r} holds values other than 0 and 1; expected binary images")
    imgs = rows.reshape(-1, 28, 28).transpose(0, 2, 1)     # v.reshape(28, 28, order='F') for each row v
    return np.ascontiguousarray(imgs, dtype=np.uint8 if binary else np.float32)


def _mat_labels(a: np.ndarray, key: str, where: str, n: int, one_hot: bool) -> np.ndarray:
    """Class labels of a .mat array: one-hot columns (K x N) -> their row index, or N numbers."""
    if one_hot:
        if a.ndim != 2 or a.shape[1] != n or not np.isin(a, (0, 1)).all() or not (a.sum(0) == 1).all():
            raise UserError(f"{where}: key {key!r} has shape {a.shape[0]} x {a.shape[1]}; expected one-hot labels, "
                            f"K x {n} with a single 1 per column")
        return a.argmax(0).astype(np.int64)
    flat = a.reshape(-1)
    if flat.shape[0] != n or not np.array_equal(flat, np.round(flat)):
        raise UserError(f"{where}: key {key!r} has shape {a.shape[0]} x {a.shape[1]}; expected {n} whole-number "
                        "class labels")
    return flat.astype(np.int64)


@DATASETS.register("omniglot", validation="last", valid_count=1345, binarize="dynamic", pseudo_init=(0.05, 0.01))
def _omniglot(r: LoadRequest):
    """The 28x28 OMNIGLOT of the IWAE paper (chardata.mat: 24 345 training and 8 070 test images,
    gray, one per column, column-major), as the VampPrior authors use it: the training images are
    shuffled (seeded here) and the last 1 345 of them are held out for validation (23 000 / 1 345);
    training batches are binarised dynamically, validation and test images once with a fixed seed.
    Labels: the alphabet (0..49) of each image."""
    path = find_or_download(r.root, "omniglot", "chardata.mat")
    where = str(path)
    m = files.read_mat(path, ("data", "testdata"), optional=("target", "testtarget"))
    out = {}
    for split, key, lab in (("train", "data", "target"), ("test", "testdata", "testtarget")):
        out[split] = _mat_images(m[key], key, where, per_column=True, binary=False)
        if lab in m:
            out[f"{split}_labels"] = _mat_labels(m[lab], lab, where, len(out[split]), one_hot=True)
    order = torch.randperm(len(out["train"]), generator=generator(r.split_seed, 19)).numpy()
    out["train"] = out["train"][order]
    if "train_labels" in out:
        out["train_labels"] = out["train_labels"][order]
    return out, where


@DATASETS.register("caltech101-silhouettes", pseudo_init=(0.5, 0.02))
def _caltech101_silhouettes(r: LoadRequest):
    """Marlin's Caltech 101 Silhouettes, 28x28, split 1 (caltech101_silhouettes_28_split1.mat):
    4 100 / 2 264 / 2 307 binary images, one per row, column-major, with labels 1..101. As the
    VampPrior authors do, pixels are inverted (1 - x): the file stores the silhouette as 0 on a
    background of 1, the model sees the silhouette as 1. Already binary: no binarisation."""
    path = find_or_download(r.root, "caltech101-silhouettes", "caltech101_silhouettes_28_split1.mat")
    where = str(path)
    keys = ("train_data", "val_data", "test_data")
    labels = ("train_labels", "val_labels", "test_labels")
    m = files.read_mat(path, keys, optional=labels)
    out = {}
    for split, key, lab in zip(("train", "valid", "test"), keys, labels):
        out[split] = 1 - _mat_images(m[key], key, where, per_column=False, binary=True)
        if lab in m:
            out[f"{split}_labels"] = _mat_labels(m[lab], lab, where, len(out[split]), one_hot=False)
    return out, where


@DATASETS.register("histopathology", pseudo_init=(0.4, 0.05))
def _histopathology(r: LoadRequest):
    """The VampPrior authors' gray 28x28 histopathology patches (histopathology.pkl, or the
    histopathology.pkl.tar.gz that holds it): their 6 800 / 2 000 / 2 000 split, as 8-bit levels
    (the 256 bins of width 1/256 of the authors' discretised logistic; see files.read_histopathology)."""
    path = find_or_download(r.root, "histopathology", "histopathology.pkl.tar.gz",
                            alternatives=("histopathology/histopathology.pkl",))
    return files.read_histopathology(path), str(path)


@DATASETS.register("digits", pseudo_init=(0.05, 0.01))
def _digits(r: LoadRequest):
    """scikit-learn's 8x8 digits (values k/16), 300 seeded test images."""
    from sklearn.datasets import load_digits
    d = load_digits()
    order = torch.randperm(len(d.images), generator=generator(r.split_seed, 17)).numpy()
    imgs, labels = (d.images[order] / 16.0).astype(np.float32), d.target[order]
    return {"test": imgs[-300:], "test_labels": labels[-300:], "train": imgs[:-300], "train_labels": labels[:-300]}, "digits"


@DATASETS.register("cifar10", pseudo_init=(0.4, 0.05))
def _cifar(r: LoadRequest):
    return _cifar10(r.root, r.image_size, r.channels), str(r.root / "cifar10")


def _user_path(r: LoadRequest, name: str, what: str) -> Path:
    if not r.path:
        raise UserError(f"data.name = {name!r} needs data.path (a {what})")
    p = Path(r.path).expanduser()
    if not p.exists():
        raise UserError(f"data.path = {r.path!r} does not exist")
    return p


@DATASETS.register("npz")
def _npz(r: LoadRequest):
    p = _user_path(r, "npz", ".npz file")
    return files.read_npz(p), str(p)


@DATASETS.register("image-folder")
def _image_folder(r: LoadRequest):
    p = _user_path(r, "image-folder", "folder or .tar archive")
    entries = files.image_entries_from_dir(p) if p.is_dir() else files.image_entries_from_tar(p)
    arrs = files.read_image_tree(entries, str(p), r.image_size, r.channels)
    if "all" in arrs:
        arrs["train"], arrs["train_labels"] = arrs.pop("all"), arrs.pop("all_labels")
    if "test" not in arrs:   # no split folders: hold out a seeded test part as well
        (tr, trl), (te, tel) = _split_off(torch.from_numpy(arrs["train"]), torch.from_numpy(arrs["train_labels"]),
                                          _valid_count(len(arrs["train"]), r.valid_size, str(p)), r.split_seed + 1)
        arrs.update(train=tr.numpy(), train_labels=trl.numpy(), test=te.numpy(), test_labels=tel.numpy())
    return arrs, str(p)


for _name in toy2d.NAMES:
    DATASETS.add(_name, None, sampler=True)


def load_dataset(name: str, *, path: Optional[str] = None, data_dir=None, binarize: str = "auto",
                 image_size: Optional[int] = None, channels: Optional[int] = None, scale: str = "unit",
                 valid_size: float = 0.1, split_seed: int = 0, train_subset: Optional[int] = None,
                 test_subset: Optional[int] = None, epoch_size: int = 1000) -> Dataset:
    """Load a registered data set by name; the keyword arguments mirror ``DataConfig``."""
    if name == "tensors":
        raise UserError("data.name = 'tensors': this run was trained from Python on in-memory data; reopen it "
                        "with mixvae.load(RUN) and evaluate it on your tensors")
    entry = DATASETS.get(name)
    if entry.info.get("sampler"):
        return _toy(name, split_seed, train_subset, test_subset, epoch_size)
    held_out_last = entry.info.get("validation") == "last"
    if held_out_last:
        valid_size = entry.info["valid_count"]
    arrs, where = entry.build(LoadRequest(resolve_data_dir(data_dir), path, image_size, channels, split_seed,
                                          valid_size))
    _check_arrays(arrs, where)
    train = _to_split(arrs["train"], arrs.get("train_labels"))
    test = _to_split(arrs["test"], arrs.get("test_labels"))
    if "valid" in arrs:
        valid = _to_split(arrs["valid"], arrs.get("valid_labels"))
    else:
        k = _valid_count(len(train), valid_size, where)
        (tv, tl), (vv, vl) = _split_off(train.values, train.labels, k, None if held_out_last else split_seed)
        train, valid = Split(tv, train.max_value, tl), Split(vv, train.max_value, vl)
    if image_size is not None and train.values.dim() == 4 and train.values.shape[-1] != image_size:
        n, c = len(train) + len(valid) + len(test), train.values.shape[1]
        if n * c * image_size ** 2 * 4 > safeio.MAX_TOTAL_BYTES:     # resized as float32
            raise UserError(f"{where}: data.image_size = {image_size} would make {n} images of {c} x {image_size} x "
                            f"{image_size} take {n * c * image_size ** 2 * 4 / 2 ** 30:.1f} GiB, more than the limit "
                            f"of {safeio.MAX_TOTAL_BYTES / 2 ** 30:.0f} GiB (mixvae.safeio.MAX_TOTAL_BYTES)")
        train, valid, test = (_resize(s, image_size) for s in (train, valid, test))
    kind, levels = _kind(train)
    dynamic = binarize == "dynamic" or (binarize == "auto" and entry.info.get("binarize") == "dynamic")
    if dynamic:
        valid, test = _binarize_once(valid, split_seed), _binarize_once(test, split_seed + 1)
        kind, levels = "binary", 2
    if train_subset is not None and train_subset > len(train):   # a budget a table would state wrongly
        raise UserError(f"data.train_subset = {train_subset} is more than the {len(train)} training examples of {name}")
    train, test = train.head(train_subset), test.head(test_subset)
    return Dataset(name, kind, train, valid, test, dynamic_binarize=dynamic, symmetric=(scale == "symmetric"),
                   levels=levels)


def _resize(split: Split, size: int) -> Split:
    """Bilinear (antialiased) resize of an image split, keeping its storage type."""
    x = torch.nn.functional.interpolate(split.get(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if split.values.dtype == torch.uint8:
        return Split((x.clamp(0, 1) * split.max_value).round().to(torch.uint8), split.max_value, split.labels)
    return Split(x, 1.0, split.labels)


def _toy(name: str, seed: int, n_train, n_test, epoch_size: int) -> Dataset:
    """2D samplers: fresh samples every batch; fixed valid/test sets of 5000 points."""
    sample = toy2d.SAMPLERS[name]
    mk = lambda n, k: Split(sample(n, generator(seed, k)), 1.0)
    return Dataset(name, "continuous", mk(n_train or 5000, 21), mk(5000, 22), mk(n_test or 5000, 23),
                   sampler=sample, epoch_size=epoch_size)


# --------------------------------------------------------------------------------- in-memory data
def to_model_range(x: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """Data in [0, 1] -> a model's range: [-1, 1] when ``symmetric`` (``data.scale = symmetric``), else as is."""
    return x * 2.0 - 1.0 if symmetric else x


def from_model_range(x: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """The inverse of :func:`to_model_range`: [-1, 1] -> [0, 1] when ``symmetric``, else as is."""
    return (x + 1.0) / 2.0 if symmetric else x


def _as_split(data, where: str, uint8_max: Optional[float] = None) -> Split:
    """A tensor or array of examples -> a Split: images (N, C, H, W) with C in {1, 3} or (N, H, W),
    vectors (N, D); bool, uint8 or floats (in [0, 1] for images). uint8 values are read as value /
    ``uint8_max``: for a part of a data set, its training examples' (a batch of dark 8-bit images
    is not binary); else 0/1 when every value is, and 0..255 otherwise. bool values are 0/1."""
    t = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data).detach().cpu()
    is_bool = t.dtype == torch.bool          # 0/1 whatever the scale of uint8 values
    if is_bool:
        t = t.to(torch.uint8)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() not in (2, 4) or t.shape[0] == 0 or (t.dim() == 4 and t.shape[1] not in (1, 3)):
        last = (t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[0] > 0)    # N x H x W x C, as images load
        raise UserError(f"{where} has shape {tuple(t.shape)}; expected N x C x H x W (C = 1 or 3), N x H x W "
                        "or N x D with N > 0" + ("; for channels-last images use x.permute(0, 3, 1, 2) "
                                                 "(numpy: x.transpose(0, 3, 1, 2))" if last else ""))
    if t.dtype == torch.uint8:
        if is_bool:
            return Split(t.contiguous(), 1.0)
        if uint8_max is not None and int(t.max()) > uint8_max:
            raise UserError(f"{where} holds uint8 values up to {int(t.max())}, but its data set's uint8 values are read "
                            f"as value / {uint8_max:g} (0/1 examples beside it); give every part on one scale")
        return Split(t.contiguous(), uint8_max or (1.0 if int(t.max()) <= 1 else 255.0))
    if not t.dtype.is_floating_point:
        raise UserError(f"{where} has dtype {t.dtype}; expected uint8, bool or floats")
    t = t.float().contiguous()
    if not torch.isfinite(t).all():
        raise UserError(f"{where} contains NaN or infinite values")
    if t.dim() == 4 and (t.min() < 0 or t.max() > 1):
        raise UserError(f"{where} has values in [{t.min():.3g}, {t.max():.3g}]; expected images in [0, 1] "
                        "(or uint8)")
    return Split(t, 1.0)


def from_tensors(train, valid=None, test=None, *, name: str = "tensors", valid_size: float = 0.1,
                 split_seed: int = 0, dynamic_binarize: bool = False, symmetric: bool = False) -> Dataset:
    """A :class:`Dataset` from in-memory examples (torch tensors or numpy arrays, see :func:`_as_split`).

    Without ``valid``, a seeded ``valid_size`` part of ``train`` (a fraction < 1 or a count) is
    held out for validation; without ``test``, the validation examples serve as the test split.
    The kind (binary, 8-bit, discrete, continuous) is inferred from ``train`` as for files;
    ``dynamic_binarize`` re-binarises gray training images every batch (their kind becomes binary);
    ``symmetric`` hands the model images in [-1, 1] (``data.scale = symmetric``).
    """
    tr = _as_split(train, "train")
    if valid is None:
        k = _valid_count(len(tr), valid_size, "train")
        (tv, _), (vv, _) = _split_off(tr.values, None, k, split_seed)
        tr, va = Split(tv, tr.max_value), Split(vv, tr.max_value)
    else:
        va = _as_split(valid, "valid", tr.max_value)
    te = va if test is None else _as_split(test, "test", tr.max_value)
    for s, split in (("valid", va), ("test", te)):
        if split.values.shape[1:] != tr.values.shape[1:]:
            raise UserError(f"{s} has examples of shape {tuple(split.values.shape[1:])} but train has "
                            f"{tuple(tr.values.shape[1:])}")
    kind, levels = _kind(tr)
    if dynamic_binarize:
        va, te = _binarize_once(va, split_seed), _binarize_once(te, split_seed + 1)
        kind, levels = "binary", 2
    return Dataset(name, kind, tr, va, te, dynamic_binarize=dynamic_binarize, symmetric=symmetric, levels=levels)


class BatchStream(Dataset):
    """Training batches from any re-iterable source (a DataLoader, a list of tensors, a generator
    factory): each epoch iterates ``source`` once; a batch may be a tensor or a tuple whose first
    item is the examples. Validation and test examples are in memory (``valid``), whose shape and
    kind every batch must have (re-binarised every batch where ``valid.dynamic_binarize``). uint8
    batches are read as value / ``uint8_max``, the scale of uint8 validation examples; None: the
    validation examples were floats (see ``__init__``). The batch size is the source's; a resumed
    epoch skips the batches already seen (exact only if the source yields the same batches again)."""

    def __init__(self, source, valid: Dataset, steps_per_epoch: Optional[int] = None,
                 uint8_max: Optional[float] = None):
        super().__init__(valid.name, valid.kind, valid.train, valid.valid, valid.test,
                         dynamic_binarize=valid.dynamic_binarize, symmetric=valid.symmetric, levels=valid.levels)
        # uint8 examples given for validation set the scale of uint8 batches (the same representation);
        # beside float or bool ones, uint8 batches are 0/1 where those are binary and not binarised
        # every batch, else 0..255, and a 0/1-only uint8 batch is refused as ambiguous
        self.floats_given = uint8_max is None
        if uint8_max is None:
            uint8_max = 1.0 if valid.kind == "binary" and not valid.dynamic_binarize else 255.0
        if steps_per_epoch is None and not hasattr(source, "__len__"):
            raise UserError("the training batches have no length; give steps_per_epoch")
        if (steps_per_epoch if steps_per_epoch is not None else len(source)) < 1:
            raise UserError("the training batches are empty; expected at least one batch per epoch")
        self.source, self._steps, self.uint8_max = source, steps_per_epoch, uint8_max   # uint8 batches: value / uint8_max

    def steps_per_epoch(self, batch_size: int) -> int:
        return self._steps if self._steps is not None else len(self.source)

    def _batch(self, b, where: str, noise: torch.Generator) -> torch.Tensor:
        """One batch as floats in the data's range, checked against the validation examples' shape
        and kind, binarised with ``noise`` where the data are binarised every batch."""
        split = _as_split(b, where, self.uint8_max)
        v = split.values
        if tuple(v.shape[1:]) != tuple(self.shape):
            raise UserError(f"{where} has examples of shape {tuple(v.shape[1:])}, but the validation "
                            f"examples have shape {tuple(self.shape)}")
        on_scale = v.dtype == torch.uint8 and split.max_value == self.uint8_max    # uint8, not bool
        if on_scale and self.floats_given and self.uint8_max == 255.0 and int(v.max()) <= 1:
            raise UserError(f"{where} holds uint8 values 0 and 1 only, which beside validation examples given as "
                            "floats are read as k / 255; give binary batches as bool or floats")
        x = split.get()
        if self.dynamic_binarize:
            return (torch.rand(x.shape, generator=noise) < x).float()
        if self.kind == "binary":        # within 1e-4 of 0 or 1, as when a data set's kind is read
            r = x.round()
            if not bool((((r == 0) | (r == 1)) & ((x - r).abs() < 1e-4)).all()):
                raise UserError(f"{where} has values between 0 and 1, but the validation examples are binary; "
                                "binarise the batches too, or set data.binarize = dynamic")
            return r
        return x

    def train_batches(self, seed: int, epoch: int, batch_size: int, start: int = 0,
                      rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
        steps, seen = self.steps_per_epoch(batch_size), 0
        for i, b in enumerate(self.source):
            if i >= steps:
                break
            seen = i + 1
            if i < start:
                continue
            x = self._batch(b[0] if isinstance(b, (tuple, list)) else b, f"training batch {i}",
                            generator(seed, epoch, i, 1))
            yield self.scale(x).chunk(world)[rank] if world > 1 else self.scale(x)
        if seen < steps:
            raise UserError(f"the training batches ran out after {seen} of the {steps} batches of epoch {epoch + 1}; "
                            "expected a source that yields steps_per_epoch batches every time it is iterated (a list "
                            "or a DataLoader, not a generator, which is used up after one pass)")
