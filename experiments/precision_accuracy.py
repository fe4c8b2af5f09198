"""Does bf16 training change the results? (results/precision/TABLE.md)

Two experiments, each trained with ``train.precision=fp32`` and ``=bf16`` from the same seed and
evaluated in fp32 (``eval.precision`` stays fp32):

- VampPrior (K=500) VAE on dynamic MNIST, 30 epochs (KL warm-up 10), best checkpoint, test
  log-likelihood with S = 5000 on all 10 000 test images (as results/vampprior/): the goal is a bf16
  LL within 0.3 nats of the fp32 one;
- S-IntroVAE + learned MoG(64) on 8gaussians, seed 92: the goal is a bf16 KL within the spread of
  the fp32 seeds (92-94) trained alike. Two budgets: ``2d``, 6000 iterations as results/2d/ (fp32
  seeds in results/2d/cells; this script trains the fp32 partner of seed 92 again), and
  ``2d_protocol``, the paper's 30 000 iterations as results/2d_protocol/ (fp32 seeds, the partner
  included, in results/2d_protocol/cells; only bf16 is trained here).

Finished cells are kept under results/precision/cells/; a cell whose eval.json exists is not re-run.

    python experiments/precision_accuracy.py                 # vampprior and 2d, both precisions
    python experiments/precision_accuracy.py --experiments 2d_protocol --precisions bf16   # about 1 h
    python experiments/precision_accuracy.py --table-only    # rewrite the table from the kept cells
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "experiments"))

from mixvae.app import bench2d  # noqa: E402
from mixvae.app.grid import Cell, finished, grouped, run_grid  # noqa: E402
import vampprior_table  # noqa: E402

RESULTS = ROOT / "results" / "precision"
PRECISIONS = ("fp32", "bf16")
TOY = dict(data="8gaussians", method="learned_prior", seed=92)
TOY_BUDGETS = {   # experiment -> (iterations, where its fp32 seeds are kept)
    "2d": (6000, ROOT / "results" / "2d" / "cells"),
    "2d_protocol": (30000, ROOT / "results" / "2d_protocol" / "cells"),
}


def vampprior_cell(precision: str, epochs: int, samples: int) -> Cell:
    c = vampprior_table.cell("vae_vampprior", 0, epochs, 10, samples)
    return Cell(f"vampprior-{precision}", c.preset, c.overrides + [f"train.precision={precision}"],
                dict(c.meta, experiment="vampprior", precision=precision))


def toy_cell(experiment: str, precision: str, iterations: int) -> Cell:
    """The 2D cell of ``experiment`` trained as its fp32 seeds were (the protocol's: one thread)."""
    preset = bench2d.preset_path(Path("configs"), TOY["data"], TOY["method"])
    overrides = bench2d.Budget(iterations).overrides(preset) + [f"seed={TOY['seed']}", f"train.precision={precision}"]
    name = f"2d-{TOY['data']}-{TOY['method']}" + (f"-{iterations}it" if experiment != "2d" else "") + f"-{precision}"
    if experiment == "2d_protocol":
        overrides.append("train.threads=1")
    return Cell(name, preset, overrides, dict(experiment=experiment, precision=precision, seed=TOY["seed"],
                                              iterations=iterations))


def _fp32_toy_seeds(experiment: str) -> list[dict]:
    """The fp32 cells of the same data set, method and budget as ``experiment`` (every seed kept)."""
    iterations, folder = TOY_BUDGETS[experiment]
    return [r for r in finished(folder) if r.get("data") == TOY["data"] and r.get("method") == TOY["method"]
            and r.get("iterations") == iterations and r.get("precision", "fp32") == "fp32"]


def _toy_verdict(experiment: str, cells: dict) -> list[str]:
    """How the bf16 KL of ``experiment`` sits among its fp32 seeds, and against the same seed in fp32."""
    seeds, b = _fp32_toy_seeds(experiment), cells.get((experiment, "bf16"))
    if len(seeds) < 2 or not b:
        return []
    kls = [r["kl"] for r in seeds]
    lo, hi = min(kls), max(kls)
    mean, std = statistics.mean(kls), statistics.stdev(kls)
    iterations, folder = TOY_BUDGETS[experiment]
    lines = [f"2D, {iterations} iterations: bf16 KL **{b['kl']:.2f}**; fp32 KL over seeds "
             f"{', '.join(str(r['seed']) for r in seeds)} ({folder.relative_to(ROOT).as_posix()}): {mean:.2f} ± {std:.2f}, "
             f"range {lo:.2f} to {hi:.2f}: {'within' if lo <= b['kl'] <= hi else 'outside'} the range of the fp32 "
             f"seeds, {(b['kl'] - mean) / std:+.1f} standard deviations from their mean."]
    a = cells.get((experiment, "fp32")) or next((r for r in seeds if r["seed"] == b["seed"]), None)
    if a:
        lines.append(f"The same seed in fp32: KL {a['kl']:.2f} (bf16 - fp32 = {b['kl'] - a['kl']:+.2f}).")
    return lines


def table(results: Path = RESULTS) -> str:
    cells = {(r["experiment"], r["precision"]): r for rs in grouped(results, "experiment", "precision").values() for r in rs}
    lines = ["Each experiment trained from the same seed with `train.precision` fp32 and bf16, evaluated in fp32. "
             "Written by `python experiments/precision_accuracy.py`; train time is wall time on the 2-core CPU "
             "machine beside other work (one thread per run).", "",
             "| experiment | precision | result | train time |", "|---|---|---|---|"]
    rows = {   # experiment -> (what was trained, what it gave), from a cell's eval.json
        "vampprior": lambda r: (f"VAE + VampPrior (K=500), dynamic MNIST, {r['epochs']} epochs, seed 0",
                                f"test LL {r['test_ll']:.2f} nats (S = {r['test_ll_samples']}, {r['test_examples']} images)"),
    }
    toy = lambda r: (f"S-IntroVAE + learned MoG(64), {TOY['data']}, {r['iterations']} iterations, seed {r['seed']}",
                     f"KL {r['kl']:.2f}, JSD {r['jsd']:.2f}, gnELBO {r['gnelbo']:.3f}")
    rows.update({experiment: toy for experiment in TOY_BUDGETS})
    for experiment, describe in rows.items():
        for p in PRECISIONS:
            r = cells.get((experiment, p))
            if r:
                what, result = describe(r)
                lines.append(f"| {what} | {p} | {result} | {r['train_seconds'] / 60:.1f} min |")
    lines.append("")
    a, b = cells.get(("vampprior", "fp32")), cells.get(("vampprior", "bf16"))
    if a and b:
        d = b["test_ll"] - a["test_ll"]
        lines.append(f"VampPrior: bf16 - fp32 test LL = **{d:+.2f} nats** (goal: within 0.3; the fp32 LL's standard "
                     f"error over test images is {a['test_ll_sem']:.2f}): {'met' if abs(d) <= 0.3 else 'not met'}.")
    for experiment in TOY_BUDGETS:
        lines += _toy_verdict(experiment, cells)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", nargs="*", default=["vampprior", "2d"], choices=["vampprior", *TOY_BUDGETS])
    ap.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=list(PRECISIONS))
    ap.add_argument("--epochs", type=int, default=30, help="VampPrior epochs (tests: a tiny budget)")
    ap.add_argument("--samples", type=int, default=5000, help="importance samples of the test LL")
    ap.add_argument("--iterations", type=int, default=None, help="2D iterations (default: the experiment's; tests: tiny)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "precision")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides (tests: a tiny size)")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)   # presets and the commands recorded with each cell are relative to the repo
    cells = []
    if not args.table_only:
        if "vampprior" in args.experiments:
            cells += [vampprior_cell(p, args.epochs, args.samples) for p in args.precisions]
        for experiment in (e for e in TOY_BUDGETS if e in args.experiments):   # bf16 first: fp32 seeds are kept
            cells += [toy_cell(experiment, p, args.iterations or TOY_BUDGETS[experiment][0])
                      for p in sorted(args.precisions)]
        for c in cells:
            c.overrides += args.overrides
    print(run_grid(cells, args.work, args.results, table, args.data_dir,
                   summary=lambda r: f"{r.get('test_ll', r.get('kl')):.3f}, {r['train_seconds'] / 60:.1f} min"))


if __name__ == "__main__":
    main()
