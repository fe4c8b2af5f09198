"""Latent statistics: active units and prior mode usage."""
from __future__ import annotations

import torch

from ..models import LatentVariableModel
from ..models.base import evaluating
from ..priors import count_inactive_modes


@torch.no_grad()
def posterior_mean_variance(model: LatentVariableModel, batches) -> dict[str, torch.Tensor]:
    """Var_x of the posterior means, per latent level and dimension: name -> (D,). Evaluated in
    eval mode (BatchNorm's running statistics neither used from the batch nor updated); the
    model's mode is restored."""
    means: dict[str, list[torch.Tensor]] = {}
    with evaluating(model):
        for x in batches:
            for k, mu in model.latent_means(x).items():
                means.setdefault(k, []).append(mu)
    return {k: torch.cat(v).var(dim=0, unbiased=False) for k, v in means.items()}


def active_units(variances: dict[str, torch.Tensor], threshold: float = 0.01) -> dict[str, int]:
    """Units with Var_x(E_q[z_d]) > threshold (Burda et al.), per latent level."""
    return {k: int((v > threshold).sum()) for k, v in variances.items()}


@torch.no_grad()
def mode_usage(model: LatentVariableModel, batches) -> dict | None:
    """Mean responsibilities of the prior's components over z ~ q(z|x), and the inactive modes.

    Returns None for a prior that is not a mixture.
    """
    if not model.prior.is_mixture:
        return None
    p = model.prior()
    total, n = 0.0, 0
    for x in batches:
        z = model.encode(x).sample()
        r = p.responsibilities(z)
        total, n = total + r.sum(0), n + r.shape[0]
    usage = total / n
    w = p.weights
    return {"usage": usage.cpu(), "weights": w.cpu(),
            "inactive_modes": count_inactive_modes(w, usage),
            "inactive_by_weight": count_inactive_modes(w)}
