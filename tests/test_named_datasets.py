"""OMNIGLOT, Caltech 101 Silhouettes and histopathology by name, on small files written in the
canonical layouts (MATLAB v5 files with images stored column-major, a Python 2 pickle of a
dictionary), their damaged variants, and a tiny CLI run on the fake OMNIGLOT."""
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml

from mixvae import safeio
from mixvae.app.cli import main
from mixvae.config import load_config
from mixvae.data import load_dataset
from mixvae.data.download import REMOTES
from mixvae.errors import UserError
from mixvae.factory import likelihood_kind
from mixvae.priors import pseudo_input_init

from .fakedata import py2_pickle

ROOT = Path(__file__).resolve().parents[1]
OMNI_VALID = 1345                # the VampPrior authors hold out the last 1345 (shuffled) training images
MARK = (2, 5)                    # an asymmetric pixel: found at [2, 5] only if the orientation is right


def column_major(imgs: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 784), each image flattened column by column, as MATLAB stores it."""
    return np.stack([im.reshape(784, order="F") for im in imgs])


# ------------------------------------------------------------------------------------ writers
def omniglot_images(n: int, seed: int) -> np.ndarray:
    """(n, 28, 28) gray float64: pixel MARK bright, pixel (20, 10) a value unique to each image."""
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, 28, 28))
    imgs[:, 8:20, 12] = rng.uniform(0.2, 0.9, (n, 12))           # a gray vertical stroke
    imgs[:, MARK[0], MARK[1]] = 1.0
    imgs[:, 20, 10] = (np.arange(n) + 1) / (n + 1)
    return imgs


def write_omniglot(root: Path, n_train: int = OMNI_VALID + 25, n_test: int = 12, compress: bool = True, **replace):
    """``root/omniglot/chardata.mat`` as the IWAE authors' file: 'data' 784 x N and 'testdata'
    784 x M (float64 in [0, 1], one image per column, column-major), one-hot alphabet labels
    'target' 50 x N and 'testtarget' 50 x M. Returns the images and labels written."""
    train, test = omniglot_images(n_train, 0), omniglot_images(n_test, 1)
    test[:, 8:20, 12], test[:, 20, 10] = 0.0, 0.0          # exactly 0/1: unchanged by binarisation
    ytr, yte = np.arange(n_train) % 50, (np.arange(n_test) * 7) % 50
    mat = {"data": column_major(train).T, "testdata": column_major(test).T,
           "target": np.eye(50)[ytr].T, "testtarget": np.eye(50)[yte].T}
    mat.update(replace)
    mat = {k: v for k, v in mat.items() if v is not None}
    (root / "omniglot").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "omniglot" / "chardata.mat", mat, do_compression=compress)
    return {"train": train, "test": test, "train_labels": ytr, "test_labels": yte}


def silhouettes(n: int, shift: int) -> np.ndarray:
    """(n, 28, 28) as Marlin's file stores them: silhouette pixels 0 on a background of 1; the
    silhouette is the pixel MARK and pixel (27, i + shift) of image i."""
    imgs = np.ones((n, 28, 28))
    imgs[:, MARK[0], MARK[1]] = 0.0
    imgs[np.arange(n), 27, np.arange(n) + shift] = 0.0
    return imgs


def write_caltech(root: Path, sizes=(6, 4, 5), **replace):
    """``root/caltech101-silhouettes/caltech101_silhouettes_28_split1.mat``: 'train_data',
    'val_data', 'test_data' N x 784 (0/1 float64, one image per row, column-major) and labels
    '*_labels' N x 1 in 1..101."""
    mat, imgs = {}, {}
    for i, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        imgs[split] = silhouettes(n, 3 * i)
        mat[f"{split}_data"] = column_major(imgs[split])
        mat[f"{split}_labels"] = (np.arange(n) % 101 + 1.0).reshape(n, 1)
    mat.update(replace)
    (root / "caltech101-silhouettes").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "caltech101-silhouettes" / "caltech101_silhouettes_28_split1.mat",
                     {k: v for k, v in mat.items() if v is not None})
    return imgs


def histo_images(n: int, seed: int, flat: bool) -> np.ndarray:
    """Gray patches in [0, 1] on the k/255 grid, pixel MARK = 1 and pixel MARK transposed = 0."""
    rng = np.random.default_rng(seed)
    imgs = (rng.integers(40, 200, (n, 28, 28)) / 255.0).astype(np.float32)
    imgs[:, MARK[0], MARK[1]], imgs[:, MARK[1], MARK[0]] = 1.0, 0.0
    return imgs.reshape(n, 784) if flat else imgs


def histo_pickle(sizes=(8, 4, 3), obj=None) -> tuple[bytes, dict]:
    """A Python 2 pickle like the authors' histopathology.pkl: {'training', 'validation', 'test'}."""
    arrs = {k: histo_images(n, i, flat=(k != "test")) for i, (k, n) in enumerate(zip(("training", "validation", "test"), sizes))}
    return py2_pickle(arrs if obj is None else obj), arrs


