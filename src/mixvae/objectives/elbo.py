"""The ELBO objective with linear KL warm-up (VampPrior paper, section 1 of ALGORITHMS.md).

loss = mean_n [ -log p(x_n|z_n) + beta * (log q(z_n|x_n) - log p(z_n)) ],  z_n ~ q(z|x_n),
beta = min(1, warm-up progress): a single-sample KL estimate, with any prior (as the paper).
"""
from __future__ import annotations

import torch

from ..registry import OBJECTIVES
from .base import Objective, StepContext, trainable


@OBJECTIVES.register("elbo", adversarial=False, metrics=("ll",))
class ELBO(Objective):
    """The negative ELBO with a linear KL warm-up (see the module docstring), one player ``model``;
    logs ``loss``, ``rec`` (-E log p(x|z)) and ``kl`` in nats per example, and ``beta``."""

    @classmethod
    def from_config(cls, cfg, model) -> "ELBO":
        """The objective for ``model``; the ELBO has no options of its own."""
        return cls(model)

    def players(self):
        """One player, ``model``: every trainable parameter of the model (prior included)."""
        return {"model": trainable(self.model.parameters())}

    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        """One gradient step on the batch x (B, *data_shape) with beta = min(1, ctx.warmup)."""
        beta = min(1.0, ctx.warmup)
        log_px, kl = self.model.log_weights(x, 1)
        rec, kl = -log_px.mean(), kl.mean()
        loss = rec + beta * kl
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item(), "beta": beta}
