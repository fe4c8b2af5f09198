"""Priors p(z): standard normal, mixture of Gaussians, VampPrior (learned or data pseudo-inputs).

A prior is an ``nn.Module`` that holds parameters; calling it returns a torch Distribution
(:class:`DiagonalGaussian` for the standard prior, :class:`DiagonalGaussianMixture` for every
mixture). Objectives that evaluate the prior several times in one step call it once and reuse
the distribution, so a VampPrior encodes its pseudo-inputs once per step.

Every prior offers ``log_prob(z)``, ``sample(n)``, ``rsample(n)``; mixtures add ``weights`` and
``responsibilities(z)``. z has shape (..., D).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributions import DiagonalGaussian, DiagonalGaussianMixture, standard_normal
from .errors import UserError
from .registry import DATASETS, PRIORS


class Prior(nn.Module):
    """Base class of priors p(z) over ``latent_dim`` (D) dimensions. Subclasses implement
    ``forward() -> Distribution`` over (D,); log-densities are in nats."""

    is_mixture = False
    is_standard_normal = False   # N(0, I): objectives with a closed form for it (GAMIX's moment match) use it
    encodes_inputs = False       # the prior is the encoder's posterior at inputs of its own (the VampPrior
                                 # protocol: ``attach_encoder``, ``pseudo_inputs()``, ``mixture(q_u)``)

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats for z (..., D), shape (...,)."""
        return self().log_prob(z)

    def sample(self, n: int) -> torch.Tensor:
        """n draws z ~ p(z), (n, D), without gradients."""
        return self().sample((n,))

    def rsample(self, n: int) -> torch.Tensor:
        """n reparameterised draws z ~ p(z), (n, D), differentiable in the prior's parameters."""
        return self().rsample((n,))

    @property
    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


class StandardNormalPrior(Prior):
    """p(z) = N(0, I) over D = ``latent_dim`` dimensions; no parameters."""

    is_standard_normal = True

    def forward(self) -> DiagonalGaussian:
        """N(0, I) with (D,) parameters, on the prior's device."""
        return standard_normal(self.latent_dim, device=self._device)


class MixturePrior(Prior):
    """Shared behaviour of mixtures of K components: weights and responsibilities."""

    is_mixture = True

    @property
    def weights(self) -> torch.Tensor:
        """The mixture weights w_k, (K,), summing to 1."""
        return self().weights

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """softmax_k(log w_k + log N(z; m_k, v_k)), shape (..., K)."""
        return self().responsibilities(z)


class MoGPrior(MixturePrior):
    """p(z) = sum_k softmax(a)_k N(z; m_k, diag(exp(l_k))) with learnable m, l and optionally a.

    ``components`` = K Gaussians over D = ``latent_dim`` dimensions: means m (K, D) drawn from
    N(0, ``init_mean_std``^2), log-variances l (K, D) starting at ``init_logvar``, logits a (K,)
    starting at 0 (uniform weights), learned only if ``learn_weights``.

    Optional adaptive variance clipping (Athanasiadis et al. 2025) keeps each l_kd softly inside
    the per-dimension range [lo_d, hi_d] stored by :meth:`start_variance_clipping`.
    """

    def __init__(self, latent_dim: int, components: int, learn_weights: bool = True,
                 init_mean_std: float = 1.0, init_logvar: float = 0.0):
        super().__init__(latent_dim)
        self.means = nn.Parameter(init_mean_std * torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.full((components, latent_dim), float(init_logvar)))
        self.logits = nn.Parameter(torch.zeros(components), requires_grad=learn_weights)
        self.register_buffer("clip_lo", torch.zeros(latent_dim))
        self.register_buffer("clip_hi", torch.zeros(latent_dim))
        self.register_buffer("clip_on", torch.zeros((), dtype=torch.bool))

    @property
    def num_components(self) -> int:
        """K, the number of components."""
        return self.logits.shape[-1]

    @classmethod
    def from_mixture(cls, mix: DiagonalGaussianMixture, learn_weights: bool = True) -> "MoGPrior":
        """A MoG initialised with a mixture's components (e.g. a VampPrior converted to a MoG)."""
        prior = cls(mix.means.shape[-1], mix.num_components, learn_weights)
        with torch.no_grad():
            prior.means.copy_(mix.means.detach())
            prior.logvars.copy_(mix.logvars.detach())
            prior.logits.copy_(mix.log_weights.detach())
        return prior.to(mix.means.device)

    @torch.no_grad()
    def start_variance_clipping(self) -> None:
        """Store lo_d = min_k l_kd and hi_d = max_k l_kd and clip from now on."""
        self.clip_lo.copy_(self.logvars.min(dim=0).values)
        self.clip_hi.copy_(self.logvars.max(dim=0).values)
        self.clip_on.fill_(True)

    def effective_logvars(self) -> torch.Tensor:
        """The log-variances in use, (K, D): l, or :func:`soft_clip` of l once clipping started."""
        if not bool(self.clip_on):
            return self.logvars
        return soft_clip(self.logvars, self.clip_lo, self.clip_hi)

    def forward(self) -> DiagonalGaussianMixture:
        """The mixture: log-weights (K,), means and log-variances (K, D)."""
        return DiagonalGaussianMixture(self.logits, self.means, self.effective_logvars())


