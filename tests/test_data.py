"""Data: canonical formats, splits, batches, and one clear message per broken file."""
import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from mixvae.data import load_dataset
from mixvae.data import files
from mixvae.data.toy2d import BOXES, SAMPLERS
from mixvae.errors import UserError


def test_mnist_dynamic_split_and_binarisation(data_dir):
    d = load_dataset("mnist", data_dir=data_dir)
    assert (len(d.train), len(d.valid), len(d.test)) == (50_000, 10_000, 10_000)
    assert d.kind == "binary" and d.dynamic_binarize and d.shape == (1, 28, 28)
    # validation and test were binarised once, with a fixed seed: loading twice gives the same bits
    d2 = load_dataset("mnist", data_dir=data_dir)
    assert torch.equal(d.test.values, d2.test.values) and set(d.test.values.unique().tolist()) <= {0, 1}
    # training batches are re-binarised every batch, reproducibly from (seed, epoch, index)
    a = next(d.train_batches(seed=0, epoch=0, batch_size=64))
    b = next(d.train_batches(seed=0, epoch=0, batch_size=64))
    c = next(d.train_batches(seed=0, epoch=1, batch_size=64))
    assert torch.equal(a, b) and not torch.equal(a, c) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert a.shape == (64, 1, 28, 28)


def test_other_image_sets(data_dir):
    f = load_dataset("frey-faces", data_dir=data_dir)
    assert (len(f.train), len(f.valid), len(f.test)) == (1565, 200, 200) and f.shape == (1, 28, 20) and f.kind == "8bit"
    s = load_dataset("binarized-mnist", data_dir=data_dir)
    assert (len(s.train), len(s.valid), len(s.test)) == (50_000, 10_000, 10_000) and s.kind == "binary"
    assert not s.dynamic_binarize
    fm = load_dataset("fashion-mnist", data_dir=data_dir)
    assert fm.kind == "8bit" and fm.test.labels is not None and len(fm.test.labels) == 10_000
    g = load_dataset("digits")
    assert g.shape == (1, 8, 8) and g.kind == "continuous" and len(g.train) + len(g.valid) + len(g.test) == 1797


def test_batches_are_shards_of_the_global_batch(data_dir):
    d = load_dataset("mnist", data_dir=data_dir, train_subset=1000)
    full = next(d.train_batches(3, 2, 100))
    parts = [next(d.train_batches(3, 2, 100, rank=r, world=2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), full)
    # resuming at batch 5 gives batch 5
    all_b = list(d.train_batches(3, 2, 100))
    assert torch.equal(next(d.train_batches(3, 2, 100, start=5)), all_b[5])


def test_toy_samplers_shapes_and_boxes():
    g = torch.Generator().manual_seed(0)
    for name, f in SAMPLERS.items():
        x = f(5000, g)
        assert x.shape == (5000, 2) and torch.isfinite(x).all()
        assert (x.abs() <= BOXES[name]).float().mean() > 0.99, name
    x = SAMPLERS["8gaussians"](20000, g)
    r = x.norm(dim=1)
    assert abs(r.mean().item() - 2 / 1.414) < 0.01      # all modes at radius 2 / 1.414


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_idx_reader_and_its_errors(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(files.read_idx(p), arr)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(10)))
    with pytest.raises(UserError, match="wrong magic number"):
        files.read_idx(bad)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(gzip.compress(_idx_bytes(arr))[:-12])
    with pytest.raises(UserError, match="truncated or corrupt"):
        files.read_idx(trunc)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(_idx_bytes(arr)[:-5]))
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
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return str(p)


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
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray((np.random.default_rng(i).random((10, 12, 3)) * 255).astype(np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png")
    d = load_dataset("image-folder", path=str(tmp_path), image_size=8, valid_size=2)
    assert d.shape == (3, 8, 8) and len(d.test) == 12 and len(d.valid) == 2 and len(d.train) == 10
    assert sorted(d.test.labels.unique().tolist()) == [0, 1]
    g = load_dataset("image-folder", path=str(tmp_path), image_size=8, channels=1)
    assert g.shape == (1, 8, 8)


def test_cifar10_jpeg_copy(data_dir):
    d = load_dataset("cifar10", data_dir=data_dir, train_subset=100)
    assert d.shape == (3, 32, 32) and d.kind == "8bit" and len(d.test) == 10_000
    assert d.test.labels is not None and d.test.labels.max() == 9
