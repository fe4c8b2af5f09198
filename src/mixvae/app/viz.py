"""Pictures: image grids (written with Pillow, no torchvision) and 2D scatter / density plots."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..models.base import evaluating


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) with a gray frame."""
    x = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    cols = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write an image grid as PNG; small images are enlarged so the picture is readable."""
    from PIL import Image

    h = images.shape[-2]
    scale = scale or max(1, 64 // h)
    Image.fromarray(image_grid(images, nrow, scale=scale)).save(path)
    return Path(path)


def save_scatter_2d(points: dict[str, torch.Tensor], path: str | Path, box: float | None = None,
                    modes: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter plots of 2D point sets side by side; ``modes`` (K, 2) are drawn as crosses on the last."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points), 4), squeeze=False)
    for ax, (name, pts) in zip(axes[0], points.items()):
        p = pts.detach().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4)
        ax.set_title(name)
        if box is not None and name != "latent":
            ax.set_xlim(-box, box)
            ax.set_ylim(-box, box)
        ax.set_aspect("equal")
    if modes is not None:
        m = modes.detach().cpu().numpy()
        axes[0][-1].scatter(m[:, 0], m[:, 1], marker="x", c="red", s=30, label="prior modes")
        axes[0][-1].legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_ll_histogram(ll: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """The per-image test log-likelihoods ``ll`` (N,) in nats as a histogram, with their mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    values = ll.double().numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(100, max(10, len(values) // 20)), color="tab:blue", alpha=0.8)
    ax.axvline(values.mean(), color="tab:red", linestyle="--", label=f"mean {values.mean():.2f}")
    ax.set_xlabel("log p(x) per image (nats)")
    ax.set_ylabel("images")
    ax.set_title(title or f"{len(values)} images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_density_2d(density: np.ndarray, box: float, path: str | Path, title: str = "") -> Path:
    """A density on a square grid over [-box, box]^2 as an image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(density.T, origin="lower", extent=(-box, box, -box, box), cmap="viridis")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def interpolations(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decoded (1 - t) mu(x_a) + t mu(x_b) for t in linspace(0, 1, steps): (pairs * steps, *data_shape),
    one row per pair (x_a, x_b: (pairs, *data_shape))."""
    za, zb = model.encode(x_a).mu, model.encode(x_b).mu
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
    z = (1 - t) * za.unsqueeze(1) + t * zb.unsqueeze(1)                      # (pairs, steps, D)
    return model.decode(z.reshape(-1, z.shape[-1])).mean


@torch.no_grad()
def latent_walk(model, x: torch.Tensor, dims: list[int], k: float = 20.0, steps: int = 9) -> torch.Tensor:
    """For one image x (1, *data_shape): decode mu + j sigma_d e_d for j in linspace(-k, k, steps)
    along each latent dimension d in ``dims`` (sigma_d: the image's posterior standard deviation),
    one row per dimension: (len(dims) * steps, *data_shape)."""
    q = model.encode(x)
    mu, sd = q.mu[0], q.stddev[0]
    rows = []
    for d in dims:
        z = mu.repeat(steps, 1)
        z[:, d] = mu[d] + torch.linspace(-k, k, steps, device=mu.device) * sd[d]
        rows.append(z)
    return model.decode(torch.cat(rows)).mean


@torch.no_grad()
def save_run_pictures(model, data, run_dir: str | Path, n: int = 64) -> list[Path]:
    """samples.png, reconstructions.png (originals above, reconstructions below), interpolations.png
    (single-level models: 8 pairs of test images, 10 steps between their posterior means) and, for a
    VampPrior, pseudo_inputs.png; for 2D data a scatter of data, samples and the latent space."""
    with evaluating(model):
        return _run_pictures(model, data, Path(run_dir), n)


def _run_pictures(model, data, run_dir: Path, n: int) -> list[Path]:
    out = []
    g = torch.Generator().manual_seed(0)
    test = data.test
    idx = torch.randperm(len(test), generator=g)[: min(n, len(test))]
    device = next(model.parameters()).device
    x = data.scale(test.get(idx)).to(device)
    if data.is_image:
        out.append(save_grid(data.unscale(model.sample(n)), run_dir / "samples.png"))
        k = min(32, x.shape[0])
        rec = model.reconstruct(x[:k])
        out.append(save_grid(data.unscale(torch.cat([x[:k], rec])), run_dir / "reconstructions.png", nrow=min(k, 16)))
        pairs = min(8, x.shape[0] // 2)
        if pairs and hasattr(model, "encoder"):
            grid = interpolations(model, x[:pairs], x[pairs:2 * pairs])
            out.append(save_grid(data.unscale(grid), run_dir / "interpolations.png", nrow=10))
        prior = model.prior
        if hasattr(prior, "pseudo_inputs"):
            u = prior.pseudo_inputs()[:n]
            out.append(save_grid(data.unscale(u), run_dir / "pseudo_inputs.png"))
    elif data.shape == (2,):
        from ..data.toy2d import BOXES
        real = data.scale(test.get(slice(0, 2000))).to(device)
        z = model.encode(real).sample()
        pts = {"data": real, "samples": model.sample(2000)}
        modes = None
        if model.latent_dim == 2:
            pts["latent"] = z
            modes = model.prior().means if model.prior.is_mixture else torch.zeros(1, 2)
        out.append(save_scatter_2d(pts, run_dir / "samples.png", box=BOXES.get(data.name), modes=modes))
    return out


_SCHEDULE_KEYS = ("beta", "lr")
_NOT_PLOTTED = {"step", "epoch", "split", "time", "best_loss", "event", "reason", "lr_factor"}


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (damaged lines, e.g. a last line cut short by a crash, are skipped)."""
    from ..training.tracking import read_records
    return [r for r, _ in read_records(Path(path))[0]]


def _robust_top(values: list[float]) -> float:
    """An upper y-limit that ignores the first few points' huge losses (2% of the points or at least one)."""
    rest = sorted(values[max(1, len(values) // 50):] or values)
    return rest[min(len(rest) - 1, int(0.98 * len(rest)))]


def save_curves(metrics: str | Path, path: str | Path, stopped_early: bool | None = None) -> Path | None:
    """curves.png from a run's metrics.jsonl: (1) the training loss (per logged step) and the validation
    loss (per validation) with the best validation marked, and the end of training labelled 'early
    stop' when ``stopped_early``; (2) the other logged training terms; (3) the schedule (beta, lr).
    The x axis is in epochs when the run validated per epoch, else in steps. None if nothing is logged."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics)
    train = [r for r in recs if r.get("split") == "train"]
    valid = [r for r in recs if r.get("split") == "valid" and "loss" in r]
    if not train and not valid:
        return None
    per_step = next((r["epoch"] / r["step"] for r in valid if r.get("step") and r.get("epoch")), None)
    to_x = (lambda r: r["step"] * per_step) if per_step else (lambda r: r["step"])
    xlabel = "epoch" if per_step else "step"
    keys = list(dict.fromkeys(k for r in train for k, v in r.items() if isinstance(v, (int, float))))
    terms = [k for k in keys if k not in _NOT_PLOTTED and k not in _SCHEDULE_KEYS and k != "loss"]
    schedule = [k for k in _SCHEDULE_KEYS if k in keys and len({r.get(k) for r in train if k in r}) > 1]
    panels = 1 + bool(terms) + bool(schedule)
    fig, axes = plt.subplots(panels, 1, figsize=(7, 2.6 * panels), sharex=True, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    shown = []
    with_loss = [r for r in train if "loss" in r]
    if with_loss:
        ys = [r["loss"] for r in with_loss]
        ax.plot([to_x(r) for r in with_loss], ys, lw=0.8, label="train loss")
        shown += ys
    if valid:
        ys = [r["loss"] for r in valid]
        ax.plot([to_x(r) for r in valid], ys, lw=1.2, label="validation loss")
        shown += ys
        best = min(valid, key=lambda r: r["loss"])
        ax.axvline(to_x(best), color="green", ls=":", lw=1)
        right = to_x(best) > 0.7 * to_x(valid[-1])
        ax.annotate(f"best {xlabel} {to_x(best):.0f}: {best['loss']:.2f}", (to_x(best), best["loss"]),
                    textcoords="offset points", xytext=(-4 if right else 4, 8), fontsize=8, color="green",
                    ha="right" if right else "left")
        if stopped_early:
            last = valid[-1]
            ax.axvline(to_x(last), color="red", ls="--", lw=1)
            ax.annotate("early stop", (to_x(last), _robust_top(shown)), textcoords="offset points",
                        xytext=(-60, -12), fontsize=8, color="red")
    if shown:
        finite = [v for v in shown if math.isfinite(v)]
        if finite:
            lo, hi = min(finite), _robust_top(finite)
            ax.set_ylim(lo - 0.02 * (hi - lo + 1e-9), hi + 0.02 * (hi - lo + 1e-9))
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    i = 1
    if terms:
        for k in terms:
            axes[i].plot([to_x(r) for r in train if k in r], [r[k] for r in train if k in r], lw=0.8, label=k)
        axes[i].set_ylabel("training terms")
        axes[i].legend(fontsize=8, ncol=min(4, len(terms)))
        axes[i].grid(alpha=0.3)
        i += 1
    if schedule:
        for k in schedule:
            a = axes[i] if k == schedule[0] else axes[i].twinx()
            a.plot([to_x(r) for r in train if k in r], [r[k] for r in train if k in r], lw=1, label=k,
                   color="tab:purple" if k == "beta" else "tab:gray")
            a.set_ylabel(k)
            if k == "lr":
                a.set_yscale("log")
        axes[i].grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# What each picture of a run folder shows (the demo's summary and reports use these lines).
PICTURES = {
    "curves.png": "training and validation loss per epoch, the loss terms and the schedule (beta, lr)",
    "samples.png": "images decoded from samples of the prior (the likelihood's mean); 2D data: data, samples, latents",
    "reconstructions.png": "test images (upper rows) above their reconstructions (lower rows)",
    "interpolations.png": "each row walks in a straight line between the codes of two test images",
    "pseudo_inputs.png": "the VampPrior's learned pseudo-inputs u_k (the prior is the mixture of q(z|u_k))",
    "density.png": "the model's density exp(-negative ELBO) on a grid over the data's box",
}
