"""Distributions against closed forms and scipy."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from mixvae.distributions import (BernoulliLikelihood, DiagonalGaussian, DiagonalGaussianMixture,
                                  DiscretizedLogistic, gaussian_log_prob_matrix, kl_divergence, log_mean_exp,
                                  standard_normal)

torch.set_default_dtype(torch.float32)


def gaussian_log_prob_naive(z, means, logvars):
    """The (N, K) matrix of :func:`gaussian_log_prob_matrix` by plain broadcasting over (N, K, D)."""
    return DiagonalGaussian(means, logvars).log_prob(z.unsqueeze(-2))


def test_diagonal_gaussian_log_prob_matches_scipy():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    x = torch.randn(5, 3)
    got = DiagonalGaussian(mu, logvar).log_prob(x)
    want = [stats.multivariate_normal(mu[i].numpy(), np.diag(logvar[i].exp().numpy())).logpdf(x[i].numpy()) for i in range(5)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_kl_to_standard_normal_closed_form_and_unbiased_estimate():
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-0.3, 0.4, -1.2]])
    q = DiagonalGaussian(mu, logvar)
    closed = kl_divergence(q, standard_normal(3)).item()         # the registered closed form
    # scipy: KL between Gaussians in closed form
    var = logvar.exp()
    want = 0.5 * float((var + mu ** 2 - 1 - logvar).sum())
    assert closed == pytest.approx(want, rel=1e-6)
    # single-sample estimates log q(z) - log N(z; 0, I) average to the closed form
    z = q.sample((200_000,))
    est = q.log_prob(z) - DiagonalGaussian(torch.zeros(3), torch.zeros(3)).log_prob(z)
    sem = est.std().item() / math.sqrt(est.numel())
    assert abs(est.mean().item() - closed) < 4 * sem


def test_log_prob_of_a_reparameterized_draw_from_its_noise_matches_scipy_and_has_no_mean_gradient():
    """log q(mu + sigma eps) from eps equals scipy's log-density at the drawn point, for every
    event size; its gradient is exactly 0 for mu and -1/2 per dimension and draw for logvar."""
    mu, logvar = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    q = DiagonalGaussian(mu, logvar)
    eps = torch.randn(5, 4, 3)
    got = q.log_prob_reparameterized(eps)
    z = q.reparameterize(eps).detach()
    want = [[stats.multivariate_normal(mu[i].detach().numpy(), np.diag(logvar[i].detach().exp().numpy()))
             .logpdf(z[s, i].numpy()) for i in range(4)] for s in range(5)]
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    g_mu, g_lv = torch.autograd.grad(got.sum(), (mu, logvar), allow_unused=True)
    assert g_mu is None                                   # mu is not even in the graph
    torch.testing.assert_close(g_lv, torch.full_like(logvar, -0.5 * 5))
    images = DiagonalGaussian(torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3), event_dims=3)
    eps = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(images.log_prob_reparameterized(eps), images.log_prob(images.reparameterize(eps)))


def test_monte_carlo_kl_uses_the_noise_that_drew_the_samples():
    """kl_divergence's estimate with given noise is mean_s [log q(z_s) - log p(z_s)] computed the
    plain way, to float32 rounding."""
    q = DiagonalGaussian(torch.randn(6, 2), torch.randn(6, 2))
    p = DiagonalGaussianMixture(torch.randn(3), torch.randn(3, 2), torch.randn(3, 2))
    eps = torch.randn(50, 6, 2)
    z = q.reparameterize(eps)
    want = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl_divergence(q, p, noise=eps), want, rtol=1e-5, atol=1e-5)


def test_diagonal_gaussian_entropy_matches_torch():
    mu, logvar = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    want = torch.distributions.Normal(mu, (0.5 * logvar).exp()).entropy()
    torch.testing.assert_close(DiagonalGaussian(mu, logvar).entropy(), want.sum(-1))
    torch.testing.assert_close(DiagonalGaussian(mu, logvar, event_dims=2).entropy(), want.sum((-2, -1)))

def test_matrix_form_equals_naive():
    z, m, lv = torch.randn(50, 7), torch.randn(11, 7), torch.randn(11, 7)
    torch.testing.assert_close(gaussian_log_prob_matrix(z, m, lv), gaussian_log_prob_naive(z, m, lv), rtol=1e-4, atol=1e-4)


def test_mixture_log_prob_matches_scipy_mixture():
    k, d = 6, 3
    logits, m, lv = torch.randn(k), torch.randn(k, d), 0.5 * torch.randn(k, d)
    mix = DiagonalGaussianMixture(logits, m, lv)
    z = 2 * torch.randn(40, d)
    w = torch.softmax(logits, 0).numpy()
    comps = np.stack([stats.multivariate_normal(m[j].numpy(), np.diag(lv[j].exp().numpy())).logpdf(z.numpy()) for j in range(k)])
    want = logsumexp(comps + np.log(w)[:, None], axis=0)
    np.testing.assert_allclose(mix.log_prob(z).numpy(), want, rtol=1e-4, atol=1e-4)
    r = mix.responsibilities(z)
    torch.testing.assert_close(r.sum(-1), torch.ones(40))
    # leading sample dimensions are kept
    assert mix.log_prob(z.reshape(4, 10, d)).shape == (4, 10)


def test_mixture_log_prob_is_stable_far_from_all_components():
    mix = DiagonalGaussianMixture(torch.zeros(3), torch.zeros(3, 2), torch.full((3, 2), -6.0))
    lp = mix.log_prob(torch.tensor([[30.0, -30.0]]))
    assert torch.isfinite(lp).all() and lp.item() < -1e5


def test_mixture_rsample_gradients_reach_components_not_weights():
    logits = torch.zeros(4, requires_grad=True)
    m = torch.randn(4, 2, requires_grad=True)
    lv = torch.zeros(4, 2, requires_grad=True)
    z = DiagonalGaussianMixture(logits, m, lv).rsample((64,))
    z.sum().backward()
    assert m.grad.abs().sum() > 0 and lv.grad.abs().sum() > 0
    assert logits.grad is None or logits.grad.abs().sum() == 0


def test_mixture_samples_have_the_mixture_moments():
    torch.manual_seed(1)
    logits = torch.log(torch.tensor([0.2, 0.8]))
    m, lv = torch.tensor([[-2.0], [1.0]]), torch.log(torch.tensor([[0.25], [1.0]]))
    z = DiagonalGaussianMixture(logits, m, lv).sample((200_000,))
    mean = 0.2 * -2 + 0.8 * 1
    var = 0.2 * (0.25 + 4) + 0.8 * (1 + 1) - mean ** 2
    assert z.mean().item() == pytest.approx(mean, abs=0.01)
    assert z.var().item() == pytest.approx(var, rel=0.01)


def test_discretized_logistic_is_a_probability_mass_and_matches_scipy():
    mean, log_scale = torch.tensor([0.3, 0.001, 0.97]), torch.tensor([-2.5, -4.5, -1.0])
    values = torch.arange(256) / 255.0
    d = DiscretizedLogistic(mean[:, None].expand(3, 256), log_scale[:, None].expand(3, 256), event_dims=0)
    lp = d.log_prob(values.expand(3, 256))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3), rtol=1e-4, atol=1e-4)
    loc = mean.clamp(1 / 512, 1 - 1 / 512).double().numpy()
    s = log_scale.double().exp().numpy()
    for i in range(3):
        edges = np.arange(257) / 256.0
        cdf = stats.logistic.cdf(edges, loc=loc[i], scale=s[i])
        cdf[0], cdf[-1] = 0.0, 1.0
        with np.errstate(divide="ignore"):
            want = np.log(np.diff(cdf))
        ok = np.isfinite(want) & (want > -30)
        np.testing.assert_allclose(lp[i].numpy()[ok], want[ok], rtol=1e-3, atol=1e-3)


def test_discretized_logistic_keeps_its_accuracy_in_the_far_tails():
    """Every bin, also those whose mass is e^-90: the float64 reference takes the difference of two
    CDFs in log space on the side of the mean where it does not cancel."""
    mean, log_scale = torch.tensor([0.3, 0.001, 0.97]), torch.tensor([-2.5, -4.5, -1.0])
    values = torch.arange(256) / 255.0
    lp = DiscretizedLogistic(mean[:, None].expand(3, 256), log_scale[:, None].expand(3, 256), event_dims=0).log_prob(
        values.expand(3, 256)).double().numpy()
    loc, s = mean.clamp(1 / 512, 1 - 1 / 512).double().numpy(), log_scale.double().exp().numpy()
    edges = np.arange(257) / 256.0
    for i in range(3):
        lo, hi = edges[:-1], edges[1:]
        right = lo > loc[i]                       # the whole bin right of the mean: survival functions
        a, b = stats.logistic.logsf(lo, loc[i], s[i]), stats.logistic.logsf(hi, loc[i], s[i])
        c, d = stats.logistic.logcdf(hi, loc[i], s[i]), stats.logistic.logcdf(lo, loc[i], s[i])
        with np.errstate(divide="ignore"):
            want = np.where(right, a + np.log1p(-np.exp(b - a)), c + np.log1p(-np.exp(d - c)))
        want[0] = stats.logistic.logcdf(edges[1], loc[i], s[i])          # the edge bins reach -inf / +inf
        want[-1] = stats.logistic.logsf(edges[-2], loc[i], s[i])
        assert want.min() < -80 or i != 1                                 # the far tails are in the test
        np.testing.assert_allclose(lp[i], want, rtol=1e-5, atol=1e-4)


def test_bernoulli_log_prob_matches_scipy():
    logits = torch.randn(4, 1, 3, 3)
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5))
    got = BernoulliLikelihood(logits, event_dims=3).log_prob(x)
    p = torch.sigmoid(logits).double().numpy()
    want = stats.bernoulli.logpmf(x.numpy(), p).reshape(4, -1).sum(-1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)


def test_log_mean_exp_is_stable():
    w = torch.tensor([[-1000.0, -1001.0], [-1000.0, -1003.0]])
    want = np.log(np.mean(np.exp(np.array([[0.0, -1], [0, -3]])), axis=0)) - 1000
    np.testing.assert_allclose(log_mean_exp(w, 0).numpy(), want, rtol=1e-6)


def test_blocked_mixture_log_prob_equals_logsumexp_of_components_with_gradients():
    from mixvae.distributions import mixture_log_prob
    torch.manual_seed(3)
    z = torch.randn(1000, 3, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(7, dtype=torch.float64, requires_grad=True)
    m = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    lv = (0.3 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_()
    ref = torch.logsumexp(gaussian_log_prob_naive(z, m, lv) + torch.log_softmax(logits, 0), -1)
    got = mixture_log_prob(z, torch.log_softmax(logits, 0), m, lv, block=50)          # blocks of 7 rows: many blocks, a ragged last one
    torch.testing.assert_close(got, ref)
    w = torch.randn(1000, dtype=torch.float64)
    g_ref = torch.autograd.grad((ref * w).sum(), (z, logits, m, lv))
    g_got = torch.autograd.grad((got * w).sum(), (z, logits, m, lv))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda *t: mixture_log_prob(t[0], torch.log_softmax(t[1], 0), t[2], t[3], block=20),
                                    (z[:30].detach().requires_grad_(), logits, m, lv))


def test_the_suite_validates_arguments_and_a_test_can_opt_out(request):
    # conftest switches validation on: a NaN parameter fails where the distribution is built
    nan = torch.tensor([0.0, math.nan])
    for build in (lambda: DiagonalGaussian(nan, torch.zeros(2)), lambda: BernoulliLikelihood(nan, 1),
                  lambda: DiagonalGaussianMixture(torch.zeros(2), nan[:, None], torch.zeros(2, 1))):
        with pytest.raises(ValueError, match="constraint"):
            build()
    request.getfixturevalue("unvalidated")           # what a test that feeds NaN on purpose uses
    assert DiagonalGaussian(nan, torch.zeros(2)).log_prob(torch.zeros(2)).isnan()
