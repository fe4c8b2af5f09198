"""The native mixture kernel (mixvae.native) against the PyTorch path: time and rounding.

    OMP_NUM_THREADS=1 python benchmarks/native_kernel.py [--cases 300]

1. Time: ``mixture_log_prob`` forward and backward at the 2D protocol's KL shape (51 200 samples,
   64 components, D = 2), the kernel and the PyTorch path (``MIXVAE_NATIVE=0``) timed alternately,
   medians of 10 rounds of 5 calls; with gradients to every input, and to z alone (the mixture
   detached, as in five of the learned-prior iteration's six KLs).
2. Rounding: over random hard cases (log-variances -12 ... 8, means of scale 0.1 to 30 and, in a
   second set, to 1e3 with up to 4000 components; rows 0.1 to 10 standard deviations from a
   component), the kernel's error per row against float64, beyond the float32 rounding of the
   value itself, divided by its estimate (``distributions._direct_form_error``): the largest
   ratio, and the share of rows within the 1e-4-nat tolerance that keeps the kernel's value.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixvae import distributions, native  # noqa: E402
from tests.test_mixture_accuracy import reference  # noqa: E402


def time_both(rounds: int = 10, calls: int = 5) -> dict:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(51_200, 2, generator=g).requires_grad_()
    lw = torch.log_softmax(torch.randn(64, generator=g), -1).requires_grad_()
    means = torch.randn(64, 2, generator=g).requires_grad_()
    logvars = (0.3 * torch.randn(64, 2, generator=g)).requires_grad_()

    fixed = [t.detach() for t in (lw, means, logvars)]

    def step(rows_only: bool):
        args = (z, *fixed) if rows_only else (z, lw, means, logvars)
        out = distributions.mixture_log_prob(*args)
        torch.autograd.grad(out.sum(), [t for t in args if t.requires_grad])

    times = {"kernel": [], "pytorch": [], "kernel, z only": [], "pytorch, z only": []}
    for _ in range(rounds):
        for name in times:
            native.reset()
            if name.startswith("pytorch"):
                native.unavailable = "timed without it"
            rows_only = name.endswith("z only")
            step(rows_only)
            start = time.perf_counter()
            for _ in range(calls):
                step(rows_only)
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    native.reset()
    return {k: statistics.median(v) for k, v in times.items()}


def error_ratios(cases: int, big: bool) -> tuple[float, float]:
    worst, kept, rows = 0.0, 0, 0
    for seed in range(cases):
        g = torch.Generator().manual_seed(seed)
        dim = 1 + seed % 4
        k = int(torch.randint(1, 4000 if big and seed % 3 == 0 else 80, (1,), generator=g))
        scale = 10 ** float(torch.empty(1).uniform_(-1, 3 if big else 1.5, generator=g))
        means = scale * torch.randn(k, dim, generator=g)
        logvars = torch.empty(k, dim).uniform_(-12, 8, generator=g)
        pick = torch.randint(k, (300,), generator=g)
        spread = torch.exp(0.5 * logvars[pick]) * 10 ** torch.empty(300, 1).uniform_(-1, 1, generator=g)
        z = means[pick] + spread * torch.randn(300, dim, generator=g)
        lw = torch.log_softmax(torch.randn(k, generator=g), -1)
        with torch.no_grad():
            out = distributions._NativeMixtureLogSumExp.apply(z, lw, means, logvars, False)
            const = lw - 0.5 * (dim * distributions.LOG_2PI + logvars.sum(-1))
            estimate = distributions._direct_form_error(out, const, dim).double()
        want = reference(z, lw, means, logvars, torch.ones(300))[0]
        excess = ((out.double() - want).abs() - torch.finfo(torch.float32).eps / 2 * want.abs()).clamp_min(0)
        worst = max(worst, float((excess / estimate).max()))
        kept, rows = kept + int((estimate <= 1e-4).sum()), rows + 300
    return worst, kept / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=300)
    args = ap.parse_args()
    if native.library() is None:
        sys.exit(f"the kernel is unavailable here: {native.unavailable}")
    t = time_both()
    print(f"mixture KL 51200 x 64, D = 2, forward + backward, {torch.get_num_threads()} thread(s): "
          f"kernel {t['kernel']:.2f} ms, PyTorch path {t['pytorch']:.2f} ms, {t['pytorch'] / t['kernel']:.2f}x; "
          f"a detached mixture (gradient to z only): kernel {t['kernel, z only']:.2f} ms, "
          f"PyTorch path {t['pytorch, z only']:.2f} ms, {t['pytorch, z only'] / t['kernel, z only']:.2f}x")
    for big in (False, True):
        worst, share = error_ratios(args.cases, big)
        label = "K up to 4000, means up to 1e3" if big else "K < 80, means up to 30"
        print(f"rounding, {args.cases} cases ({label}): largest error / estimate {worst:.3f}; "
              f"{100 * share:.0f}% of rows within 1e-4 nats")


if __name__ == "__main__":
    main()
