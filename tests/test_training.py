"""The loop: exact resume, warm-up, early stopping, NaN policy; the ELBO objective; AdamNormGrad."""
import json
import math

import pytest
import torch

from mixvae.app import runs
from mixvae.config import config_from_dict
from mixvae.objectives.base import StepContext
from mixvae.training.checkpoint import load_checkpoint, save_checkpoint
from mixvae.training.loop import Trainer, TrainingDiverged
from mixvae.training.optim import AdamNormGrad


def tiny(**train):
    return config_from_dict({
        "seed": 3, "data": {"name": "digits"},
        "model": {"arch": "vae", "hidden": [16], "latent_dim": 3, "prior": {"kind": "vampprior", "components": 5}},
        "train": {"epochs": 2, "batch_size": 50, "log_every": 7, "checkpoint_every": 1000, **train},
    })


def weights(run):
    return torch.cat([p.detach().flatten() for p in run.model.state_dict().values() if p.is_floating_point()])


def test_resume_is_bitwise_identical(tmp_path):
    cfg = tiny(epochs=3, warmup_epochs=2, checkpoint_every=13)
    whole = runs.prepare(cfg, run_dir=tmp_path / "a")
    Trainer(cfg, whole.objective, whole.data, tmp_path / "a", progress=False).fit()
    # a run stopped after 33 steps (mid-epoch, between checkpoints: resumes from step 26)
    part = runs.prepare(cfg, run_dir=tmp_path / "b")
    cfg_short = tiny(epochs=3, warmup_epochs=2, checkpoint_every=13, max_steps=33)
    Trainer(cfg_short, part.objective, part.data, tmp_path / "b", progress=False).fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")
    assert state["loop"]["step"] == 33
    # simulate a crash at step 33 with the last checkpoint written at step 26
    ckpt26 = tmp_path / "b" / "checkpoints" / "latest.prev.pt"
    resumed = runs.prepare(cfg, run_dir=tmp_path / "b")
    tr = Trainer(cfg, resumed.objective, resumed.data, tmp_path / "b", progress=False)
    tr.restore(load_checkpoint(ckpt26))
    assert tr.state.step == 26
    tr.fit()
    assert torch.equal(weights(whole), weights(resumed))


def test_kl_warmup_and_logging(tmp_path):
    cfg = tiny(epochs=2, warmup_epochs=4, log_every=1)
    run = runs.prepare(cfg, run_dir=tmp_path)
    Trainer(cfg, run.objective, run.data, tmp_path, progress=False).fit()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    betas = {r["epoch"]: r["beta"] for r in recs if r["split"] == "train"}
    assert betas == {1: 0.25, 2: 0.5}


def test_early_stopping_counts_after_warmup(tmp_path):
    cfg = tiny(epochs=50, warmup_epochs=2, patience=2)
    cfg.train.lr = 0.0     # frozen weights: validation never improves (a config refuses lr 0; the loop takes it)
    run = runs.prepare(cfg, run_dir=tmp_path)
    state = Trainer(cfg, run.objective, run.data, tmp_path, progress=False).fit()
    assert state.stop_reason.startswith("early stopping")
    spe = run.data.steps_per_epoch(50)
    # best at epoch 1; epoch 2 ends the warm-up; epochs 2 and 3 are the two evaluations without improvement
    assert state.step == 3 * spe


class Wrapped:
    """Wraps an objective; ``after(metrics, ctx)`` changes what its step returns."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, k):
        return getattr(self.inner, k)

    def step(self, x, ctx):
        return self.after(self.inner.step(x, ctx), ctx)


class Exploding(Wrapped):
    """Its step returns NaN once, at step ``at``."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.at = at

    def after(self, out, ctx):
        if ctx.step == self.at and not getattr(self, "fired", False):
            self.fired = True
            out["rec"] = math.nan
        return out


def test_nan_policy_stop_names_the_step_and_term(tmp_path):
    cfg = tiny()
    run = runs.prepare(cfg, run_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="step 5: loss term 'rec' is nan"):
        Trainer(cfg, Exploding(run.objective, 5), run.data, tmp_path, progress=False).fit()


