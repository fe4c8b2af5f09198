"""2D benchmark metrics: histogram divergences by hand, negative ELBO on a tiny linear VAE, gnELBO."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from mixvae.data.toy2d import BOXES, SAMPLERS
from mixvae.metrics.toy2d import (density_grid, evaluate_2d, gnelbo, grid_points, histogram2d,
                                  histogram_metrics, neg_elbo)
from mixvae.models import VAE, LikelihoodHead
from mixvae.priors import MoGPrior, StandardNormalPrior

BOX, BINS = 2.0, 100
WIDTH = 2 * BOX / BINS
AREA = WIDTH ** 2


def in_bin(i, j, count):
    """``count`` points at the centre of bin (i, j) of the 100 x 100 grid over [-2, 2]^2."""
    centre = torch.tensor([-BOX + WIDTH * (i + 0.5), -BOX + WIDTH * (j + 0.5)], dtype=torch.float64)
    return centre.expand(count, 2)


# ------------------------------------------------------------------------------ histograms
def test_identical_sets_give_zero():
    x = SAMPLERS["8gaussians"](3000, torch.Generator().manual_seed(1))
    m = histogram_metrics(x, x.clone(), BOX)
    assert m["kl_mass"] == 0.0 and m["jsd_mass"] == 0.0
    # the authors' epsilon is not absorbed by small densities: log(d + 1e-14) - log d ~ 1e-14 / d
    assert abs(m["kl"]) < 1e-12 and abs(m["jsd"]) < 1e-12
    assert m["real_in_box"] == m["fake_in_box"] == 3000


def test_hand_computed_values_from_known_bin_masses():
    # real: masses 3/4, 1/4 in bins a, b; fake: 1/2, 1/2 in bins b, c
    real = torch.cat([in_bin(10, 10, 30), in_bin(20, 70, 10)])
    fake = torch.cat([in_bin(20, 70, 20), in_bin(90, 5, 20)])
    m = histogram_metrics(real, fake, BOX)
    P = {"a": 0.75, "b": 0.25, "c": 0.0}
    Q = {"a": 0.0, "b": 0.5, "c": 0.5}
    M = {k: 0.5 * (P[k] + Q[k]) for k in P}
    e = 1e-14

    def authors(p, q):  # density-valued, rows = 100, 0 log 0 = 0
        return sum(p[k] / AREA * (math.log(p[k] / AREA) - math.log(q[k] / AREA + e)) for k in p if p[k] > 0) / BINS

    assert m["kl"] == pytest.approx(authors(P, Q), rel=1e-12)
    assert m["jsd"] == pytest.approx(0.5 * (authors(M, P) + authors(M, Q)), rel=1e-12)
    kl_mass = 0.75 * (math.log(0.75) - math.log(e)) + 0.25 * math.log(0.25 / 0.5)
    assert m["kl_mass"] == pytest.approx(kl_mass, rel=1e-12)
    jsd_mass = 0.5 * (0.75 * math.log(0.75 / 0.375) + 0.25 * math.log(0.25 / 0.375)) \
        + 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.25))
    assert m["jsd_mass"] == pytest.approx(jsd_mass, rel=1e-12)


def test_disjoint_sets_reach_log2_and_points_outside_are_dropped():
    real = torch.cat([in_bin(3, 3, 10), torch.tensor([[5.0, 0.0], [float("nan"), 0.0]], dtype=torch.float64)])
    fake = in_bin(60, 60, 7)
    m = histogram_metrics(real, fake, BOX)
    assert m["real_in_box"] == 10 and m["fake_in_box"] == 7
    assert m["jsd_mass"] == pytest.approx(math.log(2), rel=1e-12)
    assert m["kl_mass"] == pytest.approx(-math.log(1e-14), rel=1e-12)


def test_empty_histogram_gives_nan():
    m = histogram_metrics(in_bin(3, 3, 10), torch.full((5, 2), 10.0), BOX)
    assert m["fake_in_box"] == 0 and all(math.isnan(m[k]) for k in ("kl", "jsd", "kl_mass", "jsd_mass"))


def test_vectorised_equals_a_loop_over_bins_and_density_matches_numpy():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(4000, 2, generator=g) * 0.8
    fake = torch.randn(3000, 2, generator=g) * 0.6 + 0.3
    bins = 30
    rng = [[-BOX, BOX], [-BOX, BOX]]
    dr = np.histogram2d(real[:, 0].numpy(), real[:, 1].numpy(), bins=bins, range=rng, density=True)[0]
    df = np.histogram2d(fake[:, 0].numpy(), fake[:, 1].numpy(), bins=bins, range=rng, density=True)[0]
    assert np.array_equal(histogram2d(real, BOX, bins)[0], dr)
    area = (2 * BOX / bins) ** 2
    kl = jm1 = jm2 = klm = jsdm = 0.0
    for i in range(bins):
        for j in range(bins):
            r, f = dr[i, j], df[i, j]
            mid = 0.5 * (r + f)
            if r > 0:
                kl += r * (math.log(r) - math.log(f + 1e-14))
                klm += r * area * (math.log(r * area) - math.log(f * area if f > 0 else 1e-14))
                jsdm += 0.5 * r * area * math.log(r / mid)
            if f > 0:
                jsdm += 0.5 * f * area * math.log(f / mid)
            if mid > 0:
                jm1 += mid * (math.log(mid) - math.log(r + 1e-14))
                jm2 += mid * (math.log(mid) - math.log(f + 1e-14))
    m = histogram_metrics(real, fake, BOX, bins)
    assert m["kl"] == pytest.approx(kl / bins, rel=1e-9)
    assert m["jsd"] == pytest.approx(0.5 * (jm1 + jm2) / bins, rel=1e-9)
    assert m["kl_mass"] == pytest.approx(klm, rel=1e-9)
    assert m["jsd_mass"] == pytest.approx(jsdm, rel=1e-9)
    assert 0 < m["jsd_mass"] < math.log(2)


# ---------------------------------------------------------------------------- negative ELBO
class LinearEncoder(nn.Module):
    def __init__(self, A, a, logvar):
        super().__init__()
        self.A, self.a, self.logvar = nn.Parameter(A), nn.Parameter(a), logvar

    def forward(self, x):
        mu = x @ self.A.T + self.a
        return mu, self.logvar.expand_as(mu)


class LinearDecoder(nn.Module):
    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)

    def forward(self, z):
        return (z @ self.W.T + self.b).unsqueeze(-2)       # (..., P=1, 2)


def tiny_vae(prior):
    g = torch.Generator().manual_seed(0)
    A, a = torch.randn(2, 2, generator=g), torch.randn(2, generator=g) * 0.3
    W, b = torch.randn(2, 2, generator=g), torch.randn(2, generator=g) * 0.3
    logvar = torch.tensor([-1.0, -0.5])
    head = LikelihoodHead("gaussian", event_dims=1)
    return VAE(LinearEncoder(A, a, logvar), LinearDecoder(W, b), prior, head, (2,)), (A, a, W, b, logvar)


def test_neg_elbo_standard_prior_matches_hand_computation():
    model, (A, a, W, b, logvar) = tiny_vae(StandardNormalPrior(2))
    x = torch.randn(7, 2, dtype=torch.float64)
    A, a, W, b, lv = (t.double() for t in (A, a, W, b, logvar))
    mu = x @ A.T + a
    rec = ((x - (mu @ W.T + b)) ** 2).sum(1)
    kl = 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(1)
    got = neg_elbo(model, x.float(), chunk=3)
    assert got.shape == (7,)
    assert torch.allclose(got.double(), rec + kl, rtol=1e-5, atol=1e-5)


def test_neg_elbo_mog_prior_mc_kl_agrees_with_big_sample_reference():
    torch.manual_seed(0)
    prior = MoGPrior(2, components=5, init_mean_std=1.5, init_logvar=-1.0)
    model, (A, a, W, b, logvar) = tiny_vae(prior)
    x = torch.randn(6, 2)
    mu = x @ A.T + a
    rec = ((x - (mu @ W.T + b)) ** 2).sum(1)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(200_000, 1, 2, dtype=torch.float64)          # (S, N, 2), float64
    lq = (-0.5 * (math.log(2 * math.pi) + logvar + ((z - mu) / std) ** 2)).sum(-1)
    comp = (-0.5 * (math.log(2 * math.pi) + prior.logvars + (z.unsqueeze(-2) - prior.means) ** 2
                    / prior.logvars.exp())).sum(-1) + torch.log_softmax(prior.logits, 0)
    integrand = lq - torch.logsumexp(comp, -1)                               # (S, N)
    reference, spread = integrand.mean(0), integrand.std(0)
    with torch.no_grad():
        reference = (rec + reference).float()
        # S MC samples have standard error spread / sqrt(S); allow 4 standard errors (fixed seeds)
        for s, seed in ((100, 1), (50_000, 2)):
            got = neg_elbo(model, x, kl_samples=s, chunk=10**6, generator=torch.Generator().manual_seed(seed))
            assert ((got - reference).abs() < 4 * spread.float() / math.sqrt(s)).all()


def test_chunking_does_not_change_mc_neg_elbo():
    model, _ = tiny_vae(MoGPrior(2, components=4))
    x = torch.randn(50, 2)
    a = neg_elbo(model, x, kl_samples=16, chunk=16, generator=torch.Generator().manual_seed(3))
    b = neg_elbo(model, x, kl_samples=16, chunk=10_000, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5)


# -------------------------------------------------------------------------- grid quantities
def test_grid_points_layout():
    pts = grid_points(2.0, 5)
    assert pts.shape == (25, 2)
    assert pts[0].tolist() == [-2.0, -2.0] and pts[1].tolist() == [-2.0, -1.0] and pts[5].tolist() == [-1.0, -2.0]


@pytest.mark.parametrize("prior", ["standard", "mog"])
def test_gnelbo_and_density_grid_are_finite(prior):
    p = StandardNormalPrior(2) if prior == "standard" else MoGPrior(2, components=3)
    model, _ = tiny_vae(p)
    real = SAMPLERS["8gaussians"](256, torch.Generator().manual_seed(0))
    v = gnelbo(model, real, BOXES["8gaussians"], grid=32, kl_samples=8)
    assert math.isfinite(v) and v > 0
    d = density_grid(model, 2.0, grid=16, kl_samples=8)
    assert d.shape == (16, 16) and np.isfinite(d).all() and d.sum() == pytest.approx(1.0)


def test_gnelbo_and_density_grid_against_the_closed_form_negative_elbo():
    """With N(0, I) the negative ELBO is closed-form (see above); gnELBO and the density picture are
    then the formulas of ALGORITHMS.md on the box's grid, written out in float64."""
    model, (A, a, W, b, logvar) = tiny_vae(StandardNormalPrior(2))
    A, a, W, b, lv = (t.double() for t in (A, a, W, b, logvar))

    def v(x):                                                   # closed-form negative ELBO, float64
        mu = x @ A.T + a
        return ((x - (mu @ W.T + b)) ** 2).sum(1) + 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(1)

    box, grid = 2.0, 24
    axis = torch.linspace(-box, box, grid, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)   # entry [i, j] at (x_i, y_j)
    real = SAMPLERS["8gaussians"](300, torch.Generator().manual_seed(0)).double()
    on_real, on_grid = v(real), v(pts)
    want = on_real.mean() / (on_grid.sum() + on_real.sum()) * 1e7
    assert gnelbo(model, real.float(), box, grid=grid, kl_samples=8) == pytest.approx(want.item(), rel=1e-5)
    dens = torch.exp(-on_grid)
    np.testing.assert_allclose(density_grid(model, box, grid=grid, kl_samples=8), (dens / dens.sum()).reshape(grid, grid).numpy(),
                               rtol=1e-4, atol=1e-12)


