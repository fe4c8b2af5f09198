"""Two gloo processes on the CPU train exactly what one process trains on the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, overrides: list[str], processes: int) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    cmd = launcher + ["-m", "mixvae", "train", str(ROOT / "configs/vampprior/_base.yaml"), "--out", str(out),
                      "--quiet", "--no-eval"] + [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(out / "checkpoints" / "latest.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict, tol: float = 1e-5):
    ma, mb = a["modules"]["model"], b["modules"]["model"]
    assert ma.keys() == mb.keys()
    for k in ma:
        if ma[k].is_floating_point():
            assert (ma[k] - mb[k]).abs().max().item() < tol, k
        else:
            assert torch.equal(ma[k], mb[k]), k


ELBO = ["seed=3", "data.name=digits", "model.hidden=[32]", "model.latent_dim=4", "model.prior.kind=vampprior",
        "model.prior.components=6", "train.max_steps=6", "train.batch_size=40", "train.lr=0.001",
        "train.patience=null", "train.warmup_epochs=2"]
SINTRO_2D = ["seed=1", "data.name=8gaussians", "data.epoch_size=5", "model.arch=mlp2d", "model.latent_dim=2",
             "model.hidden=[16,16]", "model.prior.kind=vampprior", "model.prior.components=5",
             "model.prior.pseudo_init=[0.0,1.0]", "train.objective=sintro", "train.max_steps=8",
             "train.batch_size=64", "train.lr=0.001", "train.optimizer=adam", "train.warmup_steps=3",
             "train.patience=null", "train.lr_milestones=[6]", "sintro.convert_to_mog_step=2", "sintro.kl_samples=4",
             "sintro.resp_samples=3", "sintro.r_ent=10.0", "sintro.beta_neg=0.9", "sintro.beta_kl=0.3",
             "sintro.beta_rec=0.2"]
SINTRO_IMAGES = ["seed=2", "data.name=digits", "model.arch=resnet", "model.channels=[4]", "model.latent_dim=3",
                 "model.prior.kind=standard", "train.objective=sintro", "train.max_steps=4", "train.batch_size=32",
                 "train.lr=0.001", "train.optimizer=adam", "train.warmup_epochs=0", "train.patience=null",
                 "sintro.beta_neg=4.0"]


@pytest.mark.parametrize("name,overrides", [("elbo", ELBO), ("sintro-2d-learned-prior", SINTRO_2D),
                                            ("sintro-images-batchnorm", SINTRO_IMAGES)])
def test_two_processes_match_one(tmp_path, name, overrides):
    one = train(tmp_path / "one", overrides, 1)
    two = train(tmp_path / "two", overrides, 2)
    assert one["loop"]["step"] == two["loop"]["step"]
    assert_same_weights(one, two)
    for player in one["optimizers"]:
        assert player in two["optimizers"]
    # the validation that chooses 'best' saw the same numbers
    assert abs(one["loop"]["best_loss"] - two["loop"]["best_loss"]) < 1e-4 * max(1.0, abs(one["loop"]["best_loss"]))


def test_sync_batchnorm_alone_is_batchnorm():
    from mixvae.parallel import SyncBatchNorm, sync_batchnorm
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    x = torch.randn(8, 2, 4, 4)
    want = net(x)
    sync_batchnorm(net)
    assert isinstance(net[1], SyncBatchNorm)
    torch.testing.assert_close(net(x), want)


def test_distributed_evaluation_gathers_every_test_image(tmp_path):
    over = ELBO + ["eval.ll_samples=20", "data.test_subset=101"]      # an odd count: uneven shares
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    base = ["-m", "mixvae", "train", str(ROOT / "configs/vampprior/_base.yaml"), "--quiet"]
    sets = [a for o in over for a in ("--set", o)]
    for n, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
                                       if n > 1 else [])
        res = subprocess.run(launcher + base + ["--out", str(out)] + sets, capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    import json
    one, two = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("one", "two"))
    assert one["test_examples"] == two["test_examples"] == 101 and two["processes"] == 2
    # the same model; the two estimates differ only by their importance-sampling noise
    assert abs(one["test_ll"] - two["test_ll"]) < 4 * (one["test_ll_sem"] + two["test_ll_sem"]) / 10 + 0.5
    assert one["active_units"] == two["active_units"]


@pytest.mark.parametrize("bad", [["train.lr=0"],                                   # refused before the processes meet
                                 ["data.name=npz", "data.path=/dev/zero"]])       # refused after they joined the group
def test_bad_input_under_torchrun_is_one_line(tmp_path, bad):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "MIXVAE_OFFLINE": "1"}
    args = ["--standalone", "--nproc_per_node=2", "-m", "mixvae", "train", str(ROOT / "configs/vampprior/_base.yaml"),
            "--out", str(tmp_path / "run"), "--quiet"] + [a for o in bad for a in ("--set", o)]
    ours = subprocess.run([sys.executable, "-m", "mixvae.app.torchrun"] + args, capture_output=True, text=True,
                          env=env, timeout=300)
    lines = [line for line in ours.stderr.splitlines() if line.strip()]
    assert ours.returncode == 2 and len(lines) == 1 and lines[0].startswith("mixvae: error:"), ours.stderr
    assert not (tmp_path / "run").exists()
    # torchrun itself: our line once, then its own report, and its exit code 1 whatever the workers' codes
    plain = subprocess.run([sys.executable, "-m", "torch.distributed.run"] + args, capture_output=True, text=True,
                           env=env, timeout=300)
    assert plain.returncode == 1
    assert [line for line in plain.stderr.splitlines() if line.startswith("mixvae: ")] == lines
    assert "exitcode  : 2" in plain.stderr


def test_process_group_waits_for_the_others_only_after_a_normal_end(monkeypatch):
    """After a normal end every process meets the others before leaving the group; after an error
    it leaves at once (the others may never get to the barrier)."""
    from mixvae import parallel
    calls = []
    monkeypatch.setattr(parallel, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(parallel, "shutdown", lambda: calls.append("shutdown"))
    with parallel.process_group() as proc:
        assert proc.world == 1
    assert calls == ["barrier", "shutdown"]
    calls.clear()
    with pytest.raises(ValueError):
        with parallel.process_group():
            raise ValueError("bad input")
    assert calls == ["shutdown"]
