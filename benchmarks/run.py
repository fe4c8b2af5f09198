"""Speed and memory of mixvae's workloads, printed as ratios (run: make bench).

For each workload: the time of mixvae's implementation (median over repeated calls), the time of a
straightforward plain-PyTorch implementation of the same maths kept in ``baselines.py``, the
achieved GFLOP/s and its fraction of the machine's fp32 matmul peak (measured here at the shapes
the workloads use), and the peak memory: the growth of the process's peak RSS while mixvae's
workload runs, each workload in a fresh process. FLOPs: the matrix-product and convolution FLOPs
of one call of mixvae's implementation, counted from the operator shapes by
``torch.utils.flop_counter`` (2 per multiply-add, backward included); elementwise work is not
counted, so the fraction of peak is a lower bound on how busy the machine is. "Matmuls alone": the
time the workload's matrix products take when timed alone at their own shapes, as a share of the
workload's time (100% would mean everything but the matrix products is free).

    python benchmarks/run.py                         # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --only vae              # workloads whose name contains 'vae'
    python benchmarks/run.py --json out.json --docs docs/performance.md
    python benchmarks/run.py --device cuda           # the same workloads on a GPU (data on the GPU)
    python benchmarks/run.py --device cpu --tiny     # every workload once, no baselines (CI: the script works)

On a GPU, each call is timed to its end (``torch.cuda.synchronize``), the peak is the device's
measured fp32 matmul peak, memory the growth of its peak allocated memory, and the table adds the
projected wall times of the VampPrior static-MNIST protocol (2000 epochs of 500 steps, training
steps only: an upper bound, as the protocol stops early) and of the whole 2D table (12 rows x 3
seeds x 30 000 iterations, every cell at the cost of a learned-prior iteration: an upper bound).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


TINY_TIMING = dict(min_time=0.0, warmup=1, min_calls=1)


def synchronize() -> None:
    """Wait for the GPU's queued work (nothing on a CPU), so that a timed call ends when its work does."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timeit(fn, min_time: float = 2.0, warmup: int = 2, min_calls: int = 5) -> float:
    """Median seconds per call over at least ``min_calls`` calls lasting at least ``min_time``
    (each call timed to the end of its GPU work)."""
    call = fn
    fn = lambda: (call(), synchronize())
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < min_calls:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak(shapes, device: str = "cpu", min_time: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s over the given (m, k, n) matrix-product shapes on ``device`` in ``dtype``."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        dt = timeit(lambda: a @ b, min_time=min_time)
        best = max(best, 2 * m * k * n / dt / 1e9)
    return best


PEAK_SHAPES = [(100, 784, 600), (100, 300, 600), (100, 300, 784), (600, 784, 600), (4096, 300, 784),
               (512, 256, 256), (1024, 256, 256), (6272, 576, 64)]


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_time_at_shapes(fn) -> float | None:
    """Seconds that the matrix products of one call of ``fn`` take when timed alone at their shapes
    (mm, addmm, bmm; contiguous operands): the time the call would need if nothing else cost
    anything. None if the call has no matrix products."""
    from torch.utils._python_dispatch import TorchDispatchMode
    aten = torch.ops.aten
    shapes: dict[tuple, int] = {}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (aten.mm.default, aten.addmm.default, aten.bmm.default):
                a, b = (args[1], args[2]) if func is aten.addmm.default else (args[0], args[1])
                key = (tuple(a.shape), tuple(b.shape), a.dtype)
                shapes[key] = shapes.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    if not shapes:
        return None
    total = 0.0
    for (sa, sb, dtype), count in shapes.items():
        a, b = torch.randn(sa, dtype=dtype), torch.randn(sb, dtype=dtype)   # on the default device, as the workload
        op = torch.bmm if len(sa) == 3 else torch.mm
        total += count * timeit(lambda: op(a, b), min_time=0.05, warmup=2, min_calls=5)
    return total


def peak_memory_mb(device: str) -> float:
    """The process's peak RSS (CPU) or the device's peak allocated memory (GPU), MB."""
    return torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else peak_rss_mb()


def worker(name: str, device: str = "cpu", tiny: bool = False, precision: str = "fp32") -> dict:
    """Run one workload in this (fresh) process and return its measurements. On another device
    than the CPU, every tensor the workload makes (models, data, noise) is made there. The plain
    baseline is timed in fp32 only; a workload without a bf16 form returns ``{"skipped": ...}``."""
    import workloads
    if device != "cpu":
        torch.set_default_device(device)
    workloads.TINY, workloads.PRECISION = tiny, precision
    torch.manual_seed(0)
    spec = workloads.WORKLOADS[name]()
    if precision != "fp32" and not spec.bf16:
        return {"key": name, "precision": precision, "skipped": "always measured in float32"}
    timing = TINY_TIMING if tiny else spec.timing
    mem0 = peak_memory_mb(device)
    t = timeit(spec.fn, **timing)
    mem = peak_memory_mb(device) - mem0
    flops = spec.flops if spec.flops is not None else count_flops(spec.fn)
    mm_time = matmul_time_at_shapes(spec.fn) if spec.matmul_share and not tiny else None
    tb = timeit(spec.baseline, **timing) if spec.baseline is not None and not tiny and precision == "fp32" else None
    return {"workload": spec.label, "key": name, "precision": precision, "ms": t * 1e3, "baseline_ms": None if tb is None else tb * 1e3,
            "speedup_vs_baseline": None if tb is None else tb / t, "flops": flops, "peak_rss_growth_mb": mem,
            "matmul_share": None if mm_time is None else mm_time / t,
            "note": spec.note}


def alternate_medians(fns: dict, rounds: int, calls: int) -> dict:
    """Median milliseconds per call of each function in ``fns`` (name -> callable), timed in
    ``rounds`` rounds of ``calls`` calls of each in turn (each call timed to the end of its GPU
    work): every function sees the same machine state, so their ratios do not drift."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                synchronize()
                times[k].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}


def interleaved_ratio(numerator: str, denominator: str, rounds: int = 40, calls: int = 5) -> dict:
    """Time two workloads alternately in one process (``calls`` calls of each per round) and return
    the ratio of their median call times: both see the same machine state, so the ratio does not
    drift with whatever else the machine does between two fresh processes."""
    import workloads
    torch.manual_seed(0)
    num, den = workloads.WORKLOADS[numerator](), workloads.WORKLOADS[denominator]()
    for _ in range(3):
        num.fn(), den.fn()
    med = alternate_medians({denominator: den.fn, numerator: num.fn}, rounds, calls)
    return {"ratio": med[numerator] / med[denominator], "ms": med, "calls": rounds * calls}


def interleaved_precision_ratio(name: str, rounds: int = 20, calls: int = 5) -> dict:
    """fp32 time over bf16 time of one workload, the two built side by side in one process and
    timed alternately (as :func:`interleaved_ratio`): the bf16 speed-up free of machine drift."""
    import workloads
    specs = {}
    for p in ("fp32", "bf16"):
        workloads.PRECISION = p
        torch.manual_seed(0)
        specs[p] = workloads.WORKLOADS[name]()
    for _ in range(3):
        specs["fp32"].fn(), specs["bf16"].fn()
    med = alternate_medians({p: spec.fn for p, spec in specs.items()}, rounds, calls)
    return {"ratio": med["fp32"] / med["bf16"], "ms": med, "calls": rounds * calls}


def interleaved_previous_ratio(rounds: int = 20, calls: int = 5, check_steps: int = 3, threads: int = 1) -> dict:
    """The learned-prior 2D iteration of the implementation of ``workloads.PREVIOUS`` against
    today's, both built in this process from the same seed and timed alternately (as
    :func:`interleaved_ratio`), in fp32 on ``threads`` threads (1: as the 2D protocol's cells run;
    on this 2-core machine two threads measured 0.7 to 1.0 times the one-thread time from run to run:
    the iteration's ~1200 small parallel operations cost about what they share). First both take ``check_steps``
    steps from the same initial state, and the largest relative difference between their losses is
    returned with the times."""
    import mixvae
    import workloads
    try:
        libs = {"previous": workloads.import_previous(), "today": mixvae}
    except RuntimeError as e:
        return {"skipped": str(e)}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_previous_and_today(libs, rounds, calls, check_steps) | {"threads": threads}
    finally:
        torch.set_num_threads(before)


def _time_previous_and_today(libs: dict, rounds: int, calls: int, check_steps: int) -> dict:
    """The losses' check and the alternate timing of :func:`interleaved_previous_ratio`."""
    import workloads
    fns = {}
    for k, lib in libs.items():
        obj, cfg, _, x = workloads.sintro_2d_parts(lib)
        fns[k] = workloads.plain_step(lib, obj, cfg, x)
    losses = {}
    for k, fn in fns.items():
        torch.manual_seed(1)                          # the same noise for both
        losses[k] = [fn() for _ in range(check_steps)]
    diff = max(abs(a[m] - b[m]) / max(abs(a[m]), 1e-12)
               for a, b in zip(losses["previous"], losses["today"]) for m in a if m in b)
    med = alternate_medians(fns, rounds, calls)
    return {"commit": workloads.PREVIOUS, "ratio": med["previous"] / med["today"], "ms": med,
            "calls": rounds * calls, "max_relative_loss_difference": diff, "check_steps": check_steps}


def interleaved_ensemble_ratio(members: int = 3, rounds: int = 10, calls: int = 2, check_steps: int = 2,
                               threads: int = 1) -> dict:
    """Several seeds in one process: the learned-prior 2D iteration of ``members`` seeds as one
    stacked ensemble (mixvae.training.ensemble) against the same iterations run one after the
    other, timed alternately (as :func:`interleaved_ratio`) in fp32 on ``threads`` threads. First
    both take ``check_steps`` steps from the same weights and random states, and the largest
    relative difference between each member's losses and its separate run's is returned too."""
    import workloads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        separate, stacked, states = workloads.sintro_2d_members(members)
        gpu = torch.get_default_device().type == "cuda"
        losses = []
        for step, state in zip(separate, states):
            (torch.cuda.set_rng_state if gpu else torch.set_rng_state)(state)
            losses.append([step() for _ in range(check_steps)])
        together = [stacked() for _ in range(check_steps)]
        diff = max(abs(together[t][f"seed{m}/{k}"] - v) / max(abs(v), 1e-12)
                   for m, rows in enumerate(losses) for t, row in enumerate(rows) for k, v in row.items())
        med = alternate_medians({"separate": lambda: [f() for f in separate], "ensemble": stacked}, rounds, calls)
    finally:
        torch.set_num_threads(before)
    return {"members": members, "ratio": med["separate"] / med["ensemble"], "ms": med, "calls": rounds * calls,
            "threads": threads, "max_relative_loss_difference": diff, "check_steps": check_steps}


def profile(name: str) -> None:
    """Where one workload's time goes (operators by self CPU time over 3 calls, after a warm-up)."""
    import workloads
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    spec = workloads.WORKLOADS[name]()
    spec.fn()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            spec.fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def in_fresh_process(job: str, device: str = "cpu", tiny: bool = False, precision: str = "fp32") -> dict:
    """Run ``--worker job`` (a workload key, or ``ratio:NUM:DEN``) in a new Python process; its JSON."""
    out = subprocess.run([sys.executable, __file__, "--worker", job, "--device", device, "--precision", precision]
                         + (["--tiny"] if tiny else []), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmark job {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def run(only: str | None, device: str = "cpu", tiny: bool = False, precisions=("fp32", "bf16")) -> dict:
    """Every workload (whose key contains ``only``) in each of ``precisions``, each in a fresh process."""
    import workloads
    torch.manual_seed(0)
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu": _cpu_name(), "cores": os.cpu_count(),
                       "device": device_name(device), "bf16_support": bf16_support(device)},
           "command": "python benchmarks/run.py" + (f" --only {only}" if only else "")
                      + (f" --device {device}" if device != "cpu" else "") + (" --tiny" if tiny else "")
                      + (f" --precision {' '.join(precisions)}" if tuple(precisions) != ("fp32", "bf16") else ""),
           "date": time.strftime("%Y-%m-%d"), "device": device}
    peaks = {p: matmul_peak(PEAK_SHAPES[:2] if tiny else PEAK_SHAPES, device, min_time=0.0 if tiny else 0.5,
                            dtype=DTYPES[p]) for p in precisions}
    res["matmul_peak_gflops"] = peaks.get("fp32")
    res["matmul_peak_gflops_by_precision"] = peaks
    rows = []
    for name in workloads.WORKLOADS:
        if only and only not in name:
            continue
        for p in precisions:
            row = in_fresh_process(name, device, tiny, p)
            if "skipped" in row:
                continue
            row["gflops"] = row["flops"] / (row["ms"] / 1e3) / 1e9 if row["flops"] else None
            row["fraction_of_peak"] = row["gflops"] / peaks[p] if row["gflops"] else None
            fp32 = next((r for r in rows if r["key"] == name and r["precision"] == "fp32"), None)
            row["speedup_vs_fp32"] = fp32["ms"] / row["ms"] if fp32 is not None and p != "fp32" else None
            rows.append(row)
            print(f"  measured {name} ({p}): {row['ms']:.1f} ms", file=sys.stderr, flush=True)
    res["workloads"] = rows
    by = {r["key"]: r for r in rows if r["precision"] == precisions[0]}
    if "vae_standard" in by and "vae_vampprior" in by:
        a, b = by["vae_standard"], by["vae_vampprior"]
        res["vampprior_over_standard_step"] = b["ms"] / a["ms"]
        res["vampprior_over_standard_step_baseline"] = b["baseline_ms"] / a["baseline_ms"] if not tiny else None
        res["vampprior_over_standard_flops"] = b["flops"] / a["flops"]
        if not tiny:
            res["vampprior_over_standard_interleaved"] = in_fresh_process("ratio:vae_vampprior:vae_standard", device)
    if "bf16" in precisions and not tiny:   # the bf16 goals' two steps, timed alternately with fp32
        res["bf16_speedup_interleaved"] = {k: in_fresh_process(f"precision:{k}", device)
                                           for k in ("vae_vampprior", "vae_standard") if k in by}
    if "sintro_2d" in by and not tiny and device == "cpu":   # today's learned-prior 2D iteration against PREVIOUS
        res["sintro_2d_over_previous"] = in_fresh_process("previous:sintro_2d", device)
    if "sintro_2d" in by and not tiny:   # several seeds in one process against one after the other
        res["ensemble_2d"] = in_fresh_process("ensemble", device)
    if device != "cpu":
        res["projections"] = {p: projections({r["key"]: r for r in rows if r["precision"] == p}) for p in precisions}
    return res


def projections(by: dict) -> dict:
    """Projected wall times (hours) of the two long tables from the measured step times: upper bounds
    (steps only; the VampPrior protocol stops early, the VAE and vanilla 2D cells cost less)."""
    out = {}
    if "vae_vampprior" in by:
        out["vampprior_static_protocol_h"] = 2000 * 500 * by["vae_vampprior"]["ms"] / 3.6e6
    if "sintro_2d" in by:
        out["table_2d_h"] = 12 * 3 * 30_000 * by["sintro_2d"]["ms"] / 3.6e6
    return out


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: no CUDA device is available to this torch ({torch.__version__})")
        return torch.cuda.get_device_name(torch.device(device))
    return _cpu_name()


def bf16_support(device: str) -> str:
    """What the hardware offers for bf16 matrix products, in words (CPU flags or the GPU's answer)."""
    if device.startswith("cuda"):
        return "bf16 tensor cores" if torch.cuda.is_bf16_supported() else "no bf16 support"
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return "bf16 matrix units (AMX)"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16 dot-product instructions, no bf16 matrix units (no AMX)"
    return "no bf16 instructions (bf16 products are converted to fp32)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(res: dict) -> str:
    m = res["machine"]
    f = lambda v, fmt: "–" if v is None else format(v, fmt)
    on_gpu = res.get("device", "cpu") != "cpu"
    where = f"GPU {m['device']} (host: {m['cpu']})" if on_gpu else f"{m['cpu']}, {m['cores']} cores"
    peaks = res.get("matmul_peak_gflops_by_precision") or {"fp32": res["matmul_peak_gflops"]}
    peak_text = "; ".join(f"{p} **{v:.1f} GFLOP/s**" for p, v in peaks.items())
    lines = [f"Machine: {where}, torch {m['torch']} ({m['threads']} threads), Python {m['python']}; "
             f"bf16: {m.get('bf16_support', 'not measured')}; measured matmul peak {peak_text}. "
             f"Command: `{res['command']}` ({res['date']}).", "",
             f"| workload | precision | mixvae ms | plain fp32 ms | speed-up | bf16 over fp32 | GFLOP/s | "
             f"% of its peak | matmuls alone | "
             f"{'peak GPU memory growth' if on_gpu else 'peak RSS growth'} MB | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["workloads"]:
        pct = None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"]
        share = r.get("matmul_share")
        lines.append(f"| {r['workload']} | {r.get('precision', 'fp32')} | {r['ms']:.2f} | {f(r['baseline_ms'], '.2f')} | "
                     f"{f(r['speedup_vs_baseline'], '.2f')}x | {f(r.get('speedup_vs_fp32'), '.2f')}"
                     f"{'x' if r.get('speedup_vs_fp32') else ''} | {f(r['gflops'], '.1f')} | {f(pct, '.0f')} | "
                     f"{f(None if share is None else 100 * share, '.0f')}{'%' if share else ''} | "
                     f"{r['peak_rss_growth_mb']:.0f} | {r['note']} |")
    if "vampprior_over_standard_interleaved" in res:
        il = res["vampprior_over_standard_interleaved"]
        lines += ["", f"VampPrior(K=500) step / standard-prior step (fp32): **{il['ratio']:.2f}** timed alternately in "
                      f"one process ({il['ms']['vae_vampprior']:.2f} / {il['ms']['vae_standard']:.2f} ms, medians of "
                      f"{il['calls']} calls each); {res['vampprior_over_standard_step']:.2f} from the two rows above "
                      f"(separate processes). FLOP ratio {res['vampprior_over_standard_flops']:.2f}; plain "
                      f"implementation {res['vampprior_over_standard_step_baseline']:.2f}."]
    for key, il in (res.get("bf16_speedup_interleaved") or {}).items():
        label = next(r["workload"] for r in res["workloads"] if r["key"] == key)
        lines += ["", f"{label}: bf16 **{il['ratio']:.2f}x** faster than fp32 timed alternately in one process "
                      f"({il['ms']['fp32']:.2f} / {il['ms']['bf16']:.2f} ms, medians of {il['calls']} calls each)."]
    prev = res.get("sintro_2d_over_previous")
    if prev and "skipped" in prev:
        lines += ["", f"Learned-prior 2D iteration against the previous implementation: not measured ({prev['skipped']})."]
    elif prev:
        lines += ["", f"Learned-prior 2D iteration (fp32): **{prev['ratio']:.2f}x** faster than the implementation of "
                      f"commit {prev['commit']} (when the speed issue was filed), timed alternately in one process "
                      f"({prev['ms']['previous']:.2f} / {prev['ms']['today']:.2f} ms, medians of {prev['calls']} calls "
                      f"each, {prev['threads']} thread(s)); their losses over {prev['check_steps']} steps "
                      f"from one initial state differ by at most {prev['max_relative_loss_difference']:.1e} (relative)."]
    ens = res.get("ensemble_2d")
    if ens:
        lines += ["", f"Several seeds in one process (a stacked ensemble, `mixvae train --seeds`): the learned-prior 2D "
                      f"iteration of {ens['members']} seeds as one ensemble runs at **{ens['ratio']:.2f}x** the speed of the "
                      f"{ens['members']} separate iterations, timed alternately in one process ({ens['ms']['ensemble']:.2f} / "
                      f"{ens['ms']['separate']:.2f} ms, medians of {ens['calls']} calls each, {ens['threads']} thread(s), fp32); "
                      f"over {ens['check_steps']} steps each member's losses differ from its separate run's by at most "
                      f"{ens['max_relative_loss_difference']:.1e} (relative)."]
    for p, pr in (res.get("projections") or {}).items():
        if pr:
            lines += ["", f"Projected wall time on this device in {p} (upper bounds, training steps only): VampPrior "
                          f"static-MNIST protocol (2000 epochs x 500 steps) {f(pr.get('vampprior_static_protocol_h'), '.2f')} h; "
                          f"whole 2D table (12 rows x 3 seeds x 30 000 iterations, each at the learned-prior iteration's "
                          f"cost) {f(pr.get('table_2d_h'), '.2f')} h."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run only workloads whose key contains this text")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    ap.add_argument("--docs", type=Path, default=None, help="write the table into this Markdown file's bench markers")
    ap.add_argument("--profile", default=None, metavar="KEY", help="print torch.profiler's table for one workload")
    ap.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device such as cuda or cuda:1")
    ap.add_argument("--tiny", action="store_true", help="every workload once at its smallest size, without baselines (CI)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES),
                    help="measure every workload in each of these (default: fp32 and bf16)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device != "cpu":
        device_name(args.device)                   # one line if there is no such device
    if args.profile:
        profile(args.profile)
        return
    if args.worker:
        kind, _, rest = args.worker.partition(":")
        if rest and args.device != "cpu":
            torch.set_default_device(args.device)
        out = (interleaved_ratio(*rest.split(":")) if kind == "ratio" else
               interleaved_precision_ratio(rest) if kind == "precision" else
               interleaved_previous_ratio() if kind == "previous" else
               interleaved_ensemble_ratio(threads=1 if args.device == "cpu" else torch.get_num_threads())
               if kind == "ensemble" else
               worker(args.worker, args.device, args.tiny, args.precision[0]))
        print(json.dumps(out))
        return
    res = run(args.only, args.device, args.tiny, tuple(args.precision))
    text = table(res)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.docs:
        from mixvae.app.grid import replace_between
        if not replace_between(args.docs, BEGIN, END, text):
            raise SystemExit(f"{args.docs} has no {BEGIN} ... {END} markers")


if __name__ == "__main__":
    main()