def test_evaluate_2d_small_and_reproducible():
    model, _ = tiny_vae(MoGPrior(2, components=3))
    model.train()
    kw = dict(seed=3, n=500, n_elbo=300, grid=16, kl_samples=8)
    state = torch.get_rng_state()
    a = evaluate_2d(model, SAMPLERS["rings"], BOXES["rings"], **kw)
    assert torch.equal(state, torch.get_rng_state()) and model.training
    b = evaluate_2d(model, SAMPLERS["rings"], BOXES["rings"], **kw)
    assert a == b
    assert {"kl", "jsd", "kl_mass", "jsd_mass", "gnelbo", "n_real", "n_fake", "n_elbo"} <= set(a)
    assert a["n_real"] == a["n_fake"] == 500 and math.isfinite(a["gnelbo"])


def test_25gaussians_draws_25_equally_likely_clusters_of_the_stated_width():
    x = SAMPLERS["25gaussians"](25_000, torch.Generator().manual_seed(0)).double()
    centres = torch.cartesian_prod(*(torch.arange(-2, 3, dtype=torch.float64) * 2 / 2.828,) * 2)
    nearest = torch.cdist(x, centres).argmin(1)
    counts = torch.bincount(nearest, minlength=25).double()
    assert ((counts - 1000).abs() < 5 * (1000 * (1 - 1 / 25)) ** 0.5).all(), counts   # binomial(25 000, 1/25)
    resid = x - centres[nearest]
    assert abs(resid.std().item() - 0.05 / 2.828) < 0.02 * 0.05 / 2.828
    assert resid.mean(0).abs().max() < 5 * 0.05 / 2.828 / 25_000 ** 0.5
    assert x.abs().max() < BOXES["25gaussians"]
