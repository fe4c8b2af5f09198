"""Distributions in torch.distributions' vocabulary: ``log_prob``, ``rsample``, ``sample``.

Everything here is plain maths on tensors and knows nothing about priors, models or training.

Shapes: a distribution over vectors has ``batch_shape`` (any leading dims) and ``event_shape``
(the trailing dims that ``log_prob`` sums over). Log-densities are in nats.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
import torch.utils._pytree as _pytree
from torch.autograd.function import once_differentiable
from torch.distributions import Distribution, constraints

from . import members, native
from .precision import full, full_precision

LOG_2PI = math.log(2 * math.pi)
LN_2 = math.log(2.0)
LOG2_E = 1.0 / LN_2     # bits per nat


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.flatten(start_dim=t.dim() - event_dims).sum(-1) if event_dims else t


# --------------------------------------------------------------------------------------------
# Noise for a batch of examples that may be split over several processes.
# --------------------------------------------------------------------------------------------
class Shard(NamedTuple):
    """This process's share ``rank`` of ``world`` equal shares of a batch. A distribution over a
    batch's examples draws its noise for the whole (global) batch and keeps its share, so the noise
    of an example is what one process with the whole batch would draw, and every process consumes
    the same random numbers (the training loop gives each model its shard)."""

    rank: int = 0
    world: int = 1


WHOLE = Shard()


def example_noise(shape, example_dim: int, shard: Shard = WHOLE, draw=members.normal, **kw) -> torch.Tensor:
    """``draw(shape)`` (default standard normals, from each member's own stream in a stacked
    ensemble: :func:`mixvae.members.normal`) where dimension ``example_dim`` indexes the examples of
    this process's share of the batch."""
    rank, world = shard
    if world == 1:
        return draw(tuple(shape), **kw)
    full = list(shape)
    n = full[example_dim]
    full[example_dim] = n * world
    return draw(tuple(full), **kw).narrow(example_dim, rank * n, n)


class _Plain(Distribution):
    """Base for the distributions below. Argument validation (torch.distributions' check of each
    parameter against ``arg_constraints`` at construction) is off by default for speed and switched
    on for every distribution here with :func:`validate_arguments` (the test suite does)."""

    arg_constraints: dict = {}
    has_rsample = False
    _validate_args = False

    def __init__(self, batch_shape, event_shape):
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=type(self)._validate_args)


def validate_arguments(on: bool = True) -> None:
    """Check every parameter of the distributions of this module against its constraints when one
    is built (a NaN mean raises ValueError at once instead of spreading)."""
    _Plain._validate_args = bool(on)


