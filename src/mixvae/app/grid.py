"""Experiment grids: presets x seeds trained to a budget, finished cells kept, tables of mean ± std.

A *cell* is one preset trained with one list of ``--set`` overrides. It trains in a work folder
(checkpoints, resumable after a crash) and, once evaluated, its small files (eval.json,
config.yaml, metrics.jsonl, pictures) are copied into a results folder that is kept in the repo.
A cell whose results are there is never re-run, so a table can be completed over several sessions
and anyone can re-run a cell by deleting its folder.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import runs
from ..config import apply_overrides, load_config
from ..errors import UserError

KEEP = ("config.yaml", "metrics.jsonl", "run.json", "samples.png", "reconstructions.png", "interpolations.png",
        "pseudo_inputs.png", "density.png")


def git_commit(root: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


@functools.cache
def code_commit() -> str:
    """The commit of the code this process runs, read at the first call: a script that trains for
    hours calls it when it starts, so that the commit recorded with its cells is the code that
    trained them even when the checkout moves on meanwhile."""
    return git_commit(Path(__file__).resolve().parent)


def run_cell(preset: Path, overrides: list[str], work: Path, dest: Path, data_dir=None,
             meta: Optional[dict] = None, progress: bool = True) -> dict:
    """Train ``preset`` with ``overrides`` in ``work`` (resuming if it has a checkpoint), evaluate,
    and copy the small files to ``dest``; returns eval.json's content (read from ``dest`` if done)."""
    if (dest / "eval.json").exists():
        return json.loads((dest / "eval.json").read_text())
    cfg = load_config(preset, overrides)
    commit = code_commit()     # the code that trains this cell
    resume = (work / "checkpoints" / "latest.pt").exists()
    if resume and (work / "config.yaml").is_file():
        from ..config import config_changes
        changed = [c for c in config_changes(load_config(work / "config.yaml"), cfg)
                   if c[2] not in ("auto", None)]        # what the run resolved from the data ('auto') stays
        if changed:
            key, old, new = changed[0]
            raise UserError(f"{work}: an unfinished run of this cell with {key} = {old!r}, not {new!r}; delete that "
                            "folder to train the cell with the new settings")
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    summary = runs.train(cfg, work, data_dir, resume=resume, progress=progress)
    command = f"mixvae train {preset.as_posix()} " + " ".join(f"--set {o}" for o in overrides)
    summary.update(meta or {}, command=command, commit=commit)
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (work / name).exists():
            shutil.copy(work / name, dest / name)
    tmp = dest / "eval.json.tmp"                       # eval.json marks a finished cell: write it whole
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(dest / "eval.json")
    return summary


@dataclass
class Cell:
    name: str                    # folder name under results/cells and work/
    preset: Path
    overrides: list[str]
    meta: dict = field(default_factory=dict)   # recorded in eval.json (what the table groups by)


def run_grid(cells: Iterable[Cell], work: Path, results: Path, table: Callable[[Path], str], data_dir=None,
             log: Callable[[str], None] = print, summary: Callable[[dict], str] = lambda r: "done") -> str:
    """Run every cell that has no results yet; after each, log ``name: summary(result)`` and rewrite
    ``results/TABLE.md`` with ``table(results)``. Returns the final table (written once more only if
    no cell ran, so that an empty grid rewrites the table from the kept cells)."""
    text = None
    cells = list(cells)
    for c in cells:
        check_kept(results / "cells" / c.name, c.meta)
    for c in cells:
        if (results / "cells" / c.name / "eval.json").exists():
            continue
        r = run_cell(c.preset, c.overrides, work / c.name, results / "cells" / c.name, data_dir, meta=c.meta)
        log(f"{c.name}: {summary(r)}")
        text = write_table(results, table)
    return write_table(results, table) if text is None else text


