"""Gated networks of the VampPrior paper: MLP VAE, two-level HVAE, and convHVAE.

Encoders return ``(mu, logvar)`` tensors; decoders return raw likelihood parameters of shape
(..., P, *data_shape) where P is the number of parameters per pixel of the likelihood.
Inputs may carry leading sample dimensions, e.g. z of shape (S, N, D).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import GatedConv2d, GatedDense, GaussianHead, flat_size, he_init


def _gated_stack(sizes: list[int]) -> nn.Sequential:
    return nn.Sequential(*[GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])])


class GatedConvFeatures(nn.Module):
    """The convHVAE's gated convolutional feature extractor: x (B, C, H, W) -> (B, F) flat features.

    Layers (channels, kernel, stride): (32, 7, 1), (32, 3, 2), (64, 5, 1), (64, 3, 2), (6, 3, 1).
    """

    def __init__(self, data_shape: tuple[int, int, int]):
        super().__init__()
        c = data_shape[0]
        self.net = nn.Sequential(
            GatedConv2d(c, 32, 7), GatedConv2d(32, 32, 3, 2), GatedConv2d(32, 64, 5),
            GatedConv2d(64, 64, 3, 2), GatedConv2d(64, 6, 3),
        )
        with torch.no_grad():
            self.out_features = self.net(torch.zeros(1, *data_shape)).numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Encoder(nn.Module):
    """q(z|x): x (N, *data_shape) -> (mu, logvar) of shape (N, D). MLP or gated-conv features."""

    def __init__(self, data_shape, latent_dim: int, hidden: list[int], conv: bool = False):
        super().__init__()
        if conv:
            self.features = GatedConvFeatures(data_shape)
            width = self.features.out_features
        else:
            self.features = nn.Sequential(nn.Flatten(), _gated_stack([flat_size(data_shape)] + hidden))
            width = hidden[-1]
        self.head = GaussianHead(width, latent_dim)
        he_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


class Decoder(nn.Module):
    """p(x|z) of the single-level VAE: z (..., D) -> raw (..., P, *data_shape), gated MLP."""

    def __init__(self, data_shape, latent_dim: int, hidden: list[int], params_per_pixel: int):
        super().__init__()
        self.out_shape = (params_per_pixel, *data_shape)
        self.body = _gated_stack([latent_dim] + list(reversed(hidden)))
        self.out = nn.Linear(hidden[0], flat_size(self.out_shape))
        he_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z)).reshape(*z.shape[:-1], *self.out_shape)


class ConditionalEncoder(nn.Module):
    """q(z1|x, z2): x -> features, z2 -> gated layer; concatenated -> gated layer -> (mu, logvar).

    x: (N, *data_shape); z2: (..., N, D2). Output (..., N, D1). The x branch runs once per image.
    """

    def __init__(self, data_shape, latent_dim: int, latent_dim2: int, hidden: int, conv: bool = False):
        super().__init__()
        if conv:
            self.x_branch = GatedConvFeatures(data_shape)
            width = self.x_branch.out_features
        else:
            self.x_branch = nn.Sequential(nn.Flatten(), GatedDense(flat_size(data_shape), hidden))
            width = hidden
        self.z_branch = GatedDense(latent_dim2, width)
        self.joint = GatedDense(2 * width, hidden)
        self.head = GaussianHead(hidden, latent_dim)
        he_init(self)

    def forward(self, x: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hz = self.z_branch(z2)
        hx = self.x_branch(x).expand(*hz.shape[:-1], -1)
        return self.head(self.joint(torch.cat([hx, hz], dim=-1)))


class ConditionalPrior(nn.Module):
    """p(z1|z2): two gated layers -> (mu, logvar). z2 (..., D2) -> (..., D1)."""

    def __init__(self, latent_dim: int, latent_dim2: int, hidden: int):
        super().__init__()
        self.body = _gated_stack([latent_dim2, hidden, hidden])
        self.head = GaussianHead(hidden, latent_dim)
        he_init(self)

    def forward(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(z2))


class HierarchicalDecoder(nn.Module):
    """p(x|z1, z2): z1 and z2 each through a gated layer, concatenated, then the output.

    MLP: concat -> gated layer -> linear to P * pixels. Conv: each latent -> a gated layer with one
    image's worth of units, stacked as 2C channels -> four gated 3x3 convs (64) -> 1x1 conv to P*C.
    z1: (..., D1), z2: (..., D2) -> (..., P, *data_shape).
    """

    def __init__(self, data_shape, latent_dim: int, latent_dim2: int, hidden: int,
                 params_per_pixel: int, conv: bool = False):
        super().__init__()
        self.data_shape, self.conv = tuple(data_shape), conv
        self.out_shape = (params_per_pixel, *data_shape)
        width = flat_size(data_shape) if conv else hidden
        self.z1_branch = GatedDense(latent_dim, width)
        self.z2_branch = GatedDense(latent_dim2, width)
        if conv:
            c = data_shape[0]
            self.body = nn.Sequential(GatedConv2d(2 * c, 64, 3), GatedConv2d(64, 64, 3),
                                      GatedConv2d(64, 64, 3), GatedConv2d(64, 64, 3))
            self.out = nn.Conv2d(64, params_per_pixel * c, 1)
        else:
            self.body = GatedDense(2 * hidden, hidden)
            self.out = nn.Linear(hidden, flat_size(self.out_shape))
        he_init(self)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        lead = z1.shape[:-1]
        h = torch.cat([self.z1_branch(z1), self.z2_branch(z2)], dim=-1)
        if self.conv:
            c, hgt, wid = self.data_shape
            h = self.out(self.body(h.reshape(-1, 2 * c, hgt, wid)))
        else:
            h = self.out(self.body(h))
        return h.reshape(*lead, *self.out_shape)
