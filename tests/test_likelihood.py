"""Importance-sampled log-likelihood on a linear-Gaussian VAE whose log p(x) is known exactly.

Decoder x = W z + b + e, e ~ N(0, s2 I); prior N(0, I)  =>  p(x) = N(b, W W^T + s2 I) and the
exact posterior is N(S W^T (x - b) / s2, S) with S = (I + W^T W / s2)^-1.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import stats

from mixvae.metrics.likelihood import log_likelihood
from mixvae.models import VAE, LikelihoodHead
from mixvae.priors import StandardNormalPrior

D_X, D_Z, S2 = 5, 2, 0.3


class LinearDecoder(nn.Module):
    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)

    def forward(self, z):
        return (z @ self.W.T + self.b).unsqueeze(-2)     # (..., P=1, D_X)


class ExactPosterior(nn.Module):
    """(mu, logvar) of q(z|x); ``shift``/``widen`` make it deliberately wrong."""

    def __init__(self, W, b, shift=0.0, widen=0.0):
        super().__init__()
        self.W, self.b, self.shift, self.widen = W, b, shift, widen
        self.cov = torch.linalg.inv(torch.eye(D_Z) + W.T @ W / S2)

    def forward(self, x):
        mu = (x - self.b) @ self.W @ self.cov.T / S2 + self.shift
        logvar = torch.log(torch.diagonal(self.cov)).expand_as(mu) + self.widen
        return mu, logvar


def make(shift=0.0, widen=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, b = torch.randn(D_X, D_Z, generator=g), torch.randn(D_X, generator=g)
    # a diagonal exact posterior needs W^T W diagonal: orthogonalise the columns
    W = torch.linalg.qr(W).Q * torch.tensor([1.5, 0.8])
    head = LikelihoodHead("gaussian", event_dims=1, gaussian_logvar=math.log(S2))
    model = VAE(ExactPosterior(W, b, shift, widen), LinearDecoder(W, b), StandardNormalPrior(D_Z), head, (D_X,))
    x = torch.randn(20, D_X, generator=g) * 2
    exact = stats.multivariate_normal(b.numpy(), (W @ W.T + S2 * torch.eye(D_X)).numpy()).logpdf(x.numpy())
    return model, x, torch.tensor(exact, dtype=torch.float32)


def test_exact_posterior_gives_exact_log_likelihood():
    model, x, exact = make()
    est = log_likelihood(model, x, num_samples=100)
    assert (est - exact).abs().max() < 0.05


def test_wrong_proposal_approaches_from_below_as_samples_grow():
    torch.manual_seed(0)
    model, x, exact = make(shift=0.7, widen=0.5)
    gaps = []
    for s in (1, 10, 100, 2000):
        reps = torch.stack([log_likelihood(model, x, num_samples=s, chunk=5000) for _ in range(5)])
        gaps.append((exact - reps.mean(0)).mean().item())
    assert all(g > -0.01 for g in gaps)                 # a lower bound in expectation
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]          # tightening as S grows
    assert gaps[-1] < 0.05 and gaps[0] > 0.3


def test_chunking_does_not_change_the_estimate():
    """Whatever the chunk size, every image gets exactly num_samples log weights, no pass evaluates
    more than ``chunk`` (image, sample) pairs, and the estimate is log mean exp of the weights that
    image got (exact up to float rounding; only the random draws differ between chunkings)."""
    model, x, _ = make(shift=0.3)
    calls = []
    inner = model.log_weights

    def recording(xb, num_samples, **kw):
        log_px, kl = inner(xb, num_samples, **kw)
        calls.append((xb, log_px - kl))
        return log_px, kl

    model.log_weights = recording
    n, s = x.shape[0], 64
    for chunk in (10_000, 300, 64, 7, 1):
        calls.clear()
        est = log_likelihood(model, x, num_samples=s, chunk=chunk)
        assert est.shape == (n,)
        per_image = [[] for _ in range(n)]
        for xb, log_w in calls:
            assert log_w.shape == (log_w.shape[0], xb.shape[0]) and log_w.numel() <= chunk
            for j, row in enumerate(xb):
                per_image[int((x == row).all(1).nonzero())].append(log_w[:, j])
        for i, parts in enumerate(per_image):
            w = torch.cat(parts)
            assert w.numel() == s, (chunk, i)
            torch.testing.assert_close(est[i], torch.logsumexp(w, 0) - math.log(s), rtol=0, atol=1e-5)


def test_elbo_step_on_the_exact_posterior_is_the_exact_log_likelihood():
    """With the exact posterior, log p(x|z) + log p(z) - log q(z|x) = log p(x) for every draw z: the
    ELBO objective's logged rec + kl is -mean log p(x) (scipy), and its loss weighs kl by beta."""
    from mixvae.objectives.base import StepContext
    from mixvae.objectives.elbo import ELBO
    model, x, exact = make(seed=3)
    objective = ELBO(model)
    opt = {"model": torch.optim.SGD(model.parameters(), lr=0.0)}      # the step changes nothing
    torch.manual_seed(0)
    full = objective.step(x, StepContext(step=0, epoch=0, warmup=1.0, optimizers=opt))
    assert abs(full["rec"] + full["kl"] + exact.double().mean().item()) < 1e-4 * exact.abs().mean().item()
    assert full["beta"] == 1.0 and full["loss"] == pytest.approx(full["rec"] + full["kl"], rel=1e-6)
    warm = objective.step(x, StepContext(step=1, epoch=0, warmup=0.3, optimizers=opt))
    assert warm["beta"] == 0.3 and warm["loss"] == pytest.approx(warm["rec"] + 0.3 * warm["kl"], rel=1e-6)
    assert abs(warm["rec"] + warm["kl"] + exact.double().mean().item()) < 1e-4 * exact.abs().mean().item()


