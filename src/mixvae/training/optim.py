"""Optimizers built by the loop for each player of an objective."""
from __future__ import annotations

import torch


class AdamNormGrad(torch.optim.Adam):
    """Adam on normalised gradients: each parameter tensor's gradient is divided by its own L2
    norm (+1e-7) before the Adam update (the VampPrior authors' optimizer)."""

    @torch.no_grad()
    def step(self, closure=None):
        """Divide each gradient by its L2 norm (+1e-7), then take Adam's step."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(p.grad.norm() + 1e-7)
        return super().step(closure)


def make_optimizer(kind: str, params, lr: float, betas) -> torch.optim.Optimizer:
    """Adam or AdamNormGrad; the fused implementation (one kernel for all parameters, about 3x faster
    updates on CPUs) where torch offers it for these parameters, the default one otherwise."""
    cls = AdamNormGrad if kind == "adam-normgrad" else torch.optim.Adam
    params = list(params)
    try:
        return cls(params, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, ValueError, TypeError):
        return cls(params, lr=lr, betas=tuple(betas))
