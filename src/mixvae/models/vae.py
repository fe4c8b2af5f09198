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
    """encoder: x (N, *data_shape) -> (mu, logvar) (N, D); decoder: z (..., D) -> raw (..., P, *data_shape)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: Prior,
                 likelihood: LikelihoodHead, data_shape: tuple[int, ...]):
        super().__init__(data_shape, prior, likelihood)
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(*self.encoder(x), shard=self.shard)

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.likelihood(self.decoder(z))

    def log_weights(self, x, num_samples=1, prior=None):
        q, p = (self.encode(x), prior) if prior is not None else self.encode_with_prior(x)
        z = q.rsample((num_samples,))                      # (S, N, D)
        log_px = self.decode(z).log_prob(x)                # (S, N)
        return log_px, q.log_prob(z) - p.log_prob(z)
