"""Shared fixtures: seeding, synthetic data folders, and the real data sets where a machine has them.

Real data (fixture ``dataset_dir``), per data set, in this order: the folder named by MIXVAE_DATA,
the offline copy beside the project (``../shared/data``, as on CI and developer machines), the
library's download cache; else a download with checksums when the machine is online and
MIXVAE_OFFLINE is not set; else the test is skipped with one line naming the data set and where it
looked. Only the checks about the real data need it; everything else runs on :mod:`tests.fakedata`.
"""
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from mixvae import distributions
from mixvae.data.download import AMAT_REMOTES, DEFAULT_DATA_DIR, REMOTES, download, find_or_download
from mixvae.errors import UserError

from .fakedata import FakeData

REPO = Path(__file__).resolve().parents[1]
SIBLING_DATA = REPO.parent / "shared" / "data"

THREADS = torch.get_num_threads()

# mixvae's distributions check their parameters against their constraints when built, as
# torch.distributions can (a NaN mean fails where it appears); a test that means to feed a bad
# value turns the check off with the fixture ``unvalidated``.
distributions.validate_arguments(True)

_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
# What each real data set needs inside a data folder: any one of the alternatives, all files of it.
REAL_LAYOUTS = {
    "mnist": [[f"mnist/{n}" for n in _IDX]],
    "fashion-mnist": [[f"fashion-mnist/{n}" for n in _IDX]],
    "binarized-mnist": [["binarized-mnist/binarized_mnist.npz"],
                        [f"binarized-mnist/binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]],
    "frey-faces": [["frey-faces/freyfaces.pkl"]],
    "cifar10": [["cifar10/cifar-10-python.tar.gz"], ["cifar-10-python.tar.gz"], ["cifar10-jpeg.tar.gz"],
                ["cifar10/cifar10-jpeg.tar.gz"], ["cifar10-jpeg"], ["cifar10/train"]],
}


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts seeded, with the machine's thread count and non-deterministic algorithms
    allowed (a run's config may change both process-wide)."""
    torch.manual_seed(0)
    yield
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def unvalidated():
    """Argument validation of mixvae's distributions off for one test (for deliberate NaN / bad values)."""
    distributions.validate_arguments(False)
    yield
    distributions.validate_arguments(True)


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> FakeData:
    """Synthetic data folders in the canonical formats: ``fake_data.get("mnist") -> (data_dir, arrays)``."""
    return FakeData(tmp_path_factory.mktemp("fakedata"))


def _places() -> list[tuple[str, Path]]:
    env = os.environ.get("MIXVAE_DATA")
    places = ([("MIXVAE_DATA", Path(env).expanduser())] if env else []) + [
        ("../shared/data", SIBLING_DATA), ("the download cache", DEFAULT_DATA_DIR)]
    seen, out = set(), []
    for label, p in places:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append((label, p))
    return out


def _has(root: Path, name: str) -> bool:
    return any(all((root / rel).exists() for rel in alt) for alt in REAL_LAYOUTS[name])


def _urls(name: str) -> list[str]:
    if name == "binarized-mnist":
        return list(AMAT_REMOTES.values())
    return [r.url for (folder, _), r in REMOTES.items() if folder == name]


_reachable: dict[str, bool] = {}


def _online(url: str) -> bool:
    """A quick TCP connection to the host of ``url`` (3 s), remembered for the session."""
    u = urlparse(url)
    if u.hostname not in _reachable:
        try:
            socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=3).close()
            _reachable[u.hostname] = True
        except OSError:
            _reachable[u.hostname] = False
    return _reachable[u.hostname]


def _download(name: str, root: Path) -> None:
    if name == "binarized-mnist":     # no published file checksums: the loader checks the contents
        for split, url in AMAT_REMOTES.items():
            path = root / "binarized-mnist" / f"binarized_mnist_{split}.amat"
            if not path.is_file():
                download(url, path)
        return
    for folder, file in REMOTES:
        if folder == name:
            find_or_download(root, folder, file)   # verified against the published MD5


def find_real_data(name: str) -> Path:
    """The data folder holding the real data set ``name`` (see the module docstring), or a skip."""
    places = _places()
    for _, root in places:
        if _has(root, name):
            return root
    looked = ", ".join(f"{label} ({p})" for label, p in places)
    urls = _urls(name)
    if os.environ.get("MIXVAE_OFFLINE"):
        why = "MIXVAE_OFFLINE is set, so not downloading"
    elif not _online(urls[0]):
        why = f"no connection to {urlparse(urls[0]).hostname}, so not downloading"
    else:
        try:
            _download(name, DEFAULT_DATA_DIR)
            return DEFAULT_DATA_DIR
        except UserError as e:
            why = f"downloading failed: {e}"
    pytest.skip(f"real {name} data set not found; looked in {looked}; {why}".replace("\n", " "))


@pytest.fixture
def dataset_dir():
    """``dataset_dir("mnist")``: the data folder holding that real data set, or the test is skipped."""
    return find_real_data
