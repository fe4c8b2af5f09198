"""Finding data files in the data directory, and downloading canonical files with checksums.

The data directory is, in order: the ``--data-dir`` argument, the ``MIXVAE_DATA`` environment
variable, or ``~/.cache/mixvae/data``. A missing file is downloaded from its canonical source
and verified (MD5 of the file) before it is moved into place; offline, loading stops with one
sentence that names the file and where it was looked for. A file whose checksum is not recorded
(``Remote.md5`` None) is never downloaded: loading stops with one sentence naming its source and
where to put it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_DATA_DIR = Path("~/.cache/mixvae/data").expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("MIXVAE_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA_DIR


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str | None       # None: no checksum recorded yet, so the file is not downloaded


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_BMNIST = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# (data set folder, file name) -> canonical source. MD5s are the published ones (the same values
# torchvision and the data sets' pages use); Frey Faces' is that of the VampPrior authors' file.
REMOTES: dict[tuple[str, str], Remote] = {
    ("mnist", "train-images-idx3-ubyte.gz"): Remote(_MNIST + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("mnist", "train-labels-idx1-ubyte.gz"): Remote(_MNIST + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("mnist", "t10k-images-idx3-ubyte.gz"): Remote(_MNIST + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("mnist", "t10k-labels-idx1-ubyte.gz"): Remote(_MNIST + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ("fashion-mnist", "train-images-idx3-ubyte.gz"): Remote(_FMNIST + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("fashion-mnist", "train-labels-idx1-ubyte.gz"): Remote(_FMNIST + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz"): Remote(_FMNIST + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): Remote(_FMNIST + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ("frey-faces", "freyfaces.pkl"): Remote(
        "https://raw.githubusercontent.com/jmtomczak/vae_vampprior/master/datasets/Freyfaces/freyfaces.pkl",
        "8db27fd8d4be5ade7bdb05b488ae8aa2"),
    ("cifar10", "cifar-10-python.tar.gz"): Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    # The VampPrior paper's other data sets. No checksum of these files is published and none has
    # been recorded from a verified copy yet, so they are not downloaded (md5 None): put the file
    # at the place the message names. Record the MD5 of a verified copy here to enable downloads.
    ("omniglot", "chardata.mat"): Remote(
        "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat", None),
    ("caltech101-silhouettes", "caltech101_silhouettes_28_split1.mat"): Remote(
        "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat", None),
    ("histopathology", "histopathology.pkl.tar.gz"): Remote(
        "https://github.com/jmtomczak/vae_householder_flow/raw/master/datasets/histopathologyGray/"
        "histopathology.pkl.tar.gz", None),
}
# The .amat files have no published file checksum; their decoded contents are checked instead
# (MD5 of the uint8 0/1 array), see BINARIZED_MNIST_CONTENT_MD5.
AMAT_REMOTES = {split: _BMNIST + f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}
BINARIZED_MNIST_CONTENT_MD5 = {
    "train": "8d4f0427d6c2572b5e9994e08bad66de",
    "valid": "3e33becd40c694040e5e6c812e2f4b50",
    "test": "fc34623e13bd64fed2f8b61365198339",
}


def md5_of_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file in the same folder; verify ``md5``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {dest.parent} to download {dest.name} ({e.strerror})") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        from ..progress import bar
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            size = resp.headers.get("Content-Length")
            with bar(total=int(size) if size and size.isdigit() else None, desc=f"download {dest.name}",
                     unit="B", unit_scale=True) as b:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    b.update(len(block))
        if md5 is not None and (got := md5_of_file(Path(tmp))) != md5:
            raise UserError(f"downloaded {url} has MD5 {got}, expected {md5}; not using it")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"{dest.name} is missing from {dest.parent} and downloading it from {url} failed ({reason})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_or_download(data_dir: Path, folder: str, name: str, alternatives: tuple[str, ...] = ()) -> Path:
    """``data_dir/folder/name`` (or an alternative relative path) if present, else download it."""
    candidates = [data_dir / folder / name] + [data_dir / a for a in alternatives]
    for c in candidates:
        if c.is_file():
            return c
    remote = REMOTES.get((folder, name))
    looked = ", ".join(str(c) for c in candidates)
    if remote is None or os.environ.get("MIXVAE_OFFLINE"):
        raise UserError(f"data file {name} is missing; looked for {looked}")
    if remote.md5 is None:      # never download a file that cannot be verified
        raise UserError(f"data file {name} is missing (looked for {looked}) and no checksum is recorded for it, so "
                        f"it is not downloaded; download {remote.url} yourself and put it at {candidates[0]}")
    return download(remote.url, candidates[0], remote.md5)