class _TwoLevel:
    """z2 ~ N(0, I), z1|z2 ~ N(a z2, s1 I), x|z1 ~ N(W z1 + b, s I), W with orthogonal columns:
    both exact posteriors are diagonal Gaussians (the closed forms below) and
    p(x) = N(b, (a^2 + s1) W W^T + s I)."""

    def __init__(self, seed=0, a=0.8, s1=0.5):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.linalg.qr(torch.randn(D_X, D_Z, generator=g)).Q * torch.tensor([1.5, 0.8])
        self.b, self.a, self.s1 = torch.randn(D_X, generator=g), a, s1
        w2 = (self.W ** 2).sum(0)                                             # W^T W = diag(w2)
        self.var2 = 1.0 / (1.0 + a * a * w2 / (s1 * w2 + S2))                 # q(z2|x)
        self.var1 = 1.0 / (1.0 / s1 + w2 / S2)                                # q(z1|x, z2)
        self.w2 = w2

    def encoder2(self, x):
        mu = self.var2 * self.a * ((x - self.b) @ self.W) / (self.s1 * self.w2 + S2)
        return mu, torch.log(self.var2).expand_as(mu)

    def encoder1(self, x, z2):
        mu = self.var1 * (self.a * z2 / self.s1 + ((x - self.b) @ self.W) / S2)
        return mu, torch.log(self.var1).expand_as(mu)

    def prior1(self, z2):
        return self.a * z2, torch.full_like(z2, math.log(self.s1))

    def decoder(self, z1, z2):
        return (z1 @ self.W.T + self.b).unsqueeze(-2)


class _Fn(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *args):
        return self.f(*args)


def test_hierarchical_log_weights_on_an_exact_two_level_posterior_are_exact():
    """HVAE.log_weights: with both exact posteriors, log p(x|z1) - [log q(z1, z2|x) - log p(z1, z2)]
    is log p(x) for every draw (scipy), and the importance-sampled estimate is too."""
    from mixvae.models import HVAE
    t = _TwoLevel()
    head = LikelihoodHead("gaussian", event_dims=1, gaussian_logvar=math.log(S2))
    model = HVAE(_Fn(t.encoder2), _Fn(t.encoder1), _Fn(t.prior1), _Fn(t.decoder), StandardNormalPrior(D_Z), head,
                 (D_X,))
    x = torch.randn(12, D_X, generator=torch.Generator().manual_seed(5)) * 2
    cov = (t.a ** 2 + t.s1) * t.W @ t.W.T + S2 * torch.eye(D_X)
    exact = stats.multivariate_normal(t.b.numpy(), cov.numpy()).logpdf(x.numpy())
    torch.manual_seed(0)
    log_px, kl = model.log_weights(x, 9)
    np.testing.assert_allclose((log_px - kl).double().numpy(), np.broadcast_to(exact, (9, 12)), rtol=1e-5, atol=2e-4)
    np.testing.assert_allclose(log_likelihood(model, x, num_samples=20).numpy(), exact, rtol=1e-5, atol=2e-4)
