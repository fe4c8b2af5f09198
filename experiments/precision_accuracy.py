"""Does bf16 training change the results? (results/precision/TABLE.md)

Two experiments, each trained with ``train.precision=fp32`` and ``=bf16`` from the same seed and
evaluated in fp32 (``eval.precision`` stays fp32):

- VampPrior (K=500) VAE on dynamic MNIST, 30 epochs (KL warm-up 10), best checkpoint, test
  log-likelihood with S = 5000 on all 10 000 test images (as results/vampprior/): the goal is a bf16
  LL within 0.3 nats of the fp32 one;
- S-IntroVAE + learned MoG(64) on 8gaussians at the 6000-iteration budget of results/2d/: the goal
  is a bf16 KL within the spread of the fp32 seeds kept in results/2d/cells (seeds 92-94).

Finished cells are kept under results/precision/cells/; a cell whose eval.json exists is not re-run.

    python experiments/precision_accuracy.py                 # both experiments, both precisions
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
TOY = dict(data="8gaussians", method="learned_prior", iterations=6000, seed=92)


def vampprior_cell(precision: str, epochs: int, samples: int) -> Cell:
    c = vampprior_table.cell("vae_vampprior", 0, epochs, 10, samples)
    return Cell(f"vampprior-{precision}", c.preset, c.overrides + [f"train.precision={precision}"],
                dict(c.meta, experiment="vampprior", precision=precision))


def toy_cell(precision: str, iterations: int) -> Cell:
    preset = bench2d.preset_path(Path("configs"), TOY["data"], TOY["method"])
    overrides = bench2d.Budget(iterations).overrides(preset) + [f"seed={TOY['seed']}", f"train.precision={precision}"]
    return Cell(f"2d-{TOY['data']}-{TOY['method']}-{precision}", preset, overrides,
                dict(experiment="2d", precision=precision, seed=TOY["seed"], iterations=iterations))


def _fp32_toy_seeds() -> list[dict]:
    """The fp32 cells of results/2d for the same data set, method and budget (every seed kept)."""
    return [r for r in finished(ROOT / "results" / "2d" / "cells")
            if r.get("data") == TOY["data"] and r.get("method") == TOY["method"] and r.get("iterations") == TOY["iterations"]]


def table(results: Path = RESULTS) -> str:
    cells = {(r["experiment"], r["precision"]): r for rs in grouped(results, "experiment", "precision").values() for r in rs}
    lines = ["Each experiment trained from the same seed with `train.precision` fp32 and bf16, evaluated in fp32. "
             "Written by `python experiments/precision_accuracy.py`; train time is wall time on the 2-core CPU "
             "machine beside other work (one thread per run).", "",
             "| experiment | precision | result | train time |", "|---|---|---|---|"]
    rows = {   # experiment -> (what was trained, what it gave), from a cell's eval.json
        "vampprior": lambda r: (f"VAE + VampPrior (K=500), dynamic MNIST, {r['epochs']} epochs, seed 0",
                                f"test LL {r['test_ll']:.2f} nats (S = {r['test_ll_samples']}, {r['test_examples']} images)"),
        "2d": lambda r: (f"S-IntroVAE + learned MoG(64), {TOY['data']}, {r['iterations']} iterations, seed {r['seed']}",
                         f"KL {r['kl']:.2f}, JSD {r['jsd']:.2f}, gnELBO {r['gnelbo']:.3f}"),
    }
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
    seeds, b = _fp32_toy_seeds(), cells.get(("2d", "bf16"))
    if len(seeds) > 1 and b:
        kls = [r["kl"] for r in seeds]
        lo, hi = min(kls), max(kls)
        within = lo <= b["kl"] <= hi
        mean, std = statistics.mean(kls), statistics.stdev(kls)
        lines.append(f"2D: bf16 KL **{b['kl']:.2f}**; fp32 KL over seeds {', '.join(str(r['seed']) for r in seeds)} "
                     f"(results/2d/cells, an earlier commit): {mean:.2f} ± {std:.2f}, range {lo:.2f} to {hi:.2f}: "
                     f"{'within' if within else 'outside'} the range of the fp32 seeds, "
                     f"{(b['kl'] - mean) / std:+.1f} standard deviations from their mean.")
        a = cells.get(("2d", "fp32"))
        if a:
            lines.append(f"The same seed in fp32 at this commit: KL {a['kl']:.2f} (bf16 - fp32 = {b['kl'] - a['kl']:+.2f}).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", nargs="*", default=["vampprior", "2d"], choices=["vampprior", "2d"])
    ap.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=list(PRECISIONS))
    ap.add_argument("--epochs", type=int, default=30, help="VampPrior epochs (tests: a tiny budget)")
    ap.add_argument("--samples", type=int, default=5000, help="importance samples of the test LL")
    ap.add_argument("--iterations", type=int, default=TOY["iterations"], help="2D iterations")
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
        if "2d" in args.experiments:   # bf16 first: results/2d already holds fp32 seeds to compare with
            cells += [toy_cell(p, args.iterations) for p in sorted(args.precisions)]
        for c in cells:
            c.overrides += args.overrides
    print(run_grid(cells, args.work, args.results, table, args.data_dir,
                   summary=lambda r: f"{r.get('test_ll', r.get('kl')):.3f}, {r['train_seconds'] / 60:.1f} min"))


if __name__ == "__main__":
    main()
