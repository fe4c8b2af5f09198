"""Two-level hierarchical VAE of the VampPrior paper (z2 on top carries the prior).

q(z1, z2 | x) = q(z2|x) q(z1|x, z2);  p(x, z1, z2) = p(x|z1, z2) p(z1|z2) p(z2).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributions import Distribution

from ..distributions import DiagonalGaussian
from ..priors import Prior
from .base import LatentVariableModel
from .likelihood import LikelihoodHead


class HVAE(LatentVariableModel):
    """A two-level VAE from your own networks; the prior is over the top latent z2 (D2 dims).

    Networks: ``encoder2`` x (N, *data_shape) -> (mu, logvar) of q(z2|x), each (N, D2);
    ``encoder1`` (x, z2 (..., N, D2)) -> q(z1|x,z2), (..., N, D1); ``prior1`` z2 (..., D2) ->
    p(z1|z2), (..., D1); ``decoder`` (z1, z2) -> raw likelihood parameters (..., P, *data_shape).
    """

    def __init__(self, encoder2: nn.Module, encoder1: nn.Module, prior1: nn.Module, decoder: nn.Module,
                 prior: Prior, likelihood: LikelihoodHead, data_shape: tuple[int, ...]):
        super().__init__(data_shape, prior, likelihood)
        self.encoder2, self.encoder1, self.prior1, self.decoder = encoder2, encoder1, prior1, decoder

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z2|x) for x (N, *data_shape): (N, D2) parameters."""
        return DiagonalGaussian(*self.encoder2(x), shard=self.shard)

    def encode_lower(self, x: torch.Tensor, z2: torch.Tensor) -> DiagonalGaussian:
        """q(z1|x, z2) for x (N, *data_shape) and z2 (..., N, D2): (..., N, D1) parameters."""
        return DiagonalGaussian(*self.encoder1(x, z2), shard=self.shard)

    def decode(self, z2: torch.Tensor, sample_z1: bool = False) -> Distribution:
        """p(x|z1, z2) for z2 (..., D2), with z1 the mean of p(z1|z2) (or a sample of it); batch
        shape (...) over data_shape."""
        p1 = DiagonalGaussian(*self.prior1(z2))
        z1 = p1.sample() if sample_z1 else p1.mu
        return self.likelihood_given(z1, z2)

    def likelihood_given(self, z1: torch.Tensor, z2: torch.Tensor) -> Distribution:
        """p(x|z1, z2) for z1 (..., D1) and z2 (..., D2): batch shape (...) over data_shape."""
        return self.likelihood(self.decoder(z1, z2))

    def log_weights(self, x, num_samples=1, prior=None):
        """(log p(x|z1, z2), log q(z1, z2|x) - log p(z1, z2)) in nats, each (S, N), for S =
        ``num_samples`` draws from q per example of x (N, *data_shape); ``prior``: the distribution
        p(z2) if the caller already computed it this step."""
        q2, p2 = (self.encode(x), prior) if prior is not None else self.encode_with_prior(x)
        z2 = q2.rsample((num_samples,))                    # (S, N, D2)
        q1 = self.encode_lower(x, z2)
        z1 = q1.rsample()                                  # (S, N, D1)
        p1 = DiagonalGaussian(*self.prior1(z2))
        log_px = self.likelihood_given(z1, z2).log_prob(x)
        kl = q1.log_prob(z1) - p1.log_prob(z1) + q2.log_prob(z2) - p2.log_prob(z2)
        return log_px, kl

    @torch.no_grad()
    def latent_means(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior means ``{"z2": (N, D2), "z1": (N, D1)}``, z1's at z2 = its posterior mean."""
        mu2 = self.encode(x).mu
        return {"z2": mu2, "z1": self.encode_lower(x, mu2).mu}

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws z2 ~ p(z2), z1 ~ p(z1|z2), decoded to the likelihood's mean, (n, *data_shape)."""
        return self.decode(self.prior.sample(n), sample_z1=True).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, *data_shape) decoded from the posterior means of z2 and z1, (N, *data_shape)."""
        mu2 = self.encode(x).mu
        mu1 = self.encode_lower(x, mu2).mu
        return self.likelihood_given(mu1, mu2).mean
