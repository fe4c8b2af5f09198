"""Optimizers built by the loop for each player of an objective."""
from __future__ import annotations

import torch


class AdamNormGrad(torch.optim.Adam):
    """Adam on normalised gradients: each parameter tensor's gradient is divided by its own L2
    norm (+1e-7) before the Adam update (the VampPrior authors' optimizer)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(p.grad.norm() + 1e-7)
        return super().step(closure)


def make_optimizer(kind: str, params, lr: float, betas) -> torch.optim.Optimizer:
    cls = AdamNormGrad if kind == "adam-normgrad" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(betas))
