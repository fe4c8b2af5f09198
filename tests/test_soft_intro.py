"""Soft-IntroVAE with a learnable prior: each loss term by hand, which player gets which gradient,
the Monte-Carlo KL, responsibility regularisation, conversion, and short runs of every variant."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from mixvae.app import runs
from mixvae.config import config_from_dict
from mixvae.errors import UserError
from mixvae.objectives.soft_intro import SoftIntroConfig
from mixvae.distributions import DiagonalGaussian, DiagonalGaussianMixture
from mixvae.models import VAE, LikelihoodHead
from mixvae.objectives.base import StepContext
from mixvae.distributions import kl_divergence
from mixvae.objectives.soft_intro import (SoftIntroVAE, introspection_term, mean_exp,
                                          usage_negative_entropy)
from mixvae.priors import MoGPrior, StandardNormalPrior

DX, DZ, B = 3, 2, 5


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DX, 2 * DZ)

    def forward(self, x):
        mu, logvar = self.lin(x).chunk(2, -1)
        return mu, logvar


class LinearDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DZ, DX)

    def forward(self, z):
        return self.lin(z).unsqueeze(-2)


def tiny_model(prior=None):
    torch.manual_seed(1)
    return VAE(LinearEncoder(), LinearDecoder(), prior or StandardNormalPrior(DZ), LikelihoodHead("gaussian", 1), (DX,))


def by_hand_kl(mu, lv):
    return 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(-1)


def by_hand_sq(a, b):
    return ((a - b) ** 2).sum(-1)


CFG = SoftIntroConfig(beta_rec=0.7, beta_kl=0.4, beta_neg=1.3, gamma_r=0.01, alpha=2.0)


def test_encoder_loss_equals_a_hand_computation():
    model = tiny_model()
    obj = SoftIntroVAE(model, CFG)
    s = 1.0 / DX
    x, fake = torch.randn(B, DX), torch.randn(B, DX)
    torch.manual_seed(7)
    loss, rec_got, q, _ = obj.encoder_loss(x, model.prior(), fake)

    E, D = model.encoder.lin, model.decoder.lin
    torch.manual_seed(7)
    mu, lv = E(x).chunk(2, -1)
    zr = mu + torch.exp(0.5 * lv) * torch.randn(B, DZ)
    rec = D(zr)
    real = s * (0.7 * by_hand_sq(x, rec).mean() + 0.4 * by_hand_kl(mu, lv).mean())
    mu_r, lv_r = E(rec).chunk(2, -1)
    mu_f, lv_f = E(fake).chunk(2, -1)
    rec_rec = D(mu_r + torch.exp(0.5 * lv_r) * torch.randn(B, DZ))
    rec_fake = D(mu_f + torch.exp(0.5 * lv_f) * torch.randn(B, DZ))
    elbo_rec = 0.7 * by_hand_sq(rec, rec_rec) + 1.3 * by_hand_kl(mu_r, lv_r)
    elbo_fake = 0.7 * by_hand_sq(fake, rec_fake) + 1.3 * by_hand_kl(mu_f, lv_f)
    want = real + 0.25 * (torch.exp(-2 * s * elbo_fake).mean() + torch.exp(-2 * s * elbo_rec).mean())
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(rec_got, rec)


def test_decoder_loss_equals_a_hand_computation():
    model = tiny_model()
    obj = SoftIntroVAE(model, CFG)
    s = 1.0 / DX
    x, z_r, z_fake = torch.randn(B, DX), torch.randn(B, DZ), torch.randn(B, DZ)
    q = model.encode(x)
    prior = model.prior()
    torch.manual_seed(3)
    loss, _ = obj.decoder_loss(x, model.decode(z_r).mean, q, prior, model.decode(z_fake).mean)

    E, D = model.encoder.lin, model.decoder.lin
    torch.manual_seed(3)
    rec, fake = D(z_r), D(z_fake)
    mu_r, lv_r = E(rec).chunk(2, -1)
    mu_f, lv_f = E(fake).chunk(2, -1)
    rec_rec = D(mu_r + torch.exp(0.5 * lv_r) * torch.randn(B, DZ))
    rec_fake = D(mu_f + torch.exp(0.5 * lv_f) * torch.randn(B, DZ))
    want = s * (0.7 * by_hand_sq(x, rec).mean()
                + 0.5 * 0.4 * (by_hand_kl(mu_r, lv_r).mean() + by_hand_kl(mu_f, lv_f).mean())
                + 0.5 * 0.01 * 0.7 * (by_hand_sq(rec, rec_rec).mean() + by_hand_sq(fake, rec_fake).mean()))
    torch.testing.assert_close(loss, want)


def test_generalised_exponent_and_overflow_safe_mean():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    want = (1 / 3) * 0.5 * (torch.exp(-3 * 0.1 * b).mean() + torch.exp(-3 * 0.1 * a).mean())
    torch.testing.assert_close(introspection_term(a, b, alpha=3.0, s=0.1), want)
    # exp(logsumexp - log n), so the mean is as exact as the dtype allows at both ends of its range:
    # e^-200 is below float32's smallest subnormal (1.4e-45), so the mean is exactly 0 there, not NaN,
    assert mean_exp(torch.tensor([-200.0, -200.0])).item() == 0.0
    # ... and in float64, which holds e^-200, it is e^-200 to rounding
    assert mean_exp(torch.tensor([-200.0, -200.0], dtype=torch.float64)).item() == pytest.approx(math.exp(-200), rel=1e-12)
    # a sum of exponentials that overflows float32 (2 e^88.5 > 3.4e38) gives its mean, e^88.5 = 2.7e38
    big = torch.tensor([88.5, 88.5])
    assert math.isinf(torch.exp(big).sum().item())
    assert mean_exp(big).item() == pytest.approx(math.exp(88.5), rel=1e-5)
    # mixed magnitudes: (e^0 + e^-200) / 2 = 1/2
    assert mean_exp(torch.tensor([0.0, -200.0])).item() == pytest.approx(0.5, rel=1e-6)
    assert math.isinf(mean_exp(torch.tensor([1000.0, 0.0])).item())   # overflow is inf, never NaN
    assert mean_exp(torch.tensor([80.0, 80.0])).item() == pytest.approx(math.exp(80), rel=1e-5)


def test_monte_carlo_kl_to_a_one_component_mixture_is_unbiased():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.tensor([[0.3, -0.5]]), torch.tensor([[-0.4, 0.2]]))
    m, lv = torch.tensor([[0.1, 0.4]]), torch.tensor([[0.3, -0.2]])
    exact = q.kl_to(DiagonalGaussian(m[0], lv[0])).item()
    est = torch.stack([kl_divergence(q, DiagonalGaussianMixture(torch.zeros(1), m, lv), 100) for _ in range(400)])
    sem = est.std().item() / math.sqrt(est.numel())
    assert abs(est.mean().item() - exact) < 4 * sem
    # a Gaussian prior takes the closed form
    assert kl_divergence(q, DiagonalGaussian(m[0], lv[0]), 1).item() == pytest.approx(exact)


def test_responsibility_regulariser_is_minimal_for_uniform_usage():
    c = 8
    uniform = usage_negative_entropy(torch.zeros(50, c))
    assert uniform.item() == pytest.approx(-1.0, abs=1e-6)
    one_hot = usage_negative_entropy(torch.tensor([[0.0] + [-1e4] * (c - 1)]).expand(50, c))
    assert one_hot.item() == pytest.approx(0.0, abs=1e-6)
    for _ in range(20):
        assert usage_negative_entropy(3 * torch.randn(4, 10, c)).item() > uniform.item()
    # any usage: the formula written out in float64 (softmax per draw, mean over draws and batch)
    logits = 2 * torch.randn(5, 7, c, generator=torch.Generator().manual_seed(1))
    lp = logits.double().numpy()
    r = np.exp(lp - lp.max(-1, keepdims=True))
    rbar = (r / r.sum(-1, keepdims=True)).reshape(-1, c).mean(0)
    want = (rbar * np.log(rbar + 1e-8)).sum() / math.log(c)
    assert usage_negative_entropy(logits).item() == pytest.approx(want, abs=1e-6)
    # log C <= 1 (C = 2): no division
    two = usage_negative_entropy(torch.zeros(3, 2))
    assert two.item() == pytest.approx(-math.log(2), abs=1e-6)


def test_fake_kl_terms_reach_the_prior_only_through_samples_weights_only_through_real_term():
    prior = MoGPrior(DZ, 3, learn_weights=True)
    model = tiny_model(prior)
    obj = SoftIntroVAE(model, CFG)
    x = torch.randn(B, DX)
    q = model.encode(x)
    z_r = q.rsample()
    idx, eps = torch.tensor([0, 1, 2, 1, 0]), torch.randn(B, DZ)

    def grads(learns: bool, through_samples: bool):
        model.zero_grad(set_to_none=True)
        live = model.prior()
        sg = live.detach()
        z_fake = live.means[idx] + torch.exp(0.5 * live.logvars[idx]) * eps
        loss, _ = obj.decoder_loss(x, model.decode(z_r.detach()).mean, q.detach(), sg,
                                   model.decode(z_fake if through_samples else z_fake.detach()).mean,
                                   live if learns else None)
        loss.backward()
        return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in prior.named_parameters()}

    fake_only = grads(learns=False, through_samples=True)
    assert fake_only == {"means": True, "logvars": True, "logits": False}
    assert grads(learns=False, through_samples=False) == {"means": False, "logvars": False, "logits": False}
    assert grads(learns=True, through_samples=False)["logits"]            # the real-data term
    assert grads(learns=True, through_samples=True) == {"means": True, "logvars": True, "logits": True}


def test_the_learning_priors_real_data_term_is_beta_kl_times_the_kl_to_it():
    """With the prior learning, L_D gains s * beta_kl * KL(q(z|x) || p), a Monte-Carlo KL to the
    mixture: on a one-component MoG its estimate agrees with the closed-form Gaussian KL (4 standard
    errors over 400 estimates), and the two losses differ by exactly that term (same draws)."""
    prior = MoGPrior(DZ, 1, init_mean_std=0.5, init_logvar=-0.4)
    model = tiny_model(prior)
    obj = SoftIntroVAE(model, SoftIntroConfig(beta_rec=0.7, beta_kl=0.4, beta_neg=1.3, gamma_r=0.01, kl_samples=50))
    s = 1.0 / DX
    x, z_fake = torch.randn(B, DX), torch.randn(B, DZ)
    with torch.no_grad():
        fake = model.decode(z_fake).mean
        q = model.encode(x)
        rec = model.decode(q.rsample()).mean
        live = model.prior()
        sg = live.detach()
        m, lv = live.means[0], live.logvars[0]
        exact = 0.5 * (lv - q.logvar + (q.logvar.exp() + (q.mu - m) ** 2) / lv.exp() - 1).sum(-1).mean().item()
        gaps, estimates = [], []
        for seed in range(400):
            torch.manual_seed(seed)
            fixed, _ = obj.decoder_loss(x, rec, q, sg, fake)
            torch.manual_seed(seed)
            learning, metrics = obj.decoder_loss(x, rec, q, sg, fake, live)
            estimates.append(metrics["prior_kl_real"].item())
            gaps.append((learning - fixed).item() - s * 0.4 * estimates[-1])
    assert max(abs(g) for g in gaps) < 1e-5
    est = torch.tensor(estimates, dtype=torch.float64)
    assert abs(est.mean().item() - exact) < 4 * est.std().item() / math.sqrt(len(est))


class Recorder:
    """Stands in for a player's optimizer: records which parameters hold a gradient at step time."""

    def __init__(self, name, model, log, params):
        self.name, self.model, self.log = name, model, log
        self.param_groups = [{"params": list(params)}]

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        names = {n for n, p in self.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        self.log.append((self.name, names))
        self.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("player", ["decoder", "encoder", "fixed"])
def test_each_step_gives_gradients_only_to_its_players(player):
    prior = MoGPrior(DZ, 3, learn_weights=True)
    with torch.no_grad():
        prior.logvars.normal_()     # distinct variances: clipping leaves them free to learn
    model = tiny_model(prior)
    obj = SoftIntroVAE(model, SoftIntroConfig(beta_neg=1.0, prior_player=player, kl_samples=7, r_ent=1.0))
    log = []
    opts = {k: Recorder(k, model, log, v) for k, v in obj.players().items()}
    obj.step(torch.randn(B, DX), StepContext(0, 0, 1.0, opts))
    enc = {"encoder.lin.weight", "encoder.lin.bias"}
    dec = {"decoder.lin.weight", "decoder.lin.bias"}
    pri = {"prior.means", "prior.logvars", "prior.logits"}
    steps = {}
    for name, names in log:
        steps.setdefault(name, set()).update(names)
    if player == "decoder":
        assert [n for n, _ in log] == ["encoder", "decoder", "prior"]
        assert log[0][1] == enc and log[1][1] == dec | pri
    elif player == "encoder":
        assert [n for n, _ in log] == ["encoder", "prior", "decoder"]
        assert log[0][1] == enc | pri and log[2][1] == dec
    else:
        assert [n for n, _ in log] == ["encoder", "decoder"]
        assert log[0][1] == enc and log[1][1] == dec


def test_clipping_a_mog_with_equal_variances_warns_that_they_stay_fixed():
    model = tiny_model(MoGPrior(DZ, 3))
    obj = SoftIntroVAE(model, SoftIntroConfig(kl_samples=3))
    opts = {k: torch.optim.SGD(v, lr=0.1) for k, v in obj.players().items()}
    with pytest.warns(UserWarning, match="variances stay fixed"):
        obj.step(torch.randn(B, DX), StepContext(0, 0, 1.0, opts))
    torch.testing.assert_close(model.prior.effective_logvars(), torch.zeros(3, DZ))


def test_warmup_lasts_exactly_warmup_steps(tmp_path):
    cfg = sintro_cfg("standard")                     # warmup_steps = 5
    cfg.train.log_every = 1
    runs.train(cfg, tmp_path / "r", progress=False, evaluate_after=False)
    import json
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    vae_steps = [r["step"] for r in recs if r["split"] == "train" and "enc_loss" not in r]
    assert vae_steps == [1, 2, 3, 4, 5]              # steps are logged 1-based, after they ran


def test_warmup_trains_the_plain_vae_loss_without_s():
    model = tiny_model()
    obj = SoftIntroVAE(model, CFG)
    x = torch.randn(B, DX)
    torch.manual_seed(2)
    loss, _ = obj.vae_loss(x)
    torch.manual_seed(2)
    mu, lv = model.encoder.lin(x).chunk(2, -1)
    rec = model.decoder.lin(mu + torch.exp(0.5 * lv) * torch.randn(B, DZ))
    torch.testing.assert_close(loss, 0.7 * by_hand_sq(x, rec).mean() + 0.4 * by_hand_kl(mu, lv).mean())


def sintro_cfg(prior="mog", **sintro):
    return config_from_dict({
        "seed": 0, "data": {"name": "8gaussians", "epoch_size": 10},
        "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [16, 16],
                  "prior": {"kind": prior, "components": 4, "pseudo_init": [0.0, 1.0]}},
        "train": {"objective": "sintro", "max_steps": 12, "batch_size": 32, "lr": 1e-3, "warmup_steps": 5},
        "sintro": {"beta_rec": 0.2, "beta_kl": 0.3, "beta_neg": 0.9, "kl_samples": 5, **sintro},
        "eval": {"toy_grid": 64},
    })


