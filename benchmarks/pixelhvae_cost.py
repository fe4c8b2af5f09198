"""What PixelHVAE costs on this machine: a training step, the test log-likelihood and sampling.

    python benchmarks/pixelhvae_cost.py [--threads N]

The preset's networks (configs/vampprior/pixelhvae_vampprior_static_mnist.yaml: VampPrior K=500,
28x28 binary images); median wall times of a few calls after one warm-up call.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import workloads
from mixvae.config import load_config
from mixvae.metrics.likelihood import log_likelihood


def median_seconds(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(workloads.CONFIGS / "vampprior" / "pixelhvae_vampprior_static_mnist.yaml", ["data.name=mnist"])
    data = workloads.fake_images(1000)
    x = data.train.get(slice(0, 100))
    obj, _, step = workloads._step(cfg, data, x)
    model = obj.model
    t_step = median_seconds(step, 5)
    model.eval()
    xs = x[:2]
    t_ll = median_seconds(lambda: log_likelihood(model, xs, 500, cfg.eval.ll_chunk), 2) / 2 * 10
    t_sample = median_seconds(lambda: model.sample(4), 1) / 4
    print(f"PixelHVAE + VampPrior K=500, 28x28, {args.threads} threads")
    print(f"  training step (batch 100):         {t_step * 1e3:8.0f} ms  -> {t_step * 500 / 60:5.1f} min per epoch of 50 000 images")
    print(f"  test log-likelihood, S = 5000:     {t_ll:8.2f} s per image -> {t_ll * 10_000 / 3600:5.1f} h for 10 000 images")
    print(f"  exact sampling (784 passes):       {t_sample:8.2f} s per image")


if __name__ == "__main__":
    main()
