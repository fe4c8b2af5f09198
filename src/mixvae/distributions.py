"""Distributions in torch.distributions' vocabulary: ``log_prob``, ``rsample``, ``sample``.

Everything here is plain maths on tensors and knows nothing about priors, models or training.

Shapes: a distribution over vectors has ``batch_shape`` (any leading dims) and ``event_shape``
(the trailing dims that ``log_prob`` sums over). Log-densities are in nats.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LOG_2PI = math.log(2 * math.pi)


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.flatten(start_dim=t.dim() - event_dims).sum(-1) if event_dims else t


class _Plain(Distribution):
    """Base for the distributions below: no argument validation (we check inputs elsewhere)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, batch_shape, event_shape):
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=False)


# --------------------------------------------------------------------------------------------
# Diagonal Gaussian: posteriors q(z|x), conditional priors p(z1|z2), Gaussian likelihoods.
# --------------------------------------------------------------------------------------------
class DiagonalGaussian(_Plain):
    """N(mu, diag(exp(logvar))) over the last ``event_dims`` dimensions (default 1).

    mu, logvar: (..., *event). ``log_prob(x)`` returns (...,) in nats.
    """

    has_rsample = True
    support = constraints.real

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor, event_dims: int = 1):
        mu, logvar = torch.broadcast_tensors(mu, logvar)
        self.mu, self.logvar, self.event_dims = mu, logvar, event_dims
        split = mu.dim() - event_dims
        super().__init__(mu.shape[:split], mu.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    @property
    def variance(self) -> torch.Tensor:
        return self.logvar.exp()

    @property
    def stddev(self) -> torch.Tensor:
        return (0.5 * self.logvar).exp()

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        eps = torch.randn(torch.Size(sample_shape) + self.mu.shape, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + self.stddev * eps

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """sum_d log N(x_d; mu_d, exp(logvar_d)); x broadcasts against (..., *event)."""
        elem = -0.5 * (LOG_2PI + self.logvar + (x - self.mu) ** 2 * torch.exp(-self.logvar))
        return _sum_event(elem, self.event_dims)

    def entropy(self) -> torch.Tensor:
        return _sum_event(0.5 * (LOG_2PI + 1.0 + self.logvar), self.event_dims)

    def kl_standard_normal(self) -> torch.Tensor:
        """Closed-form KL(self || N(0, I)) = 0.5 sum(mu^2 + var - 1 - logvar), shape (...,)."""
        return _sum_event(0.5 * (self.mu ** 2 + self.logvar.exp() - 1.0 - self.logvar), self.event_dims)

    def kl_to(self, other: "DiagonalGaussian") -> torch.Tensor:
        """Closed-form KL(self || other) between diagonal Gaussians, shape (...,)."""
        elem = 0.5 * (other.logvar - self.logvar
                      + (self.logvar.exp() + (self.mu - other.mu) ** 2) * torch.exp(-other.logvar) - 1.0)
        return _sum_event(elem, self.event_dims)

    def detach(self) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mu.detach(), self.logvar.detach(), self.event_dims)


def standard_normal(dim: int, device=None, dtype=None) -> DiagonalGaussian:
    zeros = torch.zeros(dim, device=device, dtype=dtype)
    return DiagonalGaussian(zeros, zeros)


# --------------------------------------------------------------------------------------------
# Mixture of diagonal Gaussians: MoG priors and VampPriors (the encoder's posteriors at the
# pseudo-inputs) are both this object once their components are computed.
# --------------------------------------------------------------------------------------------
def gaussian_log_prob_matrix(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log N(z_n; m_k, diag(v_k)) for every pair, shape (N, K), in matrix-product form.

    z: (N, D); means, logvars: (K, D). Uses
    sum_d (z_d - m_kd)^2 / v_kd = (z^2) @ (1/v)^T - 2 z @ (m/v)^T + sum_d m_kd^2 / v_kd,
    so the cost is two (N, D) x (D, K) matrix products instead of an (N, K, D) tensor.
    """
    inv_var = torch.exp(-logvars)                                   # (K, D)
    quad = (z * z) @ inv_var.T - 2.0 * (z @ (means * inv_var).T) + (means * means * inv_var).sum(-1)
    quad = quad.clamp_min(0.0)  # rounding can push an exact zero slightly negative
    const = -0.5 * (z.shape[-1] * LOG_2PI + logvars.sum(-1))        # (K,)
    return const - 0.5 * quad


def gaussian_log_prob_naive(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """Same as :func:`gaussian_log_prob_matrix` by broadcasting (N, K, D); a reference for tests."""
    return DiagonalGaussian(means, logvars).log_prob(z.unsqueeze(-2))


class DiagonalGaussianMixture(_Plain):
    """sum_k w_k N(z; m_k, diag(exp(l_k))) with log-weights (K,), means and logvars (K, D).

    ``log_prob(z)`` accepts z of shape (..., D) and returns (...,), always through ``logsumexp``.
    """

    has_rsample = True
    support = constraints.real

    def __init__(self, log_weights: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor):
        self.log_weights = torch.log_softmax(log_weights, dim=-1)  # normalised, whatever was passed
        self.means, self.logvars = means, logvars
        super().__init__((), means.shape[-1:])

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(z; m_k, v_k), shape (..., K)."""
        flat = z.reshape(-1, z.shape[-1])
        out = gaussian_log_prob_matrix(flat, self.means, self.logvars) + self.log_weights
        return out.reshape(*z.shape[:-1], self.num_components)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(z), dim=-1)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component, softmax_k(log w_k + log N(z; m_k, v_k)), (..., K)."""
        return torch.softmax(self.component_log_prob(z), dim=-1)

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n component indices drawn from the weights (no gradient), shape (n,)."""
        return torch.multinomial(self.weights.detach(), n, replacement=True, generator=generator)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draw: a component index without gradient, then m_k + exp(l_k/2) * eps.

        Gradients reach the chosen means and log-variances, never the weights.
        """
        shape = torch.Size(sample_shape)
        idx = self.sample_components(max(1, shape.numel()))[: shape.numel()]
        eps = torch.randn(idx.shape[0], self.means.shape[-1], device=self.means.device, dtype=self.means.dtype)
        z = self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * eps
        return z.reshape(shape + self.event_shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def detach(self) -> "DiagonalGaussianMixture":
        return DiagonalGaussianMixture(self.log_weights.detach(), self.means.detach(), self.logvars.detach())


# --------------------------------------------------------------------------------------------
# Likelihoods p(x|z) over images (event = C, H, W) or vectors (event = D).
# --------------------------------------------------------------------------------------------
class BernoulliLikelihood(_Plain):
    """Independent Bernoulli pixels with logits (..., *event); for binary data in {0, 1}.

    ``log_prob(x) = sum x * logits - softplus(logits)``; x may be any value in [0, 1]
    (a fractional x gives the cross-entropy, as is usual for gray data treated as probabilities).
    """

    support = constraints.unit_interval

    def __init__(self, logits: torch.Tensor, event_dims: int):
        self.logits, self.event_dims = logits, event_dims
        split = logits.dim() - event_dims
        super().__init__(logits.shape[:split], logits.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return _sum_event(x * self.logits - F.softplus(self.logits), self.event_dims)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            p = self.mean.expand(torch.Size(sample_shape) + self.logits.shape)
            return torch.bernoulli(p)


class DiscretizedLogistic(_Plain):
    """Logistic density integrated over the 256 bins of 8-bit data, a proper probability mass.

    Data x in [0, 1] hold 8-bit values k / 255 (k = 0..255). Bin k covers [k/256, (k+1)/256) of the
    unit interval; the first and last bins extend to -inf and +inf so the 256 masses sum to one.
    ``mean`` (..., *event) is clamped to [1/512, 1 - 1/512]; ``log_scale`` is the log of the logistic
    scale. ``log_prob`` is the exact log-probability of the 8-bit values, in nats.
    """

    support = constraints.unit_interval
    BINS = 256

    def __init__(self, mean: torch.Tensor, log_scale: torch.Tensor, event_dims: int):
        mean, log_scale = torch.broadcast_tensors(mean, log_scale)
        half = 0.5 / self.BINS
        self.loc = mean.clamp(half, 1.0 - half)
        self.log_scale, self.event_dims = log_scale, event_dims
        split = mean.dim() - event_dims
        super().__init__(mean.shape[:split], mean.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.round(x * (self.BINS - 1))
        inv_s = torch.exp(-self.log_scale)
        upper = ((k + 1) / self.BINS - self.loc) * inv_s   # a: standardised upper bin edge
        lower = (k / self.BINS - self.loc) * inv_s         # b: standardised lower bin edge
        # sigma(a) - sigma(b) = sigma(a) * sigma(-b) * (1 - exp(b - a)), all in log space.
        width = inv_s / self.BINS                          # a - b > 0
        log_mid = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-width))
        log_first = F.logsigmoid(upper)                    # bin 0: P(X < 1/256)
        log_last = F.logsigmoid(-lower)                    # bin 255: P(X >= 255/256)
        elem = torch.where(k <= 0, log_first, torch.where(k >= self.BINS - 1, log_last, log_mid))
        return _sum_event(elem, self.event_dims)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            k = torch.floor(y * self.BINS).clamp(0, self.BINS - 1)
            return k / (self.BINS - 1)


class GaussianLikelihood(DiagonalGaussian):
    """Gaussian pixels with mean (..., *event) and a fixed or learned log-variance (a density)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, event_dims: int):
        super().__init__(mean, logvar, event_dims)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/S) sum_s exp(log_w_s) along ``dim``, computed with logsumexp."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
