"""Hostile and damaged input, one case per fault: each ends with one line naming the file and what is
wrong (exit code 2 on the command line), without a traceback, a hang, a large allocation or a
half-written run folder (issue 17). tests/test_damaged_files_property.py draws many more."""
import contextlib
import gzip
import io
import os
import resource
import shutil
import signal
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from mixvae import safeio
from mixvae.app.cli import main
from mixvae.data import files, load_dataset
from mixvae.errors import UserError

from . import fakedata
from .test_cli import one_line_error, sets

TINY_RUN = """seed: 0
data: {name: digits}
model: {arch: vae, hidden: [8], latent_dim: 2, prior: {kind: mog, components: 3}}
train: {max_steps: 3, batch_size: 64, log_every: 1, checkpoint_every: 1}
eval: {ll_samples: 2}
"""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging (in-process: SIGALRM)."""
    def on_alarm(*_):
        raise TimeoutError(f"still running after {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refused(fragment, **kw):
    """load_dataset(**kw) raises one line containing ``fragment``, within 20 s."""
    with time_limit(20), pytest.raises(UserError) as e:
        load_dataset(**kw)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    return str(e.value)


def cli(args, capsys):
    with time_limit(60):
        code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------ images
def image_folder(tmp_path, **kw):
    fakedata.write_image_folder(tmp_path / "imgs", counts={"train": 3, "test": 2}, size=8, **kw)
    return tmp_path / "imgs"


def test_an_image_whose_header_claims_50000_squared_pixels_is_refused_before_decoding(tmp_path):
    root = image_folder(tmp_path)
    (root / "train" / "a" / "huge.png").write_bytes(fakedata.png_claiming(50000, 50000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused("pixels", name="image-folder", path=str(root))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000     # KiB: nothing decoded
    (root / "train" / "a" / "huge.png").write_bytes(fakedata.png_claiming(9000, 9000))   # below PIL's own limit
    refused("9000 x 9000 pixels", name="image-folder", path=str(root))


def test_16_bit_images_are_scaled_and_odd_modes_load_quietly(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "modes"
    for i, cls in enumerate("ab"):
        (root / cls).mkdir(parents=True)
        for j in range(4):
            (root / cls / f"{j}.png").write_bytes(fakedata.png16(np.array([[0, 257 * (10 * j + i), 65535]] * 3)))
    d = load_dataset("image-folder", path=str(root), valid_size=1)
    values = torch.cat([d.train.values, d.valid.values, d.test.values]).unique().tolist()
    assert {0, 255} <= set(values) and set(values) <= {0, 255} | {10 * j + i for j in range(4) for i in range(2)}
    # palette with transparency, gray + alpha: decoded without a word on stderr
    pal = root.parent / "pal"
    for cls in "ab":
        (pal / cls).mkdir(parents=True)
        for j in range(3):
            im = Image.fromarray(np.full((4, 4), 40 * j, np.uint8)).convert("P")
            im.info["transparency"] = b"\x00" * 4
            im.save(pal / cls / f"{j}.png")
            Image.fromarray(np.full((4, 4), 9, np.uint8)).convert("LA").save(pal / cls / f"la{j}.png")
    capsys.readouterr()
    with pytest.raises(UserError, match="data.channels"):      # gray and palette (RGB) images mixed
        load_dataset("image-folder", path=str(pal), valid_size=1)
    assert load_dataset("image-folder", path=str(pal), valid_size=1, channels=3).shape == (3, 4, 4)
    assert capsys.readouterr().err == ""


def test_images_of_different_sizes_name_two_of_them(tmp_path):
    root = image_folder(tmp_path)
    fakedata.write_image_folder(root, counts={"train": 1}, size=9, classes=("a",), seed=5)
    refused("set data.image_size", name="image-folder", path=str(root))


@pytest.mark.parametrize("make", ["link_out", "link_dir", "fifo"])
def test_links_and_special_files_inside_an_image_folder_are_refused(tmp_path, make):
    root = image_folder(tmp_path)
    outside = tmp_path / "secret.png"
    shutil.copy(root / "train" / "a" / "0000.png", outside)
    target = root / "train" / "a" / "9999.png"
    if make == "link_out":
        os.symlink(outside, target)
    elif make == "link_dir":
        os.symlink(tmp_path, root / "train" / "c")
    else:
        os.mkfifo(target)
    refused("refused", name="image-folder", path=str(root))


def test_the_image_folder_itself_may_be_a_link(tmp_path):
    root = image_folder(tmp_path)
    os.symlink(root, tmp_path / "alias")
    assert len(load_dataset("image-folder", path=str(tmp_path / "alias")).test) == 4


@pytest.mark.parametrize("name", ["npz", "image-folder"])
def test_special_files_as_data_path_are_refused_without_hanging(tmp_path, name):
    refused("is a device", name=name, path="/dev/zero")
    os.mkfifo(tmp_path / "pipe")
    refused("FIFO", name=name, path=str(tmp_path / "pipe"))


# ------------------------------------------------------------------------------ archives
def test_a_huge_member_is_refused_from_its_header(tmp_path):
    arch = fakedata.tar_member_claiming(tmp_path / "a.tar.gz", "train/a/0.png", 2 * 10 ** 9)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msg = refused("declares 2000000000 bytes", name="image-folder", path=str(arch))
    assert "MAX_FILE_BYTES" in msg
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000


def test_the_total_size_of_an_archive_is_bounded(tmp_path, monkeypatch):
    arch = tmp_path / "x.tar.gz"
    fakedata.write_image_tar(arch, counts={"train": 2, "test": 1}, classes=("a", "b"), size=8, fmt="PNG")
    monkeypatch.setattr(safeio, "MAX_TOTAL_BYTES", 2000)
    refused("in all", name="image-folder", path=str(arch))


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_links_and_devices_inside_archives_are_refused(tmp_path, kind):
    arch = tmp_path / "x.tar.gz"
    with tarfile.open(arch, "w:gz") as tar:
        info = tarfile.TarInfo("train/a/0.png")
        info.type, info.linkname = kind, "/etc/passwd"
        tar.addfile(info)
    refused("refus", name="image-folder", path=str(arch))


@pytest.mark.parametrize("cut", [0, 1, 40, 0.5, -4, -1])
@pytest.mark.parametrize("fmt", ["cifar10", "cifar10-jpeg", "image-tar"])
def test_truncated_archives_are_one_line(tmp_path, fmt, cut):
    if fmt == "cifar10":
        arch = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
        fakedata.write_cifar_python(arch, per_batch=2, n_test=2)
        kw = dict(name="cifar10", data_dir=tmp_path)
    elif fmt == "cifar10-jpeg":
        arch = tmp_path / "cifar10-jpeg.tar.gz"
        fakedata.write_image_tar(arch, counts={"train": 1, "test": 1})
        kw = dict(name="cifar10", data_dir=tmp_path)
    else:
        arch = tmp_path / "x.tar.gz"
        fakedata.write_image_tar(arch, counts={"train": 2, "test": 1}, classes=("a", "b"), size=8, fmt="PNG")
        kw = dict(name="image-folder", path=str(arch))
    data = arch.read_bytes()
    n = int(cut * len(data)) if isinstance(cut, float) else cut % len(data)    # -4: the gzip trailer's size field
    arch.write_bytes(data[:n])
    refused(str(arch), **kw)


@pytest.mark.parametrize("batch, fragment", [
    ([1, 2], "expected a CIFAR-10 batch"),
    ({b"labels": [1]}, "expected a CIFAR-10 batch"),
    ({b"data": b"xx", b"labels": [1]}, "b'data' is a bytes"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, "N rows of 3072"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "expected 2 class numbers"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "in 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]}, "class numbers"),
])
def test_cifar_batches_with_wrong_contents(tmp_path, batch, fragment):
    arch = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    arch.parent.mkdir(parents=True)
    with tarfile.open(arch, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            fakedata._add_bytes(tar, f"cifar-10-batches-py/{name}", fakedata.py2_pickle(batch))
    refused(fragment, name="cifar10", data_dir=tmp_path)


# ------------------------------------------------------------------------------ IDX, npz, pickles
def test_idx_header_promising_petabytes_is_refused_before_reading(tmp_path):
    root = tmp_path / "d"
    fakedata.write_mnist_like(root, n_train=10010, n_test=10)
    (root / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 3]) + (100000).to_bytes(4, "big") * 3))
    refused("declares 1000000000000000 bytes", name="mnist", data_dir=root)


def test_idx_gzip_with_a_damaged_crc_is_refused(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = bytearray(gzip.compress(fakedata.idx_bytes(arr)))
    data[-6] ^= 0xFF                                   # inside the CRC-32 of the gzip trailer
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="truncated or corrupt"):
        files.read_idx(p)


def _npz_with_header(path, header_shape, data: bytes):
    """An .npz whose array 'train' has an .npy header claiming ``header_shape`` but holds ``data``."""
    buf = io.BytesIO()       # magic and header
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train.npy", buf.getvalue() + data)
        z.writestr("test.npy", _npy(np.zeros((2, 3, 3), np.uint8)))
    return path


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("arrays, fragment", [
    ({"train": np.array([1, "a"], dtype=object), "test": np.zeros((2, 3, 3))}, "holds Python objects"),
    ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 3), np.uint8),
      "train_labels": np.array(list("abcd"))}, "expected integer class labels"),
    ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 3), np.uint8),
      "train_labels": np.array([0.5, 1, 2, 3])}, "not whole numbers"),
    ({"train": np.zeros((4, 0, 3), np.uint8), "test": np.zeros((2, 0, 3), np.uint8)}, "every size > 0"),
    ({"train": np.zeros((4, 3, 3), np.int64), "test": np.zeros((2, 3, 3), np.int64)}, "dtype int64"),
    ({"train": np.zeros((4, 3, 3), np.complex64), "test": np.zeros((2, 3, 3), np.complex64)}, "dtype complex64"),
    ({}, "holds no arrays"),
])
def test_npz_with_nonsense_arrays(tmp_path, arrays, fragment):
    p = tmp_path / "d.npz"
    if arrays:
        np.savez(p, **arrays)
    else:
        zipfile.ZipFile(p, "w").close()
    refused(fragment, name="npz", path=str(p))


def test_npz_whose_header_claims_more_than_it_holds(tmp_path):
    p = _npz_with_header(tmp_path / "d.npz", (10 ** 6, 1000, 1000), bytes(100))
    refused("declares shape", name="npz", path=str(p))


@pytest.mark.parametrize("cut", [1, 30, 0.5, -3])
def test_truncated_npz_and_plain_npy(tmp_path, cut):
    p = fakedata.write_npz(tmp_path / "d.npz", train=np.zeros((20, 3, 3), np.uint8), test=np.zeros((2, 3, 3), np.uint8))
    data = p.read_bytes()
    p.write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut % len(data)])
    refused("not a readable .npz", name="npz", path=str(p))
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 3)))
    refused("not a readable .npz", name="npz", path=str(tmp_path / "x.npy"))


def test_resizing_beyond_the_memory_limit_is_refused_before_allocating(tmp_path, monkeypatch):
    p = fakedata.write_npz(tmp_path / "d.npz", train=np.zeros((20, 6, 6), np.uint8), test=np.zeros((5, 6, 6), np.uint8))
    monkeypatch.setattr(safeio, "MAX_TOTAL_BYTES", 100_000)
    refused("data.image_size = 64", name="npz", path=str(p), image_size=64)
    assert load_dataset("npz", path=str(p), image_size=8).shape == (1, 8, 8)


def test_frey_faces_of_objects_or_out_of_range(tmp_path):
    folder = tmp_path / "frey-faces"
    folder.mkdir()
    (folder / "freyfaces.pkl").write_bytes(fakedata.py2_pickle([np.array(["a"] * 560, dtype=object)]))
    refused("expected a list whose first item", name="frey-faces", data_dir=tmp_path)
    (folder / "freyfaces.pkl").write_bytes(fakedata.py2_pickle([np.full((450, 560), 300.0)]))
    refused("0..255", name="frey-faces", data_dir=tmp_path)


# ------------------------------------------------------------------------------ run files
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two small finished runs of different shapes (latent 2 and 3), made once for this module."""
    root = tmp_path_factory.mktemp("runs")
    (root / "c.yaml").write_text(TINY_RUN)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "c.yaml"), "--out", str(root / "run"), "--quiet", "--no-eval"]) == 0
        assert main(["train", str(root / "c.yaml"), "--out", str(root / "other"), "--quiet", "--no-eval",
                     "--set", "model.latent_dim=3"]) == 0
    return root