# --------------------------------------------------------------------------------------------
# Diagonal Gaussian: posteriors q(z|x), conditional priors p(z1|z2), Gaussian likelihoods.
# --------------------------------------------------------------------------------------------
class DiagonalGaussian(_Plain):
    """N(mu, diag(exp(logvar))) over the last ``event_dims`` dimensions (default 1).

    mu, logvar: (..., *event). ``log_prob(x)`` returns (...,) in nats. ``shard``: the share of a
    batch split over processes that the last batch dimension holds (see :class:`Shard`).
    """

    has_rsample = True
    support = constraints.real
    arg_constraints = {"mu": constraints.real, "logvar": constraints.real}

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor, event_dims: int = 1, shard: Shard = WHOLE):
        mu, logvar = torch.broadcast_tensors(full(mu), full(logvar))   # float32 under bf16 autocast
        self.mu, self.logvar, self.event_dims, self.shard = mu, logvar, event_dims, shard
        split = mu.dim() - event_dims
        super().__init__(mu.shape[:split], mu.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        """mu, (..., *event)."""
        return self.mu

    @property
    def variance(self) -> torch.Tensor:
        """exp(logvar), (..., *event)."""
        return self.logvar.exp()

    @property
    def stddev(self) -> torch.Tensor:
        """exp(logvar / 2), (..., *event)."""
        return (0.5 * self.logvar).exp()

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """mu + sigma * eps, shape sample_shape + mu.shape; the examples are the last batch (or, with
        no batch dimensions, the last sample) dimension."""
        return self.reparameterize(self.noise(sample_shape))

    def noise(self, sample_shape=torch.Size(), shard: Shard | None = None) -> torch.Tensor:
        """Standard normal eps of shape sample_shape + mu.shape (the share ``shard``, default this
        distribution's, of a batch whose examples are the last batch dimension)."""
        shape = torch.Size(sample_shape) + self.mu.shape
        return example_noise(shape, len(shape) - len(self.event_shape) - 1, shard or self.shard, dtype=self.mu.dtype,
                             device=self.mu.device)

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """mu + sigma * eps: a draw from given standard normals, with gradient to mu and logvar."""
        return self.mu + self.stddev * eps.to(self.mu.device)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """:meth:`rsample` without gradients, shape sample_shape + mu.shape."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """sum_d log N(x_d; mu_d, exp(logvar_d)); x broadcasts against (..., *event)."""
        elem = -0.5 * (LOG_2PI + self.logvar + (x - self.mu) ** 2 * torch.exp(-self.logvar))
        return _sum_event(elem, self.event_dims)

    def log_prob_reparameterized(self, eps: torch.Tensor) -> torch.Tensor:
        """log q(mu + sigma eps) = -sum_d (log(2 pi) + logvar_d + eps_d^2) / 2, shape (...,): the value of
        ``log_prob(reparameterize(eps))`` without forming (z - mu) / sigma again (its gradient with
        respect to mu is exactly 0, as it is in exact arithmetic)."""
        return _sum_event(-0.5 * (LOG_2PI + self.logvar), self.event_dims) \
            - 0.5 * _sum_event(eps.to(self.mu.device).square(), self.event_dims)

    def entropy(self) -> torch.Tensor:
        """Differential entropy sum_d (log(2 pi) + 1 + logvar_d) / 2 in nats, shape (...,)."""
        return _sum_event(0.5 * (LOG_2PI + 1.0 + self.logvar), self.event_dims)

    def kl_to(self, other: "DiagonalGaussian") -> torch.Tensor:
        """Closed-form KL(self || other) between diagonal Gaussians, shape (...,)."""
        elem = 0.5 * (other.logvar - self.logvar
                      + (self.logvar.exp() + (self.mu - other.mu) ** 2) * torch.exp(-other.logvar) - 1.0)
        return _sum_event(elem, self.event_dims)

    def detach(self) -> "DiagonalGaussian":
        """The same distribution with parameters cut from the autograd graph."""
        return DiagonalGaussian(self.mu.detach(), self.logvar.detach(), self.event_dims, self.shard)


def standard_normal(dim: int, device=None, dtype=None) -> DiagonalGaussian:
    """N(0, I) over ``dim`` dimensions: a :class:`DiagonalGaussian` with (dim,) zero parameters."""
    zeros = torch.zeros(dim, device=device, dtype=dtype)
    return DiagonalGaussian(zeros, zeros)


# --------------------------------------------------------------------------------------------
# Mixture of diagonal Gaussians: MoG priors and VampPriors (the encoder's posteriors at the
# pseudo-inputs) are both this object once their components are computed.
#
# Every component log-density is first evaluated in the matrix form
#     log N(z; m, diag(v)) = [z^2, z] . [-1/(2v), m/v] + c,   c = -(D log 2pi + sum l + sum m^2/v) / 2,
# one (N, 2D) x (2D, K) product. Its three terms are each much larger than their sum when a
# variance is small next to the squared coordinates, and the sum then loses digits (in float32,
# whole nats for log-variances of -10 and means of a few units). So each call first estimates that
# rounding error per component (:func:`_expansion_error_bound`, from norms: O((N + K) D)):
# - no component above ``tol`` nats (moderate variances): the float32 matrix form, as it is;
# - otherwise, in a precision below float64: the whole call is evaluated in float64 and rounded
#   back (the bound shrinks by 2^29; on a CPU 1.1 to 2.2x the float32 time of the call, or faster
#   when components are far apart, as float64's exp does not underflow at -87);
# - components still above ``tol`` in float64 ("stiff": tiny variances far from the origin): the
#   terms that matter are the direct sum sum_d (z_d - m_d)^2 / v_d (:func:`_direct_log_prob`), whose
#   rounding is relative to itself; in a log-sum-exp only those that can come within
#   ``_RELEVANCE_GAP`` nats of the row's largest (:func:`_relevant_pairs`: such components are far
#   apart, one or two per row), in the full (N, K) matrix whole columns.
# --------------------------------------------------------------------------------------------
_EXPANSION_TOL = 1e-4      # nats: largest estimated rounding error of the matrix form that is kept
_RELEVANCE_GAP = 50.0      # nats: terms further below a row's largest move neither value nor gradient
_DIRECT_CHUNK = 1 << 16    # (pair, dimension) elements the direct sums evaluate at once
# Features [z^2, z] at most this wide (D <= 4): the backward's two products per block, r @ W and
# r^T @ F, whose outputs are then only 2D columns wide, are taken as (W^T r^T)^T and F^T r, with wide
# outputs: 2 to 7x faster on a CPU (measured for blocks of 131 to 16 384 rows, K = 8 to 1000; from
# 2D = 16 on, both orientations cost the same).
_NARROW_FEATURES = 8


def _gaussian_linear_form(means: torch.Tensor, logvars: torch.Tensor, offset: torch.Tensor | None):
    """(W, c, q) with log N(z; m_k, diag(v_k)) + offset_k = [z^2, z] @ W_k + c_k; W (K, 2D), c (K,).

    From sum_d (z_d - m_kd)^2 / v_kd = (z^2) . (1/v_k) - 2 z . (m_k/v_k) + sum_d m_kd^2 / v_kd:
    W_k = [-1/(2 v_k), m_k / v_k] and c_k = -(D log 2pi + sum_d l_kd + q_k) / 2 with
    q_k = sum_d m_kd^2 / v_kd (K,), also returned for :func:`_expansion_error_bound`.
    """
    inv_var = torch.exp(-logvars)                                            # (K, D)
    scaled = means * inv_var
    q = (means * scaled).sum(-1)
    const = -0.5 * (means.shape[-1] * LOG_2PI + logvars.sum(-1) + q)
    if offset is not None:
        const = const + offset
    return torch.cat([-0.5 * inv_var, scaled], dim=-1), const, q


def _expansion_error_bound(z_sq: torch.Tensor, logvars: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Estimated rounding error of the matrix form for component k at any row of z, in nats, (K,).

    z_sq: (N, D) the squares z^2 of the rows; logvars (K, D); q (K,) = sum_d m_kd^2 / v_kd. The
    expanded terms of pair (n, k) add up in magnitude to M_nk = sum_d (|z_nd| + |m_kd|)^2 / (2 v_kd),
    and by the triangle inequality, with R = max_n ||z_n||,
    M_nk <= M_k = (R sqrt(max_d 1/v_kd) + sqrt(q_k))^2 / 2.
    Summing them with unit roundoff u errs by about u sqrt(2D) M (rounding errors add like a random
    walk); the estimate returned is 2u (2 + sqrt(2D)) M_k (:func:`_rounding_factor`), which was above
    every error measured for D = 1 ... 512 and log-variances -20 ... 10 (at most 0.45 of it, at
    D = 40, with the exact M_nk). Rows that are not finite are left out of R.
    """
    with torch.no_grad():
        root = torch.exp(-0.5 * logvars.amin(-1)).mul_(_max_row_norm(z_sq)).add_(q.sqrt())   # sqrt(2 M_k)
        return root.square_().mul_(0.5 * _rounding_factor(z_sq))


def _max_row_norm(z_sq: torch.Tensor) -> torch.Tensor:
    """R = max_n ||z_n|| over the finite rows, from z_sq = z^2 (N, D); 0 without rows."""
    return z_sq.sum(-1).nan_to_num(0.0, 0.0, 0.0).amax().sqrt() if z_sq.shape[0] else z_sq.new_zeros(())


def _rounding_factor(z_sq: torch.Tensor) -> float:
    """2u (2 + sqrt(2D)): the error of the matrix form per unit of M, u the dtype's unit roundoff."""
    return torch.finfo(z_sq.dtype).eps * (2 + math.sqrt(2 * z_sq.shape[-1]))


def _stiff_components(z_sq: torch.Tensor, logvars: torch.Tensor, q: torch.Tensor, tol: float):
    """None where the matrix form's estimated error is at most tol for every component, else
    (bound (K,) from :func:`_expansion_error_bound`, indices (S,) of the components above tol).

    First checked on one number, the bound with the largest 1/v and q of all components (a few
    reductions, no (K,) arithmetic: the common case costs almost nothing)."""
    with torch.no_grad():
        if z_sq.shape[0]:
            r2, lmin, qmax = torch.stack([z_sq.sum(-1).amax(), logvars.amin(), q.amax()]).tolist()
            r2 = r2 if math.isfinite(r2) else float(_max_row_norm(z_sq)) ** 2
            worst = (math.sqrt(r2) * math.exp(min(-0.5 * lmin, 700.0)) + math.sqrt(max(qmax, 0.0))) ** 2
            if 0.5 * _rounding_factor(z_sq) * worst <= tol:
                return None
        bound = _expansion_error_bound(z_sq, logvars, q)
        stiff = (bound > tol).nonzero().squeeze(1)
        return (bound, stiff) if stiff.numel() else None


def _log_weight_and_normaliser(log_weights: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log w_k - (D log 2pi + sum_d l_kd) / 2, (K,), in nats: the part of log w_k N(z; m_k, v_k)
    that does not depend on z. log_weights (K,), logvars (K, D)."""
    return log_weights - 0.5 * (logvars.shape[-1] * LOG_2PI + logvars.sum(-1))


def _direct_log_prob(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log N(z; m, diag(exp(l))) = -(D log 2pi + sum_d l_d + sum_d (z_d - m_d)^2 / v_d) / 2 in nats.

    z, means, logvars broadcast against each other over (..., D); the result is (...,). The squared
    differences are formed before they are summed, so the rounding is relative to each term.
    """
    d = z - means
    return -0.5 * (z.shape[-1] * LOG_2PI + logvars.sum(-1) + (d * d * torch.exp(-logvars)).sum(-1))


def _direct_log_prob_matrix(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """:func:`_direct_log_prob` for every (row, component) pair, (N, D) x (K, D) -> (N, K), in blocks
    of rows of about ``_DIRECT_CHUNK`` elements (with gradients, autograd keeps every block)."""
    step = max(1, _DIRECT_CHUNK // max(1, means.numel()))
    if z.shape[0] == 0:
        return z.new_empty(0, means.shape[0])
    return torch.cat([_direct_log_prob(z[i:i + step, None, :], means, logvars) for i in range(0, z.shape[0], step)])


def _direct_log_prob_pairs(z: torch.Tensor, means: torch.Tensor, inv_var: torch.Tensor, const: torch.Tensor,
                           n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """const_k - sum_d (z_nd - m_kd)^2 / (2 v_kd) for the pairs (n[p], k[p]), shape (P,), in nats.

    z: (N, D); means, inv_var = 1/v: (K, D); const: (K,), e.g. log w_k - (D log 2pi + sum_d l_kd) / 2,
    which makes this log w_k + log N(z_n; m_k, diag(v_k)) by the direct sum; n, k: (P,) indices.
    In chunks of ``_DIRECT_CHUNK`` elements.
    """
    out = z.new_empty(n.shape[0])
    step = max(1, _DIRECT_CHUNK // max(1, z.shape[-1]))
    for i in range(0, n.shape[0], step):
        rows, comps = n[i:i + step], k[i:i + step]
        d = z[rows] - means[comps]
        out[i:i + step] = const[comps] - 0.5 * (d * d * inv_var[comps]).sum(-1)
    return out


def _direct_log_prob_pairs_backward(z, means, logvars, n, k, g, g_z, g_means, g_logvars) -> None:
    """Adds g_p times the gradient of log N(z_n; m_k, diag(v_k)) for each pair p = (n[p], k[p]).

    d/dz = -(z - m)/v, d/dm = (z - m)/v, d/dl = ((z - m)^2 / v - 1) / 2, each (P, D), scattered into
    g_z (N, D), g_means and g_logvars (K, D) (any of which may be None); g: (P,) weights.
    """
    step = max(1, _DIRECT_CHUNK // max(1, z.shape[-1]))
    for i in range(0, n.shape[0], step):
        rows, comps, w = n[i:i + step], k[i:i + step], g[i:i + step, None]
        d = z[rows] - means[comps]
        wd = d * torch.exp(-logvars[comps]) * w                              # g (z - m) / v
        if g_z is not None:
            g_z.index_add_(0, rows, -wd)
        if g_means is not None:
            g_means.index_add_(0, comps, wd)
        if g_logvars is not None:
            g_logvars.index_add_(0, comps, 0.5 * (d * wd - w))


def _relevant_pairs(a: torch.Tensor, bound: torch.Tensor, stiff: torch.Tensor, bound_max: float,
                    gap: float = _RELEVANCE_GAP):
    """(rows, components) of the entries of a block a (B, K) of matrix-form values that have a stiff
    component and can matter in logsumexp over the row; both (P,). a, bound, bound_max and gap in
    one unit (nats, or bits for the blocks of :class:`_MixtureLogSumExp`).

    With a_nk in error by at most e_k = bound[k] (K,), the row's true largest term is at least
    max_j a_nj - e_(argmax), so an entry matters if a_nk + e_k >= max_j a_nj - e_(argmax) - gap. One
    that does not weighs less than e^-gap in the log-sum-exp and in its gradient (gap = 50 nats:
    negligible even times 1/v = e^20 and K = 1000 components). stiff: (S,) component indices;
    bound_max = max_k e_k. While that is small next to the gap, the test a_nk >= max_j a_nj -
    2 bound_max - gap (a little wider, one pass over the block) is used instead.
    """
    cols = a if stiff.shape[0] == a.shape[1] else a.index_select(1, stiff)
    if bound_max <= 0.1 * gap:
        floor = a.amax(-1).sub_(2 * bound_max + gap)
        rows, j = (cols >= floor[:, None]).nonzero(as_tuple=True)
    else:
        top, arg = a.max(-1)
        floor = top - bound[arg] - gap
        rows, j = (cols >= floor[:, None] - bound[stiff]).nonzero(as_tuple=True)
    return rows, (j if cols is a else stiff[j])


def _promote(z: torch.Tensor, stiff) -> bool:
    """Whether a call with stiff components in z's precision is evaluated again in float64."""
    return stiff is not None and z.dtype != torch.float64


def _float64_stiff(stiff, dtype: torch.dtype, tol: float):
    """The result of :func:`_stiff_components` for the same inputs in float64, from the one in
    dtype: the bound scales with the unit roundoff (the magnitudes M_k are the same)."""
    bound = stiff[0].double() * (torch.finfo(torch.float64).eps / torch.finfo(dtype).eps)
    idx = (bound > tol).nonzero().squeeze(1)
    return (bound, idx) if idx.numel() else None


@full_precision
def gaussian_log_prob_matrix(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor,
                             offset: torch.Tensor | None = None, tol: float = _EXPANSION_TOL) -> torch.Tensor:
    """log N(z_n; m_k, diag(v_k)) (+ offset_k) for every pair, shape (N, K), in nats.

    z: (N, D); means, logvars: (K, D); offset: (K,) (e.g. log-weights). One (N, 2D) x (2D, K)
    matrix product plus a bias (see :func:`_gaussian_linear_form`). Where its estimated rounding
    error exceeds ``tol`` nats the call is evaluated in float64 and rounded back, and the columns
    of components still above ``tol`` there are the direct sum (an (N, D) x (S, D) difference in row
    blocks). A negative ``tol`` makes every column direct (in float64).
    """
    if members.active():   # in a stacked ensemble's map over members: member by member (its branches)
        return members.one_by_one(gaussian_log_prob_matrix, z, means, logvars, offset, tol)
    weights, const, q = _gaussian_linear_form(means, logvars, offset)
    z_sq = z * z
    stiff = _stiff_components(z_sq, logvars, q, tol)
    if _promote(z, stiff):
        z, means, logvars = z.double(), means.double(), logvars.double()
        offset = None if offset is None else offset.double()
        weights, const, _ = _gaussian_linear_form(means, logvars, offset)
        z_sq, stiff, dtype = z * z, _float64_stiff(stiff, z_sq.dtype, tol), z_sq.dtype
    else:
        dtype = z.dtype
    out = torch.addmm(const, torch.cat([z_sq, z], dim=-1), weights.T)
    if stiff is not None:
        idx = stiff[1]
        cols = _direct_log_prob_matrix(z, means[idx], logvars[idx])
        out = out.index_copy(1, idx, cols if offset is None else cols + offset[idx])
    return out.to(dtype)


def _exp_floor(dtype: torch.dtype) -> float:
    """log2 of the smallest normal number of dtype plus 0.5 (-1021.5 in float64), in bits: exponents
    below it are raised to it, which changes a sum of K <= 2^20 terms whose largest is 1 by less than
    2^-1000, and keeps exp2 off its slow path for results that underflow (measured on this CPU: 6x
    slower in float64 far below it; float32 is 12 to 70x slower below -126 bits, which the float32
    path does not floor, so that it stays the plain matrix form)."""
    return math.log2(torch.finfo(dtype).tiny) + 0.5


def _exp2_shifted_(a: torch.Tensor, shift: torch.Tensor, floor: float | None) -> torch.Tensor:
    """a (B, K) overwritten with 2^(a - shift) (shift (B,)), each exponent raised to ``floor`` first
    unless it is None."""
    a.sub_(shift[:, None])
    if floor is not None:
        a.clamp_min_(floor)
    return a.exp2_()


def _block_log2sumexp2(a: torch.Tensor, floor: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(top + log2 sum_k 2^(a_nk - top), shift), both (B,), of a block a (B, K) in bits, overwriting
    a with p = 2^(a - shift) (:func:`_exp2_shifted_`): top = max_k a_nk, shift = top with infinities
    and NaN replaced by 0, so rows of -inf give -inf and rows with +inf give inf, as in torch.logsumexp."""
    top = a.amax(-1)
    shift = top.nan_to_num(0.0, 0.0, 0.0)
    return _exp2_shifted_(a, shift, floor).sum(-1).log2_().add_(top), shift


class _MixtureLogSumExp(torch.autograd.Function):
    """logsumexp_k a_nk with a_nk = log w_k + log N(z_n; m_k, v_k), shape (N,), in row blocks.

    a is the matrix form F @ W^T + c (F = [z^2, z], (N, 2D); W (K, 2D), c (K,)) except at the pairs
    of stiff components that can matter (:func:`_relevant_pairs`), which are the direct sum. Forward
    and backward never hold the (N, K) matrix: each block of rows is formed in bits (a log2(e): W and
    c scaled once, as exp2 is about 3x faster than exp on a CPU and as accurate), patched, turned in
    place into p = 2^(a - shift) and reduced while it is in cache; the backward recomputes it (the
    patched pairs and values are kept; keeping p instead measured no faster: a fresh N x K buffer
    costs its page faults). The softmax weights are r = diag(s) p with s_n = g_n 2^(shift_n - out_n);
    s goes onto the narrow operands, so each block of p is only read, by two products: dL/dF =
    diag(s) p W and [dL/dW, dL/dc] = p^T [diag(s) F, s]. The direct pairs' part of the gradient goes
    straight to z, means, logvars and log_weights. Memory is O(N + K * 2D + pairs) beyond the inputs.
    ``stiff`` None (no stiff component) is the plain matrix form; ``floored`` (the float64 calls)
    keeps every exponent above :func:`_exp_floor`.
    """

    @staticmethod
    def forward(ctx, feats, weights, const, z, means, logvars, log_weights, bound, stiff, rows, floored):
        n_rows = feats.shape[0]
        out, shifts = feats.new_empty(n_rows), feats.new_empty(n_rows)
        floor = _exp_floor(feats.dtype) if floored else None
        weights2, const2 = weights * LOG2_E, const * LOG2_E                 # the form in bits
        found = []                                   # per block: (rows + offset, components, values in bits)
        if stiff is not None:
            inv_var = torch.exp(-logvars)
            direct_const = _log_weight_and_normaliser(log_weights, logvars)
            bound2 = bound * LOG2_E
            bound_max = float(bound2.max())
        for i in range(0, n_rows, rows):
            a = torch.addmm(const2, feats[i:i + rows], weights2.T)
            if stiff is not None:
                n, k = _relevant_pairs(a, bound2, stiff, bound_max, _RELEVANCE_GAP * LOG2_E)
                v = _direct_log_prob_pairs(z[i:i + rows], means, inv_var, direct_const, n, k).mul_(LOG2_E)
                a[n, k] = v
                found.append((n + i, k, v))
            out[i:i + rows], shifts[i:i + rows] = _block_log2sumexp2(a, floor)
        ctx.rows, ctx.floor, ctx.counts = rows, floor, [len(f[0]) for f in found]
        pairs = [z, means, logvars, *(torch.cat(t) for t in zip(*found))] if found else []
        ctx.save_for_backward(feats, weights, weights2, const2, out, shifts, *pairs)
        return out * LN_2

    @staticmethod
    @full_precision   # a backward run inside a bf16 autocast region keeps float32 products
    def backward(ctx, grad):
        feats, weights, weights2, const2, out, shifts, *pairs = ctx.saved_tensors
        need_f, need_w, need_c, need_z, need_m, need_l, need_o = ctx.needs_input_grad[:7]
        g_feats = torch.empty_like(feats) if need_f else None
        narrow = feats.shape[1] <= _NARROW_FEATURES
        # [dL/dW, dL/dc] (K, 2D + 1), accumulated transposed for a narrow F (see _NARROW_FEATURES)
        g_wc = feats.new_zeros((feats.shape[1] + 1, weights.shape[0]) if narrow else
                               (weights.shape[0], feats.shape[1] + 1)) if need_w or need_c else None
        scale = grad * torch.exp2(shifts - out)                              # r = diag(scale) p
        if pairs:
            z, means, logvars, pn, pk, pv = pairs
            g_pairs = torch.empty_like(pv)                                  # dL/d a (nats) at the direct pairs
        start = 0
        for b, i in enumerate(range(0, feats.shape[0], ctx.rows)):
            f, s_blk = feats[i:i + ctx.rows], scale[i:i + ctx.rows]
            p = torch.addmm(const2, f, weights2.T)                        # the forward's block again
            if pairs:
                s = slice(start, start + ctx.counts[b])
                start = s.stop
                n, k = pn[s] - i, pk[s]
                p[n, k] = pv[s]
            _exp2_shifted_(p, shifts[i:i + ctx.rows], ctx.floor)
            if pairs:
                g_pairs[s] = p[n, k] * s_blk[n]
                p[n, k] = 0.0                         # their gradient goes by the direct sum below
            if need_f:                # dL/dF = diag(s) p W; narrow F: p W as (W^T p^T)^T
                pw = torch.mm(weights.T, p.T).T if narrow else torch.mm(p, weights)
                torch.mul(pw, s_blk[:, None], out=g_feats[i:i + ctx.rows])
            if g_wc is not None:      # [dL/dW, dL/dc] += p^T [diag(s) F, s]
                sfc = torch.cat([f * s_blk[:, None], s_blk[:, None]], dim=1)
                if narrow:
                    g_wc.addmm_(sfc.T, p)
                else:
                    g_wc.addmm_(p.T, sfc)
        if g_wc is not None:
            g_wc = g_wc.T if narrow else g_wc
        g_weights = g_wc[:, :-1] if need_w else None
        g_const = g_wc[:, -1] if need_c else None
        nones = (None,) * 4
        if not pairs:
            return g_feats, g_weights, g_const, None, None, None, None, *nones
        g_z = torch.zeros_like(z) if need_z else None
        g_m = torch.zeros_like(means) if need_m else None
        g_l = torch.zeros_like(logvars) if need_l else None
        g_o = torch.zeros_like(const2) if need_o else None
        _direct_log_prob_pairs_backward(z, means, logvars, pn, pk, g_pairs, g_z, g_m, g_l)
        if g_o is not None:
            g_o.index_add_(0, pk, g_pairs)
        return g_feats, g_weights, g_const, g_z, g_m, g_l, g_o, *nones


def _direct_form_error(out: torch.Tensor, const: torch.Tensor, dim: int) -> torch.Tensor:
    """Estimated rounding error per row, in nats, (N,), of a float32 log-sum-exp over direct-form
    terms a_nk = c_k - sum_d (z_nd - m_kd)^2 / (2 v_kd) (:class:`_NativeMixtureLogSumExp`), given
    its result ``out`` (N,) and c (K,), both in nats. An estimate, not a proven bound.

    With u = 2^-24 the unit roundoff: each term rounds relative to its own size |c_k| + Q_nk
    (Q the quadratic part), about u (4 + D) of it, and the log-sum-exp weighs term k by
    e^(a_nk - out_n), which gives about u (4 + D) (max_k |c_k| + max_k c_k - out_n + log K + 1);
    the sum of K terms adds up to K u. Returned: four times the first part plus the second
    (measured errors at most 0.10 of it over 300 hard random cases with K up to 4000 and means
    up to 1e3; tests/test_native.py). NaN where out is NaN, inf where it
    is -inf."""
    u = torch.finfo(torch.float32).eps / 2
    spread = (const.abs().amax() + const.amax() + math.log(const.shape[0]) + 1.0) - out
    return spread * (4 * u * (4 + dim)) + u * const.shape[0]


class _NativeMixtureLogSumExp(torch.autograd.Function):
    """log sum_k w_k N(z_n; m_k, diag(v_k)), shape (N,), in nats, by the fused C kernel of
    :mod:`mixvae.native` (float32 on the CPU, D <= 4): each term in the direct form
    c_k - sum_d (z_nd - m_kd)^2 / (2 v_kd), in bits, formed, exponentiated and summed in registers,
    forward and backward (which recomputes the terms). With r_nk = g_n x the responsibilities
    and S_k = sum_n r_nk [z_n - m_k, (z_n - m_k)^2, 1] from the kernel:
    dL/dz_n = -sum_k r_nk (z_n - m_k) / v_k, dL/dm_k = S1_k / v_k, dL/dl_k = (S2_k / v_k - S0_k) / 2,
    dL/dlog w_k = S0_k. ``rows_only``: only z will need a gradient; the forward then also computes
    the responsibilities' part of dL/dz for g = 1 in the same pass, and the backward only scales it."""

    @staticmethod
    def forward(ctx, z, log_weights, means, logvars, rows_only: bool):
        inv_var = torch.exp(-logvars)
        const = _log_weight_and_normaliser(log_weights, logvars)
        half = inv_var * (0.5 * LOG2_E)
        ctx.rows_only = rows_only
        if rows_only:
            out, w = native.mixture_lse_forward(z, means, half, const * LOG2_E, with_grad=True)
            ctx.save_for_backward(w)
        else:
            out = native.mixture_lse_forward(z, means, half, const * LOG2_E)
            ctx.save_for_backward(z, means, inv_var, half, const, out)
        return out * LN_2

    @staticmethod
    @once_differentiable          # the kernel's backward is not itself differentiable
    def backward(ctx, grad):
        if ctx.rows_only:
            w, = ctx.saved_tensors
            return w * grad[:, None].mul(-2 * LN_2), None, None, None, None
        z, means, inv_var, half, const, out = ctx.saved_tensors
        g_z, S = native.mixture_lse_backward(z, means, half, const * LOG2_E, out, grad)
        dim = z.shape[-1]
        s1, s2, s0 = S[:, :dim], S[:, dim:2 * dim], S[:, 2 * dim]
        return g_z.mul_(-2 * LN_2), s0, s1 * inv_var, 0.5 * (s2 * inv_var - s0[:, None]), None


def _kernel_serves(z, log_weights, means, logvars) -> bool:
    """Whether :class:`_NativeMixtureLogSumExp` takes these inputs: the library available, float32
    CPU tensors z (N, D) with D <= 4, means and logvars (K, D), log_weights (K,), all finite, and
    1/v finite. Anything else (other dtypes or shapes, which the PyTorch path refuses or handles)
    goes the PyTorch way."""
    inputs = (z, log_weights, means, logvars)
    if not (z.dim() == 2 and means.dim() == 2 and means.shape == logvars.shape
            and log_weights.shape == means.shape[:1] and z.shape[1] == means.shape[1]):
        return False
    if not all(t.dtype == torch.float32 and t.device.type == "cpu" for t in inputs) or not native.usable(z.shape[1]):
        return False
    with torch.no_grad():         # a finite sum: every input finite (or rarely an overflow: not served)
        return math.isfinite(z.sum() + means.sum() + log_weights.sum() + torch.exp(-logvars).sum())


def _native_mixture_log_prob(z, log_weights, means, logvars, tol: float, block: int) -> torch.Tensor | None:
    """:class:`_NativeMixtureLogSumExp` where the kernel serves these inputs (:func:`_kernel_serves`),
    else None. Rows whose estimated rounding error (:func:`_direct_form_error`) exceeds ``tol``
    nats (far from every component) are done again by :func:`_mixture_log_prob`; None when that
    is every row."""
    if tol < 0 or not _kernel_serves(z, log_weights, means, logvars):
        return None
    rows_only = torch.is_grad_enabled() and z.requires_grad and not any(
        t.requires_grad for t in (log_weights, means, logvars))
    out = _NativeMixtureLogSumExp.apply(z, log_weights, means, logvars, rows_only)
    with torch.no_grad():
        const = _log_weight_and_normaliser(log_weights, logvars)
        redo = (~(_direct_form_error(out, const, z.shape[-1]) <= tol)).nonzero().squeeze(1)
    if redo.numel() == 0:
        return out
    if redo.numel() == z.shape[0]:
        return None
    return out.index_copy(0, redo, _mixture_log_prob(z[redo], log_weights, means, logvars, block, tol))


@full_precision
def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor,
                     logvars: torch.Tensor, block: int = 1 << 17, tol: float = _EXPANSION_TOL) -> torch.Tensor:
    """log sum_k w_k N(z_n; m_k, diag(v_k)) = logsumexp_k(log w_k + log N(z_n; m_k, v_k)), shape (N,).

    Equal to ``logsumexp(gaussian_log_prob_matrix(z, means, logvars, log_weights), -1)``, computed
    in blocks of about ``block`` (row, component) entries with a hand-written backward (see
    :class:`_MixtureLogSumExp`). Where the matrix form may err by more than ``tol`` nats the call
    is evaluated in float64 and rounded back, and the terms that matter of components still above
    ``tol`` there are the direct sum (a negative ``tol``: of every component, in float64).
    z: (N, D); log_weights (K,); means, logvars (K, D). Nats.

    Inside a stacked ensemble's map over members (:mod:`mixvae.members`) it runs member by member
    (:func:`mixvae.members.one_by_one`), as in each member's separate run.

    In float32 on the CPU with D <= 4, the fused C kernel of :mod:`mixvae.native` (the direct form,
    :class:`_NativeMixtureLogSumExp`) serves the call instead wherever it is available, except the
    rows where its estimated error exceeds ``tol`` nats.
    """
    if members.active():   # in a stacked ensemble's map over members: member by member (the kernel, the fallbacks)
        return members.one_by_one(mixture_log_prob, z, log_weights, means, logvars, block, tol)
    out = _native_mixture_log_prob(z, log_weights, means, logvars, tol, block)
    return out if out is not None else _mixture_log_prob(z, log_weights, means, logvars, block, tol)


def _mixture_log_prob(z, log_weights, means, logvars, block: int, tol: float) -> torch.Tensor:
    """:func:`mixture_log_prob` by PyTorch operations: the matrix form in blocks
    (:class:`_MixtureLogSumExp`), in float64 and with direct sums where its error bound asks."""
    weights, const, q = _gaussian_linear_form(means, logvars, log_weights)
    z_sq = z * z
    stiff = _stiff_components(z_sq, logvars, q, tol)
    dtype = z.dtype
    if _promote(z, stiff):
        z, log_weights, means, logvars = z.double(), log_weights.double(), means.double(), logvars.double()
        weights, const, _ = _gaussian_linear_form(means, logvars, log_weights)
        z_sq, stiff = z * z, _float64_stiff(stiff, dtype, tol)
    bound, stiff = stiff if stiff is not None else (None, None)
    rows = max(1, block // max(1, means.shape[0]))
    return _MixtureLogSumExp.apply(torch.cat([z_sq, z], dim=-1), weights, const, z, means, logvars, log_weights,
                                   bound, stiff, rows, z.dtype == torch.float64).to(dtype)


class DiagonalGaussianMixture(_Plain):
    """sum_k w_k N(z; m_k, diag(exp(l_k))) with log-weights (K,), means and logvars (K, D).

    ``log_prob(z)`` accepts z of shape (..., D) and returns (...,), always through ``logsumexp``.
    """

    has_rsample = True
    support = constraints.real

    arg_constraints = {"means": constraints.real, "logvars": constraints.real}

    def __init__(self, log_weights: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, shard: Shard = WHOLE):
        self.log_weights = torch.log_softmax(full(log_weights), dim=-1)  # normalised, whatever was passed
        self.means, self.logvars, self.shard = full(means), full(logvars), shard
        super().__init__((), means.shape[-1:])

    @property
    def num_components(self) -> int:
        """K, the number of components."""
        return self.means.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        """w_k = exp(log_weights), (K,), summing to 1."""
        return self.log_weights.exp()

    @property
    def mean(self) -> torch.Tensor:
        """sum_k w_k m_k, (D,)."""
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

    def sample_components(self, n: int, generator: torch.Generator | None = None,
                          shard: Shard | None = None) -> torch.Tensor:
        """n component indices drawn from the weights (no gradient), shape (n,)."""
        w = self.weights.detach()
        return example_noise((n,), 0, shard or self.shard,
                             lambda shape: members.multinomial(w, shape[0], generator))

    def noise(self, sample_shape=torch.Size(), shard: Shard | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The randomness of ``prod(sample_shape)`` draws, as the share ``shard`` (default this
        distribution's) of a batch of draws: component indices (n,) and standard normals (n, D)."""
        n = torch.Size(sample_shape).numel()
        idx = self.sample_components(max(1, n), shard=shard)[:n]
        return idx, example_noise((idx.shape[0], self.means.shape[-1]), 0, shard or self.shard,
                                  device=self.means.device, dtype=self.means.dtype)

    def reparameterize(self, noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """m_k + exp(l_k / 2) eps of the drawn components, (n, D): gradients reach the chosen means
        and log-variances, never the weights (the index is drawn without gradient)."""
        idx, eps = noise
        return self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * eps.to(self.means.device)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draw, shape sample_shape + (D,) (see :meth:`reparameterize`)."""
        return self.reparameterize(self.noise(sample_shape)).reshape(torch.Size(sample_shape) + self.event_shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """:meth:`rsample` without gradients, shape sample_shape + (D,)."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def detach(self) -> "DiagonalGaussianMixture":
        """The same mixture with parameters cut from the autograd graph."""
        return DiagonalGaussianMixture(self.log_weights.detach(), self.means.detach(), self.logvars.detach(), self.shard)


# --------------------------------------------------------------------------------------------
# Likelihoods p(x|z) over images (event = C, H, W) or vectors (event = D).
# --------------------------------------------------------------------------------------------
class BernoulliLikelihood(_Plain):
    """Independent Bernoulli pixels with logits (..., *event); for binary data in {0, 1}.

    ``log_prob(x) = sum x * logits - softplus(logits)``; x may be any value in [0, 1]
    (a fractional x gives the cross-entropy, as is usual for gray data treated as probabilities).
    """

    support = constraints.unit_interval

    arg_constraints = {"logits": constraints.real}

    def __init__(self, logits: torch.Tensor, event_dims: int):
        self.logits, self.event_dims = full(logits), event_dims
        split = logits.dim() - event_dims
        super().__init__(logits.shape[:split], logits.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        """sigmoid(logits), the pixel probabilities, (..., *event)."""
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """sum x * logits - softplus(logits) over the event, as one fused binary cross-entropy."""
        x = x.expand_as(self.logits) if x.shape != self.logits.shape else x
        return -_sum_event(F.binary_cross_entropy_with_logits(self.logits, x, reduction="none"), self.event_dims)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Binary pixels {0, 1}, shape sample_shape + logits.shape."""
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

    arg_constraints = {"loc": constraints.unit_interval, "log_scale": constraints.real}

    def __init__(self, mean: torch.Tensor, log_scale: torch.Tensor, event_dims: int, bins: int = 256):
        mean, log_scale = torch.broadcast_tensors(full(mean), full(log_scale))
        self.bins = int(bins)
        half = 0.5 / self.bins
        self.loc = mean.clamp(half, 1.0 - half)
        self.log_scale, self.event_dims = log_scale, event_dims
        split = mean.dim() - event_dims
        super().__init__(mean.shape[:split], mean.shape[split:])

    @property
    def mean(self) -> torch.Tensor:
        """The (clamped) location of the logistic, (..., *event), in [0, 1]; used as the image."""
        return self.loc

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log P(x) in nats summed over the event, (...,), for x (broadcasting against (..., *event))
        in [0, 1]; each value is rounded to its level k = round(x (L - 1))."""
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
        """Values k / (L - 1) in [0, 1], shape sample_shape + mean.shape."""
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            k = torch.floor(y * self.bins).clamp(0, self.bins - 1)
            return k / (self.bins - 1)


class GaussianLikelihood(DiagonalGaussian):
    """Gaussian pixels with mean and log-variance (..., *event) over the last ``event_dims``
    dimensions: a density (``log_prob`` in nats, (...,)), for continuous data or squared error."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, event_dims: int):
        super().__init__(mean, logvar, event_dims)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/S) sum_s exp(log_w_s) along ``dim``, computed with logsumexp."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


# --------------------------------------------------------------------------------------------
# KL divergences: closed forms registered per pair of types, a Monte-Carlo estimate otherwise.
# --------------------------------------------------------------------------------------------
_KL: dict[tuple[type, type], Callable] = {}


def register_kl(type_q: type, type_p: type):
    """Decorator: ``fn(q, p) -> KL(q || p)`` in closed form for q of ``type_q`` and p of ``type_p``."""
    def deco(fn):
        _KL[(type_q, type_p)] = fn
        return fn
    return deco


def closed_form_kl(q, p) -> Callable | None:
    """The registered closed form for q and p (distributions, or their types; subclasses
    included), or None."""
    tq, tp = (d if isinstance(d, type) else type(d) for d in (q, p))
    for (a, b), fn in _KL.items():
        if issubclass(tq, a) and issubclass(tp, b):
            return fn
    return None


def kl_divergence(q: Distribution, p: Distribution, samples: int = 1, noise=None) -> torch.Tensor:
    """KL(q || p) per batch element of q (nats): the registered closed form where there is one, else
    the Monte-Carlo estimate mean_s [log q(z_s) - log p(z_s)] over z_s = q.reparameterize(noise)
    (given noise, e.g. common random numbers shared by every example) or ``samples`` draws
    z_s ~ q (reparameterised: the estimate has gradients). log q(z_s) comes from the noise where q
    offers ``log_prob_reparameterized``."""
    fn = closed_form_kl(q, p)
    if fn is not None:
        return fn(q, p)
    if noise is None:
        noise = q.noise((samples,)) if hasattr(q, "noise") else None
    z = q.reparameterize(noise) if noise is not None else q.rsample((samples,))
    log_q = q.log_prob_reparameterized(noise) if hasattr(q, "log_prob_reparameterized") else q.log_prob(z)
    return (log_q - p.log_prob(z)).mean(0)


@register_kl(DiagonalGaussian, DiagonalGaussian)
def _kl_diagonal_gaussians(q: DiagonalGaussian, p: DiagonalGaussian) -> torch.Tensor:
    return q.kl_to(p)


# --------------------------------------------------------------------------------------------
# Distributions as pytrees: a stacked ensemble (mixvae.members) passes them into and out of vmap.
# --------------------------------------------------------------------------------------------
def _unflatten_gaussian(values, context) -> DiagonalGaussian:
    mu, logvar = values
    event_dims, shard = context
    d = DiagonalGaussian.__new__(DiagonalGaussian)
    d.mu, d.logvar, d.event_dims, d.shard = mu, logvar, event_dims, shard
    if isinstance(mu, torch.Tensor):     # (pytree utilities also rebuild it around other leaves, e.g. vmap's in_dims)
        split = mu.dim() - event_dims
        _Plain.__init__(d, mu.shape[:split], mu.shape[split:])
    return d


def _unflatten_mixture(values, shard) -> DiagonalGaussianMixture:
    d = DiagonalGaussianMixture.__new__(DiagonalGaussianMixture)   # log-weights as they are (normalised)
    d.log_weights, d.means, d.logvars, d.shard = *values, shard
    if isinstance(d.means, torch.Tensor):
        _Plain.__init__(d, (), d.means.shape[-1:])
    return d


_pytree.register_pytree_node(DiagonalGaussian, lambda d: ([d.mu, d.logvar], (d.event_dims, d.shard)),
                             _unflatten_gaussian, serialized_type_name="mixvae.DiagonalGaussian")
_pytree.register_pytree_node(DiagonalGaussianMixture, lambda d: ([d.log_weights, d.means, d.logvars], d.shard),
                             _unflatten_mixture, serialized_type_name="mixvae.DiagonalGaussianMixture")
