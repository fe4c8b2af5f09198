"""Several seeds in one process (training/ensemble.py, members.py): each member of a stacked
ensemble ends where the separate run of its seed ends (1e-5; float rounding only), resumes
exactly, and leaves the run folder that separate run would leave."""
import copy
import json
import math

import pytest
import torch
from torch.func import vmap

from mixvae import members
from mixvae.app import runs
from mixvae.app.cli import main
from mixvae.config import config_from_dict, save_config
from mixvae.distributions import DiagonalGaussianMixture, mixture_log_prob
from mixvae.errors import UserError
from mixvae.members import Members
from mixvae.training import ensemble
from mixvae.training.loop import Trainer

SEEDS = [3, 4, 5]
TOL = 1e-5


def cfg_2d(prior="vampprior", steps=14, **sintro):
    """A small 2D Soft-IntroVAE: warm-up of 5 steps, a VampPrior converted to a MoG at step 4."""
    convert = {"convert_to_mog_step": 4} if prior == "vampprior" else {}
    return config_from_dict({
        "seed": 0, "data": {"name": "8gaussians", "epoch_size": 10},
        "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [16, 16],
                  "prior": {"kind": prior, "components": 4, "pseudo_init": [0.0, 1.0]}},
        "train": {"objective": "sintro", "max_steps": steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 5},
        "sintro": {"beta_rec": 0.2, "beta_kl": 0.3, "beta_neg": 0.9, "kl_samples": 5, **convert, **sintro},
        "eval": {"toy_grid": 64},
    })


def separate(cfg, seed):
    """(weights, training records) of the run of ``cfg`` at ``seed``, trained alone in memory."""
    c = copy.deepcopy(cfg)
    c.seed = seed
    run = runs.prepare(c)
    trainer = Trainer(c, run.objective, run.data, None, progress=False)
    trainer.fit()
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}, trainer.log.records


def assert_member_is(stacked: dict, i: int, alone: dict) -> None:
    assert set(stacked) == set(alone)
    for k, v in alone.items():
        if not v.is_floating_point():          # shared flags and counters
            assert torch.equal(stacked[k], v), k
            continue
        got = stacked[k][i]
        assert got.shape == v.shape, k
        assert (got - v).abs().max().item() <= TOL * max(1.0, v.abs().max().item()), k


