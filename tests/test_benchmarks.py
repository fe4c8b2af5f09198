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


def test_ratio_worker_prints_one_ratio_and_stops():
    """The interleaved-ratio job of `make bench` returns its JSON (and does not start a whole run)."""
    import json
    import subprocess
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "run.py"), "--worker",
                          "ratio:vae_standard:vae_standard"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["calls"] == 200 and 0.5 < res["ratio"] < 2.0
    assert "measured" not in out.stderr
