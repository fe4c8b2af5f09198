"""The ELBO objective with linear KL warm-up (VampPrior paper, section 1 of ALGORITHMS.md).

loss = mean_n [ -log p(x_n|z_n) + beta * (log q(z_n|x_n) - log p(z_n)) ],  z_n ~ q(z|x_n),
beta = min(1, warm-up progress). A single-sample KL estimate with any prior; the closed form
for the standard prior if ``analytic_kl``.
"""
from __future__ import annotations

import torch

from .base import Objective, StepContext, trainable


class ELBO(Objective):
    def __init__(self, model, analytic_kl: bool = False):
        super().__init__(model)
        self.analytic_kl = analytic_kl

    def players(self):
        return {"model": trainable(self.model.parameters())}

    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        beta = min(1.0, ctx.warmup)
        log_px, kl = self.model.log_weights(x, 1, analytic_kl=self.analytic_kl)
        rec, kl = -log_px.mean(), kl.mean()
        loss = rec + beta * kl
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item(), "beta": beta}