VARIANTS = {
    "learned prior with the decoder": {},
    "learned prior with the encoder": {"prior_player": "encoder"},
    "fixed MoG": {"prior_player": "fixed"},
    "responsibility regulariser": {"r_ent": 0.5},
    "standard prior": {"prior": "standard"},
    "plain VAE": {"prior": "standard", "vae_only": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_member_ends_where_the_separate_run_of_its_seed_ends(variant):
    """Warm-up, the VampPrior's conversion to a MoG (a new prior, and its initialisation drawn from
    each member's stream), the start of variance clipping and the adversarial steps: every weight
    and every logged term of each member within 1e-5 of its separate run."""
    opts = dict(VARIANTS[variant])
    cfg = cfg_2d(opts.pop("prior", "vampprior"), **opts)
    ens, data, first = runs.prepare_seeds(cfg, SEEDS)
    trainer = Trainer(first.cfg, ens, data, None, progress=False)
    trainer.fit()
    stacked = first.model.state_dict()
    for i, seed in enumerate(SEEDS):
        weights, records = separate(cfg, seed)
        assert_member_is(stacked, i, weights)
        mine = ensemble.member_records(trainer.log.records, seed)
        theirs = [r for r in records if r["split"] == "train"]
        assert len(mine) == len(theirs) > 0
        for a, b in zip(mine, theirs):
            assert set(a) == set(b)
            for k, v in b.items():
                if isinstance(v, float) and k != "time":
                    assert a[k] == pytest.approx(v, rel=TOL, abs=TOL), k


def test_member_streams_are_the_separate_runs_streams():
    """Inside Members.map each member draws from its own generator, in its separate run's order:
    normals and mixture components equal those of torch.randn / torch.multinomial after seeding."""
    lin = torch.nn.Linear(2, 3)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    members.stack_into(lin, [torch.nn.Linear(2, 3) for _ in SEEDS[1:]])
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    got = Members({"lin": lin}, gens).map(
        lambda x: (members.normal((5, 2)), members.multinomial(probs, 7), members.normal((3,)) + 0 * x),
        torch.zeros(len(SEEDS), 1))
    for i, s in enumerate(SEEDS):
        torch.manual_seed(s)
        assert torch.equal(got[0][i], torch.randn(5, 2))
        assert torch.equal(got[1][i], torch.multinomial(probs, 7, replacement=True))
        assert torch.equal(got[2][i], torch.randn(3))


def test_code_vmap_cannot_batch_runs_member_by_member_with_its_own_gradients():
    """mixture_log_prob (C kernel, float64 fallbacks, hand-written backward) inside the map: each
    member's value and gradients are those of the plain call on its own tensors."""
    torch.manual_seed(0)
    z, lw, m, lv = (torch.randn(3, *s, requires_grad=True) for s in ((50, 2), (4,), (4, 2), (4, 2)))
    lin = torch.nn.Linear(1, 1)
    members.stack_into(lin, [torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)])
    each = Members({"lin": lin}, [torch.Generator() for _ in range(3)])
    out = each.map(lambda *a: DiagonalGaussianMixture(a[1], a[2], a[3]).log_prob(a[0]), z, lw, m, lv)
    grads = torch.autograd.grad(out.sum(), (z, lw, m, lv))
    for i in range(3):
        leaves = [t[i].detach().requires_grad_() for t in (z, lw, m, lv)]
        plain = mixture_log_prob(leaves[0], torch.log_softmax(leaves[1], -1), leaves[2], leaves[3])
        torch.testing.assert_close(out[i], plain, rtol=0, atol=0)
        for g, p in zip(grads, torch.autograd.grad(plain.sum(), leaves)):
            torch.testing.assert_close(g[i], p, rtol=1e-6, atol=1e-7)
    fixed = each.map(lambda x: x + mixture_log_prob(z[0], lw[0], m[0], lv[0]).sum(), torch.zeros(3))   # unbatched
    torch.testing.assert_close(fixed, mixture_log_prob(z[0], lw[0], m[0], lv[0]).sum().expand(3))
    with pytest.raises(RuntimeError):   # without a member map, vmap is refused the global stream
        vmap(lambda x: x + torch.randn(2))(torch.zeros(3, 2))


def test_seeds_folders_resume_and_equal_the_separate_runs(tmp_path):
    """mixvae train --seeds: DIR/seed<S> of each member is the run folder its separate run leaves
    (the same test figures; it reloads), after the ensemble was stopped at step 8 and resumed
    with a larger budget (--resume DIR)."""
    cfg = cfg_2d(steps=8)
    save_config(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "seeds"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--seeds", "3", "4", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ensemble", "seed3", "seed4"]
    assert main(["train", "--resume", str(out), "--set", "train.max_steps=14", "--quiet"]) == 0
    for seed in (3, 4):
        alone = copy.deepcopy(cfg)
        alone.seed, alone.train.max_steps = seed, 14
        sep = runs.train(alone, tmp_path / f"alone{seed}", progress=False)
        member = json.loads((out / f"seed{seed}" / "eval.json").read_text())
        for k in ("kl", "jsd", "kl_mass", "gnelbo"):
            assert member[k] == pytest.approx(sep[k], rel=TOL), k
        assert member["steps"] == 14 and member["best_valid_loss"] is None
        run = runs.open_run(out / f"seed{seed}")
        assert run.cfg.seed == seed and run.model.prior.means.shape == (4, 2)
        rows = [json.loads(line) for line in (out / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if r["split"] == "train"] == [8, 14]   # the end of each budget
        assert not any("/" in k for r in rows for k in r)


def test_an_ensemble_of_an_objective_not_written_for_it_is_refused(tmp_path, capsys):
    cfg = config_from_dict({"seed": 0, "data": {"name": "8gaussians", "epoch_size": 4},
                            "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [8]},
                            "train": {"objective": "elbo", "max_steps": 2, "batch_size": 16}})
    save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", str(tmp_path / "cfg.yaml"), "--seeds", "1", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train.objective = 'elbo' cannot train several seeds in one process" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="distinct seeds"):
        runs.prepare_seeds(cfg_2d(), [3, 3])


@pytest.mark.parametrize("setting, says", [("train.precision=bf16", "train.precision = 'bf16'"),
                                           ("train.optimizer=adam-normgrad", "train.optimizer = 'adam-normgrad'"),
                                           ("train.patience=2", "train.patience = 2")])
def test_settings_the_members_could_not_follow_alone_are_refused(tmp_path, capsys, setting, says):
    save_config(cfg_2d(), tmp_path / "cfg.yaml")
    out = tmp_path / "o"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--seeds", "1", "2", "--set", setting, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"several seeds in one process: {says}" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_member_trained_on_alone_is_never_overwritten_and_the_ensemble_folder_is_named(tmp_path, capsys):
    save_config(cfg_2d(steps=6), tmp_path / "cfg.yaml")
    out = tmp_path / "s"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--seeds", "3", "4", "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--resume", str(out / "seed3"), "--set", "train.max_steps=9", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--set", "train.max_steps=8", "--quiet"]) == 2
    assert "trained on alone since" in capsys.readouterr().err
    assert json.loads((out / "seed3" / "eval.json").read_text())["steps"] == 9
    for cmd in (["eval", str(out / "ensemble")], ["train", "--resume", str(out / "ensemble")]):
        assert main(cmd + ["--quiet"]) == 2
        assert f"resume them with --resume {out}" in capsys.readouterr().err