def check_kept(folder: Path, meta: dict) -> None:
    """A kept cell (``folder/eval.json``) stands for a cell of the same name only if it was made with
    the same settings: every key of ``meta`` it recorded has the value asked for now. Else UserError:
    a table would otherwise mix cells of different settings under one name."""
    kept = folder / "eval.json"
    if not kept.is_file():
        return
    recorded = json.loads(kept.read_text())
    for key, wanted in meta.items():
        wanted = json.loads(json.dumps(wanted, default=str))     # as eval.json holds it (tuples as lists)
        if key == "overrides" and isinstance(wanted, list) and isinstance(recorded.get(key), list):
            same = apply_overrides({}, recorded[key]) == apply_overrides({}, wanted)   # the settings, not their text
        else:
            same = recorded.get(key, wanted) == wanted
        if not same:
            raise UserError(f"{folder}: kept from a run with {key} {recorded[key]!r}, not {wanted!r}; delete that "
                            "folder to train it again, or give another results folder")


def write_table(results: Path, table: Callable[[Path], str]) -> str:
    """Write ``results/TABLE.md`` from ``table(results)`` and return its text."""
    results.mkdir(parents=True, exist_ok=True)
    text = table(results)
    (results / "TABLE.md").write_text(text + "\n")
    return text


def add_grid_arguments(ap: argparse.ArgumentParser, work: Path, results: Path) -> None:
    """The options the image results scripts (sintro_images, gamix_table) share: seeds, extra
    overrides, the budget's tag, where the data, the work folders and the kept results live, and
    --table-only."""
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides for every cell")
    ap.add_argument("--tag", default="cpu", help="names this budget in the cell folders")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", type=Path, default=work, help="work folders of unfinished cells (checkpoints)")
    ap.add_argument("--results", type=Path, default=results, help="where finished cells and TABLE.md are kept")
    ap.add_argument("--table-only", action="store_true", help="only rewrite TABLE.md from the kept cells")


def finished(results: Path) -> list[dict]:
    """eval.json of every finished cell under ``results`` (one folder per cell)."""
    return [json.loads(f.read_text()) for f in sorted(results.glob("*/eval.json"))]


def grouped(results: Path, *keys: str) -> dict[tuple, list[dict]]:
    """Finished cells under ``results/cells`` grouped by the values of ``keys`` in their eval.json."""
    groups: dict[tuple, list[dict]] = {}
    for r in finished(results / "cells"):
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def column(cells: list[dict], metric, digits: int = 3, sem: bool = False) -> str:
    """:func:`mean_std` of ``metric(cell)`` over cells; '–' if a cell lacks it (e.g. FID skipped)."""
    try:
        return mean_std([metric(r) for r in cells], digits, sem)
    except (KeyError, TypeError):
        return "–"


def mean_std(values: Iterable[float], digits: int = 2, sem: bool = False) -> str:
    """'m ± s' (s: the sample std over seeds, or with ``sem`` the standard error of the mean,
    std / sqrt(n)), the value alone for one seed, '–' for none."""
    v = [float(x) for x in values]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    s = statistics.stdev(v) / (len(v) ** 0.5 if sem else 1.0)
    return f"{statistics.mean(v):.{digits}f} ± {s:.{digits}f}"


def replace_between(path: Path, begin: str, end: str, text: str) -> bool:
    """Replace what lies between the marker lines ``begin`` and ``end`` in ``path``; False if absent."""
    content = path.read_text()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")
    return True


# ------------------------------------------------------------------------------------------------
# Long cells whose unfinished state is kept in the repository (a paper's full protocol).
#
# Such a cell trains in its results folder itself. While it is unfinished, the folder holds
# config.yaml, run.json, metrics.jsonl, pictures and checkpoints/{latest,best}.pt: committing the
# folder (the repo's .gitignore leaves out the *.prev.pt copies and temporary files) lets a fresh
# clone continue it, bitwise as if it had never stopped. When training ends, the selected weights
# become model.safetensors, the evaluation eval.json and the curves curves.png, and the
# checkpoints are deleted: only the result stays.

def continue_cell(folder: Path, preset: Path, overrides: list[str], data_dir=None, progress: bool = True) -> dict:
    """Train the cell in ``folder``: a new run of ``preset`` + ``overrides``, or the continuation
    of the run already there (its own config.yaml, from checkpoints/latest.pt). Returns the
    training summary of :func:`runs.train` (no evaluation)."""
    code_commit()          # read now: the code that trains (finish_cell records it)
    if (folder / "config.yaml").is_file():
        cfg, resume = load_config(folder / "config.yaml"), True
    else:
        shutil.rmtree(folder, ignore_errors=True)   # a start cut short before its config was written
        cfg, resume = load_config(preset, overrides), False
    return runs.train(cfg, folder, data_dir, resume=resume, progress=progress, evaluate_after=False)