def test_vampprior_is_converted_to_a_mog_at_the_configured_step_and_survives_resume(tmp_path):
    from mixvae.training.checkpoint import load_checkpoint
    cfg = sintro_cfg("vampprior", convert_to_mog_step=4)
    runs.train(cfg, tmp_path / "whole", progress=False, evaluate_after=False)
    whole = runs.open_run(tmp_path / "whole")          # rebuilds the MoG before loading its weights
    assert isinstance(whole.model.prior, MoGPrior) and bool(whole.model.prior.clip_on)
    # stop after 8 steps (converted, clipping on), resume from that checkpoint to the end
    cfg.train.max_steps = 8
    runs.train(cfg, tmp_path / "part", progress=False, evaluate_after=False)
    assert load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt")["objective"]["converted"]
    cfg.train.max_steps = 12
    runs.train(cfg, tmp_path / "part", resume=True, progress=False, evaluate_after=False)
    part = runs.open_run(tmp_path / "part")
    for (k, a), b in zip(whole.model.state_dict().items(), part.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_conversion_takes_the_vampprior_components():
    from mixvae.priors import VampPrior
    cfg = sintro_cfg("vampprior", convert_to_mog_step=0)
    run = runs.prepare(cfg)
    with torch.no_grad():
        mix = run.model.prior()
    ctx = StepContext(0, 0, 0.5, {k: torch.optim.SGD(v, lr=0.0) for k, v in run.objective.players().items()},
                      in_warmup=True)
    assert isinstance(run.model.prior, VampPrior)
    run.objective.step(next(run.data.train_batches(0, 0, 8)), ctx)
    p = run.model.prior
    assert isinstance(p, MoGPrior)
    torch.testing.assert_close(p.means, mix.means)
    torch.testing.assert_close(p.logvars, mix.logvars)


@pytest.mark.parametrize("prior,extra", [("standard", {}), ("mog", {}), ("mog", {"prior_player": "encoder"}),
                                         ("mog", {"prior_player": "fixed"}), ("vampprior", {}),
                                         ("vampprior-data", {}), ("mog", {"r_ent": 10.0}),
                                         ("standard", {"vae_only": True})])
def test_short_runs_of_every_variant_are_finite_and_evaluate(tmp_path, prior, extra):
    cfg = sintro_cfg(prior, **extra)
    cfg.train.lr_milestones = [8]
    out = runs.train(cfg, tmp_path / "r", progress=False, evaluate_after=False)
    assert out["steps"] == 12
    run = runs.open_run(tmp_path / "r")
    res = runs.evaluate(run)
    for k in ("kl", "jsd", "kl_mass", "jsd_mass", "gnelbo"):
        assert math.isfinite(res[k]), k
    assert 0 <= res["jsd_mass"] <= math.log(2) + 1e-9
    assert (tmp_path / "r" / "density.png").exists()
    if prior != "standard":
        assert res["components"] == 4 and 0 <= res["inactive_modes"] <= 4


def test_a_fixed_prior_is_not_clipped_and_rollback_undoes_a_conversion():
    from mixvae.priors import VampPrior
    run = runs.prepare(sintro_cfg("vampprior", convert_to_mog_step=0, prior_player="fixed"))
    opts = {k: torch.optim.SGD(v, lr=0.0) for k, v in run.objective.players().items()}
    x = next(run.data.train_batches(0, 0, 8))
    vamp = run.model.prior
    run.objective.step(x, StepContext(0, 0, 1.0, opts))          # converts, then an adversarial step
    mog = run.model.prior
    assert isinstance(mog, MoGPrior) and not bool(mog.clip_on)     # fixed: the warm-up's prior, unclipped
    torch.testing.assert_close(mog.effective_logvars(), mog.logvars)
    run.objective.load_state_dict({"converted": False})            # a rollback to before the conversion
    assert run.model.prior is vamp and isinstance(run.model.prior, VampPrior)
    assert "prior" in run.objective.players()


def test_an_exponent_of_zero_is_refused_in_one_sentence():
    with pytest.raises(UserError, match=r"sintro\.alpha"):
        sintro_cfg(alpha=0.0)
