"""A training process killed with SIGKILL at any moment, then resumed, ends with the weights of a
run that was never interrupted (bitwise, deterministic CPU settings)."""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ["seed=5", "data.name=digits", "model.hidden=[24]", "model.latent_dim=3", "model.prior.kind=vampprior",
          "model.prior.components=5", "train.epochs=3", "train.batch_size=50", "train.warmup_epochs=2",
          "train.patience=null", "train.checkpoint_every=7", "train.log_every=1", "train.threads=1",
          "train.deterministic=true", "eval.ll_samples=4"]

# Runs the CLI in this process after arranging a SIGKILL: at the start of training step K
# ("step", K) or half-way through writing the N-th checkpoint file ("save", N).
KILLER = """
import os, signal, sys
import torch
from mixvae.app import cli
from mixvae.training import checkpoint, loop
how, n = sys.argv[1], int(sys.argv[2])
if how == "step":
    def patched_init(self, *a, **k):
        init(self, *a, **k)
        step = self.objective.step
        def killing_step(x, ctx):
            if ctx.step == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(x, ctx)
        self.objective.step = killing_step
    init = loop.Trainer.__init__
    loop.Trainer.__init__ = patched_init
else:
    calls = [0]
    save = torch.save
    def killing_save(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == n:
            import io
            buf = io.BytesIO()
            save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *a, **k)
    checkpoint.torch.save = killing_save
sys.exit(cli.main(sys.argv[3:]))
"""


def mixvae(args: list[str], kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    prefix = [sys.executable, "-c", KILLER, kill[0], str(kill[1])] if kill else [sys.executable, "-m", "mixvae"]
    return subprocess.run(prefix + args, capture_output=True, text=True, env=env, timeout=300)


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["modules"]["model"]


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    sets = [a for o in CONFIG for a in ("--set", o)]
    base = str(ROOT / "configs/vampprior/_base.yaml")
    ref = mixvae(["train", base, "--out", str(tmp_path / "ref"), "--quiet"] + sets)
    assert ref.returncode == 0, ref.stderr[-2000:]
    total = json.loads(ref.stdout.strip().splitlines()[-1])["steps"]

    rng = random.Random(0)
    a, b = sorted(rng.sample(range(1, total - 1), 2))
    run = tmp_path / "run"
    kills = [("step", 0), ("step", a), ("save", 3), ("step", b)]   # before any checkpoint, mid-run, mid-write
    first = mixvae(["train", base, "--out", str(run), "--quiet"] + sets, kill=kills[0])
    assert first.returncode == -signal.SIGKILL
    for how, n in kills[1:]:
        res = mixvae(["train", "--resume", str(run), "--quiet"], kill=(how, n))
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        if how == "save":                                        # the write cut short left its temporary file
            assert list((run / "checkpoints").glob(".*.tmp"))
    done = mixvae(["train", "--resume", str(run), "--quiet"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))        # ... which a resume removed
    w_ref, w_run = weights(tmp_path / "ref"), weights(run)
    for k in w_ref:
        assert torch.equal(w_ref[k], w_run[k]), k
    # the final evaluation and the metrics log agree too
    e_ref = json.loads((tmp_path / "ref" / "eval.json").read_text())
    e_run = json.loads((run / "eval.json").read_text())
    assert e_ref["test_ll"] == e_run["test_ll"] and e_ref["best_step"] == e_run["best_step"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, total + 1))


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    sets = [a for o in CONFIG for a in ("--set", o)]
    run = tmp_path / "run"
    res = mixvae(["train", str(ROOT / "configs/vampprior/_base.yaml"), "--out", str(run), "--quiet",
                  "--no-eval"] + sets + ["--set", "train.epochs=1"])
    assert res.returncode == 0
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    again = mixvae(["train", "--resume", str(run), "--quiet", "--no-eval", "--set", "train.epochs=2"])
    assert again.returncode == 0, again.stderr
    assert "using the previous checkpoint" in again.stderr
