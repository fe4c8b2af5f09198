"""Single-level VAE: q(z|x), p(x|z), p(z)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributions import Distribution

from ..distributions import DiagonalGaussian
from ..priors import Prior
from .base import LatentVariableModel
from .likelihood import LikelihoodHead


class VAE(LatentVariableModel):
    """A single-level VAE from your own networks.

    encoder: x (N, *data_shape) -> (mu, logvar), each (N, D); decoder: z (..., D) -> raw
    likelihood parameters (..., P, *data_shape) with P = ``likelihood.params_per_pixel``.
    ``prior``: a :class:`~mixvae.priors.Prior` over D dimensions; ``likelihood``: the
    :class:`LikelihoodHead` that turns the raw output into p(x|z).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: Prior,
                 likelihood: LikelihoodHead, data_shape: tuple[int, ...]):
        super().__init__(data_shape, prior, likelihood)
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for x (N, *data_shape): a diagonal Gaussian with (N, D) parameters."""
        return DiagonalGaussian(*self.encoder(x), shard=self.shard)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z (..., D): a distribution with batch shape (...) over data_shape."""
        return self.likelihood(self.decoder(z))

    def log_weights(self, x, num_samples=1, prior=None):
        """(log p(x|z), log q(z|x) - log p(z)) in nats, each (S, N), for S = ``num_samples`` draws
        z ~ q(z|x) per example of x (N, *data_shape); ``prior``: the prior distribution if the
        caller already computed it this step."""
        q, p = (self.encode(x), prior) if prior is not None else self.encode_with_prior(x)
        z = q.rsample((num_samples,))                      # (S, N, D)
        log_px = self.decode(z).log_prob(x)                # (S, N)
        return log_px, q.log_prob(z) - p.log_prob(z)
