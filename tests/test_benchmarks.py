"""The benchmark workloads build and run once, and the ratio job reports a ratio (no timing is
asserted here: `make bench` measures speed)."""
import importlib.util
import inspect
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import workloads  # noqa: E402

CHEAP = ["vae_standard", "vae_vampprior", "hvae_vampprior", "sintro_2d", "sintro_2d_vanilla", "gamix"]
# what each workload's label must say it measures
LABELS = {
    "vae_standard": ("VAE step", "standard prior", "batch 100"),
    "vae_vampprior": ("VAE step", "VampPrior K=500", "batch 100"),
    "hvae_vampprior": ("HVAE step", "VampPrior K=500"),
    "ll_vampprior": ("log-likelihood", "S=5000", "VampPrior K=500", "8 images"),
    "ll_memory_512": ("log-likelihood", "S=5000", "512 images", "memory"),
    "sintro_2d": ("Soft-IntroVAE 2D iteration", "MoG(64)", "batch 512"),
    "sintro_2d_vanilla": ("Soft-IntroVAE 2D iteration", "standard prior", "batch 512"),
    "sintro_images": ("Soft-IntroVAE image iteration", "28x28", "MoG(10)"),
    "gamix": ("GAMIX iteration", "32x32"),
    "fid_features": ("FID", "Inception"),
}


def load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def optimizers_of(fn) -> list[torch.optim.Optimizer]:
    """The optimizers a workload's closure steps (held directly, in a dict of players, or by a
    function it wraps, e.g. workloads.in_precision)."""
    found = []
    for cell in fn.__closure__ or ():
        v = cell.cell_contents
        if inspect.isfunction(v):
            found += optimizers_of(v)
        for o in (v.values() if isinstance(v, dict) else [v]):
            if isinstance(o, torch.optim.Optimizer):
                found.append(o)
    return found


def params_of(opts):
    return [p for o in opts for g in o.param_groups for p in g["params"]]


def test_labels_name_their_workloads():
    assert set(LABELS) == set(workloads.WORKLOADS)


@pytest.mark.parametrize("name", CHEAP)
def test_workload_and_its_baseline_run(name):
    """One call of each is one training iteration: the loss is finite and the parameters it
    optimises move (for mixvae's implementation and for the plain baseline alike)."""
    torch.manual_seed(0)
    w = workloads.WORKLOADS[name]()
    assert all(part in w.label for part in LABELS[name]), w.label
    for fn in (w.fn, w.baseline):
        if fn is None:
            continue
        opts = optimizers_of(fn)
        assert opts, f"{name}: found no optimizer in the workload"
        params = params_of(opts)
        before = [p.detach().clone() for p in params]
        out = fn()
        if fn is w.fn:                     # mixvae's step returns its metrics: losses, all finite
            assert any("loss" in k for k in out), sorted(out)
            assert all(math.isfinite(v) for v in out.values() if isinstance(v, (int, float))), out
        moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
        assert moved == len(params), f"{name}: {moved} of {len(params)} parameters moved"
        assert all(torch.isfinite(p).all() for p in params)


def test_every_workload_builds():
    run = load_run_module()
    for name in workloads.WORKLOADS:
        if name == "fid_features":
            continue                       # loads Inception: covered by test_fid
        w = workloads.WORKLOADS[name]()
        assert all(part in w.label for part in LABELS[name]), w.label
        assert callable(w.fn) and (w.baseline is None or callable(w.baseline))
        inspect.signature(run.timeit).bind(w.fn, **w.timing)        # its timing options are timeit's


def test_ratio_worker_prints_one_ratio_and_stops(monkeypatch, capsys):
    """`run.py --worker ratio:NUM:DEN` (the interleaved job of `make bench`) prints one JSON line
    with the ratio of the two median call times, and does not start a whole benchmark run. Run in
    this process at a few calls per workload: only what it reports is checked, not how fast."""
    run = load_run_module()
    real = run.interleaved_ratio
    monkeypatch.setattr(run, "interleaved_ratio", lambda num, den: real(num, den, rounds=2, calls=2))
    monkeypatch.setattr(run, "run", lambda only: pytest.fail("the worker started a whole benchmark run"))
    monkeypatch.setattr(sys, "argv", ["run.py", "--worker", "ratio:vae_vampprior:vae_standard"])
    run.main()
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 1 and "measured" not in out.err
    res = json.loads(lines[0])
    assert res["calls"] == 4 and set(res["ms"]) == {"vae_vampprior", "vae_standard"}
    assert all(math.isfinite(v) and v > 0 for v in res["ms"].values())
    assert math.isfinite(res["ratio"]) and res["ratio"] > 0
    assert res["ratio"] == pytest.approx(res["ms"]["vae_vampprior"] / res["ms"]["vae_standard"], rel=1e-9)


