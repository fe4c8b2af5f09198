"""Distributions in torch.distributions' vocabulary: ``log_prob``, ``rsample``, ``sample``.

Everything here is plain maths on tensors and knows nothing about priors, models or training.

Shapes: a distribution over vectors has ``batch_shape`` (any leading dims) and ``event_shape``
(the trailing dims that ``log_prob`` sums over). Log-densities are in nats.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LOG_2PI = math.log(2 * math.pi)


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.flatten(start_dim=t.dim() - event_dims).sum(-1) if event_dims else t


# --------------------------------------------------------------------------------------------
# Noise for a batch of examples that may be split over several processes.
# --------------------------------------------------------------------------------------------
_SHARD = [0, 1]   # (this process's share, number of shares) of the batch whose noise is drawn


@contextmanager
def batch_shard(rank: int, world: int):
    """Inside the block, :func:`example_noise` draws noise for ``world`` times the local batch and
    keeps share ``rank``: the noise of an example is what one process with the global batch would
    draw, and every process consumes the same random numbers (set by the training loop)."""
    old = list(_SHARD)
    _SHARD[:] = [rank, world]
    try:
        yield
    finally:
        _SHARD[:] = old


def example_noise(shape, example_dim: int, draw=torch.randn, **kw) -> torch.Tensor:
    """``draw(shape)`` (e.g. standard normals) where dimension ``example_dim`` indexes the examples
    of the (local) batch; see :func:`batch_shard`."""
    rank, world = _SHARD
    if world == 1:
        return draw(tuple(shape), **kw)
    full = list(shape)
    n = full[example_dim]
    full[example_dim] = n * world
    return draw(tuple(full), **kw).narrow(example_dim, rank * n, n)


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
        """mu + sigma * eps, shape sample_shape + mu.shape; the examples are the last batch (or, with
        no batch dimensions, the last sample) dimension."""
        shape = torch.Size(sample_shape) + self.mu.shape
        eps = example_noise(shape, len(shape) - len(self.event_shape) - 1, dtype=self.mu.dtype, device=self.mu.device)
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
def _gaussian_linear_form(means: torch.Tensor, logvars: torch.Tensor, offset: torch.Tensor | None):
    """(W, c) with log N(z; m_k, diag(v_k)) + offset_k = [z^2, z] @ W_k + c_k; W (K, 2D), c (K,).

    From sum_d (z_d - m_kd)^2 / v_kd = (z^2) . (1/v_k) - 2 z . (m_k/v_k) + sum_d m_kd^2 / v_kd:
    W_k = [-1/(2 v_k), m_k / v_k] and c_k = -(D log 2pi + sum_d l_kd + sum_d m_kd^2 / v_kd) / 2.
    """
    inv_var = torch.exp(-logvars)                                            # (K, D)
    scaled = means * inv_var
    const = -0.5 * (means.shape[-1] * LOG_2PI + logvars.sum(-1) + (means * scaled).sum(-1))
    if offset is not None:
        const = const + offset
    return torch.cat([-0.5 * inv_var, scaled], dim=-1), const


def gaussian_log_prob_matrix(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor,
                             offset: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z_n; m_k, diag(v_k)) (+ offset_k) for every pair, shape (N, K).

    z: (N, D); means, logvars: (K, D); offset: (K,) (e.g. log-weights). One (N, 2D) x (2D, K)
    matrix product plus a bias (see :func:`_gaussian_linear_form`), never an (N, K, D) tensor.
    """
    weights, const = _gaussian_linear_form(means, logvars, offset)
    return torch.addmm(const, torch.cat([z * z, z], dim=-1), weights.T)


class _LinearLogSumExp(torch.autograd.Function):
    """logsumexp_k (F @ W^T + c)_nk, shape (N,), computed in row blocks that stay in cache.

    Forward and backward never hold the (N, K) matrix: each block of rows is formed, reduced and
    dropped; the backward recomputes the block and turns it into softmax weights in place. Memory
    is O(N + K * 2D) beyond the inputs, and each element is touched a few times while in cache,
    which is what makes Monte-Carlo KLs to a mixture (100 samples x batch x K) cheap on a CPU.
    """

    @staticmethod
    def forward(ctx, feats, weights, const, rows):
        out = feats.new_empty(feats.shape[0])
        for i in range(0, feats.shape[0], rows):
            out[i:i + rows] = torch.logsumexp(torch.addmm(const, feats[i:i + rows], weights.T), dim=-1)
        ctx.save_for_backward(feats, weights, const, out)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad):
        feats, weights, const, out = ctx.saved_tensors
        need_f, need_w, need_c = ctx.needs_input_grad[:3]
        g_feats = torch.empty_like(feats) if need_f else None
        g_weights = torch.zeros_like(weights) if need_w else None
        g_const = torch.zeros_like(const) if need_c else None
        for i in range(0, feats.shape[0], ctx.rows):
            f = feats[i:i + ctx.rows]
            r = torch.addmm(const, f, weights.T)
            r.sub_(out[i:i + ctx.rows, None]).exp_().mul_(grad[i:i + ctx.rows, None])   # dL/d logits
            if need_f:
                torch.mm(r, weights, out=g_feats[i:i + ctx.rows])
            if need_w:
                g_weights.addmm_(r.T, f)
            if need_c:
                g_const.add_(r.sum(0))
        return g_feats, g_weights, g_const, None


