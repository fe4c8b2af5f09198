"""Priors: VampPrior against a naive average of posteriors, MoG, variance clipping."""
import math

import numpy as np
import torch

import mixvae
from mixvae.distributions import DiagonalGaussian
from mixvae.nets.vamp import Encoder
from mixvae.priors import MoGPrior, StandardNormalPrior, VampPrior, count_inactive_modes, soft_clip


def test_vampprior_equals_naive_average_of_encoder_posteriors():
    enc = Encoder((1, 4, 4), latent_dim=3, hidden=[8, 8])
    encode = lambda u: DiagonalGaussian(*enc(u))
    prior = VampPrior(3, components=5, data_shape=(1, 4, 4), init_mean=0.5, init_std=0.3)
    prior.attach_encoder(encode)
    z = torch.randn(7, 3)
    u = prior.pseudo_inputs()
    assert u.min() >= 0 and u.max() <= 1                 # hardtanh to the data range
    naive = []
    for n in range(7):
        dens = [encode(u[k:k + 1]).log_prob(z[n:n + 1]).exp().item() for k in range(5)]
        naive.append(math.log(sum(dens) / 5))
    torch.testing.assert_close(prior.log_prob(z), torch.tensor(naive), rtol=1e-4, atol=1e-4)
    # the prior changes with the encoder: its gradient reaches encoder weights and pseudo-inputs
    prior.log_prob(z).sum().backward()
    assert enc.head.linear.weight.grad.abs().sum() > 0
    assert prior.pseudo_inputs_raw.grad.abs().sum() > 0


def test_vampprior_data_initialisation_and_frozen_pseudo_inputs():
    imgs = torch.rand(4, 1, 2, 2)
    prior = VampPrior(2, 4, (1, 2, 2), init_images=imgs, trainable=False)
    torch.testing.assert_close(prior.pseudo_inputs(), imgs)
    assert not prior.pseudo_inputs_raw.requires_grad


def test_standard_prior_is_unit_gaussian():
    p = StandardNormalPrior(2)
    z = torch.randn(5, 2)
    torch.testing.assert_close(p.log_prob(z), -0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi))
    assert p.sample(3).shape == (3, 2)


def test_mog_prior_weights_responsibilities_and_conversion():
    p = MoGPrior(2, 5, learn_weights=True)
    assert p.weights.shape == (5,) and torch.allclose(p.weights, torch.full((5,), 0.2))
    r = p.responsibilities(torch.randn(9, 2))
    torch.testing.assert_close(r.sum(-1), torch.ones(9))
    q = MoGPrior.from_mixture(p())
    z = torch.randn(6, 2)
    torch.testing.assert_close(q.log_prob(z), p.log_prob(z))


def test_variance_clipping_values_match_the_formula_in_float64():
    """l - softplus_b(l - hi) + softplus_b(lo - l), b = 10 / (|hi - lo| + 1e-8), written out in numpy."""
    lo, hi = -2.0, 1.0
    l = np.array([lo, hi, (lo + hi) / 2, -50.0, 50.0, -2.3, 1.4])
    b = 10.0 / (abs(hi - lo) + 1e-8)
    softplus = lambda x: np.logaddexp(0.0, b * x) / b
    want = l - softplus(l - hi) + softplus(lo - l)
    got = soft_clip(torch.tensor(l, dtype=torch.float32)[:, None], torch.tensor([lo]), torch.tensor([hi]))[:, 0]
    # float32: within one rounding of the input itself (l = -50 ends 1 ulp of 50 away from lo)
    assert (np.abs(got.double().numpy() - want) <= 1.2e-7 * np.maximum(1.0, np.abs(l)) * 2).all()


