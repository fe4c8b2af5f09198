"""Small building blocks shared by the networks."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def he_init(module: nn.Module) -> None:
    """He-normal weights (fan-in, gain sqrt(2)) and zero biases for every Linear / Conv layer."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GatedDense(nn.Module):
    """h(x) * sigmoid(g(x)) with two affine maps h and g, computed as one (in, 2*out) product."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.linear(x), dim=-1)      # h * sigmoid(g), one fused kernel


class GatedConv2d(nn.Module):
    """Gated convolution h(x) * sigmoid(g(x)), both convolutions computed as one."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int | None = None):
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.conv(x), dim=1)         # h * sigmoid(g), one fused kernel


class GaussianHead(nn.Module):
    """Linear map to (mu, logvar) of a diagonal Gaussian, logvar bounded by hardtanh(lo, hi)."""

    def __init__(self, in_features: int, latent_dim: int, logvar_range: tuple[float, float] = (-6.0, 2.0)):
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)
        self.logvar_range = logvar_range

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        return mu, F.hardtanh(logvar, *self.logvar_range)


def flat_size(shape: tuple[int, ...]) -> int:
    """The number of values in one example of ``shape`` (the product of its sizes)."""
    return int(math.prod(shape))
