"""The benchmark workloads build and run once (no timing here: `make bench` measures speed)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import workloads  # noqa: E402

CHEAP = ["vae_standard", "vae_vampprior", "hvae_vampprior", "sintro_2d", "gamix"]


@pytest.mark.parametrize("name", CHEAP)
def test_workload_and_its_baseline_run(name):
    torch.manual_seed(0)
    w = workloads.WORKLOADS[name]()
    w.fn()
    if w.baseline is not None:
        w.baseline()


def test_every_workload_builds():
    for name in workloads.WORKLOADS:
        if name in CHEAP or name == "fid_features":
            continue                       # fid_features loads Inception: covered by test_fid
        assert workloads.WORKLOADS[name]().label