def write_histopathology(root: Path, tar: bool = False, **kw) -> dict:
    data, arrs = histo_pickle(**kw)
    folder = root / "histopathology"
    folder.mkdir(parents=True, exist_ok=True)
    if tar:
        with tarfile.open(folder / "histopathology.pkl.tar.gz", "w:gz") as t:
            info = tarfile.TarInfo("histopathology.pkl")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    else:
        (folder / "histopathology.pkl").write_bytes(data)
    return arrs


def one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def cfg_for(name: str):
    cfg = load_config(ROOT / "configs" / "vampprior" / f"vae_vampprior_{name}.yaml")
    return cfg


# ----------------------------------------------------------------------------------- loading
def test_omniglot_layout_splits_binarisation_and_defaults(tmp_path):
    written = write_omniglot(tmp_path)
    d = load_dataset("omniglot", data_dir=tmp_path)
    assert d.shape == (1, 28, 28)
    assert (len(d.train), len(d.valid), len(d.test)) == (25, OMNI_VALID, 12)
    # column-major columns are read back in image order: the bright pixel at [2, 5], not [5, 2]
    for s in (d.train, d.valid, d.test):
        x = s.get()
        assert (x[:, 0, 2, 5] == 1).all() and (x[:, 0, 5, 2] == 0).all()
    # train + valid is a seeded shuffle of all training images (each carries its own value at [20, 10])
    ids = np.concatenate([d.train.get()[:, 0, 20, 10].numpy(), load_dataset("omniglot", data_dir=tmp_path,
                          binarize="none").valid.get()[:, 0, 20, 10].numpy()])
    assert np.allclose(np.sort(ids), np.sort(written["train"][:, 20, 10]), atol=1e-6)
    k = np.rint(d.train.get()[:, 0, 20, 10].numpy() * (len(written["train"]) + 1)).astype(int) - 1
    assert np.array_equal(d.train.labels.numpy(), written["train_labels"][k])          # labels follow their images
    assert not np.array_equal(k, np.arange(25))                                        # shuffled before the split
    assert np.array_equal(d.test.labels.numpy(), written["test_labels"])
    assert np.array_equal(d.test.get()[:, 0].numpy(), written["test"].astype(np.float32))
    # training images stay gray and are binarised per batch; valid / test were binarised once
    assert d.dynamic_binarize and d.kind == "binary" and d.levels == 2
    assert 0 < d.train.get()[:, 0, 8:20, 12].min() < 1
    assert d.valid.values.dtype == torch.uint8 and set(d.valid.values.unique().tolist()) <= {0, 1}
    batch = next(d.train_batches(seed=0, epoch=0, batch_size=10))
    assert set(batch.unique().tolist()) <= {0.0, 1.0}
    again = load_dataset("omniglot", data_dir=tmp_path)
    assert (again.valid.values == d.valid.values).all()                                # fixed seed
    assert likelihood_kind(cfg_for("omniglot"), d) == "bernoulli"
    assert pseudo_input_init("omniglot") == (0.05, 0.01)


def test_omniglot_validation_count_is_the_registered_rule(tmp_path, monkeypatch):
    from mixvae.registry import DATASETS
    write_omniglot(tmp_path, n_train=40, n_test=3)
    monkeypatch.setitem(DATASETS.get("omniglot").info, "valid_count", 10)
    d = load_dataset("omniglot", data_dir=tmp_path, valid_size=0.5)         # the set's own rule wins
    assert (len(d.train), len(d.valid), len(d.test)) == (30, 10, 3)


def test_caltech_silhouettes_layout_inversion_and_defaults(tmp_path):
    imgs = write_caltech(tmp_path)
    d = load_dataset("caltech101-silhouettes", data_dir=tmp_path)
    assert d.shape == (1, 28, 28) and (len(d.train), len(d.valid), len(d.test)) == (6, 4, 5)
    for i, (split, s) in enumerate((("train", d.train), ("val", d.valid), ("test", d.test))):
        x = s.get()[:, 0].numpy()
        assert s.values.dtype == torch.uint8
        assert np.array_equal(x, 1 - imgs[split])          # the silhouette is 1, the background 0
        assert (x[:, 2, 5] == 1).all() and (x[:, 5, 2] == 0).all()
        assert all(x[j, 27, j + 3 * i] == 1 for j in range(len(x)))
        assert np.array_equal(s.labels.numpy(), np.arange(len(x)) % 101 + 1)
    assert d.kind == "binary" and not d.dynamic_binarize
    assert likelihood_kind(cfg_for("caltech101_silhouettes"), d) == "bernoulli"
    assert pseudo_input_init("caltech101-silhouettes") == (0.5, 0.02)


