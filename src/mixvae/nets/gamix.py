"""GAMIX-VAE networks (Rivera, "How to train your VAE", ICIP 2024): ResNetV2 encoder/decoder, PatchGAN.

Restated from the author's Keras code; at 256x256x3, width 128, bottleneck 64, latent 512:

* Encoder: LayerNorm over (H, W) -> conv3x3(width) -> S stages of [2 identity + 1 down block]
  -> conv1x1(bottleneck) at (H/2^S, W/2^S) -> flatten -> linear (mu, logvar).
  Identity block: x + [BN-ReLU-conv3x3, BN-ReLU-conv3x3, BN-ReLU-conv1x1]. Down block: the same
  main path with its last 1x1 conv at stride 2, plus a BN-ReLU-conv1x1-stride-2 shortcut.
* Decoder: linear -> (bottleneck, H/2^S, W/2^S) -> conv3x3(width) -> S stages of
  [1 identity + 1 up block] -> conv1x1, linear output. Up block (not a mirror of the down block):
  main path BN-ReLU-conv1x1, BN-ReLU-convT3x3-stride-2; shortcut BN-ReLU-convT3x3-stride-2.
  As in the Keras code, whose filter list ends with the channel count, the last up block already
  outputs the P*C output channels and the final 1x1 conv maps P*C -> P*C.
* PatchGAN: six conv3x3 (channels w, w, w, w/2, w/2, 1; strides 2, 2, 2, 1, 1, 1), each followed by
  BN, LeakyReLU (not after the last) and Dropout; the output is a map of logits (BN included).

Decisions:

* Every conv/linear layer has a bias and BN has an affine; together with Keras' counting (BN running
  mean/var are "non-trainable params") this reproduces the author's reported counts exactly, see
  ``keras_param_count``.
* Input normalisation is Keras' ``LayerNormalization(axis=(1, 2))``: each image's each channel is
  standardised over (H, W), with a learnable per-pixel scale and shift of shape (H, W) shared by the
  channels (``nn.LayerNorm((H, W))``; 2*H*W parameters, which the reported count includes).
  Keras' epsilon 1e-3 is kept here and in BN.
* Stages: by default halve while the size stays even and at least 4: 256 -> 4 (6 stages),
  64 -> 4 (4), 32 -> 4 (3), 28 -> 14 -> 7 (2, bottleneck at 7x7). The decoder inverts them exactly.
* BatchNorm, ``bn_mode``: "batch" (default) is standard PyTorch BN, batch statistics in ``train()``,
  running statistics in ``eval()`` (PyTorch's momentum 0.1, not Keras' 0.99 ~ 0.01). "frozen"
  always uses the running statistics and never updates them, so BN is a learnable per-channel
  affine map. "frozen" is what the published Keras code
  effectively ran: its train step calls the VAE without ``training``, so Keras 3 takes the signature
  default ``training=False``, and the discriminator (no ``training`` argument) gets None, i.e.
  inference; the moving statistics thus stay at their initial 0 / 1 and the discriminator's dropout
  is inactive (use ``dropout=0`` to match). Batch mode is the default because it is what the
  architecture's BN layers are meant to do; in batch mode the PatchGAN's last BN normalises the
  logits over the batch, so real and fake images must go through it in one batch (a batch of
  only fakes would get the same mean logit as a batch of only reals).
* Logvar is bounded by hardtanh(-12, 6) (std between 0.0025 and 20): wide enough not to bind in
  normal training, tight enough to keep exp(logvar) finite.
* Initialisation: PyTorch defaults (uniform, variance 1/(3 fan_in)). Like Keras' Glorot init they
  shrink the residual branches; He init would roughly double the residual stream's variance per block,
  which the un-normalised "frozen" mode does not undo over the 18 blocks of the 256x256 encoder.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .layers import GaussianHead, flat_size

Norm = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BN that always normalises with its running statistics and never updates them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


_NORMS = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d}


def _norm(bn_mode: str) -> Norm:
    if bn_mode not in _NORMS:
        raise UserError(f"bn_mode must be one of {sorted(_NORMS)}, got {bn_mode!r}")
    return partial(_NORMS[bn_mode], eps=1e-3)


def keras_param_count(module: nn.Module) -> int:
    """Parameters counted the way Keras' ``summary()`` does: all weights plus BN running mean/var.

    The author's summary reports 412,101 for the discriminator, i.e. ``PatchGAN((3, 256, 256))``,
    and 9,932,466 for the VAE. The latter is the encoder without its (mu, logvar) head plus the
    whole decoder, including its first linear layer: the Keras sampler's two Dense layers (mu and
    logvar) were not yet built when the summary was printed, so they count zero. That is
    ``keras_param_count(enc) - keras_param_count(enc.head) + keras_param_count(dec)`` for
    ``ResNetV2Encoder((3, 256, 256), 512)`` and ``ResNetV2Decoder((3, 256, 256), 512)``. The
    non-trainable total, 25,352 = 2 * (95 * 128 + 3 + 3 * 128 + 2 * 64 + 1), agrees too.
    """
    stats = sum(b.numel() for name, b in module.named_buffers()
                if name.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
    return sum(p.numel() for p in module.parameters()) + stats


def _preact(norm: Norm, channels: int, conv: nn.Module) -> nn.Sequential:
    """BN-ReLU-conv; ``channels`` are the conv's input channels."""
    return nn.Sequential(norm(channels), nn.ReLU(), conv)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2)


