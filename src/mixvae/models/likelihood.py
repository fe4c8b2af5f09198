"""Turn a decoder's raw output (..., P, *event) into a likelihood distribution p(x|z)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution

from ..distributions import BernoulliLikelihood, DiscretizedLogistic, GaussianLikelihood

# Raw parameters per pixel that each likelihood needs from the decoder.
PARAMS_PER_PIXEL = {"bernoulli": 1, "logistic": 2, "gaussian": 1, "gaussian-learned": 2}


class LikelihoodHead(nn.Module):
    """Maps raw decoder output (..., P, *event) to a distribution p(x|z) over the last
    ``event_dims`` dimensions (the data shape); ``log_prob`` is in nats, (...,). P raw parameters
    per pixel (``params_per_pixel``):

    - ``bernoulli``: raw = logits (binary data).
    - ``logistic``: discretised logistic over ``bins`` levels (256 for 8-bit data);
      mean = sigmoid(raw0), log-scale = hardtanh(raw1, -4.5, 0).
    - ``gaussian``: mean = raw0 (no squashing), fixed log-variance ``gaussian_logvar`` (the
      squared error of the introspective and adversarial objectives).
    - ``gaussian-learned``: mean = raw0, per-pixel log-variance hardtanh(raw1, -9, 2) (continuous data).
    """

    def __init__(self, kind: str, event_dims: int, gaussian_logvar: float = 0.0, bins: int = 256):
        super().__init__()
        if kind not in PARAMS_PER_PIXEL:
            raise ValueError(f"unknown likelihood {kind!r}")
        self.kind, self.event_dims, self.gaussian_logvar = kind, event_dims, float(gaussian_logvar)
        self.bins = int(bins)

    @property
    def params_per_pixel(self) -> int:
        """P, the raw decoder outputs per pixel this likelihood needs (1 or 2)."""
        return PARAMS_PER_PIXEL[self.kind]

    @property
    def is_discrete(self) -> bool:
        """log_prob is a log-probability of discrete values (bits/dim follow directly)."""
        return self.kind in ("bernoulli", "logistic")

    def forward(self, raw: torch.Tensor) -> Distribution:
        """The distribution for raw parameters (..., P, *event): batch shape (...)."""
        p = raw.dim() - self.event_dims - 1   # index of the parameter axis
        if self.kind == "bernoulli":
            return BernoulliLikelihood(raw.select(p, 0), self.event_dims)
        if self.kind == "logistic":
            mean, log_scale = raw.unbind(p)
            return DiscretizedLogistic(torch.sigmoid(mean), F.hardtanh(log_scale, -4.5, 0.0), self.event_dims,
                                       self.bins)
        if self.kind == "gaussian":
            mean = raw.select(p, 0)
            return GaussianLikelihood(mean, mean.new_tensor(self.gaussian_logvar).expand_as(mean), self.event_dims)
        mean, logvar = raw.unbind(p)
        return GaussianLikelihood(mean, F.hardtanh(logvar, -9.0, 2.0), self.event_dims)
