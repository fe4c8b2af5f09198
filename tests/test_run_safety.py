"""One writer per run folder, verified checkpoints, and failed writes: each fault ends in one line.

Fast checks run in-process; the two-process checks (a real second `mixvae train` on a live folder)
are marked slow (CI runs them too)."""
import errno
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from mixvae.app import runs
from mixvae.app.cli import main
from mixvae.errors import UserError
from mixvae.training import checkpoint
from mixvae.training.checkpoint import content_digest, load_checkpoint, save_checkpoint
from tests.test_cli import ROOT, TINY, sets

BASE = str(ROOT / "configs/vampprior/_base.yaml")
SMALL = TINY + ["model.prior.kind=mog", "model.prior.components=3", "train.max_steps=10", "train.checkpoint_every=4"]


def one_line(code, err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return code == 2 and len(lines) == 1 and lines[0].startswith("mixvae: ") and "Traceback" not in err


@pytest.fixture
def run(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["train", BASE, "--out", str(folder), "--quiet"] + sets(SMALL)) == 0, capsys.readouterr().err
    capsys.readouterr()
    return folder


def damage_middle(path, n=4096, seed=0):
    data = bytearray(path.read_bytes())
    g = torch.Generator().manual_seed(seed)
    start = len(data) // 2 - n // 2
    data[start:start + n] = bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- checksums

def test_digest_is_stable_over_a_round_trip_and_sees_one_flipped_bit(tmp_path):
    state = {"modules": {"m": {"w": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}},
             "loop": {"step": 3, "best_loss": float("inf"), "stop_reason": None},
             "optimizers": {"a": {"state": {0: {"step": torch.tensor(2.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}},
             "rng": {"torch": torch.get_rng_state()}, "tuple": (1, "x", 2.5)}
    path = tmp_path / "c.pt"
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded.pop("format") == checkpoint.FORMAT
    assert content_digest(loaded) == content_digest(state)
    flipped = loaded["modules"]["m"]["w"].clone()
    flipped.view(torch.int32)[1, 2] ^= 1                    # the lowest bit of one float
    loaded["modules"]["m"]["w"] = flipped
    assert content_digest(loaded) != content_digest(state)


def test_a_checkpoint_damaged_in_its_middle_is_detected_never_used(tmp_path):
    w = torch.randn(200_000)
    path = tmp_path / "latest.pt"
    for seed in range(5):
        save_checkpoint({"w": w}, path)
        save_checkpoint({"w": w}, path)
        damage_middle(path, seed=seed)
        with pytest.raises(ValueError, match="damaged|unreadable"):
            checkpoint.read_checkpoint(path)
        with pytest.raises(UserError, match="cannot load checkpoint"):
            load_checkpoint(path, fallback=False)
        state = load_checkpoint(path)                          # the previous copy, with a warning
        assert torch.equal(state["w"], w)


def test_empty_latest_falls_back_and_a_damaged_best_is_refused(run, capsys):
    latest, best = run / "checkpoints" / "latest.pt", run / "checkpoints" / "best.pt"
    latest.write_bytes(b"")
    code = main(["train", "--resume", str(run), "--quiet", "--no-eval", "--set", "train.max_steps=12"])
    err = capsys.readouterr().err
    assert code == 0 and "latest.pt: empty; using the previous checkpoint" in err
    damage_middle(best)
    code = main(["eval", str(run), "--json"])
    out, err = capsys.readouterr()
    assert one_line(code, err) and "best.pt" in err and out == ""


def test_checkpoints_of_mixvae_0_1_without_checksum_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "mixvae-checkpoint-1", "modules": {"m": {"w": torch.ones(2)}}}, path)
    assert torch.equal(load_checkpoint(path)["modules"]["m"]["w"], torch.ones(2))
    torch.save({"format": "mixvae-checkpoint-2", "modules": {}}, path)   # claims a checksum it lacks
    with pytest.raises(UserError, match="damaged"):
        load_checkpoint(path, fallback=False)


def test_resume_with_nothing_to_resume_from_stops_in_one_line(run, capsys):
    for f in (run / "checkpoints").iterdir():
        f.unlink()
    before = (run / "metrics.jsonl").read_text()
    code = main(["train", "--resume", str(run), "--quiet"])
    assert one_line(code, capsys.readouterr().err)
    assert (run / "metrics.jsonl").read_text() == before and not any((run / "checkpoints").iterdir())


def test_a_run_killed_before_its_first_step_has_a_step_0_checkpoint(tmp_path, capsys, monkeypatch):
    from mixvae.training import loop

    def stop(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop.Trainer, "_check_finite", stop)    # interrupted during the first step
    folder = tmp_path / "r"
    assert main(["train", BASE, "--out", str(folder), "--quiet"] + sets(SMALL)) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert not folder.exists()                                  # no step done: nothing kept
    # (a SIGKILL leaves the folder; tests/test_kill_resume.py resumes one killed at step 0)


# ---------------------------------------------------------------- failed writes

def test_disk_full_during_a_checkpoint_is_one_line_and_the_last_good_one_survives(tmp_path, capsys, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint({"w": torch.ones(3)}, path)
    real = torch.save

    def full(obj, f, *a, **k):
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UserError, match="the disk is full; the last good checkpoint .*latest.pt is intact"):
        save_checkpoint({"w": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path, fallback=False)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]   # no temporary file left

    # through the command line: exit 2, one line, the run folder resumable from its last checkpoint
    calls = [0]

    def full_on_third(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 3:
            full(obj, f)
        return real(obj, f, *a, **k)
    monkeypatch.setattr(checkpoint.torch, "save", full_on_third)
    folder = tmp_path / "run"
    code = main(["train", BASE, "--out", str(folder), "--quiet"] + sets(SMALL))
    err = capsys.readouterr().err
    assert one_line(code, err) and "disk is full" in err, err
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert not list((folder / "checkpoints").glob(".*.tmp"))
    assert main(["train", "--resume", str(folder), "--quiet", "--no-eval"]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------- one writer

def test_a_held_lock_refuses_train_and_resume_and_a_released_one_does_not(run, tmp_path, capsys):
    with runs.RunLock(run):                                     # as if another process were training it
        # (flock is per open file: this process's second open is refused like another process's)
        code = main(["train", "--resume", str(run), "--quiet"])
        err = capsys.readouterr().err
        assert one_line(code, err) and "being written by another mixvae process" in err
        code = main(["train", BASE, "--out", str(run), "--quiet"] + sets(SMALL))
        assert one_line(code, capsys.readouterr().err)
    assert runs.holder_of(run) is None
    (run / ".lock").write_text("999999999\n")                  # a dead writer's lock file: not a lock
    assert main(["train", "--resume", str(run), "--quiet", "--no-eval", "--set", "train.max_steps=12"]) == 0
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").write_text("1\n")                        # left by a run that never got further
    assert main(["train", BASE, "--out", str(fresh), "--quiet", "--no-eval"] + sets(SMALL)) == 0
    capsys.readouterr()


def cli(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "mixvae"] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_trainings_on_one_folder_the_second_stops_the_first_finishes(tmp_path):
    out = tmp_path / "same"
    args = ["train", BASE, "--out", str(out), "--quiet", "--threads", "1"] + sets(
        TINY + ["train.epochs=40", "model.prior.kind=vampprior", "model.prior.components=20"])
    first = cli(args)
    deadline = time.time() + 120
    while runs.holder_of(out) is None:                          # the first holds the lock
        assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() is not None else ""
        time.sleep(0.2)
    seconds = [cli(args), cli(["train", "--resume", str(out), "--quiet"])]
    results = [(p.returncode, p.communicate(timeout=120)[1]) for p in seconds]
    results = [(p.returncode, err) for p, (_, err) in zip(seconds, results)]
    assert first.poll() is None, "the first training ended before the others were tried: make it longer"
    _, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1
    for code, err in results:
        assert one_line(code, err), err
        assert f"pid {first.pid}" in err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps))                          # one writer: no interleaved records
    assert json.loads((out / "eval.json").read_text())["test_ll"] < 0