def copy_run(tiny_runs, tmp_path):
    shutil.copytree(tiny_runs / "run", tmp_path / "run", symlinks=True)
    return tmp_path / "run"


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_checkpoint_of_another_model_names_the_file_and_the_mismatch(tiny_runs, tmp_path, capsys, command):
    run = copy_run(tiny_runs, tmp_path)
    for name in ("best.pt", "latest.pt", "latest.prev.pt"):
        shutil.copy(tiny_runs / "other" / "checkpoints" / name, run / "checkpoints" / name)
    args = (["eval", run] if command == "eval" else ["train", "--resume", run, "--quiet", "--no-eval"])
    code, err = cli(args, capsys)
    assert one_line_error(code, err) and "do not fit" in err and "has shape" in err, err
    assert str(run / "checkpoints") in err


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_checkpoint_without_its_keys_says_what_is_missing(tiny_runs, tmp_path, capsys, command):
    run = copy_run(tiny_runs, tmp_path)
    for name in ("best.pt", "latest.pt", "latest.prev.pt"):
        torch.save({"a": 1}, run / "checkpoints" / name)
    args = (["eval", run] if command == "eval" else ["train", "--resume", run, "--quiet", "--no-eval"])
    code, err = cli(args, capsys)
    assert one_line_error(code, err) and ("lacks 'modules'" in err or "no module weights" in err
                                          or "not a mixvae checkpoint" in err), err
    if command == "resume":     # and a checkpoint missing one part names that part
        state = torch.load(tiny_runs / "run" / "checkpoints" / "latest.pt", weights_only=True)
        del state["optimizers"]
        state.pop("sha256", None)                      # a checkpoint without a checksum (as mixvae 0.1 wrote)
        state["format"] = "mixvae-checkpoint-1"
        for name in ("latest.pt", "latest.prev.pt"):
            torch.save(state, run / "checkpoints" / name)
        code, err = cli(args, capsys)
        assert one_line_error(code, err) and "optimizers" in err, err


class Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def test_an_unsafe_checkpoint_names_what_was_refused_without_torchs_advice(tiny_runs, tmp_path, capsys):
    run = copy_run(tiny_runs, tmp_path)
    for name in ("best.pt", "latest.pt", "latest.prev.pt"):
        torch.save({"modules": Exploit()}, run / "checkpoints" / name)
    code, err = cli(["eval", run], capsys)
    assert one_line_error(code, err) and "GLOBAL posix.system" in err and "other than tensors" in err, err
    assert "weights_only" not in err and "trusted source" not in err


def test_damaged_weights_files_are_refused(tiny_runs, tmp_path, capsys):
    run = copy_run(tiny_runs, tmp_path)
    w = tmp_path / "w.safetensors"
    assert cli(["export", run, "--out", w], capsys)[0] == 0
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x10                                    # one bit of the last weight
    w.write_bytes(bytes(data))
    code, err = cli(["eval", run, "--weights", w], capsys)
    assert one_line_error(code, err) and "damaged" in err, err
    other = tmp_path / "o.safetensors"
    assert cli(["export", tiny_runs / "other", "--out", other], capsys)[0] == 0
    code, err = cli(["eval", run, "--weights", other], capsys)
    assert one_line_error(code, err) and "do not fit" in err, err


def test_damaged_run_json_and_metrics(tiny_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MIXVAE_DATA", raising=False)     # else run.json's data_dir is not read
    run = copy_run(tiny_runs, tmp_path)
    (run / "run.json").write_text("{not json")
    code, err = cli(["eval", run], capsys)
    assert one_line_error(code, err) and "run.json" in err
    (run / "run.json").write_text("{}")
    (run / "metrics.jsonl").write_bytes(os.urandom(100).replace(b"\n", b"") + b"\n[1, 2]\n"
                                        b'{"split": "valid", "step": 1, "loss": "x", "epoch": "q"}\n')
    code, err = cli(["train", "--resume", run, "--quiet", "--no-eval", "--set", "train.max_steps=4"], capsys)
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].startswith("mixvae: warning:") and "damaged line" in err, err


