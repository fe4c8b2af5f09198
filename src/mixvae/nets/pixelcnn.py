"""PixelHVAE's autoregressive decoder: masked convolutions (PixelCNN) conditioned on the latents.

Raster order: pixel (i, j) comes after every pixel of the rows above and after (i, j') for j' < j;
within a pixel, color c comes after colors < c. A masked convolution lets output position (i, j)
of color group g see input (i', j') only if (i', j') comes before (i, j), and at (i, j) itself
only input color groups < g (mask type A, the first layer) or <= g (type B, every later layer).
Conditioning channels (the latent maps) carry no data and are never masked.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import GatedDense, he_init


def causal_mask(out_channels: int, in_channels: int, kernel: int, kind: str, colors: int,
                conditioning: int = 0) -> torch.Tensor:
    """The (out, in + conditioning, k, k) 0/1 mask of a masked convolution of type ``kind`` ('A' or
    'B') for data with ``colors`` channels. Channel ``o`` of a layer belongs to color group
    ``o % colors``; the last ``conditioning`` input channels are not data and see everything."""
    if kind not in ("A", "B"):
        raise ValueError(f"mask type must be 'A' or 'B', not {kind!r}")
    c = kernel // 2
    mask = torch.zeros(out_channels, in_channels + conditioning, kernel, kernel)
    mask[:, :in_channels, :c, :] = 1                   # rows above
    mask[:, :in_channels, c, :c] = 1                   # left of the centre, same row
    g_out = torch.arange(out_channels)[:, None] % colors
    g_in = torch.arange(in_channels)[None, :] % colors
    mask[:, :in_channels, c, c] = (g_in < g_out if kind == "A" else g_in <= g_out).float()
    mask[:, in_channels:] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by :func:`causal_mask` (same padding, stride 1).
    Input (B, in + conditioning, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, kind: str, colors: int,
                 conditioning: int = 0):
        super().__init__(in_channels + conditioning, out_channels, kernel, padding=kernel // 2)
        self.register_buffer("mask", causal_mask(out_channels, in_channels, kernel, kind, colors, conditioning),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNNDecoder(nn.Module):
    """p(x | z1, z2) of PixelHVAE. z1 and z2 each go through a gated layer to one image's worth of
    units (C maps each); these 2C maps, concatenated with the image x, pass through one type-A and
    ``layers - 1`` type-B masked 3x3 convolutions (``channels`` wide, ReLU) and a type-B 1x1
    convolution to the likelihood's P parameters per pixel.

    ``conditioning(z1 (..., D1), z2 (..., D2)) -> (..., 2C, H, W)``;
    ``forward(x (..., C, H, W), cond (..., 2C, H, W)) -> raw (..., P, C, H, W)`` (leading
    dimensions broadcast): the parameters of
    pixel (i, j, c) depend on x only through the pixels before it in raster order.
    """

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, latent_dim2: int,
                 params_per_pixel: int, channels: int = 64, layers: int = 8):
        super().__init__()
        self.data_shape = tuple(data_shape)
        c, h, w = data_shape
        self.params_per_pixel, self.layers = params_per_pixel, layers
        self.z1_branch = GatedDense(latent_dim, c * h * w)
        self.z2_branch = GatedDense(latent_dim2, c * h * w)
        convs = [MaskedConv2d(c, channels, 3, "A", c, conditioning=2 * c)]
        convs += [MaskedConv2d(channels, channels, 3, "B", c) for _ in range(layers - 1)]
        self.convs = nn.ModuleList(convs)
        self.out = MaskedConv2d(channels, params_per_pixel * c, 1, "B", c)
        he_init(self)

    @property
    def rows_above(self) -> int:
        """How many rows above a pixel its parameters can depend on (one per 3x3 layer)."""
        return self.layers

    def conditioning(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        c, h, w = self.data_shape
        maps = torch.cat([self.z1_branch(z1), self.z2_branch(z2)], dim=-1)
        return maps.reshape(*z1.shape[:-1], 2 * c, h, w)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        lead = torch.broadcast_shapes(cond.shape[:-3], x.shape[:-3])
        x, cond = x.expand(*lead, *x.shape[-3:]), cond.expand(*lead, *cond.shape[-3:])
        h = torch.cat([x, cond], dim=-3).reshape(-1, cond.shape[-3] + x.shape[-3], *x.shape[-2:])
        for conv in self.convs:
            h = F.relu(conv(h))
        out = self.out(h)                                  # (B, P*C, H', W'), channel p*C + c
        return out.reshape(*lead, self.params_per_pixel, x.shape[-3], *x.shape[-2:])