@pytest.mark.parametrize("tar", [False, True])
def test_histopathology_levels_likelihood_and_defaults(tmp_path, tar):
    arrs = write_histopathology(tmp_path, tar=tar)
    d = load_dataset("histopathology", data_dir=tmp_path)
    assert d.shape == (1, 28, 28) and (len(d.train), len(d.valid), len(d.test)) == (8, 4, 3)
    for key, s in (("training", d.train), ("validation", d.valid), ("test", d.test)):
        want = np.rint(arrs[key].reshape(-1, 28, 28) * 255).astype(np.uint8)
        assert np.array_equal(s.values[:, 0].numpy(), want)          # k / 255 values kept exactly
        assert (s.get()[:, 0, 2, 5] == 1).all() and (s.get()[:, 0, 5, 2] == 0).all()
    assert d.kind == "8bit" and d.levels == 256 and not d.dynamic_binarize
    cfg = cfg_for("histopathology")
    assert likelihood_kind(cfg, d) == "logistic"          # discretised logistic, 256 bins of width 1/256
    from mixvae.factory import build_model, resolve_auto
    cfg.model.prior.components, cfg.model.hidden = 3, [8]
    model = build_model(resolve_auto(cfg, d), d)
    assert model.likelihood.bins == 256 and cfg.model.prior.pseudo_init == [0.4, 0.05]


def test_histopathology_values_off_the_grid_fall_in_the_authors_bins(tmp_path):
    x = np.array([0.0, 1 / 512, 0.5, 0.999, 1.0], dtype=np.float64)
    obj = {"training": np.tile(x, (2, 157))[:, :784], "validation": np.zeros((1, 784)), "test": np.ones((1, 784))}
    (tmp_path / "histopathology").mkdir()
    (tmp_path / "histopathology" / "histopathology.pkl").write_bytes(py2_pickle(obj))
    d = load_dataset("histopathology", data_dir=tmp_path)
    assert d.train.values.flatten()[:5].tolist() == [0, 0, 128, 255, 255]      # floor(256 x), at most 255


# ------------------------------------------------------------------------------ damaged files
def test_omniglot_damaged_files_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "omniglot" / "chardata.mat"
    write_omniglot(tmp_path, n_train=30, n_test=3, compress=False)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "truncated" in one_line(e, path)

    write_omniglot(tmp_path, n_train=30, n_test=3)          # compressed: the zlib stream ends early
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    one_line(e, path)

    write_omniglot(tmp_path, n_train=30, n_test=3, testdata=None)
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "'testdata' is missing" in one_line(e, path)

    write_omniglot(tmp_path, n_train=30, n_test=3, data=np.zeros((30, 784)))      # rows instead of columns
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "'data'" in one_line(e, path) and "784 x N" in str(e.value)

    write_omniglot(tmp_path, n_train=30, n_test=3, testdata=np.full((784, 3), 2.0))
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "'testdata'" in one_line(e, path) and "[0, 1]" in str(e.value)

    path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ." + bytes(600))
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "v7.3" in one_line(e, path)

    path.write_bytes(b"not a MATLAB file")
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    one_line(e, path)

    # a compressed element that inflates past the per-file limit is refused before scipy reads it
    write_omniglot(tmp_path, n_train=200, n_test=3)
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(safeio, "MAX_FILE_BYTES", 500_000)
    with pytest.raises(UserError) as e:
        load_dataset("omniglot", data_dir=tmp_path)
    assert "MAX_FILE_BYTES" in one_line(e, path)


