"""GAMIX-VAE objective: each loss term by hand, which player gets which gradient, short runs."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixvae.app import runs
from mixvae.config import config_from_dict
from mixvae.objectives.gamix import GamixConfig
from mixvae.distributions import DiagonalGaussian, DiagonalGaussianMixture, kl_divergence, standard_normal
from mixvae.objectives.base import StepContext
from mixvae.objectives.gamix import (batch_mixture_kl, discriminator_loss, generator_loss, l1_reconstruction,
                                     moment_matching_kl, variance_regulariser)


def test_l1_and_adversarial_terms_by_hand():
    x, y = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[0.5, 1.0], [1.0, 1.0]])
    assert l1_reconstruction(x, y).item() == pytest.approx((0.5 + 0 + 1 + 2) / 4)
    real, fake = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 3.0]])
    sig = torch.sigmoid
    want_d = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    assert discriminator_loss(real, fake).item() == pytest.approx(want_d.item(), rel=1e-6)
    assert generator_loss(fake).item() == pytest.approx(-torch.log(sig(fake)).mean().item(), rel=1e-6)
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(
        (F.relu(1 - real).mean() + F.relu(1 + fake).mean()).item())
    assert generator_loss(fake, "hinge").item() == pytest.approx(-fake.mean().item())


def test_moment_matching_kl_is_zero_exactly_for_zero_mean_unit_variance_batches():
    torch.manual_seed(0)
    mu = torch.randn(64, 5)
    mu = (mu - mu.mean(0)) / mu.std(0, unbiased=False)          # batch mean 0, biased variance 1
    assert moment_matching_kl(mu).item() == pytest.approx(0.0, abs=1e-5)
    # individual means are far from 0, yet nothing pulls them: only the batch distribution counts
    assert mu.abs().max() > 1.5
    # by hand for a shifted, scaled batch
    shifted = 0.5 * mu + 2.0
    zm, zv = shifted.mean(0), shifted.var(0, unbiased=False)
    want = 0.5 * (zv + zm ** 2 - 1 - torch.log(zv)).sum()
    torch.testing.assert_close(moment_matching_kl(shifted), want)
    assert moment_matching_kl(shifted).item() > 1.0


def test_moment_matching_kl_is_finite_for_a_batch_of_one():
    from mixvae.objectives.gamix import MOMENT_VARIANCE_FLOOR
    mu = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)       # batch variance exactly 0
    value = moment_matching_kl(mu)
    floor = torch.tensor(MOMENT_VARIANCE_FLOOR)
    want = 0.5 * (floor + mu.detach() ** 2 - 1 - torch.log(floor)).sum()
    assert torch.isfinite(value)
    torch.testing.assert_close(value, want)
    value.backward()
    torch.testing.assert_close(mu.grad, mu.detach())                 # d/d zm of zm^2 / 2; nothing through zv
    # identical means in a larger batch are the same case; a variance above the floor is untouched
    assert torch.isfinite(moment_matching_kl(torch.ones(8, 3)))
    spread = torch.tensor([[0.0], [2e-3]])                           # mean 1e-3, variance 1e-6
    torch.testing.assert_close(moment_matching_kl(spread), torch.tensor(0.5 * (1e-6 + 1e-6 - 1 - math.log(1e-6))))


def test_variance_regulariser_is_minimal_at_unit_variance():
    lv = torch.zeros(3, 4, requires_grad=True)
    value = variance_regulariser(lv)
    assert value.item() == 0.0
    value.backward()
    assert lv.grad.abs().max() == 0
    for v in (-2.0, -0.1, 0.1, 3.0):
        assert variance_regulariser(torch.full((3, 4), v)).item() > 0
    torch.testing.assert_close(variance_regulariser(torch.full((2, 3), math.log(2.0))),
                               torch.tensor(3 * (2.0 - math.log(2.0) - 1)))


def test_batch_mixture_kl_vanishes_when_the_prior_is_the_batch_mixture():
    torch.manual_seed(0)
    mu, lv = torch.randn(6, 2), 0.3 * torch.randn(6, 2)
    q = DiagonalGaussian(mu, lv)
    same = DiagonalGaussianMixture(torch.zeros(6), mu, lv)
    assert abs(batch_mixture_kl(q, same, 50).item()) < 1e-5
    far = DiagonalGaussianMixture(torch.zeros(1), torch.full((1, 2), 4.0), torch.zeros(1, 2))
    assert batch_mixture_kl(q, far, 50).item() > 5


def test_batch_mixture_kl_matches_numerical_integration_in_one_dimension():
    """KL(q_B || N(0, 1)) for a batch of three 1-D posteriors, against scipy.integrate.quad of
    q_B log(q_B / p): within 4 standard errors of the Monte-Carlo estimate (its spread also by quad)."""
    from scipy import integrate, stats
    mu, lv = torch.tensor([[-1.5], [0.2], [2.0]]), torch.tensor([[-1.0], [0.0], [-2.0]])
    sd = (0.5 * lv).exp().double().numpy()[:, 0]
    m = mu.double().numpy()[:, 0]
    q_b = lambda z: np.mean([stats.norm.pdf(z, m[i], sd[i]) for i in range(3)], axis=0)
    f = lambda z: np.log(q_b(z)) - stats.norm.logpdf(z)
    want = integrate.quad(lambda z: q_b(z) * f(z), -12, 12, limit=200)[0]
    second = integrate.quad(lambda z: q_b(z) * f(z) ** 2, -12, 12, limit=200)[0]
    samples = 20_000
    se = math.sqrt(max(second - want ** 2, 0.0) / (samples * 3))
    torch.manual_seed(4)
    std_normal = DiagonalGaussianMixture(torch.zeros(1), torch.zeros(1, 1), torch.zeros(1, 1))
    got = batch_mixture_kl(DiagonalGaussian(mu, lv), std_normal, samples).item()
    assert abs(got - want) < 4 * se, (got, want, se)


def tiny_cfg(mode="gamix", **gamix):
    return config_from_dict({
        "seed": 0, "data": {"name": "digits", "scale": "symmetric"},
        "model": {"arch": "resnetv2", "channels": [8, 4], "latent_dim": 6},
        "train": {"objective": "gamix", "max_steps": 6, "batch_size": 16, "lr": 1e-3, "betas": [0.5, 0.999]},
        "gamix": {"mode": mode, "disc_width": 8, **gamix},
        "eval": {"fid_samples": 10},
    })


class Recorder:
    def __init__(self, name, params, modules, log):
        self.name, self.modules, self.log = name, modules, log
        self.param_groups = [{"params": params}]

    def step(self):
        names = {f"{m}.{n}" for m, mod in self.modules.items() for n, p in mod.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
        self.log.append((self.name, names))
        for mod in self.modules.values():
            mod.zero_grad(set_to_none=True)


def test_each_player_gets_only_its_own_gradient():
    run = runs.prepare(tiny_cfg())
    obj = run.objective
    log = []
    opts = {k: Recorder(k, v, obj.modules(), log) for k, v in obj.players().items()}
    obj.step(next(run.data.train_batches(0, 0, 16)), StepContext(0, 0, 1.0, opts))
    got = dict(log)
    assert got["discriminator"] and all(n.startswith("discriminator.") for n in got["discriminator"])
    assert got["autoencoder"] and all(n.startswith("model.") for n in got["autoencoder"])
    assert any(".decoder." in n for n in got["autoencoder"]) and any(".encoder." in n for n in got["autoencoder"])


def test_both_losses_by_hand_with_separate_passes():
    cfg = tiny_cfg(disc_dropout=0.0)
    cfg.model.bn_mode = "frozen"        # no batch statistics: one pass over [x, x_hat] equals two passes
    run = runs.prepare(cfg)
    obj, c = run.objective, cfg.gamix
    x = next(run.data.train_batches(0, 0, 16))
    got = {}

    class Keep:
        def __init__(self, name, params):
            self.name, self.param_groups = name, [{"params": params}]

        def step(self):
            got[self.name] = [p.grad.clone() for p in self.param_groups[0]["params"]]

    opts = {k: Keep(k, v) for k, v in obj.players().items()}
    torch.manual_seed(4)
    obj.step(x, StepContext(0, 0, 1.0, opts))
    # by hand, with the same noise
    torch.manual_seed(4)
    m, D = run.model, obj.discriminator
    mu, logvar = m.encoder(x)
    x_hat = m.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))[:, 0]
    bce = F.binary_cross_entropy_with_logits
    d_real, d_fake = D(x), D(x_hat.detach())
    loss_d = c.w_adv * (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake)))
    zm, zv = mu.mean(0), mu.var(0, unbiased=False)
    g = D(x_hat)
    loss_g = (c.w_rec * (x - x_hat).abs().mean() + 0.5 * (zv + zm ** 2 - 1 - torch.log(zv)).sum()
              + c.w_var * (logvar.exp() - logvar - 1).sum(1).mean() + c.w_adv * bce(g, torch.ones_like(g)))
    want_d = torch.autograd.grad(loss_d, obj.players()["discriminator"])
    want_g = torch.autograd.grad(loss_g, obj.players()["autoencoder"])
    for a, b in zip(got["discriminator"], want_d):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got["autoencoder"], want_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_disc_start_and_vae_mode_skip_the_discriminator():
    run = runs.prepare(tiny_cfg(disc_start=3))
    opts = {k: torch.optim.Adam(v, 1e-3) for k, v in run.objective.players().items()}
    x = next(run.data.train_batches(0, 0, 16))
    before = [p.detach().clone() for p in run.objective.players()["discriminator"]]
    m0 = run.objective.step(x, StepContext(0, 0, 1.0, opts))
    assert "disc" not in m0
    assert all(torch.equal(a, b) for a, b in zip(before, run.objective.players()["discriminator"]))
    assert "disc" in run.objective.step(x, StepContext(3, 0, 1.0, opts))
    vae = runs.prepare(tiny_cfg("vae"))
    assert set(vae.objective.players()) == {"autoencoder"}
    q = vae.model.encode(x)
    torch.testing.assert_close(vae.objective.latent_kl(q), kl_divergence(q, standard_normal(q.mu.shape[-1])).mean())


def test_adaptive_weight_balances_the_last_layer_gradients():
    """weight = ||grad_W rec|| / (||grad_W adv|| + 1e-4) at the decoder's output layer W, so that the
    weighted adversarial gradient there is as large as the reconstruction gradient; the autoencoder
    then steps on rec + KL terms + w_adv * weight * adv (checked by hand, with the same noise)."""
    cfg = tiny_cfg(adaptive_weight=True, adv_loss="hinge", disc_dropout=0.0)
    run = runs.prepare(cfg)
    obj, c, m, D = run.objective, cfg.gamix, run.model, run.objective.discriminator
    x = next(run.data.train_batches(0, 0, 16))
    got = {}

    class Keep:
        def __init__(self, name, params):
            self.name, self.param_groups = name, [{"params": params}]

        def step(self):
            got[self.name] = [p.grad.clone() for p in self.param_groups[0]["params"]]

    opts = {k: Keep(k, v) for k, v in obj.players().items()}
    torch.manual_seed(4)
    out = obj.step(x, StepContext(0, 0, 1.0, opts))
    torch.manual_seed(4)
    mu, logvar = m.encoder(x)
    x_hat = m.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))[:, 0]
    rec = c.w_rec * (x - x_hat).abs().mean()
    adv = -D(torch.cat([x, x_hat]))[16:].mean()                   # hinge generator loss (one pass, as in step)
    W = m.decoder.out.weight                                      # the output convolution
    g_rec = torch.autograd.grad(rec, W, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, W, retain_graph=True)[0]
    assert g_adv.norm() > 1e-2                                    # the 1e-4 in the denominator is negligible
    weight = g_rec.norm() / (g_adv.norm() + 1e-4)
    assert 0 < weight < 1e4                                       # inside the clamp: the ratio itself
    assert out["adv_weight"] == pytest.approx(weight.item(), rel=1e-5)
    torch.testing.assert_close((out["adv_weight"] * g_adv).norm(), g_rec.norm(), rtol=1e-3, atol=0)
    zm, zv = mu.mean(0), mu.var(0, unbiased=False)
    loss_g = (rec + c.w_kl * 0.5 * (zv + zm ** 2 - 1 - torch.log(zv)).sum()
              + c.w_var * (logvar.exp() - logvar - 1).sum(1).mean() + c.w_adv * weight.detach() * adv)
    want = torch.autograd.grad(loss_g, obj.players()["autoencoder"])
    # float32 rounding; biases ahead of a BatchNorm have an exact gradient of 0 and get rounding noise
    # of the size of the other gradients, hence an absolute tolerance relative to the largest one
    scale = max(b.abs().max().item() for b in want)
    for a, b in zip(got["autoencoder"], want):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6 * scale)


@pytest.mark.parametrize("mode,prior", [("gamix", "standard"), ("gamix", "mog"), ("vae", "standard")])
def test_short_runs_train_and_evaluate(tmp_path, mode, prior):
    cfg = tiny_cfg(mode)
    cfg.model.prior.kind, cfg.model.prior.components = prior, 3
    with_fid = prior == "standard" and mode == "gamix"     # FID costs seconds: once is enough here
    cfg.eval.fid_samples = 10 if with_fid else 0
    summary = runs.train(cfg, tmp_path / "r", progress=False)
    for k in (("fid_samples", "fid_reconstructions") if with_fid else ()) + ("rec_l1", "psnr"):
        assert math.isfinite(summary[k]), k
    stats = summary["latent_stats"]
    assert len(stats["sigma2"]) == 6 and stats["sigma2_avg"] > 0
    for name in ("samples.png", "reconstructions.png", "interpolations.png", "eval.json"):
        assert (tmp_path / "r" / name).exists()
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["psnr"] == summary["psnr"]
    reloaded = runs.open_run(tmp_path / "r")
    assert ("discriminator" in reloaded.objective.modules()) == (mode == "gamix")
