"""Property: whatever damage the files of a run folder or of a data set suffer (truncated, bytes
flipped, replaced by random bytes, emptied, of the wrong type, a folder, a link, a FIFO), mixvae
either works or ends with one line (exit code 2) within a time limit: never a traceback, never a
hang, never a silently accepted nonsense value (issue 17).

"Works" is checked, not assumed: a command that exits 0 without a warning must print exactly what
it prints for the undamaged folder, unless the damage may legitimately change the result (a
config.yaml that is still a valid config; a checkpoint while checkpoints carry no checksum, which
this test detects); a data set that loads must hold sane values (shapes, range, labels) and, for
the formats that carry checksums (gzip, zip: IDX .gz, .npz, .tar.gz), exactly the undamaged arrays.
Everything runs in-process (main() and load_dataset()), a SIGALRM timer bounding each case.
MIXVAE_DAMAGE_EXAMPLES sets the number of cases per test (default 90).
"""
import contextlib
import io
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from mixvae.app.cli import main
from mixvae.data import load_dataset
from mixvae.errors import UserError

from . import fakedata
from .test_bad_files import TINY_RUN, time_limit

EXAMPLES = int(os.environ.get("MIXVAE_DAMAGE_EXAMPLES", "90"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],   # no 'explain': minutes per failure
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Fixture(dict):
    """A module fixture's values (a short repr: hypothesis prints the arguments of a failing case)."""

    def __repr__(self):
        return f"<{', '.join(self)}>"
KINDS = ["truncate", "flip", "random", "empty", "append", "wrong_type", "directory", "link_devzero",
         "link_dangling", "link_copy", "fifo"]
DAMAGE = st.fixed_dictionaries({"kind": st.sampled_from(KINDS), "frac": st.floats(0, 0.999),
                                "positions": st.lists(st.integers(0, 2 ** 31), min_size=1, max_size=4),
                                "noise": st.binary(min_size=1, max_size=300)})


def damage(path: Path, d: dict, wrong: bytes) -> bool:
    """Damage ``path`` as ``d`` says; True if what reading ``path`` gives changed."""
    data = path.read_bytes()
    kind = d["kind"]
    if kind in ("directory", "link_devzero", "link_dangling", "link_copy", "fifo"):
        path.unlink()
    if kind == "truncate":
        path.write_bytes(data[: int(d["frac"] * len(data))])
    elif kind == "flip":
        b = bytearray(data)
        for p in d["positions"]:
            b[p % len(b)] ^= (p >> 8) % 255 + 1            # never 0: the byte changes
        path.write_bytes(bytes(b))
    elif kind == "random":
        path.write_bytes(d["noise"])
        return d["noise"] != data
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "append":
        path.write_bytes(data + d["noise"])
    elif kind == "wrong_type":
        path.write_bytes(wrong)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link_devzero":
        os.symlink("/dev/zero", path)
    elif kind == "link_dangling":
        os.symlink(path.parent / "no-such-file", path)
    elif kind == "link_copy":                       # a link to an intact copy elsewhere: nothing changed
        copy = path.parent.parent / f"copy-of-{path.name}"
        copy.write_bytes(data)
        os.symlink(copy, path)
        return False
    elif kind == "fifo":
        os.mkfifo(path)
    return True


def run_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with time_limit(60), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def check_ending(code: int, err: str) -> bool:
    """No traceback, only mixvae's lines; exit 0 (with warnings at most) or one line with 2 or 3.
    Returns whether a warning was printed."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert all(line.startswith("mixvae: ") for line in lines), err
    if code == 0:
        assert all(line.startswith("mixvae: warning:") for line in lines), err
        return bool(lines)
    assert code in (2, 3) and len(lines) == 1, (code, err)
    return False


# ------------------------------------------------------------------------------ run folders
def _probe_checksums(folder: Path) -> bool:
    """Whether this version of mixvae detects a changed byte inside a checkpoint's tensor data."""
    from mixvae.training.checkpoint import load_checkpoint, save_checkpoint
    p = folder / "probe.pt"
    save_checkpoint({"modules": {"w": torch.ones(64)}}, p)
    b = bytearray(p.read_bytes())
    i = b.find(struct.pack("<f", 1.0) * 16)
    b[i + 1] ^= 1
    p.write_bytes(bytes(b))
    for extra in folder.glob("probe.prev.pt"):
        extra.unlink()
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            load_checkpoint(p)
        except UserError:
            return True
    return False


def _commands(run: Path, case: Path) -> dict:
    return {"eval": ["eval", run, "--json", "--quiet", "--set", "data.test_subset=60"],
            "sample": ["sample", run, "-n", "4", "--out", case / "s.png", "--quiet"],
            "resume": ["train", "--resume", run, "--quiet", "--no-eval", "--set", "train.max_steps=3"]}


def _result(command: str, out: str, case: Path):
    """What a command produced, without what may differ between identical runs (paths, times)."""
    if command == "sample":
        return (case / "s.png").read_bytes() if (case / "s.png").exists() else None
    record = json.loads(out.strip().splitlines()[-1])
    return {k: v for k, v in record.items() if k != "run" and not k.endswith("_seconds")}


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """A tiny trained run, the same run published (model.safetensors, no checkpoints), a run of
    another shape, and what each command prints for the undamaged folders."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXVAE_OFFLINE", "1")
        mp.delenv("MIXVAE_DATA", raising=False)
        return _make_run_files(tmp_path_factory.mktemp("damaged-runs"))


def _make_run_files(root: Path) -> dict:
    (root / "c.yaml").write_text(TINY_RUN)
    for name, extra in (("run", []), ("other", ["--set", "model.latent_dim=3"])):
        code, _, err = run_main(["train", root / "c.yaml", "--out", root / name, "--quiet", "--no-eval"] + extra)
        assert code == 0, err
    shutil.copytree(root / "run", root / "published")
    for name, src in (("published", root / "run"), ("other", root / "other")):
        code, _, err = run_main(["export", src, "--out", root / name / "model.safetensors"])
        assert code == 0, err
    shutil.rmtree(root / "published" / "checkpoints")
    wrong = {"config.yaml": b"- 1\n- 2\n", "metrics.jsonl": b'[1, 2]\n"x"\n{"step": "no"}\n{"split": "valid", "step": 1, "loss": "x"}\n',
             "run.json": b'{"data_dir": 5}', "model.safetensors": (root / "other" / "model.safetensors").read_bytes(),
             "latest.pt": (root / "other" / "checkpoints" / "latest.pt").read_bytes(),
             "best.pt": (root / "other" / "checkpoints" / "best.pt").read_bytes()}
    baseline = {}
    for folder in ("run", "published"):
        case = root / f"baseline-{folder}"
        case.mkdir()
        for command, argv in _commands(root / folder, case).items():
            if folder == "published" and command == "resume":
                continue
            code, out, err = run_main(argv)
            assert code == 0, err
            baseline[folder, command] = _result(command, out, case)
    return Fixture(root=root, wrong=wrong, baseline=baseline, checksummed=_probe_checksums(root))


TARGETS = st.sampled_from([("run", t, c) for t in ("config.yaml", "metrics.jsonl", "run.json", "checkpoints/latest.pt",
                                                    "checkpoints/best.pt") for c in ("eval", "sample", "resume")]
                          + [("published", "model.safetensors", c) for c in ("eval", "sample")])


@SETTINGS
@given(target=TARGETS, d=DAMAGE)
def test_damaged_run_files_work_or_fail_in_one_line(run_files, tmp_path_factory, monkeypatch, target, d):
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    monkeypatch.delenv("MIXVAE_DATA", raising=False)
    folder, rel, command = target
    case = tmp_path_factory.mktemp("case")
    run = case / folder
    shutil.copytree(run_files["root"] / folder, run, symlinks=True)
    changed = damage(run / rel, d, run_files["wrong"][Path(rel).name])
    code, out, err = run_main(_commands(run, case)[command])
    event(f"{rel} {d['kind']} {command}: exit {code}")
    warned = check_ending(code, err)
    uses = {"eval": "checkpoints/best.pt", "sample": "checkpoints/best.pt", "resume": "checkpoints/latest.pt"}[command]
    may_differ = changed and (rel == "config.yaml" or (rel == uses and not run_files["checksummed"]))
    if code == 0 and not warned and not may_differ:
        assert _result(command, out, case) == run_files["baseline"][folder, command], (rel, d["kind"], command)


# ------------------------------------------------------------------------------ data sets
def _pristine_data(root: Path) -> dict:
    """Each format in its own folder: (load_dataset arguments, files to damage, has a checksum)."""
    rng = np.random.default_rng(0)
    fakedata.write_npz(root / "npz" / "d.npz", train=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8),
                       test=rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), train_labels=np.arange(40) % 3)
    fakedata.write_mnist_like(root / "mnist", n_train=10010, n_test=10)
    fakedata.write_frey_faces(root / "frey-faces", n=420)
    fakedata.write_cifar_python(root / "cifar10" / "cifar10" / "cifar-10-python.tar.gz", per_batch=2, n_test=2)
    fakedata.write_image_tar(root / "cifar10-jpeg" / "cifar10-jpeg.tar.gz", counts={"train": 1, "test": 1})
    fakedata.write_image_folder(root / "image-folder", counts={"train": 3, "test": 2}, size=8)
    fakedata.write_image_tar(root / "image-tar" / "x.tar.gz", counts={"train": 2, "test": 1}, classes=("a", "b"),
                             size=8, fmt="PNG")
    images = sorted(p.relative_to(root / "image-folder").as_posix() for p in (root / "image-folder").rglob("*.png"))
    return {
        "npz": ({"name": "npz", "path": "d.npz"}, ["d.npz"], True),
        "mnist": ({"name": "mnist"}, [f"mnist/{n}" for n in fakedata.IDX_FILES.values()], True),
        "frey-faces": ({"name": "frey-faces"}, ["frey-faces/freyfaces.pkl"], False),
        "cifar10": ({"name": "cifar10"}, ["cifar10/cifar-10-python.tar.gz"], True),
        "cifar10-jpeg": ({"name": "cifar10"}, ["cifar10-jpeg.tar.gz"], True),
        "image-folder": ({"name": "image-folder", "path": "."}, images, False),
        "image-tar": ({"name": "image-folder", "path": "x.tar.gz"}, ["x.tar.gz"], True),
    }


def _load(folder: Path, args: dict):
    kw = dict(args, data_dir=folder, valid_size=0.2)
    if "path" in kw:
        kw["path"] = str(folder / kw["path"])
    return load_dataset(**kw)


def _arrays(d):
    return [t for s in (d.train, d.valid, d.test) for t in (s.values, s.labels) if t is not None]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged-data")
    formats = _pristine_data(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXVAE_OFFLINE", "1")
        pristine = {name: _arrays(_load(root / name, args)) for name, (args, _, _) in formats.items()}
    # a valid file of another format, for "wrong_type": the npz for every other format, a tar.gz for the npz
    wrong = {"npz": (root / "cifar10" / "cifar10" / "cifar-10-python.tar.gz").read_bytes(),
             "others": (root / "npz" / "d.npz").read_bytes()}
    return Fixture(root=root, formats=formats, pristine=pristine, wrong=wrong)


FORMAT_NAMES = ["npz", "mnist", "frey-faces", "cifar10", "cifar10-jpeg", "image-folder", "image-tar"]
IMAGE_DAMAGE = st.sampled_from([None, None, None, "bomb", "png16"])


@SETTINGS
@given(fmt=st.sampled_from(FORMAT_NAMES), which=st.integers(0, 100), d=DAMAGE, image=IMAGE_DAMAGE)
def test_damaged_data_files_load_sanely_or_fail_in_one_line(data_files, tmp_path_factory, monkeypatch, fmt, which,
                                                            d, image):
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    args, targets, checksummed = data_files["formats"][fmt]
    case = tmp_path_factory.mktemp("data") / fmt
    shutil.copytree(data_files["root"] / fmt, case, symlinks=True)
    target = case / targets[which % len(targets)]
    if image is not None and fmt == "image-folder":     # hostile images: a header claiming 50000^2 pixels, 16 bits
        target.write_bytes(fakedata.png_claiming(50000, 50000) if image == "bomb"
                           else fakedata.png16(np.full((8, 8), 40000)))
        changed, kind = True, image
    else:
        changed, kind = damage(target, d, data_files["wrong"]["npz" if fmt == "npz" else "others"]), d["kind"]
    try:
        with time_limit(20):
            ds = _load(case, args)
    except UserError as e:
        assert "\n" not in str(e) and str(e), str(e)
        event(f"{fmt} {kind}: refused")
        return
    event(f"{fmt} {kind}: loaded")
    for split in (ds.train, ds.valid, ds.test):
        x = split.get()
        assert len(split) > 0 and tuple(x.shape[1:]) == ds.shape
        assert bool(torch.isfinite(x).all()) and x.min() >= 0 and x.max() <= 1
        if split.labels is not None:
            assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
    assert ds.kind in ("binary", "8bit", "discrete", "continuous")
    if checksummed or not changed:       # formats with checksums: loading means the undamaged arrays
        got, want = _arrays(ds), data_files["pristine"][fmt]
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want)), (fmt, kind)