def _upconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    """3x3 transposed conv, stride 2: (H, W) -> (2H, 2W)."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)


class IdentityBlock(nn.Module):
    """x + [BN-ReLU-conv3x3, BN-ReLU-conv3x3, BN-ReLU-conv1x1]; (N, ch, H, W) -> same."""

    def __init__(self, channels: int, norm: Norm):
        super().__init__()
        self.main = nn.Sequential(_preact(norm, channels, _conv(channels, channels, 3)),
                                  _preact(norm, channels, _conv(channels, channels, 3)),
                                  _preact(norm, channels, _conv(channels, channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class DownBlock(nn.Module):
    """Identity block's main path with its 1x1 conv at stride 2, plus a BN-ReLU-conv1x1-stride-2
    shortcut; (N, cin, H, W) -> (N, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        self.main = nn.Sequential(_preact(norm, cin, _conv(cin, cout, 3)),
                                  _preact(norm, cout, _conv(cout, cout, 3)),
                                  _preact(norm, cout, _conv(cout, cout, 1, stride=2)))
        self.shortcut = _preact(norm, cin, _conv(cin, cout, 1, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class UpBlock(nn.Module):
    """Main path BN-ReLU-conv1x1, BN-ReLU-convT3x3-stride-2; shortcut BN-ReLU-convT3x3-stride-2;
    (N, cin, H, W) -> (N, cout, 2H, 2W)."""

    def __init__(self, cin: int, cout: int, norm: Norm):
        super().__init__()
        self.main = nn.Sequential(_preact(norm, cin, _conv(cin, cout, 1)),
                                  _preact(norm, cout, _upconv(cout, cout)))
        self.shortcut = _preact(norm, cin, _upconv(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


def _code_grid(data_shape: tuple[int, int, int], stages: int | None) -> tuple[int, tuple[int, int]]:
    """Number of stages and the (h, w) of the bottleneck grid; by default halve while the size
    stays even and the half is at least 4."""
    _, height, width = data_shape
    if stages is None:
        stages = 0
        while all(s % 2 ** (stages + 1) == 0 and s // 2 ** (stages + 1) >= 4 for s in (height, width)):
            stages += 1
    if stages < 1 or height % 2 ** stages or width % 2 ** stages:
        raise UserError(f"the ResNetV2 networks need at least one stage and H, W divisible by 2^stages; "
                        f"got {height}x{width} with stages={stages}")
    return stages, (height >> stages, width >> stages)


class ResNetV2Encoder(nn.Module):
    """q(z|x): x (N, C, H, W) -> (mu, logvar), each (N, latent_dim); logvar in [-12, 6]."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, width: int = 128,
                 bottleneck: int = 64, stages: int | None = None, bn_mode: str = "batch"):
        super().__init__()
        channels, height, wid = data_shape
        stages, grid = _code_grid(data_shape, stages)
        norm = _norm(bn_mode)
        blocks: list[nn.Module] = []
        for _ in range(stages):
            blocks += [IdentityBlock(width, norm), IdentityBlock(width, norm), DownBlock(width, width, norm)]
        self.norm = nn.LayerNorm((height, wid), eps=1e-3)
        self.stem = _conv(channels, width, 3)
        self.body = nn.Sequential(*blocks)
        self.to_code = _conv(width, bottleneck, 1)
        self.head = GaussianHead(bottleneck * flat_size(grid), latent_dim, logvar_range=(-12.0, 6.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.to_code(self.body(self.stem(self.norm(x))))
        return self.head(h.flatten(1))


class ResNetV2Decoder(nn.Module):
    """p(x|z): z (..., latent_dim) -> raw parameters (..., params_per_pixel, C, H, W)."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, params_per_pixel: int = 1,
                 width: int = 128, bottleneck: int = 64, stages: int | None = None,
                 bn_mode: str = "batch"):
        super().__init__()
        stages, grid = _code_grid(data_shape, stages)
        norm = _norm(bn_mode)
        out_channels = params_per_pixel * data_shape[0]
        blocks: list[nn.Module] = []
        for s in range(stages):
            cout = out_channels if s == stages - 1 else width
            blocks += [IdentityBlock(width, norm), UpBlock(width, cout, norm)]
        self.code_shape = (bottleneck, *grid)
        self.out_shape = (params_per_pixel, *data_shape)
        self.from_code = nn.Linear(latent_dim, flat_size(self.code_shape))
        self.stem = _conv(bottleneck, width, 3)
        self.body = nn.Sequential(*blocks)
        self.out = _conv(out_channels, out_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_code(z.reshape(-1, z.shape[-1])).reshape(-1, *self.code_shape)
        return self.out(self.body(self.stem(h))).reshape(*z.shape[:-1], *self.out_shape)


class PatchGAN(nn.Module):
    """Discriminator: x (N, C, H, W) -> logits (N, 1, ceil(H/8), ceil(W/8)), one per patch."""

    def __init__(self, data_shape: tuple[int, int, int], width: int = 128, dropout: float = 0.25,
                 slope: float = 0.3, bn_mode: str = "batch"):
        super().__init__()
        norm = _norm(bn_mode)
        channels = [data_shape[0], width, width, width, width // 2, width // 2, 1]
        strides = [2, 2, 2, 1, 1, 1]
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides):
            cout = channels[i + 1]
            layers += [_conv(channels[i], cout, 3, stride), norm(cout)]
            if i < len(strides) - 1:
                layers.append(nn.LeakyReLU(slope))
            layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
