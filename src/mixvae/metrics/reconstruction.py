"""Reconstruction quality and the latent statistics of the variance-collapse check."""
from __future__ import annotations

import torch

from ..models import LatentVariableModel


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB, shape (N,); x in [0, range]."""
    mse = (x - x_hat).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(data_range ** 2 / mse)


@torch.no_grad()
def reconstruction_report(model: LatentVariableModel, batches, to_unit=lambda t: t) -> dict:
    """Mean absolute error and PSNR of reconstructions from z = mu, in [0, 1] pixel units
    (``to_unit`` maps the model's range to [0, 1]), averaged over images."""
    l1, p, n = 0.0, 0.0, 0
    for x in batches:
        x_hat = to_unit(model.reconstruct(x)).clamp(0, 1)
        x = to_unit(x)
        l1 += (x - x_hat).abs().flatten(1).mean(1).sum().item()
        p += psnr(x, x_hat).sum().item()
        n += x.shape[0]
    return {"rec_l1": l1 / n, "psnr": p / n}


@torch.no_grad()
def latent_statistics(model: LatentVariableModel, batches) -> dict:
    """Per latent dimension k over the split: mean and variance of the posterior means mu_k and the
    mean posterior variance sigma^2_k, (D,) lists; and summaries. Collapse shows as sigma^2 -> 0."""
    mus, variances = [], []
    for x in batches:
        q = model.encode(x)
        mus.append(q.mu.cpu())
        variances.append(q.variance.cpu())
    mu, var = torch.cat(mus), torch.cat(variances)
    mu_mean, mu_var, sigma2 = mu.mean(0), mu.var(0, unbiased=False), var.mean(0)
    return {"mu_mean": mu_mean.tolist(), "mu_var": mu_var.tolist(), "sigma2": sigma2.tolist(),
            "mu_mean_abs_avg": mu_mean.abs().mean().item(), "mu_var_avg": mu_var.mean().item(),
            "sigma2_avg": sigma2.mean().item(), "sigma2_min": sigma2.min().item(),
            "sigma2_median": sigma2.median().item()}