@pytest.mark.parametrize("folder", [True, False])     # without a run folder the state is kept in memory
def test_nan_policy_rollback_lowers_lr_and_continues(tmp_path, folder):
    cfg = tiny(nan_policy="rollback", checkpoint_every=4)
    run_dir = tmp_path if folder else None
    run = runs.prepare(cfg, run_dir=run_dir)
    tr = Trainer(cfg, Exploding(run.objective, 10), run.data, run_dir, progress=False)
    state = tr.fit()
    assert state.rollbacks == 1 and state.step == tr.total_steps
    assert tr.optimizers["model"].param_groups[0]["lr"] == pytest.approx(cfg.train.lr * 0.1)
    assert math.isfinite(float(weights(run).sum()))
    if folder:
        events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"event"' in line]
        assert events and events[0]["event"] == "rollback"
        from mixvae.training.tracking import read_records
        records, bad = read_records(tmp_path / "metrics.jsonl")       # a resume keeps the event, quietly
        assert bad == [] and any(r.get("event") == "rollback" for r, _ in records)


class LateMetric(Wrapped):
    """Its step reports ``late`` = the step index from step ``at`` on only."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.at = at

    def after(self, out, ctx):
        return {**out, "late": float(ctx.step)} if ctx.step >= self.at else out


def test_logged_average_of_a_term_counts_the_steps_that_report_it(tmp_path):
    # a term that appears mid-window (as Soft-IntroVAE's after its warm-up) is averaged over its own steps
    cfg = tiny(log_every=7)
    run = runs.prepare(cfg, run_dir=tmp_path)
    Trainer(cfg, LateMetric(run.objective, 4), run.data, tmp_path, progress=False).fit()
    first = next(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                 if '"late"' in line)
    assert first["step"] == 7 and first["late"] == pytest.approx((4 + 5 + 6) / 3)


class ExplodingAt(Wrapped):
    """Its step returns NaN once at each of the chosen steps."""

    def __init__(self, inner, steps):
        super().__init__(inner)
        self.pending = set(steps)

    def after(self, out, ctx):
        if ctx.step in self.pending:
            self.pending.discard(ctx.step)
            out["rec"] = math.nan
        return out


@pytest.mark.parametrize("milestones", [[], [2]])
def test_successive_rollbacks_apply_exactly_the_logged_factor(tmp_path, milestones):
    # the second divergence comes after checkpoints written at the already reduced rate
    cfg = tiny(nan_policy="rollback", checkpoint_every=4, lr_milestones=milestones, lr_gamma=0.5)
    run = runs.prepare(cfg, run_dir=tmp_path)
    tr = Trainer(cfg, ExplodingAt(run.objective, [6, 14]), run.data, tmp_path, progress=False)
    state = tr.fit()
    assert state.rollbacks == 2 and state.step == tr.total_steps
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"event"' in line]
    assert [e["lr_factor"] for e in events] == [0.1, 0.1 ** 2]
    scheduled = cfg.train.lr * 0.5 ** len(milestones)              # the schedule's rate after the milestones
    lr = tr.optimizers["model"].param_groups[0]["lr"]
    assert lr == pytest.approx(scheduled * 0.01, rel=1e-12)
    assert lr == scheduled * events[-1]["lr_factor"]
    assert tr.schedulers["model"].base_lrs == [cfg.train.lr * 0.1 ** 2]
    # a player created after the rollbacks (as a prior conversion does) gets the same rate
    tr._build_player("model")
    assert tr.optimizers["model"].param_groups[0]["lr"] == lr


def test_elbo_step_decreases_loss_and_only_touches_its_model():
    cfg = tiny()
    run = runs.prepare(cfg)
    x = next(run.data.train_batches(0, 0, 200))
    opt = {"model": torch.optim.Adam(run.objective.players()["model"], lr=1e-2)}
    first = [run.objective.step(x, StepContext(i, 0, 1.0, opt))["loss"] for i in range(60)]
    assert first[-1] < first[0] - 5


def test_adam_normgrad_normalises_each_gradient():
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(3))
    opt = AdamNormGrad([p, q], lr=0.1)
    p.grad, q.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([300.0, 400.0, 0.0])
    opt.step()
    # Adam's first step moves by lr * sign; the normalisation shows in the second moment state
    st = opt.state[p]["exp_avg_sq"], opt.state[q]["exp_avg_sq"]
    torch.testing.assert_close(st[0], st[1])
    # ... and it is the L2 norm (not max, L1 or sign): (1 - beta2) (g / (||g||_2 + 1e-7))^2
    torch.testing.assert_close(st[0], 0.001 * torch.tensor([0.6, 0.8, 0.0]) ** 2, rtol=1e-5, atol=1e-12)


def test_checkpoints_are_atomic_and_fall_back(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"a": torch.ones(2)}, path)
    save_checkpoint({"a": torch.zeros(2)}, path)
    path.write_bytes(path.read_bytes()[:20])          # truncated: the previous good one is used
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert not list(tmp_path.glob(".*.tmp"))