def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor,
                     logvars: torch.Tensor, block: int = 1 << 17) -> torch.Tensor:
    """log sum_k w_k N(z_n; m_k, diag(v_k)) = logsumexp_k(log w_k + log N(z_n; m_k, v_k)), shape (N,).

    Equal to ``logsumexp(gaussian_log_prob_matrix(z, means, logvars, log_weights), -1)``, computed
    in blocks of about ``block`` (row, component) entries with a hand-written backward (see
    :class:`_LinearLogSumExp`). z: (N, D); log_weights (K,); means, logvars (K, D).
    """
    weights, const = _gaussian_linear_form(means, logvars, log_weights)
    rows = max(1, block // max(1, means.shape[0]))
    return _LinearLogSumExp.apply(torch.cat([z * z, z], dim=-1), weights, const, rows)


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
        out = gaussian_log_prob_matrix(flat, self.means, self.logvars, offset=self.log_weights)
        return out.reshape(*z.shape[:-1], self.num_components)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k(log w_k + log N(z; m_k, v_k)), (..., D) -> (...,)."""
        lp = mixture_log_prob(z.reshape(-1, z.shape[-1]), self.log_weights, self.means, self.logvars)
        return lp.reshape(z.shape[:-1])

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component, softmax_k(log w_k + log N(z; m_k, v_k)), (..., K)."""
        return torch.softmax(self.component_log_prob(z), dim=-1)

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n component indices drawn from the weights (no gradient), shape (n,)."""
        w = self.weights.detach()
        return example_noise((n,), 0, lambda shape: torch.multinomial(w, shape[0], replacement=True, generator=generator))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draw: a component index without gradient, then m_k + exp(l_k/2) * eps.

        Gradients reach the chosen means and log-variances, never the weights.
        """
        shape = torch.Size(sample_shape)
        idx = self.sample_components(max(1, shape.numel()))[: shape.numel()]
        eps = example_noise((idx.shape[0], self.means.shape[-1]), 0, device=self.means.device, dtype=self.means.dtype)
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
        """sum x * logits - softplus(logits) over the event, as one fused binary cross-entropy."""
        x = x.expand_as(self.logits) if x.shape != self.logits.shape else x
        return -_sum_event(F.binary_cross_entropy_with_logits(self.logits, x, reduction="none"), self.event_dims)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            p = self.mean.expand(torch.Size(sample_shape) + self.logits.shape)
            return torch.bernoulli(p)


class DiscretizedLogistic(_Plain):
    """Logistic density integrated over the L bins of L-level data (L = 256 for 8-bit images), a
    proper probability mass.

    Data x in [0, 1] hold the values k / (L - 1), k = 0..L-1. Bin k covers [k/L, (k+1)/L) of the
    unit interval; the first and last bins extend to -inf and +inf so the L masses sum to one.
    ``mean`` (..., *event) is clamped to [1/(2L), 1 - 1/(2L)]; ``log_scale`` is the log of the
    logistic scale. ``log_prob`` is the exact log-probability of the L-level values, in nats.
    """

    support = constraints.unit_interval

    def __init__(self, mean: torch.Tensor, log_scale: torch.Tensor, event_dims: int, bins: int = 256):
        mean, log_scale = torch.broadcast_tensors(mean, log_scale)
        self.bins = int(bins)
        half = 0.5 / self.bins
        self.loc = mean.clamp(half, 1.0 - half)
        self.log_scale, self.event_dims = log_scale, event_dims
        split = mean.dim() - event_dims
        super().__init__(mean.shape[:split], mean.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        L = self.bins
        k = torch.round(x * (L - 1))
        inv_s = torch.exp(-self.log_scale)
        upper = ((k + 1) / L - self.loc) * inv_s           # a: standardised upper bin edge
        lower = (k / L - self.loc) * inv_s                 # b: standardised lower bin edge
        # sigma(a) - sigma(b) = sigma(a) * sigma(-b) * (1 - exp(b - a)), all in log space.
        width = inv_s / L                                  # a - b > 0
        log_mid = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-width))
        log_first = F.logsigmoid(upper)                    # bin 0: P(X < 1/L)
        log_last = F.logsigmoid(-lower)                    # bin L-1: P(X >= (L-1)/L)
        elem = torch.where(k <= 0, log_first, torch.where(k >= L - 1, log_last, log_mid))
        return _sum_event(elem, self.event_dims)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            k = torch.floor(y * self.bins).clamp(0, self.bins - 1)
            return k / (self.bins - 1)


class GaussianLikelihood(DiagonalGaussian):
    """Gaussian pixels with mean (..., *event) and a fixed or learned log-variance (a density)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, event_dims: int):
        super().__init__(mean, logvar, event_dims)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/S) sum_s exp(log_w_s) along ``dim``, computed with logsumexp."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