def test_variance_clipping_is_identity_inside_bounded_outside_and_smooth():
    lo, hi = torch.tensor([-2.0]), torch.tensor([1.0])
    b = 10.0 / 3.0
    inside = torch.linspace(-1.9, 0.9, 200)[:, None]
    dev = (soft_clip(inside, lo, hi) - inside).abs()
    # softplus_b(-d) <= exp(-b d) / b: the deviation decays exponentially with the distance to the bounds
    bound = (torch.exp(-b * (hi - inside)) + torch.exp(-b * (inside - lo))) / b
    assert (dev <= bound + 1e-6).all()
    middle = torch.linspace(-1.25, 0.25, 50)[:, None]     # at least a quarter of the range from either bound
    assert (soft_clip(middle, lo, hi) - middle).abs().max() < 0.03 * 3.0
    margin = math.log(2) * 3.0 / 10   # softplus_b(0) = log 2 / b, b = 10 / |hi - lo|
    far = torch.linspace(-50, 50, 2001)[:, None].requires_grad_(True)
    out = soft_clip(far, lo, hi)
    assert out.min() >= lo - margin - 1e-6 and out.max() <= hi + margin + 1e-6
    (g,) = torch.autograd.grad(out.sum(), far)
    assert torch.isfinite(g).all() and (g >= -1e-6).all() and (g <= 1 + 1e-6).all()   # monotone
    assert (g[1:] - g[:-1]).abs().max() < 0.2      # no jumps in the derivative: smooth
    # hi == lo pins the value
    torch.testing.assert_close(soft_clip(torch.tensor([[3.0]]), torch.tensor([0.5]), torch.tensor([0.5])), torch.tensor([[0.5]]))


def test_mog_clipping_uses_stored_range():
    p = MoGPrior(2, 3)
    with torch.no_grad():
        p.logvars.copy_(torch.tensor([[-1.0, 0.0], [0.0, 0.5], [1.0, 1.0]]))
    p.start_variance_clipping()
    torch.testing.assert_close(p.clip_lo, torch.tensor([-1.0, 0.0]))
    with torch.no_grad():
        p.logvars.fill_(10.0)
    assert (p().logvars <= torch.tensor([1.0, 1.0]) + 0.1).all()


def test_inactive_modes_threshold():
    w = torch.tensor([0.5, 0.45, 0.04, 0.01])   # 1/C^2 = 0.0625
    assert count_inactive_modes(w) == 2
    assert count_inactive_modes(w, usage=torch.tensor([0.7, 0.01, 0.2, 0.09])) == 3


def test_prior_init_options_of_the_config_take_effect():
    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    kw = dict(data=x, components=8, latent_dim=3, hidden=[8])
    assert torch.equal(mixvae.build("vae", prior="mog", mog_init_std=0.0, **kw).prior.means, torch.zeros(8, 3))
    wide = mixvae.build("vae", prior="mog", mog_init_std=5.0, **kw).prior.means
    assert 3.0 < wide.std().item() < 8.0                                    # means ~ N(0, 5^2)
    exact = mixvae.build("vae", prior="vampprior-data", pseudo_noise=0.0, **kw).prior.pseudo_inputs_raw
    assert set(exact.unique().tolist()) <= {0.0, 1.0}                       # training images as they are
    noisy = mixvae.build("vae", prior="vampprior-data", pseudo_noise=0.1, **kw).prior.pseudo_inputs_raw
    assert 0.05 < (noisy - exact).std().item() < 0.2                        # the same images + N(0, 0.1^2)


def test_one_pass_vampprior_encoding_gives_the_log_weights_of_separate_passes():
    """VAE.log_weights encodes x and the pseudo-inputs in one pass; its KL term is exactly
    log q(z|x) - log p(z) with p(z) = (1/K) sum_k N(z; encoder(u_k)) written out with scipy."""
    from scipy import stats
    from scipy.special import logsumexp
    x = (torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    model = mixvae.build("vae", data=x, prior="vampprior", components=4, latent_dim=3, hidden=[16])
    model.eval()
    with torch.no_grad():
        torch.manual_seed(2)
        log_px, kl = model.log_weights(x, 7)
        torch.manual_seed(2)
        q = model.encode(x)
        z = q.rsample((7,))                                                    # the same draws
        pk = model.encode(model.prior.pseudo_inputs())                         # (K, D) posteriors at u_k
    zz = z.double().numpy()                                                    # (S, N, D)
    comp = np.stack([stats.norm.logpdf(zz, pk.mu[k].double().numpy(), np.exp(0.5 * pk.logvar[k].double().numpy())).sum(-1)
                     for k in range(4)], -1)                                   # (S, N, K)
    log_p = logsumexp(comp, axis=-1) - math.log(4)
    log_q = stats.norm.logpdf(zz, q.mu.double().numpy(), np.exp(0.5 * q.logvar.double().numpy())).sum(-1)
    np.testing.assert_allclose(kl.double().numpy(), log_q - log_p, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(log_px, model.decode(z).log_prob(x))