def test_stacking_keeps_shared_tensors_shared_and_maps_non_persistent_buffers():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(2, 2)
            self.b = torch.nn.Linear(2, 2)
            self.b.weight = self.a.weight                       # tied
            self.register_buffer("scale", torch.rand(2), persistent=False)

        def forward(self, x):
            return self.b(self.a(x)) * self.scale

    nets = [Net() for _ in range(3)]
    want = [n(torch.ones(2)) for n in nets]
    members.stack_into(nets[0], nets[1:])
    assert nets[0].a.weight is nets[0].b.weight and nets[0].scale.shape == (3, 2)
    got = Members({"net": nets[0]}, [torch.Generator() for _ in range(3)]).map(
        lambda x: nets[0](x), torch.ones(3, 2))
    torch.testing.assert_close(got, torch.stack(want))


def test_a_refused_resume_writes_nothing_and_a_cut_short_member_is_written_again(tmp_path, capsys):
    """Members are checked before the ensemble trains on; a member folder is written whole (under
    a temporary name, then renamed), and one written from the ensemble's final state is kept."""
    save_config(cfg_2d(steps=6), tmp_path / "cfg.yaml")
    out = tmp_path / "s"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--seeds", "3", "4", "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--resume", str(out / "seed4"), "--set", "train.max_steps=9", "--quiet"]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert main(["train", "--resume", str(out), "--set", "train.max_steps=12", "--quiet"]) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    import shutil
    shutil.rmtree(out / "seed4")                    # moved away by the user; seed3 is as the ensemble left it
    (out / ".seed4.tmp").mkdir()                    # and a write cut short before
    kept = (out / "seed3" / "eval.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0      # same budget: nothing to train
    assert (out / "seed3" / "eval.json").stat().st_mtime_ns != kept   # evaluated again from its checkpoint
    assert json.loads((out / "seed4" / "eval.json").read_text())["steps"] == 6 and not (out / ".seed4.tmp").exists()
    assert main(["eval", str(out), "--quiet"]) == 2
    assert "give one member's folder" in capsys.readouterr().err