# ------------------------------------------------------------------------------ configs and arguments
@pytest.mark.parametrize("override, fragment", [
    ("train.lr=0", "train.lr = 0 is out of range; expected a value > 0"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr_gamma=0", "train.lr_gamma"),
    ("train.threads=0", "train.threads"),
    ("train.threads=5000", "train.threads"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("data.valid_size=2.5", "whole number"),
    ("seed=100000000000000000000000", "seed"),
    ("sintro.prior_lr=0", "sintro.prior_lr"),
    ("gamix.disc_lr=0", "gamix.disc_lr"),
    ("data.image_size=100000", "data.image_size"),
    ("eval.ll_chunk=100000000", "eval.ll_chunk"),
    ("eval.toy_grid=100000", "eval.toy_grid"),
])
def test_nonsense_values_are_refused(tmp_path, capsys, override, fragment):
    (tmp_path / "c.yaml").write_text(TINY_RUN)
    code, err = cli(["train", tmp_path / "c.yaml", "--out", tmp_path / "run", "--set", override], capsys)
    assert one_line_error(code, err) and fragment in err, err
    assert not (tmp_path / "run").exists()


LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                 for a, p in zip("abcdefghi", [None, *"abcdefgh"]))


@pytest.mark.parametrize("text, fragment", [
    ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "given twice"),
    ("model: &m {prior: *m}\n", "contains itself"),
    ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nests"),
    ("- 1\n- 2\n", "expected a YAML mapping"),
])
def test_hostile_yaml(tmp_path, capsys, text, fragment):
    (tmp_path / "c.yaml").write_text(text)
    code, err = cli(["train", tmp_path / "c.yaml", "--out", tmp_path / "run"], capsys)
    assert one_line_error(code, err) and fragment in err, err


