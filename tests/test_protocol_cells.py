"""Long cells kept in the repository (experiments/vampprior_protocol.py, mixvae.app.grid): a cell killed
mid-training, packed, committed, cloned elsewhere and continued there ends bitwise equal to a cell
that was never interrupted; a finished cell keeps only its result and reopens without checkpoints."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mixvae.app.grid import cell_progress

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "vampprior_protocol.py"
TINY = ["data.name=digits", "model.hidden=[16]", "model.latent_dim=4", "model.prior.components=5",
        "train.epochs=6", "train.warmup_epochs=2", "train.patience=2", "train.batch_size=50",
        "train.checkpoint_every=5", "eval.ll_samples=20", "train.deterministic=true"]

# Runs the script in this process after arranging a SIGKILL at the start of training step N.
KILL_AT_STEP = """
import os, runpy, signal, sys
from mixvae.training import loop
n = int(sys.argv[1])
init = loop.Trainer.__init__
def patched_init(self, *a, **k):
    init(self, *a, **k)
    step = self.objective.step
    def killing_step(x, ctx):
        if ctx.step == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(x, ctx)
    self.objective.step = killing_step
loop.Trainer.__init__ = patched_init
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def protocol(results: Path, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    args = [str(SCRIPT), "--results", str(results), "--cells", "vae_vampprior", "--eval-threads", "1",
            *[a for o in TINY for a in ("--set", o)], *extra]
    prefix = [sys.executable, "-c", KILL_AT_STEP, str(kill_at)] if kill_at is not None else [sys.executable]
    return subprocess.run(prefix + args, capture_output=True, text=True, env=env, timeout=600)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=True).stdout


@pytest.mark.slow
def test_a_cell_killed_committed_and_continued_from_a_clone_ends_bitwise_equal(tmp_path):
    ref = tmp_path / "ref"
    done = protocol(ref)
    assert done.returncode == 0, done.stderr[-2000:]
    cell_ref = ref / "cells" / "vae_vampprior"

    # Interrupted: killed mid-run inside a git repository that has the project's .gitignore.
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    git(repo, "init", "-q")
    results = repo / "results" / "vampprior_static"
    killed = protocol(results, kill_at=57)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    cell = results / "cells" / "vae_vampprior"
    assert (cell / "checkpoints" / "latest.prev.pt").exists()        # the training left its previous copies
    assert protocol(results, "--pack").returncode == 0
    best = torch.load(cell / "checkpoints" / "best.pt", weights_only=True)
    assert "optimizers" not in best and "modules" in best             # best.pt: weights only
    state, step = cell_progress(cell)                                 # the last checkpoint before step 57
    assert state == "unfinished" and 52 <= step <= 56
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "unfinished cell")
    tracked = git(repo, "ls-files").split()
    assert "results/vampprior_static/cells/vae_vampprior/checkpoints/latest.pt" in tracked
    assert not [f for f in tracked if f.endswith(".prev.pt") or f.endswith(".tmp")]

    # Continued on "another machine": a fresh clone holds only what was committed.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    cont = protocol(clone / "results" / "vampprior_static")
    assert cont.returncode == 0, cont.stderr[-2000:]
    cell_cont = clone / "results" / "vampprior_static" / "cells" / "vae_vampprior"

    w_ref, w_cont = load_file(cell_ref / "model.safetensors"), load_file(cell_cont / "model.safetensors")
    assert w_ref.keys() == w_cont.keys()
    for k in w_ref:
        assert torch.equal(w_ref[k], w_cont[k]), k
    e_ref = json.loads((cell_ref / "eval.json").read_text())
    e_cont = json.loads((cell_cont / "eval.json").read_text())
    for k in ("steps", "best_epoch", "best_valid_loss", "stop_reason", "test_ll", "test_elbo", "test_rec", "test_kl",
              "active_units"):
        assert e_ref[k] == e_cont[k], k
    assert (cell_ref / "metrics.jsonl").read_text().count("\n") == (cell_cont / "metrics.jsonl").read_text().count("\n")

    # A finished cell keeps only its result: no checkpoints, the weights as safetensors, curves.
    assert cell_progress(cell_cont) == ("done", e_cont["steps"]) and cell_progress(tmp_path / "none") == ("new", 0)
    assert not (cell_cont / "checkpoints").exists()
    assert {"config.yaml", "metrics.jsonl", "eval.json", "model.safetensors", "curves.png", "samples.png"} <= \
        {p.name for p in cell_cont.iterdir()}
    assert e_ref["early_stop_epoch"] is None or e_ref["early_stop_epoch"] <= 6


def test_a_finished_cell_reopens_from_its_safetensors_and_reproduces_its_check_figure(tmp_path, capsys):
    from mixvae.app.cli import main
    results = tmp_path / "res"
    res = protocol(results)
    assert res.returncode == 0, res.stderr[-2000:]
    cell = results / "cells" / "vae_vampprior"
    check = json.loads((cell / "eval.json").read_text())["check"]
    assert check["command"].startswith(f"mixvae eval {cell}")
    capsys.readouterr()
    assert main(["eval", str(cell), "--ll-samples", "1000", "--set", "data.test_subset=1000", "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_ll"] == pytest.approx(check["test_ll"], abs=1e-4)
    # --recheck computes the check again (the figure may not move) and adds nothing to the cell but eval.json
    before = {p.name for p in cell.iterdir()}
    assert protocol(results, "--recheck").returncode == 0
    again = json.loads((cell / "eval.json").read_text())["check"]
    assert again["test_ll"] == pytest.approx(check["test_ll"], abs=1e-3) and {p.name for p in cell.iterdir()} == before
    assert main(["sample", str(cell), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    table = (results / "TABLE.md").read_text()
    assert "| VAE + VampPrior (K=500) | " in table and "not started" in table
