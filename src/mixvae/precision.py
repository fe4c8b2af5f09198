"""Mixed precision: matrix products and convolutions in bfloat16, densities and losses in float32.

``train.precision`` and ``eval.precision`` are ``"fp32"`` (the default) or ``"bf16"``. Under bf16,
:func:`autocast` runs linear layers, convolutions and matrix products in bfloat16 with float32
accumulation (torch.autocast); every distribution of :mod:`mixvae.distributions` turns its
parameters into float32 (:func:`full`) and the mixture log-densities run with autocast off
(:func:`full_precision`), so log-densities, logsumexp, KLs, the introspective exponentials and the
losses are float32. Parameters, gradients and optimizer states stay float32.
"""
from __future__ import annotations

import functools

import torch

PRECISIONS = ("fp32", "bf16")
_LOW = (torch.bfloat16, torch.float16)


def autocast(device: torch.device | str, precision: str):
    """The context for ``precision`` on ``device``: bf16 autocast, or a no-op for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def full(t: torch.Tensor) -> torch.Tensor:
    """t in float32 if it is in a 16-bit float type, else t itself."""
    return t.float() if t.dtype in _LOW else t


def full_precision(fn):
    """Decorate ``fn`` (tensor arguments) to run with autocast off and its 16-bit float tensor
    arguments in float32: for densities whose matrix forms must not be rounded to bfloat16."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None or not torch.is_autocast_enabled(first.device.type):
            return fn(*args, **kwargs)
        args = [full(a) if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: full(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        with torch.autocast(first.device.type, enabled=False):
            return fn(*args, **kwargs)
    return wrapper


def clear_casts_after_steps(optimizer: torch.optim.Optimizer) -> None:
    """Forget autocast's bfloat16 copies of the weights after each ``optimizer.step()``: autocast
    keeps one copy per weight for the whole autocast region, and an objective that steps one player
    and then runs the networks again (the introspective and adversarial ones) must see the update."""
    optimizer.register_step_post_hook(lambda opt, args, kwargs: torch.clear_autocast_cache())