def test_precision_worker_times_fp32_and_bf16_alternately(monkeypatch, capsys):
    run = load_run_module()
    real = run.interleaved_precision_ratio
    monkeypatch.setattr(run, "interleaved_precision_ratio", lambda name: real(name, rounds=2, calls=1))
    monkeypatch.setattr(sys, "argv", ["run.py", "--worker", "precision:vae_standard"])
    run.main()
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["calls"] == 2 and set(res["ms"]) == {"fp32", "bf16"}
    assert res["ratio"] == pytest.approx(res["ms"]["fp32"] / res["ms"]["bf16"], rel=1e-9)


def test_previous_implementation_has_the_same_losses_and_is_timed_alternately():
    """`make bench` times the learned-prior 2D iteration against the implementation of
    workloads.PREVIOUS (from git history, imported beside today's): from one initial state and the
    same noise their losses agree to 1e-5 (the speed work changed no maths)."""
    run = load_run_module()
    res = run.interleaved_previous_ratio(rounds=1, calls=1, check_steps=2)
    if "skipped" in res:
        pytest.skip(res["skipped"])                 # a source tree without git history
    assert res["commit"] == workloads.PREVIOUS and res["calls"] == 1
    assert res["max_relative_loss_difference"] <= 1e-5
    assert res["ratio"] == pytest.approx(res["ms"]["previous"] / res["ms"]["today"], rel=1e-9)
    assert "mixvae_previous" in sys.modules and "mixvae" in sys.modules


def test_tiny_cpu_run_measures_every_workload(tmp_path):
    """`run.py --device cpu --tiny` (the script CI runs for `--device cuda`'s code path) measures each
    workload once in its own process, in fp32 and (where it has a bf16 form) in bf16, and writes them
    all with each precision's own peak; it times no baselines."""
    import subprocess
    out = tmp_path / "tiny.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--device", "cpu", "--tiny", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    want = [(k, p) for k in workloads.WORKLOADS for p in ("fp32", "bf16") if p == "fp32" or workloads.WORKLOADS[k] is not
            workloads.WORKLOADS["fid_features"]]
    assert [(r["key"], r["precision"]) for r in res["workloads"]] == want
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 and r["baseline_ms"] is None for r in res["workloads"])
    bf16 = [r for r in res["workloads"] if r["precision"] == "bf16"]
    assert all(r["speedup_vs_fp32"] > 0 for r in bf16)
    peaks = res["matmul_peak_gflops_by_precision"]
    for r in res["workloads"]:
        if r["gflops"]:
            assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / peaks[r["precision"]])
    assert res["device"] == "cpu" and "--tiny" in res["command"] and "projections" not in res
    assert res["machine"]["bf16_support"] and "| workload | precision |" in proc.stdout


def test_projections_are_the_step_times_times_the_protocols_step_counts():
    run = load_run_module()
    p = run.projections({"vae_vampprior": {"ms": 3.6}, "sintro_2d": {"ms": 1.0}})
    assert p["vampprior_static_protocol_h"] == pytest.approx(2000 * 500 * 3.6e-3 / 3600)
    assert p["table_2d_h"] == pytest.approx(12 * 3 * 30_000 * 1e-3 / 3600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_is_one_line(monkeypatch):
    run = load_run_module()
    monkeypatch.setattr(sys, "argv", ["run.py", "--device", "cuda"])
    with pytest.raises(SystemExit, match="no CUDA device is available"):
        run.main()


def test_ensemble_worker_times_the_same_iterations_both_ways():
    """`make bench` times several seeds' learned-prior 2D iterations as one stacked ensemble against
    the same iterations one after the other; from the same weights and random states each
    member's losses are its separate run's (1e-5)."""
    res = load_run_module().interleaved_ensemble_ratio(members=2, rounds=1, calls=1, check_steps=2)
    assert res["members"] == 2 and res["calls"] == 1 and res["threads"] == 1
    assert res["max_relative_loss_difference"] <= 1e-5
    assert res["ratio"] == pytest.approx(res["ms"]["separate"] / res["ms"]["ensemble"], rel=1e-9)


def test_native_kernel_probe_measures_error_against_its_estimate():
    """benchmarks/native_kernel.py: on a few hard cases the kernel's errors stay below its
    estimate, and some rows are kept (within the 1e-4-nat tolerance)."""
    from mixvae import native
    native.reset()
    if native.library() is None:
        pytest.skip(f"the C kernel is unavailable here: {native.unavailable}")
    import native_kernel
    worst, share = native_kernel.error_ratios(6, big=False)
    assert 0 < worst < 1 and share > 0.5
