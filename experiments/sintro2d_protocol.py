"""The prior-learning paper's 2D table at its own protocol (results/2d_protocol/).

Every cell trains a preset ``configs/sintro/2d_<data>_<method>.yaml`` at its full budget, as
ALGORITHMS.md section 2 gives it: 30 000 iterations (2 000 of them plain-VAE warm-up, the VampPrior
-> MoG conversion at 1 900), learning-rate milestones 10k and 15k (not compressed), batch 512,
Adam 2e-4, the per-data-set betas, fp32, one thread per cell. A cell trains in its results folder,
so an unfinished cell continues from its committed checkpoints on any machine (``--pack`` before
committing); a finished one keeps config.yaml, metrics.jsonl, eval.json, model.safetensors,
curves.png and its pictures (density.png, samples.png), and ``mixvae eval <cell>`` reproduces its
figures from the weights. Several processes can run the same command: each skips the cells another
one is training (their folders' locks) and takes the next. The table
(``results/2d_protocol/TABLE.md``) is mixvae.app.bench2d's table of the finished cells.

    python experiments/sintro2d_protocol.py &                           # train / continue, evaluate
    python experiments/sintro2d_protocol.py &                           # a second process on the other core
    python experiments/sintro2d_protocol.py --methods vae --seeds 95    # a subset
    python experiments/sintro2d_protocol.py --pack                      # before committing unfinished cells
    python experiments/sintro2d_protocol.py --table-only                # rewrite TABLE.md
    python experiments/sintro2d_protocol.py --status                    # each cell's step, the time left
    python experiments/sintro2d_protocol.py --verify                    # re-evaluate the finished cells
    python experiments/sintro2d_protocol.py --stack                     # each row's new seeds in one process

``--stack`` trains the seeds of a row that have not started as one stacked ensemble (``mixvae
train --seeds``; each member ends where its separate run would, to float rounding), in
``<results>/ensembles/<row>``, then finishes each seed's cell as above. It pays on a GPU; on a
CPU it runs at about the speed of the separate runs (docs/performance.md).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mixvae.app import bench2d, runs  # noqa: E402
from mixvae.app.grid import (cell_progress, code_commit, continue_cell, finish_cell, is_finished,  # noqa: E402
                             needs_training, pack_cell, write_table)
from mixvae.config import load_config  # noqa: E402

RESULTS = ROOT / "results" / "2d_protocol"
OVERRIDES = ["train.threads=1"]
SCRIPT = "python experiments/sintro2d_protocol.py"


def results_arg(results: Path) -> str:
    """`` --results FOLDER`` for a results folder other than the default one (for the commands
    recorded with its cells and table), else ''."""
    return "" if results.resolve() == RESULTS.resolve() else f" --results {os.path.relpath(results.resolve(), ROOT)}"


def table(results: Path, cells: list[tuple[int, str, str]], iterations: int) -> str:
    """bench2d's table of the finished cells, opened by how many of the grid's ``cells`` (seed,
    data, method) are finished while some are not."""
    done = sum(is_finished(results / "cells" / cell_name(d, m, s, iterations)) for s, d, m in cells)
    seeds, rows = sorted({s for s, _, _ in cells}), len({(d, m) for _, d, m in cells})
    head = "" if done == len(cells) else (
        f"**Incomplete: {done} of {len(cells)} cells finished** ({rows} row{'s' * (rows != 1)} x seeds "
        f"{', '.join(map(str, seeds))}); each row lists the seeds it has so far.\n\n")
    methods = list(dict.fromkeys(m for _, _, m in cells))
    named = "" if methods == list(bench2d.DEFAULT_METHODS) else " --methods " + " ".join(methods)
    return head + bench2d.table_and_pictures(results, command=f"{SCRIPT}{named} --seeds S ...{results_arg(results)}")


def cell_name(data: str, method: str, seed: int, iterations: int) -> str:
    return f"{data}-{method}-{iterations}it-seed{seed}"


def measure(folder: Path, data_dir, pictures: bool = True) -> dict:
    """The benchmark's evaluation of a finished cell, from its model.safetensors as a user reopens it
    (and its density.png, unless ``pictures`` is false)."""
    run = runs.open_run(folder, data_dir, weights=folder / runs.WEIGHTS_FILE)
    if not pictures:
        run.path = None
    return runs.evaluate(run)


def status(cells: list[tuple[int, str, str]], results: Path, iterations: int) -> str:
    """One line per cell (done, the step an unfinished one continues from and who trains it, or
    not started), then the training time left: each method's seconds per step in its finished
    cells (one thread each; the latest three, so that the estimate follows the code that trains
    now) times the steps its other cells still need."""
    rows, left, per_step, done = [], {}, {}, 0
    for seed, data, method in cells:
        folder = results / "cells" / cell_name(data, method, seed, iterations)
        state, step = cell_progress(folder)
        if state == "done":
            done += 1
            r = json.loads((folder / "eval.json").read_text())
            started = json.loads((folder / "run.json").read_text()).get("created", "") if (folder / "run.json").is_file() else ""
            per_step.setdefault(method, []).append((started, r["train_seconds"] / max(r["steps"], 1)))
            rows.append(f"{folder.name}: done, KL {r['kl']:.3f} ({r['train_seconds'] / 60:.0f} min)")
            continue
        holder = runs.holder_of(folder)
        rows.append(f"{folder.name}: " + (f"at step {step} of {iterations}" if state == "unfinished" else "not started")
                    + (f", trained now by process {holder}" if holder else ""))
        left[method] = left.get(method, 0) + iterations - step
    rows.append(f"{done} of {len(cells)} cells done.")
    for method, steps in left.items():
        rate = [r for _, r in sorted(per_step.get(method, []))[-3:]]
        rows.append(f"{method}: {steps} steps left" + (
            f", about {steps * statistics.mean(rate) / 3600:.1f} core-hours at its {len(rate)} latest finished "
            f"cells' {1000 * statistics.mean(rate):.0f} ms per step" if rate else " (no finished cell to time it by)"))
    return "\n".join(rows)


FIGURES = ("kl", "jsd", "kl_mass", "jsd_mass", "gnelbo", "inactive_by_weight")   # the table's figures


def verify(cells: list[tuple[int, str, str]], results: Path, iterations: int, data_dir, tol: float = 1e-5) -> bool:
    """Re-evaluate every finished cell from its model.safetensors (as ``mixvae eval <cell>`` does) and
    print, per cell, the largest relative difference from the figures in its eval.json (writing
    nothing). True when every cell reproduces them within ``tol``."""
    ok = True
    for seed, data, method in cells:
        folder = results / "cells" / cell_name(data, method, seed, iterations)
        if cell_progress(folder)[0] != "done":
            continue
        kept, again = json.loads((folder / "eval.json").read_text()), measure(folder, data_dir, pictures=False)
        worst = max(abs(again[k] - kept[k]) / max(abs(kept[k]), 1e-12) for k in FIGURES if k in kept)
        ok &= worst <= tol
        print(f"{folder.name}: {'reproduced' if worst <= tol else 'DIFFERS'} (largest relative difference "
              f"{worst:.1e} over {', '.join(k for k in FIGURES if k in kept)})", flush=True)
    return ok


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=list(bench2d.PAPER), choices=list(bench2d.DATASETS))
    ap.add_argument("--methods", nargs="*", default=list(bench2d.DEFAULT_METHODS), choices=list(bench2d.METHODS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[92, 93, 94])
    ap.add_argument("--iterations", type=int, default=bench2d.PAPER_ITERATIONS,
                    help="the budget (tests: a tiny one; the table is the paper's at 30 000)")
    ap.add_argument("--warmup", type=int, default=2000, help="plain-VAE warm-up iterations (tests: a tiny one)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides (tests: a tiny size)")
    ap.add_argument("--pack", action="store_true", help="make unfinished cells' state ready to commit, then stop")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--status", action="store_true", help="print each cell's progress and the time left, then stop")
    ap.add_argument("--verify", action="store_true",
                    help="re-evaluate each finished cell from its weights and compare with its eval.json, then stop")
    ap.add_argument("--stack", action="store_true",
                    help="train each row's seeds that have not started in one process, as a stacked ensemble")
    args = ap.parse_args(argv)
    os.chdir(ROOT)   # presets and the commands recorded with each cell are relative to the repo
    code_commit()    # the code this process trains with (recorded with its cells, however long they take)
    budget = bench2d.Budget(args.iterations, args.warmup)
    cells = [(s, d, m) for s in args.seeds for d in args.datasets for m in args.methods]   # seed first: early rows
    grid_table = functools.partial(table, cells=cells, iterations=args.iterations)
    if args.status:
        print(status(cells, args.results, args.iterations))
        return
    if args.verify:
        sys.exit(0 if verify(cells, args.results, args.iterations, args.data_dir) else 1)
    if args.stack and not args.table_only:
        for data in args.datasets:
            for method in args.methods:
                stack_row(data, method, args.seeds, args, budget, grid_table)
    for seed, data, method in [] if args.table_only else cells:
        name = cell_name(data, method, seed, args.iterations)
        folder = args.results / "cells" / name
        if not needs_training(folder, args.pack):
            continue
        if seed in stacked_seeds(args.results, data, method, args.iterations):   # an ensemble trains it (--stack)
            continue
        if runs.holder_of(folder) is not None:     # another process trains it: take the next cell
            print(f"{name}: trained by process {runs.holder_of(folder)}, skipped", file=sys.stderr)
            continue
        preset = Path("configs/sintro") / bench2d.preset_path(Path("."), data, method).name
        overrides = budget.overrides(preset) + [f"seed={seed}"] + OVERRIDES + args.overrides
        continue_cell(folder, preset, overrides, args.data_dir)
        meta = {"data": data, "method": method, "seed": seed, "iterations": args.iterations, "warmup": budget.warmup,
                "command": f"{SCRIPT} --datasets {data} --methods {method} --seeds {seed}{results_arg(args.results)}",
                "train_command": f"mixvae train {preset.as_posix()} " + " ".join(f"--set {o}" for o in overrides)}
        finish(folder, meta, args, grid_table)
    if not args.pack:
        print(write_table(args.results, grid_table))


def finish(folder: Path, meta: dict, args, grid_table) -> None:
    """Evaluate a trained cell, keep its results (grid.finish_cell), report it and rewrite the table."""
    r = finish_cell(folder, lambda f: measure(f, args.data_dir), meta, args.data_dir)
    print(f"{folder.name}: KL {r['kl']:.3f}, JSD {r['jsd']:.3f}, gnELBO {r['gnelbo']:.2f} "
          f"({r['train_seconds'] / 60:.0f} min training)", file=sys.stderr)
    write_table(args.results, grid_table)


def ensemble_folder(results: Path, data: str, method: str, iterations: int) -> Path:
    return results / "ensembles" / f"{data}-{method}-{iterations}it"


def stacked_seeds(results: Path, data: str, method: str, iterations: int) -> list[int]:
    """The seeds of the row that an ensemble under way (--stack) trains."""
    marker = ensemble_folder(results, data, method, iterations) / "seeds.json"
    return json.loads(marker.read_text())["seeds"] if marker.is_file() else []


def stack_row(data: str, method: str, seeds: list[int], args, budget, grid_table) -> None:
    """--stack: the row's seeds whose cells have not started (or its ensemble, if one is under way)
    trained in one process (runs.train_seeds) in ``<results>/ensembles/<row>``, then finished."""
    work = ensemble_folder(args.results, data, method, args.iterations)
    resume = (work / "seeds.json").is_file()
    if resume:
        seeds = json.loads((work / "seeds.json").read_text())["seeds"]
    else:
        seeds = [s for s in seeds if cell_progress(args.results / "cells" / cell_name(data, method, s, args.iterations))
                 == ("new", 0) and not (args.results / "cells" / cell_name(data, method, s, args.iterations)).exists()]
    if args.pack:
        if (work / "checkpoints").is_dir():
            pack_cell(work)
        return
    if len(seeds) < 2 or runs.holder_of(work) is not None:
        return
    folders = [args.results / "cells" / cell_name(data, method, s, args.iterations) for s in seeds]
    preset = Path("configs/sintro") / bench2d.preset_path(Path("."), data, method).name
    overrides = budget.overrides(preset) + OVERRIDES + args.overrides
    if not (resume and all((f / "seeds.json").is_file() for f in folders)):   # else: trained, members written
        runs.train_seeds(load_config(preset, overrides), seeds, folders, work, args.data_dir, resume=resume,
                         evaluate_after=False)
    for seed, folder in zip(seeds, folders):
        meta = {"data": data, "method": method, "seed": seed, "iterations": args.iterations, "warmup": budget.warmup,
                "command": f"{SCRIPT} --datasets {data} --methods {method} --seeds {' '.join(map(str, seeds))} "
                           f"--stack{results_arg(args.results)}",
                "train_command": f"mixvae train {preset.as_posix()} --seeds {' '.join(map(str, seeds))} "
                                 + " ".join(f"--set {o}" for o in overrides)}
        finish(folder, meta, args, grid_table)
    shutil.rmtree(work)          # every member's cell is finished


if __name__ == "__main__":
    main()
