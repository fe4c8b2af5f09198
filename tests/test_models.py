"""Models of the VampPrior paper (VAE, HVAE, convHVAE, PixelHVAE) with every prior, and the latent statistics."""
import math

import pytest
import torch
import torch.nn as nn

from mixvae.app import runs
from mixvae.config import config_from_dict
from mixvae.distributions import DiagonalGaussian
from mixvae.metrics.latent import active_units, mode_usage, posterior_mean_variance
from mixvae.metrics.likelihood import bits_per_dim, log_likelihood
from mixvae.models import VAE, LikelihoodHead
from mixvae.objectives.base import StepContext
from mixvae.priors import MoGPrior, StandardNormalPrior


def tiny(arch, prior, data="digits", **model):
    return config_from_dict({
        "seed": 0, "data": {"name": data},
        "model": {"arch": arch, "hidden": [24], "latent_dim": 3, "lower_latent_dim": 2,
                  "prior": {"kind": prior, "components": 4}, **model},
        "train": {"epochs": 1, "batch_size": 50},
    })


@pytest.mark.parametrize("arch", ["vae", "hvae", "convhvae", "pixelhvae"])
@pytest.mark.parametrize("prior", ["standard", "mog", "vampprior", "vampprior-data"])
def test_every_model_with_every_prior_trains_and_evaluates(arch, prior):
    run = runs.prepare(tiny(arch, prior))
    model, data = run.model, run.data
    x = next(data.train_batches(0, 0, 20))
    log_px, kl = model.log_weights(x, 3)
    assert log_px.shape == kl.shape == (3, 20)
    assert torch.isfinite(log_px).all() and torch.isfinite(kl).all()
    assert model.sample(5).shape == (5, *data.shape)
    assert model.reconstruct(x[:5]).shape == (5, *data.shape)
    # one ELBO step moves every trainable parameter that the loss reaches
    params = run.objective.players()["model"]
    before = [p.detach().clone() for p in params]
    opt = {"model": torch.optim.Adam(params, lr=1e-3)}
    out = run.objective.step(x, StepContext(0, 0, 1.0, opt))
    assert math.isfinite(out["loss"])
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert moved == len(params)
    ll = log_likelihood(model, x[:4], num_samples=16, chunk=20)
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    # the importance-sampled estimate is log mean exp of the log weights that it draws; by Jensen
    # it is at least their mean, the ELBO estimated from the same 16 draws (per image, no slack)
    model.eval()
    torch.manual_seed(5)
    log_px, kl = model.log_weights(x[:4], 16, prior=model.prior())
    log_w = log_px - kl                                                   # (16, 4)
    torch.manual_seed(5)
    ll = log_likelihood(model, x[:4], num_samples=16, chunk=10_000)
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(16), rtol=1e-5, atol=1e-4)
    assert (ll >= log_w.mean(0)).all()


def test_hvae_reports_active_units_per_level_and_eval_json_keys(tmp_path):
    run = runs.prepare(tiny("hvae", "vampprior"))
    out = runs.evaluate(run, ll_samples=8)
    assert set(out["active_units_by_level"]) == {"z1", "z2"}
    assert out["active_units"] == sum(out["active_units_by_level"].values())
    assert out["likelihood"] == "logistic"          # digits: 17 gray levels, a discretised logistic
    for key in ("test_ll", "test_ll_samples", "components", "inactive_modes"):
        assert key in out


class ConstructedEncoder(nn.Module):
    """mu = x @ W with W chosen so that latent d has posterior-mean variance scales[d]^2."""

    def __init__(self, scales):
        super().__init__()
        self.scales = torch.tensor(scales)

    def forward(self, x):
        mu = x[:, : len(self.scales)] * self.scales
        return mu, torch.zeros_like(mu)


class Identity(nn.Module):
    def forward(self, z):
        return z.unsqueeze(-2)


def test_active_units_on_a_constructed_encoder():
    # x ~ N(0, I): Var(mu_d) = scales_d^2 = 1, 0.25, 0.0121, 0.0081, 0 -> 3 units above 0.01
    scales = [1.0, 0.5, 0.11, 0.09, 0.0]
    model = VAE(ConstructedEncoder(scales), Identity(), StandardNormalPrior(5),
                LikelihoodHead("gaussian", 1), (5,))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(20000, 5, generator=g) for _ in range(5)]
    var = posterior_mean_variance(model, batches)["z"]
    torch.testing.assert_close(var, torch.tensor(scales) ** 2, rtol=0.03, atol=2e-4)
    assert active_units({"z": var}) == {"z": 3}


def test_mode_usage_counts_a_mode_nobody_uses():
    # three components; every posterior sits on component 0 or 1, never near component 2
    prior = MoGPrior(1, 3, learn_weights=True)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-5.0], [5.0], [50.0]]))
        prior.logvars.zero_()

    class Enc(nn.Module):
        def forward(self, x):
            return x, torch.full_like(x, -8.0)

    model = VAE(Enc(), Identity(), prior, LikelihoodHead("gaussian", 1), (1,))
    x = torch.cat([torch.full((30, 1), -5.0), torch.full((10, 1), 5.0)])
    usage = mode_usage(model, [x])
    torch.testing.assert_close(usage["usage"], torch.tensor([0.75, 0.25, 0.0]), atol=1e-4, rtol=0)
    assert usage["inactive_modes"] == 1 and usage["inactive_by_weight"] == 0


def test_frey_faces_log_likelihood_in_bits_per_dim(fake_data):
    root, imgs = fake_data.get("frey-faces")
    cfg = tiny("vae", "standard", data="frey-faces")
    cfg.data.test_subset = 10
    run = runs.prepare(cfg, root)
    assert run.data.kind == "8bit" and run.model.likelihood.kind == "logistic"
    assert (len(run.data.train), len(run.data.valid), len(run.data.test)) == (len(imgs) - 400, 200, 10)
    out = runs.evaluate(run, ll_samples=4)
    assert out["bits_per_dim"] == pytest.approx(bits_per_dim(out["test_ll"], 28 * 20))
    assert out["bits_per_dim"] == pytest.approx(-out["test_ll"] / (28 * 20 * math.log(2)))
    # an untrained discretised logistic cannot beat 8 bits/dim by much nor be absurdly worse
    assert 3.0 < out["bits_per_dim"] < 12.0


def test_posterior_is_a_diagonal_gaussian_with_the_encoders_parameters():
    run = runs.prepare(tiny("vae", "standard"))
    x = next(run.data.train_batches(0, 0, 8))
    q = run.model.encode(x)
    assert isinstance(q, DiagonalGaussian) and q.mu.shape == (8, 3)
    assert q.logvar.min() >= -6 and q.logvar.max() <= 2   # hardtanh(-6, 2) of the paper
