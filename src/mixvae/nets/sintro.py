"""Networks of Soft-IntroVAE: the 2D MLP and the residual image encoder / decoder.

Encoders return ``(mu, logvar)``; decoders return raw outputs (..., 1, *data_shape) (the mean of a
Gaussian likelihood, no squashing), matching the library's decoder convention.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import GaussianHead


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU pairs; each ReLU overwrites its layer's output (nothing else reads it), which
    spares an allocation per layer and call."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (N, D) -> ReLU MLP (e.g. 256 x 4) -> (mu, logvar) (N, latent)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: list[int]):
        super().__init__()
        self.body = _mlp([data_dim] + hidden)
        self.head = GaussianHead(hidden[-1], latent_dim, logvar_range=(-20.0, 10.0))

    def forward(self, x):
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    """z (..., latent) -> ReLU MLP (hidden reversed) -> (..., 1, D)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: list[int]):
        super().__init__()
        self.body = _mlp([latent_dim] + list(reversed(hidden)))
        self.out = nn.Linear(hidden[0], data_dim)

    def forward(self, z):
        return self.out(self.body(z)).unsqueeze(-2)


class ResidualBlock(nn.Module):
    """conv3x3-BN-LReLU(0.2)-conv3x3-BN + identity (1x1 conv if the widths differ), then LReLU(0.2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(self.skip(x) + self.body(x))


class ResNetEncoder(nn.Module):
    """x (N, C, H, W) -> conv5x5 + BN + LReLU + avgpool2, then per width a residual block + avgpool2,
    a final residual block, FC -> (mu, logvar). Widths [64, 128] for 28x28, [64, 128, 256] for 32x32."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, channels: list[int]):
        super().__init__()
        c, h, w = data_shape
        layers: list[nn.Module] = [nn.Conv2d(c, channels[0], 5, padding=2, bias=False), nn.BatchNorm2d(channels[0]),
                                   nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
        prev = channels[0]
        for ch in channels[1:]:
            layers += [ResidualBlock(prev, ch), nn.AvgPool2d(2)]
            prev = ch
        layers.append(ResidualBlock(prev, prev))
        self.body = nn.Sequential(*layers)
        down = 2 ** len(channels)
        if h % down or w % down:
            raise ValueError(f"image size {h}x{w} is not divisible by {down} (one halving per width in {channels})")
        self.head = GaussianHead(prev * (h // down) * (w // down), latent_dim, logvar_range=(-20.0, 10.0))

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class ResNetDecoder(nn.Module):
    """z (..., latent) -> FC + ReLU to the encoder's feature map, per width (reversed) a residual
    block + 2x nearest upsampling, a final residual block, conv5x5 -> C (no sigmoid)."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, channels: list[int]):
        super().__init__()
        c, h, w = data_shape
        down = 2 ** len(channels)
        self.start = (channels[-1], h // down, w // down)
        self.fc = nn.Sequential(nn.Linear(latent_dim, channels[-1] * (h // down) * (w // down)), nn.ReLU())
        layers: list[nn.Module] = []
        prev = channels[-1]
        for ch in reversed(channels):
            layers += [ResidualBlock(prev, ch), nn.Upsample(scale_factor=2, mode="nearest")]
            prev = ch
        layers += [ResidualBlock(prev, prev), nn.Conv2d(prev, c, 5, padding=2)]
        self.body = nn.Sequential(*layers)
        self.data_shape = tuple(data_shape)

    def forward(self, z):
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.body(h).reshape(*lead, 1, *self.data_shape)