def test_caltech_damaged_files_are_one_line(tmp_path):
    path = tmp_path / "caltech101-silhouettes" / "caltech101_silhouettes_28_split1.mat"
    write_caltech(tmp_path, val_data=None)
    with pytest.raises(UserError) as e:
        load_dataset("caltech101-silhouettes", data_dir=tmp_path)
    assert "'val_data' is missing" in one_line(e, path)
    write_caltech(tmp_path, test_data=np.full((5, 784), 0.5))
    with pytest.raises(UserError) as e:
        load_dataset("caltech101-silhouettes", data_dir=tmp_path)
    assert "'test_data'" in one_line(e, path) and "0 and 1" in str(e.value)
    write_caltech(tmp_path, train_labels=np.ones((5, 1)))
    with pytest.raises(UserError) as e:
        load_dataset("caltech101-silhouettes", data_dir=tmp_path)
    assert "'train_labels'" in one_line(e, path)
    write_caltech(tmp_path, train_data=np.array([["a cell"]], dtype=object))
    with pytest.raises(UserError) as e:
        load_dataset("caltech101-silhouettes", data_dir=tmp_path)
    assert "'train_data'" in one_line(e, path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_histopathology_damaged_files_are_one_line(tmp_path):
    folder = tmp_path / "histopathology"
    folder.mkdir()
    path = folder / "histopathology.pkl"
    path.write_bytes(pickle.dumps({"training": _Evil(), "validation": 0, "test": 0}, protocol=2))
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    assert "refusing to load" in one_line(e, path) and "system" in str(e.value)
    good, _ = histo_pickle()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    assert "not a pickle of numpy arrays" in one_line(e, path)
    path.write_bytes(histo_pickle(obj={"training": np.zeros((2, 784)), "test": np.zeros((2, 784))})[0])
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    assert "'validation'" in one_line(e, path)
    bad = {"training": np.zeros((2, 784)), "validation": np.zeros((2, 700)), "test": np.zeros((2, 784))}
    path.write_bytes(histo_pickle(obj=bad)[0])
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    assert "'validation'" in one_line(e, path) and "28x28" in str(e.value)
    bad["validation"] = np.full((2, 784), 1.5)
    path.write_bytes(histo_pickle(obj=bad)[0])
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    assert "[0, 1]" in one_line(e, path)
    path.unlink()
    tgz = folder / "histopathology.pkl.tar.gz"
    write_histopathology(tmp_path, tar=True)
    tgz.write_bytes(tgz.read_bytes()[:-30])
    with pytest.raises(UserError) as e:
        load_dataset("histopathology", data_dir=tmp_path)
    one_line(e, tgz)


@pytest.mark.parametrize("name, folder, file", [
    ("omniglot", "omniglot", "chardata.mat"),
    ("caltech101-silhouettes", "caltech101-silhouettes", "caltech101_silhouettes_28_split1.mat"),
    ("histopathology", "histopathology", "histopathology.pkl.tar.gz"),
])
def test_a_missing_file_without_a_recorded_checksum_is_not_downloaded(tmp_path, monkeypatch, name, folder, file):
    monkeypatch.delenv("MIXVAE_OFFLINE", raising=False)
    import mixvae.data.download as dl
    monkeypatch.setattr(dl, "download", lambda *a, **k: pytest.fail("tried to download an unverified file"))
    remote = REMOTES[(folder, file)]
    assert remote.md5 is None and remote.url.startswith("https://")
    with pytest.raises(UserError) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = one_line(e, tmp_path / folder / file)
    assert "no checksum is recorded" in msg and remote.url in msg


# ------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name, write, test_size, pseudo", [
    ("omniglot", lambda d: write_omniglot(d, n_test=10), 10, [0.05, 0.01]),
    ("caltech101_silhouettes", lambda d: write_caltech(d), 5, [0.5, 0.02]),
    ("histopathology", lambda d: write_histopathology(d), 3, [0.4, 0.05]),
])
def test_train_and_eval_a_preset_of_each_named_set_from_the_cli(tmp_path, capsys, name, write, test_size, pseudo):
    data = tmp_path / "data"
    write(data)
    run = tmp_path / "run"
    over = ["train.max_steps=3", "train.batch_size=3", "train.warmup_epochs=1", "model.hidden=[16,16]",
            "model.latent_dim=4", "model.prior.components=2", "eval.fid_samples=0", "eval.ll_samples=4"]
    args = ["train", str(ROOT / f"configs/vampprior/vae_vampprior_{name}.yaml"), "--out", str(run), "--quiet",
            "--data-dir", str(data)] + [a for o in over for a in ("--set", o)]
    assert main(args) == 0, capsys.readouterr().err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    kind = "logistic" if name == "histopathology" else "bernoulli"
    assert cfg["model"]["likelihood"] == kind and cfg["model"]["prior"]["pseudo_init"] == pseudo
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    capsys.readouterr()
    assert main(["eval", str(run), "--ll-samples", "4", "--json", "--data-dir", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_ll_samples"] == 4 and result["test_examples"] == test_size
    assert np.isfinite(result["test_ll"]) and result["test_ll"] < 0
