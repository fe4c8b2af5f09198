"""Speed and memory of mixvae's workloads, printed as ratios (run: make bench).

For each workload: the time of mixvae's implementation, the time of a straightforward
plain-PyTorch implementation of the same maths kept in this file (the baseline), the
achieved GFLOP/s from an analytic FLOP count and its fraction of the machine's measured fp32
matmul peak, and peak memory (RSS growth) of the measured call. One table on stdout, plus JSON
(``--json FILE``). FLOP convention: 2 per multiply-add; a training step counts forward + backward
as 3x the forward matmul FLOPs.

    python benchmarks/run.py                 # everything
    python benchmarks/run.py --only vae      # workloads whose name contains 'vae'
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mixvae.config import config_from_dict  # noqa: E402
from mixvae.data.datasets import Dataset, Split  # noqa: E402
from mixvae.factory import build_model, build_objective  # noqa: E402
from mixvae.metrics.likelihood import log_likelihood  # noqa: E402
from mixvae.objectives.base import StepContext  # noqa: E402
from mixvae.training.optim import make_optimizer  # noqa: E402

import baselines  # noqa: E402


def timeit(fn, min_time: float = 2.0, warmup: int = 3) -> float:
    """Median seconds per call over repeated calls lasting at least ``min_time`` in total."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak(shapes) -> float:
    """Best fp32 GFLOP/s over the matmul shapes the workloads use."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        dt = timeit(lambda: a @ b, min_time=0.5)
        best = max(best, 2 * m * k * n / dt / 1e9)
    return best


def fake_mnist(n: int = 1000) -> Dataset:
    x = (torch.rand(n, 1, 28, 28) < 0.2).to(torch.uint8)
    s = Split(x, 1.0)
    return Dataset("mnist", "binary", s, s, s)


def mlp_vae_forward_flops(batch: int, hidden=(300, 300), latent=40, d=784, components=0) -> float:
    """Forward matmul FLOPs of the gated MLP VAE (gated layers count twice) plus the VampPrior's
    encoder pass over K pseudo-inputs and the (N, K) mixture matrix products."""
    h1, h2 = hidden
    enc = d * 2 * h1 + h1 * 2 * h2 + h2 * 2 * latent
    dec = latent * 2 * h2 + h2 * 2 * h1 + h1 * d
    flops = 2 * batch * (enc + dec)
    if components:
        flops += 2 * components * enc + 2 * 2 * batch * components * latent
    return flops


def vae_step_workload(prior: str, arch: str = "vae", batch: int = 100):
    cfg = config_from_dict({"model": {"arch": arch, "prior": {"kind": prior, "components": 500}}})
    data = fake_mnist()
    torch.manual_seed(0)
    model = build_model(cfg, data)
    obj = build_objective(cfg, model)
    opt = {"model": make_optimizer("adam", obj.players()["model"], 5e-4, (0.9, 0.999))}
    ctx = StepContext(0, 0, 1, 1.0, opt)
    x = data.train.get(slice(0, batch))
    return lambda: obj.step(x, ctx)


def run(only: str | None) -> dict:
    torch.manual_seed(0)
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}}
    peak = matmul_peak([(100, 784, 600), (100, 300, 600), (100, 300, 784), (4096, 300, 784), (512, 256, 256)])
    results["matmul_peak_gflops"] = peak
    rows = []

    def record(name, fn, baseline_fn, flops, note=""):
        if only and only not in name:
            return
        gc.collect()
        rss0 = peak_rss_mb()
        t = timeit(fn)
        mem = peak_rss_mb() - rss0
        tb = timeit(baseline_fn) if baseline_fn is not None else None
        row = {"workload": name, "ms": t * 1e3, "baseline_ms": None if tb is None else tb * 1e3,
               "speedup_vs_baseline": None if tb is None else tb / t,
               "gflops": flops / t / 1e9 if flops else None,
               "fraction_of_peak": flops / t / 1e9 / peak if flops else None,
               "peak_rss_growth_mb": mem, "note": note}
        rows.append(row)
        print(f"  measured {name}: {t * 1e3:.1f} ms", file=sys.stderr, flush=True)

    std_step = vae_step_workload("standard")
    record("vae step, standard prior (batch 100)", std_step, baselines.vae_step("standard"),
           3 * mlp_vae_forward_flops(100))
    record("vae step, VampPrior K=500 (batch 100)", vae_step_workload("vampprior"), baselines.vae_step("vampprior"),
           3 * mlp_vae_forward_flops(100, components=500))
    record("hvae step, VampPrior K=500 (batch 100)", vae_step_workload("vampprior", "hvae"), None, None)

    cfg = config_from_dict({"model": {"arch": "vae", "prior": {"kind": "vampprior", "components": 500}}})
    torch.manual_seed(0)
    model = build_model(cfg, fake_mnist()).eval()
    x = fake_mnist(8).test.get()
    S = 5000
    ll_flops = 2 * 8 * S * (40 * 600 + 300 * 600 + 300 * 784 + 2 * 500 * 40)
    record("log-likelihood, S=5000, VampPrior (8 images)", lambda: log_likelihood(model, x, S),
           baselines.log_likelihood(model, x, S), ll_flops)

    results["workloads"] = rows
    by = {r["workload"]: r for r in rows}
    a, b = "vae step, standard prior (batch 100)", "vae step, VampPrior K=500 (batch 100)"
    if a in by and b in by:
        results["vampprior_over_standard_step"] = by[b]["ms"] / by[a]["ms"]
        results["vampprior_over_standard_step_baseline"] = by[b]["baseline_ms"] / by[a]["baseline_ms"]
        results["vampprior_over_standard_flops"] = (mlp_vae_forward_flops(100, components=500) / mlp_vae_forward_flops(100))
    return results


def print_table(res: dict) -> None:
    print(f"\nmachine: {res['machine']}; fp32 matmul peak {res['matmul_peak_gflops']:.1f} GFLOP/s\n")
    print(f"| workload | mixvae ms | baseline ms | speed-up | GFLOP/s | % of peak | peak RSS growth MB |")
    print("|---|---|---|---|---|---|---|")
    f = lambda v, fmt: "–" if v is None else format(v, fmt)
    for r in res["workloads"]:
        print(f"| {r['workload']} | {r['ms']:.2f} | {f(r['baseline_ms'], '.2f')} | {f(r['speedup_vs_baseline'], '.2f')}x | "
              f"{f(r['gflops'], '.1f')} | {f(None if r['fraction_of_peak'] is None else 100 * r['fraction_of_peak'], '.0f')} | "
              f"{r['peak_rss_growth_mb']:.0f} |")
    if "vampprior_over_standard_step" in res:
        print(f"\nVampPrior(K=500) step / standard step: {res['vampprior_over_standard_step']:.2f} "
              f"(FLOP ratio {res['vampprior_over_standard_flops']:.2f}; plain baseline "
              f"{res['vampprior_over_standard_step_baseline']:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run only workloads whose name contains this text")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    args = ap.parse_args()
    res = run(args.only)
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