def soft_clip(logvar: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Adaptive variance clipping: l - softplus_b(l - hi) + softplus_b(lo - l), per dimension.

    softplus_b(x) = log(1 + exp(b x)) / b (linear once b x > 20), b = 10 / (|hi - lo| + 1e-8).
    The identity well inside [lo, hi], a smooth approach to the bounds outside it; where
    hi == lo the result is hi.
    """
    width = (hi - lo).abs()
    b = 10.0 / (width + 1e-8)
    out = logvar - F.softplus(b * (logvar - hi)) / b + F.softplus(b * (lo - logvar)) / b
    return torch.where(width > 0, out, hi.expand_as(out))


class VampPrior(MixturePrior):
    """p(z) = sum_k w_k q(z | u_k): the encoder's posteriors at K learnable pseudo-inputs u_k.

    The pseudo-inputs are a (K, *data_shape) parameter passed through ``hardtanh`` to the data
    range. (The authors write them as a bias-free linear layer applied to the K x K identity;
    its weight matrix is exactly this parameter, with the same gradients.) Weights are uniform
    unless ``learn_weights``. The encoder is attached by the model with :meth:`attach_encoder`;
    it is not a sub-module here, so its parameters are owned (and saved) once, by the model.

    ``init_images`` (K, *data_shape) (plus N(0, ``init_noise``^2)) start the pseudo-inputs at
    training examples; otherwise their pixels are drawn from N(``init_mean``, ``init_std``^2).
    ``data_range``: (low, high) of the data's values; ``trainable=False`` keeps them fixed.
    """

    encodes_inputs = True

    def __init__(self, latent_dim: int, components: int, data_shape: tuple[int, ...],
                 init_mean: float = 0.05, init_std: float = 0.01,
                 data_range: tuple[float, float] = (0.0, 1.0), learn_weights: bool = False,
                 init_images: torch.Tensor | None = None, init_noise: float = 0.0,
                 trainable: bool = True):
        super().__init__(latent_dim)
        if init_images is not None:
            u = init_images.detach().float().reshape(components, *data_shape).clone()
            u = u + init_noise * torch.randn_like(u)
        else:
            u = init_mean + init_std * torch.randn(components, *data_shape)
        self.pseudo_inputs_raw = nn.Parameter(u, requires_grad=trainable)
        self.logits = nn.Parameter(torch.zeros(components), requires_grad=learn_weights)
        self.data_range = tuple(float(v) for v in data_range)
        self._encoder: list[Callable[[torch.Tensor], DiagonalGaussian]] = []

    @property
    def num_components(self) -> int:
        """K, the number of pseudo-inputs."""
        return self.logits.shape[-1]

    def attach_encoder(self, encode: Callable[[torch.Tensor], DiagonalGaussian]) -> None:
        """``encode(u)`` maps pseudo-inputs (K, *data_shape) to q(z|u) with (K, D) parameters."""
        self._encoder[:] = [encode]

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs in the data range, (K, *data_shape)."""
        return F.hardtanh(self.pseudo_inputs_raw, *self.data_range)

    def forward(self) -> DiagonalGaussianMixture:
        """The mixture of the encoder's posteriors at the pseudo-inputs: (K, D) parameters."""
        if not self._encoder:
            raise RuntimeError("VampPrior has no encoder: call attach_encoder first")
        return self.mixture(self._encoder[0](self.pseudo_inputs()))

    def mixture(self, q_u: DiagonalGaussian) -> DiagonalGaussianMixture:
        """The prior from the encoder's posteriors at the pseudo-inputs, q(z|u_k) with (K, D) parameters
        (for callers that encode the pseudo-inputs together with a batch)."""
        return DiagonalGaussianMixture(self.logits, q_u.mu, q_u.logvar)


def pseudo_input_init(data_name: str):
    """The authors' (mean, std) of the pseudo-input pixels for a registered data set, or None
    (each data set declares its own as ``pseudo_init`` when it registers)."""
    return DATASETS.get(data_name).info.get("pseudo_init") if data_name in DATASETS else None


def count_inactive_modes(weights: torch.Tensor, usage: torch.Tensor | None = None) -> int:
    """The number of modes whose weight (or, if given, mean responsibility) is below 1 / C^2, for
    weights and usage of shape (C,)."""
    c = weights.shape[-1]
    low = weights < 1.0 / c ** 2
    if usage is not None:
        low = low | (usage < 1.0 / c ** 2)
    return int(low.sum())


# ------------------------------------------------------------------------------------------------
# Registered builders: (model.prior options, data, latent dimension, seed) -> Prior. ``data`` is
# what the model is built for: ``shape``, ``name``, ``symmetric``, ``value_range``, ``train`` (its
# training examples; empty when a model is rebuilt to load weights).
@PRIORS.register("standard", mixture=False, options=())
def _standard(options, data, latent_dim: int, seed: int) -> Prior:
    return StandardNormalPrior(latent_dim)


@PRIORS.register("mog", mixture=True, options=("components", "learn_weights", "mog_init_std"))
def _mog(options, data, latent_dim: int, seed: int) -> Prior:
    return MoGPrior(latent_dim, options.components, options.learn_weights, options.mog_init_std)


@PRIORS.register("vampprior", mixture=True, encodes_inputs=True,
                 options=("components", "learn_weights", "pseudo_init", "pseudo_trainable"))
def _vampprior(options, data, latent_dim: int, seed: int) -> Prior:
    mean, std = options.pseudo_init or pseudo_input_init(data.name) or (0.5, 0.05)
    if data.symmetric:
        mean = 2 * mean - 1
    return VampPrior(latent_dim, options.components, data.shape, mean, std, data.value_range, options.learn_weights,
                     trainable=options.pseudo_trainable)


@PRIORS.register("vampprior-data", mixture=True, encodes_inputs=True,
                 options=("components", "learn_weights", "pseudo_noise", "pseudo_trainable"))
def _vampprior_data(options, data, latent_dim: int, seed: int) -> Prior:
    """K training examples (a seeded choice) as pseudo-inputs, plus N(0, pseudo_noise^2)."""
    k = options.components
    if len(data.train) == 0:       # a model rebuilt without its data: the weights loaded next hold them
        images = torch.zeros(k, *data.shape)
    elif k > len(data.train):
        raise UserError(f"model.prior.components = {k} exceeds the {len(data.train)} training examples "
                        "available for vampprior-data")
    else:
        idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:k]
        images = data.scale(data.train.get(idx))
    return VampPrior(latent_dim, k, data.shape, data_range=data.value_range, learn_weights=options.learn_weights,
                     init_images=images, init_noise=options.pseudo_noise, trainable=options.pseudo_trainable)
