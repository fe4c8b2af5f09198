"""Float32 accuracy of the mixture log-densities against an independent float64 reference.

The reference is the plain direct sum -(D log 2pi + sum l + sum (z - m)^2 / v) / 2 in float64, a
log-sum-exp over components, and the gradients written out by hand. Tolerances (requirement of
issue 17): values within 1e-3 nats or 1e-5 of their size, whichever is larger; gradients within
1e-3 + 1e-5 x the largest entry of the same gradient (a norm-wise relative error: an entry that is
the sum of large terms of both signs is not asked for more digits than the terms carry);
responsibilities within 1e-4.
"""
import math

import pytest
import torch

from mixvae.distributions import (DiagonalGaussian, DiagonalGaussianMixture, _block_log2sumexp2,
                                  _gaussian_linear_form, gaussian_log_prob_matrix, mixture_log_prob)

from .test_distributions import gaussian_log_prob_naive

LOG_2PI = math.log(2 * math.pi)


def reference(z, logits, means, logvars, cot):
    """float64: log p(z_n) (N,), the component terms (N, K), and the gradients of sum_n cot_n log p(z_n)
    with respect to z, means, logvars and logits."""
    z, m, l, cot = z.double(), means.double(), logvars.double(), cot.double()
    lw = torch.log_softmax(logits.double(), -1)
    inv = torch.exp(-l)
    vals, terms, g_z = [], [], []
    g_m, g_l, g_w = torch.zeros_like(m), torch.zeros_like(l), torch.zeros_like(lw)
    step = max(1, (1 << 18) // m.numel())
    for i in range(0, z.shape[0], step):
        d = z[i:i + step, None, :] - m                                       # (B, K, D)
        a = lw - 0.5 * (m.shape[1] * LOG_2PI + l.sum(-1) + (d * d * inv).sum(-1))
        v = torch.logsumexp(a, -1)
        r = torch.exp(a - v[:, None]) * cot[i:i + step, None]               # cot_n x responsibility
        rd = r[..., None] * d * inv                                          # r (z - m) / v
        vals.append(v)
        terms.append(a)
        g_z.append(-rd.sum(1))
        g_m += rd.sum(0)
        g_l += 0.5 * (r[..., None] * (d * d * inv - 1)).sum(0)
        g_w += r.sum(0)
    g_logits = g_w - torch.exp(lw) * g_w.sum()
    return torch.cat(vals), torch.cat(terms), (torch.cat(g_z), g_m, g_l, g_logits)


def mixture_case(dim, k, logvar, scale=10.0, rows=32, seed=0):
    """Means of scale ``scale``; half the rows drawn from the components (the hard case: near a
    narrow component), half 0.3 away from one; a random cotangent."""
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(k, dim, generator=g)
    if logvar == "mixed":
        logvars = torch.empty(k, dim).uniform_(-20.0, 10.0, generator=g)
    else:
        logvars = torch.full((k, dim), float(logvar))
    logits = torch.randn(k, generator=g)
    pick = torch.randint(k, (rows,), generator=g)
    z = means[pick] + torch.exp(0.5 * logvars[pick]) * torch.randn(rows, dim, generator=g)
    half = rows // 2
    z[half:] = means[pick[half:]] + 0.3 * torch.randn(rows - half, dim, generator=g)
    return z, logits, means, logvars, torch.randn(rows, generator=g)


def assert_values(got, want):
    err = (got.double() - want).abs()
    allowed = 1e-3 + 1e-5 * want.abs()
    assert bool((err <= allowed).all()), f"value error {float((err / allowed).max()):.3g} x the tolerance"


def assert_gradient(got, want, name):
    err = (got.double() - want).abs().max()
    allowed = 1e-3 + 1e-5 * want.abs().max()
    assert err <= allowed, f"{name}: gradient error {float(err):.3g} > {float(allowed):.3g}"


def ours(z, logits, means, logvars, cot):
    z, logits, means, logvars = (t.clone().requires_grad_() for t in (z, logits, means, logvars))
    value = DiagonalGaussianMixture(logits, means, logvars).log_prob(z)
    grads = torch.autograd.grad((value * cot).sum(), (z, means, logvars, logits))
    return value.detach(), grads


GRID = [(dim, k, logvar) for dim in (2, 40, 512) for k in (10, 500, 1000) for logvar in (-20.0, 10.0)]
GRID += [(2, 500, "mixed"), (40, 1000, "mixed"), (512, 10, "mixed")]   # log-variances uniform in [-20, 10]


@pytest.mark.parametrize("dim, k, logvar", GRID)
def test_float32_mixture_log_prob_and_gradients_match_float64(dim, k, logvar):
    z, logits, means, logvars, cot = mixture_case(dim, k, logvar, rows=32 if dim < 512 else 12)
    want, terms, want_grads = reference(z, logits, means, logvars, cot)
    got, grads = ours(z, logits, means, logvars, cot)
    assert got.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    assert_values(got, want)
    for g, w, name in zip(grads, want_grads, ("z", "means", "logvars", "logits")):
        assert_gradient(g, w, name)
    # the component terms and the responsibilities (the matrix API)
    mix = DiagonalGaussianMixture(logits, means, logvars)
    assert_values(mix.component_log_prob(z), terms)
    # responsibilities inherit the rounding of the float32 terms (2.4e-4 nats at |term| = 3000)
    assert float((mix.responsibilities(z).double() - torch.softmax(terms, -1)).abs().max()) <= 1e-4


@pytest.mark.parametrize("dim, k", [(2, 10), (40, 500)])
def test_component_log_prob_gradients_match_float64(dim, k):
    z, logits, means, logvars, _ = mixture_case(dim, k, "mixed", rows=16)
    weights = torch.randn(16, k, generator=torch.Generator().manual_seed(1))
    leaves = [t.clone().requires_grad_() for t in (z, means, logvars)]
    got = torch.autograd.grad((gaussian_log_prob_matrix(*leaves) * weights).sum(), leaves)
    ref = [t.double().requires_grad_() for t in (z, means, logvars)]
    want = torch.autograd.grad((gaussian_log_prob_naive(*ref) * weights.double()).sum(), ref)
    for g, w, name in zip(got, want, ("z", "means", "logvars")):
        assert_gradient(g, w, name)


def test_issue_cases_are_accurate():
    # from issue 17: D=40, K=500, means of scale 5, logvar -6 (0.10 nats off before) and D=32, K=10,
    # logvar -10 (1.8 nats off before, means of scale 5)
    for dim, k, scale, logvar in [(40, 500, 5.0, -6.0), (32, 10, 5.0, -10.0), (32, 10, 1.0, -10.0)]:
        g = torch.Generator().manual_seed(0)
        means = scale * torch.randn(k, dim, generator=g)
        logvars = torch.full((k, dim), logvar)
        logits = 0.1 * torch.randn(k, generator=g)
        pick = torch.randint(k, (200,), generator=g)
        z = means[pick] + math.exp(0.5 * logvar) * torch.randn(200, dim, generator=g)
        want, _, _ = reference(z, logits, means, logvars, torch.ones(200))
        got = DiagonalGaussianMixture(logits, means, logvars).log_prob(z)
        assert float((got.double() - want).abs().max()) < 1e-4


def test_monte_carlo_kl_to_a_narrow_mog_in_2d():
    # q is one of 64 components at log-variance -20: KL(q || p) = log 64. In float32 the matrix form
    # gave anything from -228 to +33 (a negative KL overflows Soft-IntroVAE's exponential).
    g = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(64, 2, generator=g)
    logvars = torch.full((64, 2), -20.0)
    prior = DiagonalGaussianMixture(torch.zeros(64), means, logvars)
    q = DiagonalGaussian(means[3], torch.full((2,), -20.0))
    z = q.mu + q.stddev * torch.randn(100, 2, generator=g)
    kl32 = (q.log_prob(z) - prior.log_prob(z)).mean().item()
    q64 = DiagonalGaussian(q.mu.double(), q.logvar.double())
    want, _, _ = reference(z, torch.zeros(64), means, logvars, torch.ones(100))
    kl64 = (q64.log_prob(z.double()) - want).mean().item()
    assert abs(kl32 - kl64) < 0.01
    assert abs(kl64 - math.log(64)) < 0.01


def test_certified_calls_are_the_plain_matrix_form_exactly():
    # moderate variances: the float32 matrix form of before, to the bit; the log-sum-exp of the
    # mixture to rounding (its blocks run in base 2, exp2 being about 3x faster than exp)
    torch.manual_seed(0)
    z, means, logvars = torch.randn(300, 8), torch.randn(20, 8), 0.3 * torch.randn(20, 8)
    logw = torch.log_softmax(torch.randn(20), 0)
    weights, const, _ = _gaussian_linear_form(means, logvars, logw)
    plain = torch.addmm(const, torch.cat([z * z, z], -1), weights.T)
    assert torch.equal(gaussian_log_prob_matrix(z, means, logvars, logw), plain)
    torch.testing.assert_close(mixture_log_prob(z, logw, means, logvars, block=1000), torch.logsumexp(plain, -1),
                               rtol=1e-6, atol=1e-6)


def test_direct_pairs_path_in_float64_has_exact_gradients():
    # tol < 0: every term that can matter goes by the direct sum (the path of stiff components)
    torch.manual_seed(2)
    z = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(5, dtype=torch.float64, requires_grad=True)
    m = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    lv = (0.5 * torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
    ref = torch.logsumexp(gaussian_log_prob_naive(z, m, lv) + torch.log_softmax(logits, 0), -1)
    got = mixture_log_prob(z, torch.log_softmax(logits, 0), m, lv, block=30, tol=-1.0)   # blocks of 6 rows
    torch.testing.assert_close(got, ref)
    w = torch.randn(40, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (z, logits, m, lv)),
                    torch.autograd.grad((ref * w).sum(), (z, logits, m, lv))):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(
        lambda *t: mixture_log_prob(t[0], torch.log_softmax(t[1], 0), t[2], t[3], block=20, tol=-1.0),
        (z[:12].detach().requires_grad_(), logits, m, lv))
    torch.testing.assert_close(gaussian_log_prob_matrix(z, m, lv, tol=-1.0), gaussian_log_prob_naive(z, m, lv))


@pytest.mark.parametrize("dim, k, logvar, scale", [(40, 500, -6.0, 5.0),    # evaluated in float64
                                                   (2, 10, 0.0, 1.0)])      # the float32 matrix form
def test_non_finite_rows_do_not_cost_the_other_rows_their_accuracy(dim, k, logvar, scale):
    z, logits, means, logvars, _ = mixture_case(dim, k, logvar, scale=scale)
    want, _, _ = reference(z, logits, means, logvars, torch.ones(32))
    z[0] = float("nan")
    z[1, 0] = float("inf")
    got = DiagonalGaussianMixture(logits, means, logvars).log_prob(z)
    assert not torch.isfinite(got[:2]).any()
    assert_values(got[2:], want[2:])


@pytest.mark.parametrize("dtype, floored", [(torch.float64, True), (torch.float32, False)])
def test_block_logsumexp_matches_torch_on_infinities(dtype, floored):
    # the blocks run in bits: log2 sum 2^(a / ln 2) x ln 2 is logsumexp(a), infinities and NaN included
    a = torch.tensor([[0.0, -1.0, -500.0], [-math.inf, -math.inf, -math.inf], [1.0, math.inf, 0.0],
                      [math.nan, 0.0, 1.0], [-80.0, -79.0, -200.0]], dtype=dtype)
    want = torch.logsumexp(a, -1)
    floor = math.log2(torch.finfo(dtype).tiny) + 0.5 if floored else None
    got, _ = _block_log2sumexp2(a / math.log(2), floor)
    torch.testing.assert_close(got * math.log(2), want, equal_nan=True)


@pytest.mark.parametrize("tol", [1e-4, -1.0])     # the matrix form; every relevant term direct (float64)
def test_gradient_subsets_empty_rows_and_one_component(tol):
    # only the log-weights learn (the backward's weight products without the feature ones), no rows,
    # and a single component: each against autograd through the plain direct form in float64
    g = torch.Generator().manual_seed(7)
    for n, k in [(30, 6), (0, 6), (30, 1)]:
        z, means = torch.randn(n, 3, generator=g), torch.randn(k, 3, generator=g)
        logvars, logits = 0.3 * torch.randn(k, 3, generator=g), torch.randn(k, generator=g)
        cot = torch.randn(n, generator=g)
        leaf = logits.clone().requires_grad_()
        got = mixture_log_prob(z, torch.log_softmax(leaf, 0), means, logvars, block=40, tol=tol)
        (g_got,) = torch.autograd.grad((got * cot).sum(), leaf)
        ref_leaf = logits.double().requires_grad_()
        ref = torch.logsumexp(gaussian_log_prob_naive(z.double(), means.double(), logvars.double())
                              + torch.log_softmax(ref_leaf, 0), -1)
        (g_ref,) = torch.autograd.grad((ref * cot.double()).sum(), ref_leaf)
        assert got.shape == (n,)
        torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g_got.double(), g_ref, rtol=1e-5, atol=1e-5)
        zl = z.clone().requires_grad_()
        mixture_log_prob(zl, torch.log_softmax(logits, 0), means, logvars, block=40, tol=tol).sum().backward()
        assert zl.grad.shape == z.shape and torch.isfinite(zl.grad).all()