def test_a_billion_laughs_is_refused_at_once(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(LAUGHS + "model: {hidden: *i}\n")
    code, err = cli(["train", tmp_path / "c.yaml", "--out", tmp_path / "run"], capsys)
    assert one_line_error(code, err) and "expands to more than" in err, err


@pytest.mark.parametrize("what", ["folder", "device", "fifo", "binary"])
def test_config_paths_that_are_no_config(tmp_path, capsys, what):
    path = {"folder": tmp_path, "device": "/dev/zero", "fifo": tmp_path / "pipe", "binary": tmp_path / "b.yaml"}[what]
    if what == "fifo":
        os.mkfifo(path)
    if what == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    code, err = cli(["train", path, "--out", tmp_path / "run"], capsys)
    assert one_line_error(code, err) and str(path) in err, err


def test_outputs_that_cannot_be_written(tiny_runs, tmp_path, capsys):
    run = tiny_runs / "run"
    (tmp_path / "afile").write_text("x")
    for args, fragment in [
        (["sample", run, "--out", tmp_path / "s.txt"], "cannot write pictures"),
        (["sample", run, "--out", tmp_path], "is a folder"),
        (["sample", run, "--out", tmp_path / "afile" / "s.png"], "afile"),
        (["sample", run, "-n", "0"], "-n = 0"),
        (["sample", run, "-n", "20000"], "-n = 20000"),
        (["interpolate", run, "--walk", "-k", "nan"], "-k = nan"),
        (["interpolate", run, "--dims", "0"], "--dims is for latent walks (--walk); add --walk or drop it"),
        (["interpolate", run, "--walk", "--pairs", "3"], "--pairs is for interpolations; drop it or drop --walk"),
        (["export", run, "--out", tmp_path], "is a folder"),
        (["export", run, "--out", tmp_path / "afile" / "w.safetensors"], "afile"),
        (["train", tiny_runs / "c.yaml", "--out", tmp_path / "afile" / "run", "--quiet"], "afile"),
        (["eval", run, "--threads", "0"], "--threads = 0"),
    ]:
        code, err = cli(args, capsys)
        assert one_line_error(code, err) and fragment in err, (args, err)


def test_a_damaged_data_file_on_the_command_line_leaves_no_run_folder(tmp_path, capsys):
    arch = tmp_path / "x.tar.gz"
    fakedata.write_image_tar(arch, counts={"train": 2, "test": 1}, classes=("a", "b"), size=8, fmt="PNG")
    arch.write_bytes(arch.read_bytes()[:-4])
    (tmp_path / "c.yaml").write_text(TINY_RUN)
    code, err = cli(["train", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet"]
                    + sets(["data.name=image-folder", f"data.path={arch}"]), capsys)
    assert one_line_error(code, err) and "truncated" in err, err
    assert not (tmp_path / "run").exists()
