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


def timeit(fn, min_time: float = 2.0, warmup: int = 2, min_calls: int = 5) -> float:
    """Median seconds per call over at least ``min_calls`` calls lasting at least ``min_time``."""
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


def matmul_peak(shapes) -> float:
    """Best fp32 GFLOP/s over the given (m, k, n) matrix-product shapes."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        dt = timeit(lambda: a @ b, min_time=0.5)
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
                key = (tuple(a.shape), tuple(b.shape))
                shapes[key] = shapes.get(key, 0) + 1
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    if not shapes:
        return None
    total = 0.0
    for (sa, sb), count in shapes.items():
        a, b = torch.randn(sa), torch.randn(sb)
        op = torch.bmm if len(sa) == 3 else torch.mm
        total += count * timeit(lambda: op(a, b), min_time=0.05, warmup=2, min_calls=5)
    return total


def worker(name: str) -> dict:
    """Run one workload in this (fresh) process and return its measurements."""
    import workloads
    torch.manual_seed(0)
    spec = workloads.WORKLOADS[name]()
    rss0 = peak_rss_mb()
    t = timeit(spec.fn, **spec.timing)
    mem = peak_rss_mb() - rss0
    flops = spec.flops if spec.flops is not None else count_flops(spec.fn)
    mm_time = matmul_time_at_shapes(spec.fn) if spec.matmul_share else None
    tb = timeit(spec.baseline, **spec.timing) if spec.baseline is not None else None
    return {"workload": spec.label, "key": name, "ms": t * 1e3, "baseline_ms": None if tb is None else tb * 1e3,
            "speedup_vs_baseline": None if tb is None else tb / t, "flops": flops, "peak_rss_growth_mb": mem,
            "matmul_share": None if mm_time is None else mm_time / t,
            "note": spec.note}


def interleaved_ratio(numerator: str, denominator: str, rounds: int = 40, calls: int = 5) -> dict:
    """Time two workloads alternately in one process (``calls`` calls of each per round) and return
    the ratio of their median call times: both see the same machine state, so the ratio does not
    drift with whatever else the machine does between two fresh processes."""
    import workloads
    torch.manual_seed(0)
    num, den = workloads.WORKLOADS[numerator](), workloads.WORKLOADS[denominator]()
    for _ in range(3):
        num.fn(), den.fn()
    times = {numerator: [], denominator: []}
    for _ in range(rounds):
        for key, spec in ((denominator, den), (numerator, num)):
            for _ in range(calls):
                t = time.perf_counter()
                spec.fn()
                times[key].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"ratio": med[numerator] / med[denominator], "ms": {k: v * 1e3 for k, v in med.items()},
            "calls": rounds * calls}


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


def in_fresh_process(job: str) -> dict:
    """Run ``--worker job`` (a workload key, or ``ratio:NUM:DEN``) in a new Python process; its JSON."""
    out = subprocess.run([sys.executable, __file__, "--worker", job], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmark job {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(only: str | None) -> dict:
    import workloads
    torch.manual_seed(0)
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu": _cpu_name(), "cores": os.cpu_count()},
           "command": "python benchmarks/run.py" + (f" --only {only}" if only else ""),
           "date": time.strftime("%Y-%m-%d")}
    peak = matmul_peak(PEAK_SHAPES)
    res["matmul_peak_gflops"] = peak
    rows = []
    for name in workloads.WORKLOADS:
        if only and only not in name:
            continue
        row = in_fresh_process(name)
        row["gflops"] = row["flops"] / (row["ms"] / 1e3) / 1e9 if row["flops"] else None
        row["fraction_of_peak"] = row["gflops"] / peak if row["gflops"] else None
        rows.append(row)
        print(f"  measured {name}: {row['ms']:.1f} ms", file=sys.stderr, flush=True)
    res["workloads"] = rows
    by = {r["key"]: r for r in rows}
    if "vae_standard" in by and "vae_vampprior" in by:
        a, b = by["vae_standard"], by["vae_vampprior"]
        res["vampprior_over_standard_step"] = b["ms"] / a["ms"]
        res["vampprior_over_standard_step_baseline"] = b["baseline_ms"] / a["baseline_ms"]
        res["vampprior_over_standard_flops"] = b["flops"] / a["flops"]
        res["vampprior_over_standard_interleaved"] = in_fresh_process("ratio:vae_vampprior:vae_standard")
    return res


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
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), Python "
             f"{m['python']}; measured fp32 matmul peak **{res['matmul_peak_gflops']:.1f} GFLOP/s**. "
             f"Command: `{res['command']}` ({res['date']}).", "",
             "| workload | mixvae ms | plain ms | speed-up | GFLOP/s | % of peak | matmuls alone | peak RSS growth MB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["workloads"]:
        pct = None if r["fraction_of_peak"] is None else 100 * r["fraction_of_peak"]
        lines.append(f"| {r['workload']} | {r['ms']:.2f} | {f(r['baseline_ms'], '.2f')} | "
                     f"{f(r['speedup_vs_baseline'], '.2f')}x | {f(r['gflops'], '.1f')} | {f(pct, '.0f')} | "
                     f"{f(None if r.get('matmul_share') is None else 100 * r['matmul_share'], '.0f')}{'%' if r.get('matmul_share') else ''} | "
                     f"{r['peak_rss_growth_mb']:.0f} | {r['note']} |")
    if "vampprior_over_standard_step" in res:
        il = res["vampprior_over_standard_interleaved"]
        lines += ["", f"VampPrior(K=500) step / standard-prior step: **{il['ratio']:.2f}** timed alternately in "
                      f"one process ({il['ms']['vae_vampprior']:.2f} / {il['ms']['vae_standard']:.2f} ms, medians of "
                      f"{il['calls']} calls each); {res['vampprior_over_standard_step']:.2f} from the two rows above "
                      f"(separate processes). FLOP ratio {res['vampprior_over_standard_flops']:.2f}; plain "
                      f"implementation {res['vampprior_over_standard_step_baseline']:.2f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run only workloads whose key contains this text")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    ap.add_argument("--docs", type=Path, default=None, help="write the table into this Markdown file's bench markers")
    ap.add_argument("--profile", default=None, metavar="KEY", help="print torch.profiler's table for one workload")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile:
        profile(args.profile)
        return
    if args.worker:
        is_ratio = args.worker.startswith("ratio:")
        out = interleaved_ratio(*args.worker.split(":")[1:]) if is_ratio else worker(args.worker)
        print(json.dumps(out))
        return
    res = run(args.only)
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
