"""Metrics of the 2D density benchmark (ALGORITHMS.md section 3): histogram KL / JSD and gnELBO.

Points are (N, 2) tensors; the evaluation square is [-box, box]^2 (``data.toy2d.BOXES``).

Histogram metrics compare 100 x 100 histograms of real and generated points over the square.
``kl`` and ``jsd`` reproduce the introspective-VAE authors' numbers, computed on *density-valued*
bins (``np.histogram2d(..., density=True)``) and divided by the number of histogram rows, as
``F.kl_div(..., reduction="batchmean")`` does; ``kl_mass`` and ``jsd_mass`` are the textbook
divergences between the bins' probability masses, in nats.

The negative ELBO here has all betas 1: squared-error *sum* reconstruction from z = mu (not a
normalised log-likelihood) plus KL(q(z|x) || p(z)). ``gnelbo`` normalises it over a grid covering the
square; ``density_grid`` turns it into the picture exp(-negELBO).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.special import xlogy

from ..models import LatentVariableModel
from ..models.base import evaluating
from ..distributions import DiagonalGaussian, closed_form_kl, kl_divergence

EPS = 1e-14          # the authors' epsilon, added to the second argument of their KLs
GNELBO_SCALE = 1e7   # gnELBO is reported multiplied by this


# ----------------------------------------------------------------------------------- histograms
def _as_points(points) -> np.ndarray:
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    p = p.astype(np.float64).reshape(-1, 2)
    return p[np.isfinite(p).all(axis=1)]


def histogram2d(points, box: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray, int]:
    """(density, mass, count) of the points inside [-box, box]^2, each histogram (bins, bins).

    ``density`` is ``np.histogram2d(..., density=True)`` (mass / bin area), ``mass`` sums to one;
    row i holds x in bin i, column j holds y in bin j. Points outside the square and non-finite
    points are not counted; ``count`` is how many were. With count == 0 both histograms are zeros.
    """
    p = _as_points(points)
    rng = [[-box, box], [-box, box]]
    counts, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=bins, range=rng)
    total = int(counts.sum())
    if total == 0:
        return np.zeros_like(counts), np.zeros_like(counts), 0
    density, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=bins, range=rng, density=True)
    return density, counts / total, total


def _authors_kl(p: np.ndarray, q: np.ndarray) -> float:
    """sum p * (log p - log(q + EPS)) / rows, with 0 * log 0 = 0 (bins where p == 0 add nothing)."""
    return float((xlogy(p, p) - p * np.log(q + EPS)).sum() / p.shape[0])


def histogram_metrics(real, fake, box: float, bins: int = 100) -> dict:
    """Histogram divergences between real (N, 2) and generated (M, 2) points over [-box, box]^2.

    With d_r, d_f the density histograms (mass / bin area) and P, Q the mass histograms:

    - ``kl`` (authors): ``sum_b d_r (log d_r - log(d_f + 1e-14)) / bins``. Bins with d_r == 0
      contribute exactly 0; bins with d_r > 0 and d_f == 0 contribute d_r (log d_r - log 1e-14).
      Equals KL(P||Q) / (bins * bin_area) up to the epsilon.
    - ``jsd`` (authors): ``0.5 (KL(d_m||d_r) + KL(d_m||d_f))`` with d_m = (d_r + d_f) / 2 and the
      same formula: bins with d_m == 0 contribute 0, the epsilon goes into d_r and d_f. Note the
      order: the authors' terms are KL(M||real) and KL(M||fake), not the textbook KL(P||M), so
      their value is not bounded by log 2 and is large when either set misses bins of the other.
    - ``kl_mass``: ``sum_b P (log P - log Q)`` in nats; bins with P == 0 contribute 0, and where
      P > 0 but Q == 0 the fake mass is replaced by 1e-14 (so a missed bin adds P (log P + 32.2)
      instead of infinity). Identical inputs give exactly 0.
    - ``jsd_mass``: textbook ``0.5 KL(P||M) + 0.5 KL(Q||M)``, M = (P + Q) / 2, in nats, in
      [0, log 2]; no epsilon is needed (M > 0 wherever P or Q is).

    Also returns ``real_in_box`` and ``fake_in_box``, the point counts inside the square. If either
    is 0, all four divergences are NaN (the authors' ``density=True`` histograms are 0/0 then).
    """
    d_r, p, n_r = histogram2d(real, box, bins)
    d_f, q, n_f = histogram2d(fake, box, bins)
    out = {"real_in_box": n_r, "fake_in_box": n_f}
    if n_r == 0 or n_f == 0:
        return {"kl": float("nan"), "jsd": float("nan"), "kl_mass": float("nan"),
                "jsd_mass": float("nan"), **out}
    d_m = 0.5 * (d_r + d_f)
    m = 0.5 * (p + q)
    q_safe = np.where(q > 0, q, EPS)
    return {
        "kl": _authors_kl(d_r, d_f),
        "jsd": 0.5 * (_authors_kl(d_m, d_r) + _authors_kl(d_m, d_f)),
        "kl_mass": float((xlogy(p, p) - p * np.log(q_safe)).sum()),
        "jsd_mass": float(0.5 * (xlogy(p, p) - xlogy(p, m)).sum() + 0.5 * (xlogy(q, q) - xlogy(q, m)).sum()),
        **out,
    }


# ------------------------------------------------------------------------------- negative ELBO
def _device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in model.parameters():
        return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


@torch.no_grad()
def neg_elbo(model: LatentVariableModel, x: torch.Tensor, kl_samples: int = 100,
             chunk: int = 65536, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative ELBO with all betas 1, per point, shape (N,), on the CPU. x: (N, *data_shape).

    ``||x - decode(mu).mean||^2`` (summed over the data dimensions, z = mu, no sampling) plus
    KL(q(z|x) || p(z)) by :func:`kl_divergence`: its closed form for a Gaussian prior,
    otherwise ``mean_s [log q(z_s|x) - log p(z_s)]`` over ``kl_samples`` draws z_s = mu + sigma eps_s.
    The eps_s (kl_samples, D) are drawn once per call (from ``generator`` if given) and shared by
    every point (common random numbers): each point's estimate is still an unbiased MC average,
    the density picture is smooth, and chunking does not change the result.

    Evaluated in eval mode without gradients, at most ``chunk`` points (closed form) or
    ``chunk`` point x sample pairs (Monte Carlo) at a time.
    """
    device, dtype = _device_dtype(model)
    with evaluating(model):
        prior = model.prior()                        # components computed once (VampPrior)
        closed_form = closed_form_kl(DiagonalGaussian, prior) is not None
        if closed_form:
            per_pass, eps = chunk, None
        else:
            per_pass = max(1, chunk // kl_samples)
            eps = torch.randn(kl_samples, model.latent_dim, generator=generator, dtype=dtype)
            eps = eps.to(device).unsqueeze(1)        # (S, 1, D): the same draws for every point
        from ..progress import bar
        out = []
        points = bar(total=x.shape[0], desc="negative ELBO", unit="pt", unit_scale=True, disable=x.shape[0] < 100_000)
        for xb in x.split(per_pass):
            points.update(xb.shape[0])
            xb = xb.to(device=device, dtype=dtype)
            q = model.encode(xb)
            rec = (xb - model.decode(q.mu).mean).pow(2).flatten(1).sum(1)
            kl = kl_divergence(q, prior, noise=eps)
            out.append((rec + kl).cpu())
        points.close()
    return torch.cat(out)


def grid_points(box: float, grid: int) -> torch.Tensor:
    """The grid x linspace(-box, box, grid) x the same, (grid * grid, 2); point i * grid + j = (x_i, y_j)."""
    axis = torch.linspace(-box, box, grid)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def gnelbo(model: LatentVariableModel, real: torch.Tensor, box: float, grid: int = 1024,
           kl_samples: int = 100, generator: torch.Generator | None = None) -> float:
    """Grid-normalised negative ELBO x 1e7 (lower is better).

    ``mean_i negELBO(real_i) / (sum_grid negELBO + sum_i negELBO(real_i)) * 1e7``, the grid being
    :func:`grid_points` (box, grid). real: (N, 2), conventionally 12 800 fresh samples. Real and grid
    points share one set of Monte-Carlo draws. Sums are taken in float64.
    """
    values = neg_elbo(model, torch.cat([real.float().cpu(), grid_points(box, grid)]), kl_samples,
                      generator=generator).double()
    on_real = values[: real.shape[0]]
    return float(on_real.mean() / values.sum() * GNELBO_SCALE)


def density_grid(model: LatentVariableModel, box: float, grid: int = 256, kl_samples: int = 100,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """exp(-negELBO) on :func:`grid_points` (box, grid), normalised to sum 1, (grid, grid) float64.

    Entry [i, j] is at (x_i, y_j) (x along rows), as ``viz.save_density_2d`` expects. The minimum
    is subtracted before exponentiating, which the normalisation cancels, so nothing underflows
    to an all-zero picture.
    """
    v = neg_elbo(model, grid_points(box, grid), kl_samples, generator=generator).double()
    d = torch.exp(-(v - v.min()))
    return (d / d.sum()).reshape(grid, grid).numpy()


# ---------------------------------------------------------------------------------- everything
def evaluate_2d(model: LatentVariableModel, sampler: Callable[[int, torch.Generator], torch.Tensor],
                box: float, seed: int = 0, n: int = 5000, n_elbo: int = 12800, grid: int = 1024,
                kl_samples: int = 100) -> dict:
    """The benchmark's numbers for one seed: kl, jsd, kl_mass, jsd_mass (n real vs n generated
    points) and gnelbo (``n_elbo`` further real points, ``grid`` x ``grid`` grid).

    Real points come from ``sampler(n, g)`` then ``sampler(n_elbo, g)`` with
    ``g = torch.Generator().manual_seed(seed)`` (a ``data.toy2d.SAMPLERS`` entry); generated points
    from ``model.sample(n)`` and the Monte-Carlo KL draws from the global RNG seeded with ``seed``
    inside ``torch.random.fork_rng``, so the caller's RNG state is untouched.
    """
    device, _ = _device_dtype(model)
    g = torch.Generator().manual_seed(seed)
    real = sampler(n, g)
    real_elbo = sampler(n_elbo, g)
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        fake = model.sample(n).cpu()
        value = gnelbo(model, real_elbo, box, grid, kl_samples)
    out = histogram_metrics(real, fake, box)
    return {"kl": out["kl"], "jsd": out["jsd"], "kl_mass": out["kl_mass"], "jsd_mass": out["jsd_mass"],
            "gnelbo": value, "n_real": n, "n_fake": n, "n_elbo": n_elbo, "grid": grid,
            "real_in_box": out["real_in_box"], "fake_in_box": out["fake_in_box"]}
