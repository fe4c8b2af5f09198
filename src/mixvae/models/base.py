"""Latent-variable models: encoder + decoder + prior + likelihood, with one interface.

Every model offers
- ``encode(x) -> DiagonalGaussian`` over its top latent (the one the prior sits on), (N, D);
- ``decode(z) -> Distribution`` p(x|z) for top latents z (..., D);
- ``log_weights(x, num_samples) -> (log_px, kl)`` of shape (S, N): log p(x|z) and the single-sample
  estimate log q(z|x) - log p(z) for z ~ q(z|x) (all levels), so the ELBO is ``log_px - kl`` and
  the importance weights are their difference;
- ``sample(n)`` and ``reconstruct(x)``: images (the likelihood's mean), (n, *data_shape).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.distributions import Distribution

from ..distributions import WHOLE, DiagonalGaussian, Shard
from ..priors import Prior
from .likelihood import LikelihoodHead


@contextmanager
def evaluating(module: nn.Module):
    """``module`` in eval mode inside the block (BatchNorm and dropout as at test time); its
    training / eval mode is restored afterwards, however the block ends."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class LatentVariableModel(nn.Module, ABC):
    """The interface every model offers (see the module docstring): a prior over the top latent
    (N, D), a likelihood head over data of shape ``data_shape``, and ``encode`` / ``decode`` /
    ``log_weights`` (nats) from the subclass. Images are in the model's data range (what the
    likelihood's mean lives in, e.g. [0, 1]); ``data_shape`` excludes the batch dimension."""

    # The share of a batch split over processes that this process holds: posteriors draw their noise
    # for the whole batch and keep this share (the training loop sets it; see distributions.Shard).
    shard: Shard = WHOLE

    def __init__(self, data_shape: tuple[int, ...], prior: Prior, likelihood: LikelihoodHead):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.likelihood = likelihood
        self.set_prior(prior)

    def encode_with_prior(self, x: torch.Tensor) -> tuple[DiagonalGaussian, Distribution]:
        """(q(z|x), the prior distribution). A VampPrior's pseudo-inputs go through the encoder in one
        pass with x (bigger matrix products, half the passes) unless the model has BatchNorm,
        whose statistics would then mix the two sets."""
        p = self.prior
        if p.encodes_inputs and not self._has_batchnorm():
            n = x.shape[0]
            q = self.encode(torch.cat([x, p.pseudo_inputs().to(x.dtype)]))
            return (DiagonalGaussian(q.mu[:n], q.logvar[:n], shard=self.shard),
                    p.mixture(DiagonalGaussian(q.mu[n:], q.logvar[n:])))
        return self.encode(x), p()

    def _has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

    def set_prior(self, prior: Prior) -> None:
        """Install a prior (e.g. after converting a VampPrior to a MoG); a prior that encodes inputs
        (``prior.encodes_inputs``, the VampPrior) is given this model's encoder."""
        self.prior = prior
        if prior.encodes_inputs:
            prior.attach_encoder(self.encode)

    @property
    def latent_dim(self) -> int:
        """D, the size of the top latent (the one the prior is over)."""
        return self.prior.latent_dim

    @abstractmethod
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) over the top latent, parameters (N, D)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for top latents z (..., D)."""

    @abstractmethod
    def log_weights(self, x, num_samples: int = 1,
                    prior: Distribution | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z), log q(z|x) - log p(z)) for z ~ q(z|x), each (S, N).

        ``prior`` is the prior distribution if the caller already computed it this step.
        """

    @torch.no_grad()
    def latent_means(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior means of every latent level, name -> (N, D) (for active units)."""
        return {"z": self.encode(x).mu}

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws z ~ p(z) decoded to the likelihood's mean, (n, *data_shape)."""
        return self.decode(self.prior.sample(n)).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, *data_shape) decoded from its posterior mean: the likelihood's mean, (N, *data_shape)."""
        return self.decode(self.encode(x).mu).mean
