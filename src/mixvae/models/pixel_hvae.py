"""PixelHVAE: the two-level HVAE of the VampPrior paper with an autoregressive (PixelCNN) decoder.

p(x | z1, z2) = prod_i p(x_i | x_<i, z1, z2) over the values of x in raster order (rows, then
columns, then colors); each conditional is the run's likelihood (Bernoulli, discretised logistic,
Gaussian) with parameters from :class:`mixvae.nets.pixelcnn.PixelCNNDecoder`. The encoders,
p(z1|z2) and the prior on z2 are the convHVAE's.
"""
from __future__ import annotations

import torch
from torch.distributions import Distribution

from .. import progress
from .hvae import HVAE
from .likelihood import LikelihoodHead


class PixelCNNLikelihood(Distribution):
    """p(x | z1, z2) of PixelHVAE for conditioning maps ``cond`` (..., 2C, H, W): batch shape (...),
    event (C, H, W).

    ``log_prob(x)``: all conditionals from one pass of the decoder over x (the masks keep each
    pixel's parameters blind to itself and to what follows), nats, (...,).
    ``sample()``: exact ancestral sampling, one decoder pass per value of the image, batched over
    (...); each pass covers only the rows the next value can depend on.
    ``mean``: the conditional mean of every value given the values drawn before it, along one
    sampled path (what the pictures show; the marginal mean of x has no closed form).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, decoder, head: LikelihoodHead, cond: torch.Tensor):
        self.decoder, self.head, self.cond = decoder, head, cond
        super().__init__(cond.shape[:-3], torch.Size(decoder.data_shape), validate_args=False)

    def conditionals(self, x: torch.Tensor) -> Distribution:
        """The factorised distribution of every value of x given the values before it."""
        return self.head(self.decoder(x, self.cond))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z1, z2) in nats, (...,), for x (..., C, H, W) broadcasting against the batch."""
        return self.conditionals(x).log_prob(x)

    @torch.no_grad()
    def generate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(draws, conditional means along their path), each (..., C, H, W)."""
        c_, h_, w_ = self.event_shape
        x = self.cond.new_zeros(*self.batch_shape, c_, h_, w_)
        means = torch.zeros_like(x)
        above = self.decoder.rows_above
        rows = progress.bar(range(h_), desc="pixel sampling", unit="row", disable=c_ * h_ * w_ < 256)
        for i in rows:
            # Row i depends on the `above` rows over it; the latent maps are seen one row below too.
            top, bottom = max(0, i - above), min(h_, i + 2)
            cond = self.cond[..., top:bottom, :]
            for j in range(w_):
                for c in range(c_):
                    raw = self.decoder(x[..., top:bottom, :], cond)[..., i - top:i - top + 1, j:j + 1]
                    d = self.head(raw)                     # event (C, 1, 1): pixel (i, j)
                    x[..., c, i, j] = d.sample()[..., c, 0, 0]
                    means[..., c, i, j] = d.mean[..., c, 0, 0]
        rows.close()
        return x, means

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """One exact draw per batch element, (..., C, H, W)."""
        if len(sample_shape):
            raise ValueError("PixelCNNLikelihood.sample draws one image per batch element; expand cond instead")
        return self.generate()[0]

    @property
    def mean(self) -> torch.Tensor:
        """Each value's conditional mean given the values drawn before it, (..., C, H, W)."""
        return self.generate()[1]


class PixelHVAE(HVAE):
    """The HVAE whose decoder (a :class:`~mixvae.nets.pixelcnn.PixelCNNDecoder`) also reads the
    image: p(x|z1, z2) is autoregressive. Networks and shapes as :class:`HVAE`; ``sample`` and
    ``reconstruct`` draw pixel by pixel (H*W*C decoder passes)."""

    def likelihood_given(self, z1: torch.Tensor, z2: torch.Tensor) -> PixelCNNLikelihood:
        """p(x|z1, z2) for z1 (..., D1), z2 (..., D2): batch shape (...), event data_shape."""
        return PixelCNNLikelihood(self.decoder, self.likelihood, self.decoder.conditioning(z1, z2))
