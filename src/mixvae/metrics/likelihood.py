"""Importance-sampled test log-likelihood (VampPrior paper / IWAE):

log p(x) ~= logsumexp_s [log p(x|z_s) + log p(z_s) - log q(z_s|x)] - log S,   z_s ~ q(z|x).

Evaluated for several images and many samples at once, in chunks of at most ``chunk`` (image,
sample) pairs, so memory is bounded whatever S and the number of images.
"""
from __future__ import annotations

import math

import torch

from ..distributions import log_mean_exp
from ..models import LatentVariableModel
from ..models.base import evaluating


@torch.no_grad()
def log_likelihood(model: LatentVariableModel, x: torch.Tensor, num_samples: int = 5000,
                   chunk: int = 4096, bar=None) -> torch.Tensor:
    """Per-image estimate of log p(x) in nats, shape (N,). x: (N, *data_shape) on the model's device.
    ``bar``: a progress bar (:func:`mixvae.progress.bar`) advanced by the images done."""
    images_per_pass = max(1, chunk // num_samples)
    samples_per_pass = max(1, min(num_samples, chunk // min(images_per_pass, x.shape[0])))
    out = []
    with evaluating(model):
        prior = model.prior()                              # components computed once (VampPrior)
        for i in range(0, x.shape[0], images_per_pass):
            xb = x[i:i + images_per_pass]
            parts = []
            for s in range(0, num_samples, samples_per_pass):
                log_px, kl = model.log_weights(xb, min(samples_per_pass, num_samples - s), prior=prior)
                parts.append(log_px - kl)                  # (s, n) log importance weights
            out.append(log_mean_exp(torch.cat(parts), dim=0))
            if bar is not None:
                bar.update(xb.shape[0])
    return torch.cat(out)


@torch.no_grad()
def elbo_parts(model: LatentVariableModel, batches) -> dict[str, float]:
    """The single-sample ELBO split into its parts, averaged over the images of ``batches`` (nats):
    ``elbo`` = E[log p(x|z)] - KL, ``rec`` = -E[log p(x|z)], ``kl`` = E[log q(z|x) - log p(z)],
    one z ~ q(z|x) per image (all latent levels for hierarchical models)."""
    rec = kl = 0.0
    n = 0
    with evaluating(model):
        for x in batches:
            log_px, k = model.log_weights(x, 1)
            rec, kl, n = rec - log_px.sum().item(), kl + k.sum().item(), n + x.shape[0]
    n = max(n, 1)
    return {"elbo": -(rec + kl) / n, "rec": rec / n, "kl": kl / n}


def bits_per_dim(ll_nats: float, dims: int) -> float:
    """-LL / (D ln 2) for a log-probability of 8-bit values."""
    return -ll_nats / (dims * math.log(2.0))
