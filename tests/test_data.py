"""Data: canonical formats, splits, batches, and one clear message per broken file.

The format and pipeline checks run on tiny synthetic files (tests/fakedata.py); the ``test_real_*``
checks are about the real data sets themselves (sizes, checksums, pixel statistics) and need them
(see ``dataset_dir`` in conftest.py)."""
import gzip
import hashlib
import io
import math
import pickle
import tarfile

from pathlib import Path

import numpy as np
import pytest
import torch

import mixvae.data.datasets as datasets_module
from mixvae.data import load_dataset
from mixvae.data import files
from mixvae.data.download import BINARIZED_MNIST_CONTENT_MD5, REMOTES, md5_of_file
from mixvae.data.toy2d import BOXES, SAMPLERS
from mixvae.errors import UserError

from . import fakedata
from .fakedata import MNIST_VALID, idx_bytes


# ------------------------------------------------------------------ loaders on synthetic files
def test_mnist_dynamic_split_and_binarisation(fake_data):
    root, arrs = fake_data.get("mnist")
    n_train, n_test = len(arrs["train"]), len(arrs["test"])
    d = load_dataset("mnist", data_dir=root)
    assert (len(d.train), len(d.valid), len(d.test)) == (n_train - MNIST_VALID, MNIST_VALID, n_test)
    assert d.kind == "binary" and d.dynamic_binarize and d.shape == (1, 28, 28)
    # training images are the file's first ones, kept as 8-bit values (binarised per batch)
    np.testing.assert_array_equal(d.train.values[:, 0].numpy(), arrs["train"][:-MNIST_VALID])
    np.testing.assert_array_equal(d.test.labels.numpy(), arrs["test_labels"])
    # validation = the file's last 10k, binarised once: black stays 0, white becomes 1
    last = torch.from_numpy(arrs["train"][-MNIST_VALID:]).unsqueeze(1)
    assert (d.valid.values[last == 0] == 0).all() and (d.valid.values[last == 255] == 1).all()
    # ... with a fixed seed: loading twice gives the same bits
    d2 = load_dataset("mnist", data_dir=root)
    assert torch.equal(d.test.values, d2.test.values) and set(d.test.values.unique().tolist()) <= {0, 1}
    # training batches are re-binarised every batch, reproducibly from (seed, epoch, index)
    a = next(d.train_batches(seed=0, epoch=0, batch_size=64))
    b = next(d.train_batches(seed=0, epoch=0, batch_size=64))
    c = next(d.train_batches(seed=0, epoch=1, batch_size=64))
    assert torch.equal(a, b) and not torch.equal(a, c) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert a.shape == (64, 1, 28, 28)


def test_fashion_mnist_keeps_8bit_values_and_holds_out_the_last_10k(fake_data):
    root, arrs = fake_data.get("fashion-mnist")
    d = load_dataset("fashion-mnist", data_dir=root)
    assert d.kind == "8bit" and not d.dynamic_binarize and d.shape == (1, 28, 28)
    np.testing.assert_array_equal(d.train.values[:, 0].numpy(), arrs["train"][:-MNIST_VALID])
    np.testing.assert_array_equal(d.valid.values[:, 0].numpy(), arrs["train"][-MNIST_VALID:])
    np.testing.assert_array_equal(d.valid.labels.numpy(), arrs["train_labels"][-MNIST_VALID:])
    np.testing.assert_array_equal(d.test.values[:, 0].numpy(), arrs["test"])
    torch.testing.assert_close(d.test.get(slice(0, 3)), torch.from_numpy(arrs["test"][:3]).unsqueeze(1) / 255.0)


def test_binarized_mnist_npz(fake_data):
    root, arrs = fake_data.get("binarized-mnist")
    d = load_dataset("binarized-mnist", data_dir=root)
    assert d.kind == "binary" and not d.dynamic_binarize and d.shape == (1, 28, 28)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(d, split).values.reshape(-1, 784).numpy(), arrs[split])


def test_binarized_mnist_amat_files_are_checked_against_the_canonical_contents(fake_data, monkeypatch):
    root, arrs = fake_data.get("binarized-mnist-amat")
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    with pytest.raises(UserError, match="contents differ from the canonical static binarised MNIST train split"):
        load_dataset("binarized-mnist", data_dir=root)
    # with these files' own checksums in place of the canonical ones they load, value for value
    monkeypatch.setattr(datasets_module, "BINARIZED_MNIST_CONTENT_MD5",
                        {s: hashlib.md5(a.tobytes()).hexdigest() for s, a in arrs.items()})
    d = load_dataset("binarized-mnist", data_dir=root)
    assert d.kind == "binary" and d.shape == (1, 28, 28)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(d, split).values.reshape(-1, 784).numpy(), arrs[split])