def pack_cell(folder: Path) -> None:
    """Make an unfinished cell's state as small as committing it allows: best.pt keeps only the
    weights (checkpoints written before best.pt was weights-only carry optimizer state too), and
    the .prev copies and temporary files go (the repo ignores them anyway)."""
    from ..training.checkpoint import load_checkpoint, save_checkpoint, weights_only
    ckpts = folder / "checkpoints"
    best = ckpts / "best.pt"
    if best.is_file():
        state = load_checkpoint(best)
        if set(state) != set(weights_only(state)):
            save_checkpoint(weights_only(state), best)
    for junk in list(ckpts.glob("*.prev.pt")) + list(ckpts.glob(".*.tmp")):
        junk.unlink()


def is_finished(folder: Path) -> bool:
    """Whether a long cell is finished: evaluated (eval.json) and its checkpoints deleted."""
    return (folder / "eval.json").is_file() and not (folder / "checkpoints").exists()


def needs_training(folder: Path, pack: bool) -> bool:
    """Whether a long cell is to be trained now: not if it is finished (eval.json, no checkpoints),
    nor when packing (``--pack``: an unfinished cell is packed with :func:`pack_cell` instead)."""
    if is_finished(folder):
        return False
    if pack:
        if (folder / "checkpoints").is_dir():
            pack_cell(folder)
            print(f"{folder.name}: packed", file=sys.stderr)
        return False
    return True


def cell_progress(folder: Path) -> tuple[str, int]:
    """Where a long cell stands: ("done", steps trained), ("unfinished", the step its latest
    checkpoint continues from) or ("new", 0)."""
    from ..training.checkpoint import load_checkpoint
    if is_finished(folder):
        return "done", int(json.loads((folder / "eval.json").read_text()).get("steps", 0))
    latest = folder / "checkpoints" / "latest.pt"
    if latest.is_file() or latest.with_name("latest.prev.pt").is_file():
        return "unfinished", int(load_checkpoint(latest)["loop"]["step"])
    return "new", 0


def finish_cell(folder: Path, evaluate: Callable[[Path], dict], meta: Optional[dict] = None,
                data_dir=None) -> dict:
    """After training: the selected weights (best validation for likelihood training) become
    ``model.safetensors``; ``evaluate(folder)`` measures the folder as a user reopens it (weights
    from that file); eval.json gets the training summary, ``meta`` and the measurements; curves.png
    is drawn; the checkpoints are deleted. Returns eval.json's content."""
    from ..training.checkpoint import load_checkpoint
    from .viz import save_curves
    if (folder / "eval.json").exists():
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)   # a finish cut short after eval.json
        return json.loads((folder / "eval.json").read_text())
    run = runs.open_run(folder, data_dir)
    runs.export_weights(run, folder / runs.WEIGHTS_FILE)
    loop = load_checkpoint(folder / "checkpoints" / "latest.pt")["loop"]
    per_epoch = run.data.steps_per_epoch(run.cfg.train.batch_size)
    summary = {"steps": loop["step"], "epochs": round(loop["step"] / per_epoch, 2),
               "best_epoch": round(loop["best_step"] / per_epoch, 2),
               "best_valid_loss": loop["best_loss"] if math.isfinite(loop["best_loss"]) else None,
               "stop_reason": loop["stop_reason"] or "budget reached",
               "early_stop_epoch": round(loop["step"] / per_epoch, 2) if loop["stop_reason"] else None,
               "train_seconds": round(loop["seconds"], 1), "train_threads": run.cfg.train.threads,
               "seconds_per_epoch": round(loop["seconds"] / max(loop["step"] / per_epoch, 1e-9), 2)}
    summary.update(meta or {})
    summary.update(evaluate(folder))
    summary["commit"] = code_commit()
    save_curves(folder / "metrics.jsonl", folder / "curves.png", stopped_early=bool(loop["stop_reason"]))
    tmp = folder / "eval.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(folder / "eval.json")
    shutil.rmtree(folder / "checkpoints")
    return summary
