"""The 2D densities of the introspective-VAE benchmark, as samplers (n, generator) -> (n, 2).

``PAPER``: the four of the prior-learning paper's table; ``25gaussians`` (also in the Soft-IntroVAE
code) is offered beside them.

Each follows ALGORITHMS.md section 3 (the FFJORD-style generators the papers use); every call
draws fresh points. ``BOXES`` gives the evaluation square [-b, b]^2 of each.
"""
from __future__ import annotations

import math

import torch

PAPER = ("8gaussians", "2spirals", "checkerboard", "rings")
NAMES = PAPER + ("25gaussians",)
BOXES = {"8gaussians": 2.0, "2spirals": 4.0, "checkerboard": 4.0, "rings": 4.0, "25gaussians": 2.0}


def eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    """Centres (+-1, 0), (0, +-1), (+-1/sqrt2, +-1/sqrt2) times 2, noise N(0, 0.02^2), all / 1.414."""
    s = 1.0 / math.sqrt(2.0)
    centres = 2.0 * torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [s, s], [s, -s], [-s, s], [-s, -s]])
    idx = torch.randint(0, 8, (n,), generator=g)
    return (centres[idx] + 0.02 * torch.randn(n, 2, generator=g)) / 1.414


def twenty_five_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    """Centres (2i, 2j) for i, j in {-2..2}, each equally likely, noise N(0, 0.05^2), all / 2.828."""
    grid = torch.arange(-2, 3, dtype=torch.float32) * 2.0
    centres = torch.cartesian_prod(grid, grid)                     # (25, 2)
    idx = torch.randint(0, 25, (n,), generator=g)
    return (centres[idx] + 0.05 * torch.randn(n, 2, generator=g)) / 2.828


def two_spirals(n: int, g: torch.Generator) -> torch.Tensor:
    """Arm (-cos(t) t + 0.5 U, sin(t) t + 0.5 U), t = sqrt(U) 540 * 2pi / 360, and its negative; / 3 + 0.1 N."""
    half = n // 2 + n % 2
    t = torch.sqrt(torch.rand(half, 1, generator=g)) * 540 * (2 * math.pi) / 360
    x = -torch.cos(t) * t + 0.5 * torch.rand(half, 1, generator=g)
    y = torch.sin(t) * t + 0.5 * torch.rand(half, 1, generator=g)
    arm = torch.cat([x, y], dim=1)
    pts = torch.cat([arm, -arm])[:n] / 3.0
    return pts + 0.1 * torch.randn(n, 2, generator=g)


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """x1 = 4U - 2; x2 = U - 2 Bernoulli(1/2) + (floor(x1) mod 2); return 2 (x1, x2)."""
    x1 = 4.0 * torch.rand(n, generator=g) - 2.0
    x2 = torch.rand(n, generator=g) - 2.0 * torch.randint(0, 2, (n,), generator=g).float()
    x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
    return 2.0 * torch.stack([x1, x2], dim=1)


def rings(n: int, g: torch.Generator) -> torch.Tensor:
    """Four circles of radii (1, .75, .5, .25) x 3 with n/4 evenly spaced points each, resampled with
    replacement, plus N(0, 0.08^2)."""
    per = max(1, n // 4)
    angles = torch.arange(per) * (2 * math.pi / per)
    circle = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    base = torch.cat([r * 3.0 * circle for r in (1.0, 0.75, 0.5, 0.25)])
    pts = base[torch.randint(0, base.shape[0], (n,), generator=g)]
    return pts + 0.08 * torch.randn(n, 2, generator=g)


SAMPLERS = {"8gaussians": eight_gaussians, "2spirals": two_spirals, "checkerboard": checkerboard, "rings": rings,
            "25gaussians": twenty_five_gaussians}
