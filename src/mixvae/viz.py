"""Pictures: image grids (written with Pillow, no torchvision) and 2D scatter / density plots."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


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
    run_dir = Path(run_dir)
    was_training = model.training
    model.eval()
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
        from .data.toy2d import BOXES
        real = data.scale(test.get(slice(0, 2000))).to(device)
        z = model.encode(real).sample()
        pts = {"data": real, "samples": model.sample(2000)}
        modes = None
        if model.latent_dim == 2:
            pts["latent"] = z
            modes = model.prior().means if model.prior.is_mixture else torch.zeros(1, 2)
        out.append(save_scatter_2d(pts, run_dir / "samples.png", box=BOXES.get(data.name), modes=modes))
    model.train(was_training)
    return out