def test_frey_faces_pickle_and_its_seeded_split(fake_data):
    root, imgs = fake_data.get("frey-faces")
    d = load_dataset("frey-faces", data_dir=root)
    assert (len(d.train), len(d.valid), len(d.test)) == (len(imgs) - 400, 200, 200)
    assert d.shape == (1, 28, 20) and d.kind == "8bit"
    # the three splits are a shuffle of the file's images, each image exactly once
    got = torch.cat([d.train.values, d.valid.values, d.test.values])[:, 0].numpy().reshape(len(imgs), -1)
    order = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(order(got), order(imgs.reshape(len(imgs), -1)))
    assert not np.array_equal(got, imgs.reshape(len(imgs), -1))
    # ... seeded: the same seed gives the same split, another seed another one
    assert torch.equal(load_dataset("frey-faces", data_dir=root).test.values, d.test.values)
    assert not torch.equal(load_dataset("frey-faces", data_dir=root, split_seed=1).test.values, d.test.values)


def test_cifar10_python_batches(fake_data):
    root, arrs = fake_data.get("cifar10")
    d = load_dataset("cifar10", data_dir=root, valid_size=0.1)
    n = len(arrs["train"])
    assert (len(d.train), len(d.valid), len(d.test)) == (n - round(0.1 * n), round(0.1 * n), len(arrs["test"]))
    assert d.shape == (3, 32, 32) and d.kind == "8bit"
    # the batches' channel-first rows come out as (C, H, W) images, in file order, with their labels
    np.testing.assert_array_equal(d.test.values.numpy(), arrs["test"].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(d.test.labels.numpy(), arrs["test_labels"])
    train = torch.cat([d.train.values, d.valid.values]).reshape(n, -1).numpy()
    want = arrs["train"].transpose(0, 3, 1, 2).reshape(n, -1)
    assert sorted(map(bytes, train)) == sorted(map(bytes, want))


def test_cifar10_jpeg_archive(fake_data):
    root, tree = fake_data.get("cifar10-jpeg")
    d = load_dataset("cifar10", data_dir=root, valid_size=0.1)
    n_train = sum(k.startswith("train/") for k in tree)
    n_test = sum(k.startswith("test/") for k in tree)
    assert (len(d.train) + len(d.valid), len(d.test)) == (n_train, n_test) and len(d.valid) == round(0.1 * n_train)
    assert d.shape == (3, 32, 32) and d.kind == "8bit"
    # test images in the order class (sorted names) then file; class index = position of the name
    classes = sorted(fakedata.CIFAR_CLASSES)
    keys = sorted((k for k in tree if k.startswith("test/")), key=lambda k: (classes.index(k.split("/")[1]), k))
    assert d.test.labels.tolist() == [classes.index(k.split("/")[1]) for k in keys]
    want = torch.from_numpy(np.stack([tree[k] for k in keys])).permute(0, 3, 1, 2).float()
    # JPEG at quality 75 is lossy, but flat colour blocks come back within a few grey levels
    assert (d.test.values.float() - want).abs().mean() < 3.0


def test_batches_are_shards_of_the_global_batch(fake_data):
    d = load_dataset("mnist", data_dir=fake_data.get("mnist")[0], train_subset=600)
    full = next(d.train_batches(3, 2, 100))
    parts = [next(d.train_batches(3, 2, 100, rank=r, world=2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), full)
    # resuming at batch 5 gives batch 5
    all_b = list(d.train_batches(3, 2, 100))
    assert len(all_b) == 6 and torch.equal(next(d.train_batches(3, 2, 100, start=5)), all_b[5])


def test_digits_are_bundled_with_scikit_learn():
    g = load_dataset("digits")
    assert g.shape == (1, 8, 8) and len(g.train) + len(g.valid) + len(g.test) == 1797
    assert g.kind == "discrete" and g.levels == 17          # scikit-learn's digits hold the values k / 16


# ------------------------------------------------------------------ the real data sets themselves
def test_real_mnist(dataset_dir):
    root = dataset_dir("mnist")
    d = load_dataset("mnist", data_dir=root, binarize="none")
    assert (len(d.train), len(d.valid), len(d.test)) == (50_000, 10_000, 10_000) and d.kind == "8bit"
    # the test images are the original file byte for byte (MD5 of the decompressed IDX file)
    raw = gzip.decompress((root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert torch.bincount(d.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the training images' mean pixel is the well-known normalisation constant 0.1307
    train = torch.cat([d.train.values, d.valid.values]).double() / 255
    assert train.mean().item() == pytest.approx(0.1307, abs=2e-4)


def test_real_fashion_mnist(dataset_dir):
    d = load_dataset("fashion-mnist", data_dir=dataset_dir("fashion-mnist"))
    assert (len(d.train), len(d.valid), len(d.test)) == (50_000, 10_000, 10_000) and d.kind == "8bit"
    assert torch.bincount(torch.cat([d.train.labels, d.valid.labels])).tolist() == [6000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    train = torch.cat([d.train.values, d.valid.values]).double() / 255
    assert train.mean().item() == pytest.approx(0.2860, abs=2e-4)


def test_real_binarized_mnist(dataset_dir):
    d = load_dataset("binarized-mnist", data_dir=dataset_dir("binarized-mnist"))
    assert (len(d.train), len(d.valid), len(d.test)) == (50_000, 10_000, 10_000) and d.kind == "binary"
    assert not d.dynamic_binarize
    # whichever file it came from (.npz copy or the .amat files), it is the canonical data
    for split in ("train", "valid", "test"):
        values = getattr(d, split).values.reshape(-1, 784).numpy().astype(np.uint8)
        assert hashlib.md5(values.tobytes()).hexdigest() == BINARIZED_MNIST_CONTENT_MD5[split], split


def test_real_frey_faces(dataset_dir):
    root = dataset_dir("frey-faces")
    assert md5_of_file(root / "frey-faces" / "freyfaces.pkl") == REMOTES[("frey-faces", "freyfaces.pkl")].md5
    d = load_dataset("frey-faces", data_dir=root)
    assert (len(d.train), len(d.valid), len(d.test)) == (1565, 200, 200) and d.shape == (1, 28, 20)
    assert d.kind == "8bit"


def test_real_cifar10(dataset_dir):
    d = load_dataset("cifar10", data_dir=dataset_dir("cifar10"))
    assert (len(d.train), len(d.valid), len(d.test)) == (45_000, 5_000, 10_000)
    assert d.shape == (3, 32, 32) and d.kind == "8bit"
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert torch.bincount(torch.cat([d.train.labels, d.valid.labels])).tolist() == [5000] * 10
    # the training set's channel means (0.4914, 0.4822, 0.4465); the JPEG copy is within 0.002
    train = torch.cat([d.train.values, d.valid.values])
    means = torch.stack([train[:, c].double().mean() for c in range(3)]) / 255
    torch.testing.assert_close(means, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=2e-3, rtol=0)


def test_toy_samplers_shapes_and_boxes():
    g = torch.Generator().manual_seed(0)
    for name, f in SAMPLERS.items():
        x = f(5000, g)
        assert x.shape == (5000, 2) and torch.isfinite(x).all()
        assert (x.abs() <= BOXES[name]).float().mean() > 0.99, name
    x = SAMPLERS["8gaussians"](20000, g)
    r = x.norm(dim=1)
    assert abs(r.mean().item() - 2 / 1.414) < 0.01      # all modes at radius 2 / 1.414


def _binomial_ok(count, n, p, sigmas=5.0):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_toy_samplers_follow_their_definitions_statistically():
    """40 000 seeded draws of each paper set against its definition (ALGORITHMS.md section 2): the
    mass of each mode within 5 binomial standard deviations, positions and spreads within stated
    tolerances."""
    n, g = 40_000, torch.Generator().manual_seed(1)
    # 8gaussians: 8 equally likely centres at radius 2 (all / 1.414), noise 0.02 / 1.414 per axis
    x = SAMPLERS["8gaussians"](n, g).double()
    s = 1 / math.sqrt(2)
    centres = 2 * torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]]).double() / 1.414
    nearest = torch.cdist(x, centres).argmin(1)
    assert all(_binomial_ok(int((nearest == k).sum()), n, 1 / 8) for k in range(8))
    resid = x - centres[nearest]
    assert abs(resid.std().item() / (0.02 / 1.414) - 1) < 0.03
    # checkerboard: 2 x 2 cells of [-4, 4]^2; the 8 with (i + j) even hold 1/8 each, the others none
    x = SAMPLERS["checkerboard"](n, g)
    i, j = (torch.floor(x[:, 0] / 2) + 2).long(), (torch.floor(x[:, 1] / 2) + 2).long()
    counts = torch.zeros(4, 4, dtype=torch.long)
    counts.index_put_((i, j), torch.ones(n, dtype=torch.long), accumulate=True)
    for a in range(4):
        for b in range(4):
            assert _binomial_ok(int(counts[a, b]), n, 1 / 8) if (a + b) % 2 == 0 else counts[a, b] == 0, (a, b)
    # rings: radii 3 x (1, .75, .5, .25), a quarter each, radial noise 0.08
    x = SAMPLERS["rings"](n, g).double()
    r = x.norm(dim=1)
    radii = torch.tensor([3.0, 2.25, 1.5, 0.75]).double()
    ring = (r[:, None] - radii).abs().argmin(1)
    for k in range(4):
        assert _binomial_ok(int((ring == k).sum()), n, 1 / 4), k
        dev = r[ring == k] - radii[k]
        assert abs(dev.mean().item()) < 0.01 and abs(dev.std().item() / 0.08 - 1) < 0.05, k
    # 2spirals: two arms, each the other's reflection through the origin: mean 0 (4 standard errors)
    x = SAMPLERS["2spirals"](n, g).double()
    assert (x.mean(0).abs() < 4 * x.std(0) / math.sqrt(n)).all()


def test_idx_reader_and_its_errors(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(files.read_idx(p), arr)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(10)))
    with pytest.raises(UserError, match="wrong magic number"):
        files.read_idx(bad)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(gzip.compress(idx_bytes(arr))[:-12])
    with pytest.raises(UserError, match="truncated or corrupt"):
        files.read_idx(trunc)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(idx_bytes(arr)[:-5]))
    with pytest.raises(UserError, match="header promises"):
        files.read_idx(short)


def test_missing_files_say_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte.gz is missing" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(UserError, match="freyfaces.pkl is missing"):
        load_dataset("frey-faces", data_dir=tmp_path)


def _npz(tmp_path, **arrays):
    return str(fakedata.write_npz(tmp_path / "d.npz", **arrays))


def test_npz_data_sets(tmp_path):
    rng = np.random.default_rng(0)
    p = _npz(tmp_path, train=rng.integers(0, 256, (50, 6, 5), dtype=np.uint8),
             test=rng.integers(0, 256, (10, 6, 5), dtype=np.uint8), train_labels=np.arange(50) % 3)
    d = load_dataset("npz", path=p, valid_size=0.2)
    assert d.kind == "8bit" and d.shape == (1, 6, 5) and (len(d.train), len(d.valid), len(d.test)) == (40, 10, 10)
    rgb = _npz(tmp_path, train=rng.random((20, 4, 4, 3)).astype(np.float32), test=rng.random((5, 4, 4, 3)).astype(np.float32))
    d = load_dataset("npz", path=rgb)
    assert d.kind == "continuous" and d.shape == (3, 4, 4)


@pytest.mark.parametrize("arrays, fragment", [
    ({"train": np.zeros((4, 3, 3, 2), np.uint8), "test": np.zeros((2, 3, 3, 2), np.uint8)}, "has shape (4, 3, 3, 2)"),
    ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 4), np.uint8)}, "but 'train' has (3, 3)"),
    ({"train": np.full((4, 3, 3), np.nan, np.float32), "test": np.zeros((2, 3, 3), np.float32)}, "NaN"),
    ({"train": np.full((4, 3, 3), 2.0, np.float32), "test": np.zeros((2, 3, 3), np.float32)}, "expected uint8 or floats in [0, 1]"),
    ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 3), np.uint8), "train_labels": np.zeros(3)}, "'train_labels' has shape (3,)"),
    ({"train": np.zeros((4, 3, 3), np.uint8)}, "expected arrays 'train' and 'test'"),
])
def test_npz_errors(tmp_path, arrays, fragment):
    with pytest.raises(UserError) as e:
        load_dataset("npz", path=_npz(tmp_path, **arrays))
    assert fragment in str(e.value) and "\n" not in str(e.value)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "frey-faces"
    folder.mkdir()
    (folder / "freyfaces.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(UserError, match="refusing to load posix.system|refusing to load os.system"):
        load_dataset("frey-faces", data_dir=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_tar_with_parent_paths_is_refused(tmp_path):
    arch = tmp_path / "evil.tar.gz"
    with tarfile.open(arch, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escape.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "out"
    with pytest.raises(UserError, match="outside"):
        files.safe_extract(arch, target)
    with pytest.raises(UserError, match="outside"):
        load_dataset("image-folder", path=str(arch))
    assert not (tmp_path / "escape.png").exists()


def test_image_folder(tmp_path):
    tree = fakedata.write_image_folder(tmp_path, counts={"train": 6, "test": 6}, classes=("a", "b"), size=12)
    d = load_dataset("image-folder", path=str(tmp_path), image_size=8, valid_size=2)
    assert d.shape == (3, 8, 8) and len(d.test) == 12 and len(d.valid) == 2 and len(d.train) == 10
    assert d.test.labels.tolist() == [0] * 6 + [1] * 6
    # PNG is lossless: at the files' own size the pixels are those written (class a, then b)
    full = load_dataset("image-folder", path=str(tmp_path), valid_size=2)
    want = np.stack([tree[f"test/{c}/{j:04d}"] for c in "ab" for j in range(6)]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(full.test.values.numpy(), want)
    g = load_dataset("image-folder", path=str(tmp_path), image_size=8, channels=1)
    assert g.shape == (1, 8, 8)


def test_image_trees_decoded_by_threads_keep_their_order_and_stop_at_a_bad_image(tmp_path):
    import warnings
    tree = fakedata.write_image_folder(tmp_path, counts={"train": 60, "test": 3}, classes=("a", "b", "c"), size=5)
    filters = list(warnings.filters)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                                                     # decoded by two threads
    try:
        out = files.read_image_tree(files.image_entries_from_dir(tmp_path), str(tmp_path), None, None)
    finally:
        torch.set_num_threads(threads)
    assert warnings.filters == filters                   # the process's warning filters are left as they were
    want = np.stack([tree[f"train/{c}/{j:04d}"] for c in "abc" for j in range(60)])
    np.testing.assert_array_equal(out["train"], want)                         # class by class, file by file
    assert out["train_labels"].tolist() == [0] * 60 + [1] * 60 + [2] * 60 and len(out["test"]) == 9
    (tmp_path / "train" / "b" / "0007.png").write_bytes(b"not a picture")
    with pytest.raises(UserError, match="0007.png"):
        files.read_image_tree(files.image_entries_from_dir(tmp_path), str(tmp_path), None, None)


def test_image_folder_without_split_folders_holds_out_a_seeded_test_part(tmp_path):
    fakedata.write_image_folder(tmp_path, counts={"": 5}, classes=("a", "b", "c"), size=6)
    d = load_dataset("image-folder", path=str(tmp_path), valid_size=3)
    assert (len(d.train), len(d.valid), len(d.test)) == (9, 3, 3) and d.shape == (3, 6, 6)
    labels = torch.cat([d.train.labels, d.valid.labels, d.test.labels])
    assert torch.bincount(labels).tolist() == [5, 5, 5]


@pytest.mark.parametrize("values, kind, levels", [
    (np.array([0, 255], np.uint8), "binary", 2),              # 0/255 images are binary, not 8-bit gray
    (np.array([0, 1], np.uint8), "binary", 2),
    (np.array([0, 17, 255], np.uint8), "8bit", 256),
    (np.array([0.0, 1.0], np.float32), "binary", 2),
    (np.array([0.0, 0.25, 0.5, 1.0], np.float32), "discrete", 5),
    (np.arange(17, dtype=np.float32) / 16, "discrete", 17),
    (np.arange(256, dtype=np.float32) / 255, "8bit", 256),
    (np.array([0.0, 0.3333, 0.71], np.float32), "continuous", None),
])
def test_the_kind_of_data_is_inferred_from_its_values(tmp_path, values, kind, levels):
    rng = np.random.default_rng(0)
    pick = lambda n: values[rng.integers(0, len(values), (n, 4, 4))]
    train = pick(40)
    train.flat[: len(values)] = values                         # every value occurs
    d = load_dataset("npz", path=_npz(tmp_path, train=train, test=pick(5)))
    assert (d.kind, d.levels) == (kind, levels)


def test_a_binary_npz_trains_with_a_bernoulli_likelihood_and_its_config_says_so(tmp_path):
    import yaml
    from mixvae.app.cli import main
    rng = np.random.default_rng(0)
    p = _npz(tmp_path, train=(rng.random((60, 6, 6)) < 0.3).astype(np.uint8) * 255,
             test=(rng.random((10, 6, 6)) < 0.3).astype(np.uint8) * 255)
    run = tmp_path / "run"
    sets = ["data.name=npz", f"data.path={p}", "model.hidden=[8]", "model.latent_dim=2", "train.max_steps=3",
            "train.batch_size=20", "eval.ll_samples=3", "model.prior.kind=vampprior", "model.prior.components=3"]
    base = Path(__file__).resolve().parents[1] / "configs" / "vampprior" / "_base.yaml"
    assert main(["train", str(base), "--out", str(run), "--quiet", "--no-eval"]
                + [a for o in sets for a in ("--set", o)]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["likelihood"] == "bernoulli"
