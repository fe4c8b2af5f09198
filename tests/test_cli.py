"""The command line end to end on small runs, and its answers to bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
import pytest
import torch

from mixvae.app.cli import main
from mixvae.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=2", "train.batch_size=50", "train.log_every=5", "model.hidden=[32,32]",
        "model.latent_dim=4", "eval.ll_samples=20", "data.name=digits"]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_sample_and_resume(tmp_path, capsys):
    cfg = ROOT / "configs" / "vampprior" / "vae_vampprior_dynamic_mnist.yaml"
    run = tmp_path / "run"
    over = TINY + ["model.prior.components=10", "train.warmup_epochs=1", "train.max_steps=40"]
    code, out, err = run_cli(["train", cfg, "--out", run, "--quiet"] + sets(over), capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 40 and np.isfinite(summary["test_ll"])
    for name in ("config.yaml", "run.json", "metrics.jsonl", "eval.json", "samples.png", "reconstructions.png",
                 "pseudo_inputs.png", "checkpoints/latest.pt", "checkpoints/best.pt"):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "valid", "eval"}
    assert records[-1]["split"] == "eval" and records[-1]["test_ll"] == summary["test_ll"]
    assert (run / "curves.png").stat().st_size > 0 and list(run.glob("events.out.tfevents.*"))
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["likelihood"] == "logistic"   # auto, resolved: 17-level digits

    files = lambda: {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    before = files()
    code, out, err = run_cli(["eval", run, "--ll-samples", 30, "--json", "--split", "valid"], capsys)
    assert code == 0, err
    assert files() == before                                # eval reads the run folder and writes nothing there
    code, out, err = run_cli(["eval", run, "--ll-samples", 30, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    for key in ("test_ll", "test_ll_samples", "active_units", "inactive_modes", "components"):
        assert key in result
    assert result["test_ll_samples"] == 30 and result["test_ll"] < 0 and result["components"] == 10
    kept = json.loads((run / "eval.json").read_text())
    for key in ("max_usage", "min_usage", "inactive_modes", "active_units"):   # seeded: train and eval agree
        assert result[key] == kept[key], key

    code, out, err = run_cli(["sample", run, "-n", 16, "--out", tmp_path / "s.png"], capsys)
    assert code == 0 and (tmp_path / "s.png").exists()

    for extra in (["--pairs", 2], ["--walk", "--dims", 0, 1, "-k", 2]):
        code, out, err = run_cli(["interpolate", run, "--out", tmp_path / "i.png", "--steps", 3] + extra, capsys)
        assert code == 0 and (tmp_path / "i.png").stat().st_size > 0, err
    code, out, err = run_cli(["interpolate", run, "--out", tmp_path / "j.png", "--pairs", 1000], capsys)
    assert one_line_error(code, err) and "needs 2000 test images" in err and not (tmp_path / "j.png").exists()
    few = tmp_path / "few"                                  # the same run, seen with 10 test images:
    shutil.copytree(run, few)                               # the default 8 pairs become 5, a given count is refused
    c = yaml.safe_load((few / "config.yaml").read_text())
    c["data"]["test_subset"] = 10
    (few / "config.yaml").write_text(yaml.safe_dump(c))
    code, out, err = run_cli(["interpolate", few, "--out", tmp_path / "k.png"], capsys)
    assert code == 0 and (tmp_path / "k.png").exists(), err
    code, out, err = run_cli(["interpolate", few, "--out", tmp_path / "l.png", "--pairs", 6], capsys)
    assert one_line_error(code, err) and "at most 5 pairs" in err

    # --threads holds for every command that opens a run; --weights is reported as what was used
    torch.set_num_threads(2)
    code, out, err = run_cli(["export", run, "--out", tmp_path / "w.safetensors", "--threads", 1], capsys)
    assert code == 0 and torch.get_num_threads() == 1, err
    code, out, err = run_cli(["eval", run, "--weights", tmp_path / "w.safetensors", "--ll-samples", 0, "--json"], capsys)
    assert code == 0 and json.loads(out)["weights"] == str(tmp_path / "w.safetensors") and "checkpoint" not in json.loads(out)
    code, out, err = run_cli(["eval", run, "--weights", tmp_path / "w.safetensors", "--checkpoint", "best"], capsys)
    assert code == 2 and "give one of them" in err and len(err.strip().splitlines()) == 1

    # a resumed run keeps its settings: --set of anything but its budget (and how it runs) is refused
    # before anything is written, so config.yaml keeps saying what trained it
    saved = (run / "config.yaml").read_text()
    for setting in ("train.lr=0.01", "model.hidden=[32]"):
        code, out, err = run_cli(["train", "--resume", run, "--quiet", "--no-eval", "--set", setting], capsys)
        assert one_line_error(code, err) and f"--set {setting}" in err and "differs from the run's" in err
        assert (run / "config.yaml").read_text() == saved

    # extend the budget and resume from the latest checkpoint
    code, out, err = run_cli(["train", "--resume", run, "--quiet", "--no-eval", "--set", "train.max_steps=60"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 60
    code, out, err = run_cli(["train", "--resume", run, "--quiet"], capsys)       # finished: evaluated again
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "eval"] == [60]          # one final evaluation, of step 60
    before = files()
    code, out, err = run_cli(["train", "--resume", run, "--quiet", "--set", "train.max_steps=10"], capsys)
    unlocked = lambda d: {p: t for p, t in d.items() if p.name != ".lock"}                  # a resume takes the lock
    assert one_line_error(code, err) and "below the 60 steps" in err and unlocked(files()) == unlocked(before)

    # eval names the file its weights came from, also where best.pt is gone (a crash between a save's renames)
    used = lambda: json.loads(run_cli(["eval", run, "--ll-samples", 0, "--json"], capsys)[1])["checkpoint"]
    assert used() == "checkpoints/best.pt"
    (run / "checkpoints" / "best.pt").unlink()
    assert (run / "checkpoints" / "best.prev.pt").exists() and used() == "checkpoints/best.prev.pt"
    (run / "checkpoints" / "best.prev.pt").unlink()
    assert used() == "checkpoints/latest.pt"


def one_line_error(code, err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return code == 2 and len(lines) == 1 and lines[0].startswith("mixvae: error:") and "Traceback" not in err


@pytest.mark.parametrize("text, extra, fragment", [
    ("train: [1\n", [], "malformed YAML"),
    ("train:\n  epoch: 3\n", [], "unknown key 'train.epoch'"),
    ("train:\n  epochs: x\n", [], "expected an integer"),
    ("data:\n  name: npz\n  path: BAD\n", [], "'train' has shape"),
    ("data:\n  name: mnist\n", ["--data-dir", "EMPTY"], "is missing"),
    ("data:\n  name: imagenet\n", [], "not a known data set"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, monkeypatch, text, extra, fragment):
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    bad = tmp_path / "bad.npz"
    np.savez(bad, train=np.zeros((4, 3, 3, 7), np.uint8), test=np.zeros((2, 3, 3, 7), np.uint8))
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("BAD", str(bad)))
    extra = [str(tmp_path / "empty") if e == "EMPTY" else e for e in extra]
    out = tmp_path / "run"
    code, _, err = run_cli(["train", cfg, "--out", out] + extra, capsys)
    assert one_line_error(code, err) and fragment in err, err
    assert not out.exists()


def test_bad_arguments(tmp_path, capsys):
    code, _, err = run_cli(["train"], capsys)
    assert one_line_error(code, err)
    code, _, err = run_cli(["eval", tmp_path], capsys)
    assert one_line_error(code, err) and "not a run folder" in err
    code, _, err = run_cli(["frobnicate"], capsys)
    assert one_line_error(code, err)
    code, _, err = run_cli(["train", "--resume", tmp_path], capsys)
    assert one_line_error(code, err)


def test_out_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    cfg = ROOT / "configs" / "vampprior" / "vae_standard_dynamic_mnist.yaml"
    code, _, err = run_cli(["train", cfg, "--out", tmp_path / "run"] + sets(TINY), capsys)
    assert one_line_error(code, err) and "already exists" in err
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"


def test_help_on_every_command():
    for cmd in ([], ["train"], ["eval"], ["sample"], ["demo"]):
        r = subprocess.run([sys.executable, "-m", "mixvae", *cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: mixvae" in r.stdout


def test_counts_beyond_the_data_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    cfg = ROOT / "configs" / "vampprior" / "vae_standard_dynamic_mnist.yaml"
    code, _, err = run_cli(["train", cfg, "--out", tmp_path / "run"] + sets(TINY + ["data.train_subset=100000"]), capsys)
    assert one_line_error(code, err) and "data.train_subset = 100000 is more than the" in err and "of digits" in err
    assert not (tmp_path / "run").exists()       # (test_subset is "at most": a check on the first N test images)
    with pytest.raises(UserError, match="train_subset = 50 is more than the 40 examples given"):
        import mixvae
        mixvae.fit(mixvae.build("vae", data=torch.rand(40, 1, 4, 4), hidden=[8], latent_dim=2), torch.rand(40, 1, 4, 4),
                   data={"train_subset": 50})
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(["train", cfg, "--out", tmp_path / "file"] + sets(TINY), capsys)
    assert one_line_error(code, err) and "is a file" in err
