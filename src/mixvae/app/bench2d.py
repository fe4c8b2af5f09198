"""The 2D density benchmark of the introspective-VAE papers: methods x data sets x seeds.

Every cell trains a preset ``configs/sintro/2d_<data>_<method>.yaml`` at the same iteration budget
and evaluates it (histogram KL / JSD, authors' and textbook, gnELBO, inactive modes, density and
sample pictures). Finished cells are kept under ``<out>/cells/`` (see :mod:`mixvae.app.grid`) and the
table ``<out>/TABLE.md`` (mean ± std over seeds) is rewritten from them after every cell.

A budget below the papers' 30k iterations keeps the 2k-iteration VAE warm-up (and the VampPrior ->
MoG conversion at 1.9k) and compresses the adversarial phase: each learning-rate milestone m
(10k and 15k) moves to ``W + (m - W) (I - W) / (30k - W)`` for warm-up W and budget I, so the
schedule keeps its shape. At I = 30k nothing changes.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import load_config
from ..data.toy2d import NAMES as DATASETS, PAPER
from ..errors import UserError
from .grid import Cell, grouped, mean_std, run_grid, write_table

METHODS = {   # preset suffix -> label in the table
    "vae": "VAE",
    "sintro": "S-IntroVAE",
    "fixed_mog": "S-IntroVAE + fixed MoG(64)",
    "learned_prior": "S-IntroVAE + learned MoG(64)",
    "learned_prior_encoder": "S-IntroVAE + learned MoG(64), prior-encoder cooperation",
}
DEFAULT_METHODS = ("vae", "sintro", "learned_prior")
PAPER_ITERATIONS = 30_000


@dataclass
class Budget:
    iterations: int
    warmup: int = 2000

    def warmup_of(self, preset: Path) -> int:
        """The warm-up a cell of ``preset`` gets: this budget's, or none if the preset has none."""
        return self.warmup if load_config(preset).train.warmup_steps else 0

    def overrides(self, preset: Path) -> list[str]:
        """--set overrides that put a 30k-iteration preset on this budget (a shorter warm-up moves
        the VampPrior -> MoG conversion with it: 1900 of 2000 becomes 95% of the new warm-up)."""
        cfg = load_config(preset)
        t = cfg.train
        full, preset_warm = t.max_steps or PAPER_ITERATIONS, t.warmup_steps or 0
        warm = self.warmup_of(preset)
        if self.iterations <= warm:
            raise UserError(f"--iterations {self.iterations} is not valid; expected more than the {warm}-iteration warm-up")
        scale = (self.iterations - warm) / (full - preset_warm)
        milestones = [round(warm + (m - preset_warm) * scale) for m in t.lr_milestones]
        out = [f"train.max_steps={self.iterations}", f"train.warmup_steps={warm}",
               f"train.lr_milestones=[{', '.join(str(m) for m in milestones)}]"]
        if cfg.sintro.convert_to_mog_step is not None and preset_warm:
            out.append(f"sintro.convert_to_mog_step={round(cfg.sintro.convert_to_mog_step * warm / preset_warm)}")
        return out


def preset_path(configs: Path, data: str, method: str) -> Path:
    return configs / "sintro" / f"2d_{data}_{method}.yaml"


def rewrite_table(out: Path) -> str:
    """Rewrite ``out/TABLE.md`` and the pictures from the kept cells (``mixvae bench2d --table-only``)."""
    return write_table(out, table_and_pictures)


def run(out: Path, configs: Path, datasets=PAPER, methods=DEFAULT_METHODS, seeds: int = 3,
        iterations: int = 6000, first_seed: Optional[int] = None, work: Optional[Path] = None,
        data_dir=None, log=print, warmup: int = 2000, extra: tuple[str, ...] = ()) -> str:
    """Run every missing cell, then write and return the table. ``extra``: --set overrides for every
    cell (part of each cell's recorded command)."""
    for m in methods:
        if m not in METHODS:
            raise UserError(f"method {m!r} is not known; expected one of: {', '.join(METHODS)}")
    for d in datasets:
        if d not in DATASETS:
            raise UserError(f"data set {d!r} is not a 2D benchmark set; expected one of: {', '.join(DATASETS)}")
    budget = Budget(iterations, warmup)
    cells = []
    for d in datasets:
        for m in methods:
            preset = preset_path(configs, d, m)
            base_seed = load_config(preset).seed if first_seed is None else first_seed
            cells += [Cell(f"{d}-{m}-{iterations}it-seed{seed}", preset,
                           budget.overrides(preset) + [f"seed={seed}"] + list(extra),
                           dict(data=d, method=m, seed=seed, iterations=iterations, warmup=budget.warmup_of(preset),
                                overrides=list(extra)))
                      for seed in range(base_seed, base_seed + seeds)]
    return run_grid(cells, work or out / "work", out, table_and_pictures, data_dir, log=log,
                    summary=lambda r: f"KL {r['kl']:.3f}, JSD {r['jsd']:.3f}, gnELBO {r['gnelbo']:.2f} "
                                      f"({r['train_seconds']:.0f} s training)")


def table(out: Path, command: Optional[str] = None) -> str:
    """The table of every finished cell under ``out/cells``, grouped by data set and method;
    ``command``: what wrote it (default: ``mixvae bench2d`` at the largest budget)."""
    groups = grouped(out, "data", "method", "iterations")
    if not groups:
        return "(no finished cells yet)"
    cells = [r for rs in groups.values() for r in rs]
    budgets = sorted({(r["iterations"], r.get("warmup", 2000)) for r in cells})
    if command is None:    # the bench2d call that makes the largest budget's cells, as they recorded it
        iters = budgets[-1][0]
        warm = max(w for i, w in budgets if i == iters)
        extra = next((r.get("overrides", []) for r in cells if r["iterations"] == iters), [])   # as given, in order
        command = (f"mixvae bench2d --iterations {iters}" + (f" --warmup {warm}" if warm not in (0, 2000) else "")
                   + "".join(f" --set {o}" for o in extra) + " --seeds N --out OUT")
    lines = [
        f"2D density benchmark, {' / '.join(f'{i} iterations per run ({w} of them plain-VAE warm-up)' for i, w in budgets)}; "
        + ("learning-rate milestones as in the presets (the papers' 10k and 15k); "
           if all(i == PAPER_ITERATIONS for i, _ in budgets) else
           "learning-rate milestones compressed as `mixvae.app.bench2d` describes; ")
        + "batch 512, Adam 2e-4, MLP 2-256x4-2, z = 2; "
        "betas per data set as in the presets `configs/sintro/2d_<data>_<method>.yaml`. KL and JSD: the authors' "
        "histogram formulas (100x100 density bins, 5000 real vs 5000 generated points); KL/JSD mass: the textbook "
        f"divergences of the bin masses in nats; gnELBO x1e7 on a {'/'.join(str(g) for g in sorted({r['grid'] for r in cells}))}^2 "
        "grid + 12 800 real points. Inactive modes: learned-prior components of weight w_k < 1/C^2 (the paper's "
        "definition; eval.json's inactive_modes also counts a mean responsibility < 1/C^2). Lower is better "
        "everywhere; mean ± std over the seeds listed. Time: training wall time of the machine that ran the "
        "cells (one thread per run, with other jobs sharing the machine). "
        f"Written by `{command}`.",
        "",
        "| data | method | iterations | seeds | KL | JSD | gnELBO | KL mass | JSD mass | inactive modes | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d, m, it in sorted(groups, key=lambda g: (DATASETS.index(g[0]), list(METHODS).index(g[1]), g[2])):
        rs = groups[(d, m, it)]
        col = lambda k, digits=3: mean_std([r[k] for r in rs], digits)
        inactive = mean_std([r["inactive_by_weight"] for r in rs], 1) if "inactive_by_weight" in rs[0] else "–"
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        lines.append(f"| {d} | {METHODS[m]} | {it} | {seeds} | {col('kl')} | {col('jsd')} | {col('gnelbo', 2)} | "
                     f"{col('kl_mass')} | {col('jsd_mass')} | {inactive} | "
                     f"{mean_std([r['train_seconds'] / 60 for r in rs], 1)} min |")
    verdicts = comparison(groups)
    return "\n".join(lines + [""] + (verdicts + [""] if verdicts else [])
                     + hyperparameters(out, sorted({g[0] for g in groups}, key=DATASETS.index)))


SEPARATED = 2.0   # standard errors of the difference of two means beyond which one method wins


def verdict(ours: list[float], theirs: list[float]) -> str:
    """Whether lower-is-better values ``ours`` beat ``theirs``: 'wins' / 'loses' when the means differ
    by more than SEPARATED standard errors of their difference, sqrt(s1^2/n1 + s2^2/n2) with sample
    standard deviations (Welch's), else 'ties'; with fewer than two values on a side, 'one seed: no
    verdict'. The distance in standard errors follows in parentheses."""
    if min(len(ours), len(theirs)) < 2:
        return "one seed: no verdict"
    diff = statistics.mean(theirs) - statistics.mean(ours)                     # > 0: ours is lower, better
    se = math.sqrt(statistics.variance(ours) / len(ours) + statistics.variance(theirs) / len(theirs))
    z = diff / se if se else math.copysign(math.inf, diff) if diff else 0.0
    word = "wins" if z > SEPARATED else "loses" if z < -SEPARATED else "ties"
    return f"{word} ({abs(z):.1f} standard errors)" if se else f"{word} (no spread)"


COMPARED = (("kl", "KL"), ("jsd", "JSD"), ("gnelbo", "gnELBO"))   # the paper's claim is about these three


def comparison(groups: dict, ours: str = "learned_prior", theirs: str = "sintro") -> list[str]:
    """One line per data set and budget where both methods have finished cells: the learned prior
    against S-IntroVAE on KL, JSD and gnELBO (means over seeds, :func:`verdict`); then, per budget,
    on how many data sets the paper's claim (the learned prior matches or beats S-IntroVAE: it ties
    or wins) holds for each figure, counting only data sets with a verdict."""
    lines, words = [], {}                  # words: (budget, figure) -> verdict words of the data sets
    for (d, m, it), rs in sorted(groups.items(), key=lambda g: (g[0][2], DATASETS.index(g[0][0]))):
        other = groups.get((d, theirs, it))
        if m != ours or not other:
            continue
        parts = []
        for key, name in COMPARED:
            a, b = [r[key] for r in rs if key in r], [r[key] for r in other if key in r]
            if not a or not b:
                continue
            v = verdict(a, b)
            parts.append(f"{name} {statistics.mean(a):.3f} against {statistics.mean(b):.3f}: {v}")
            if not v.startswith("one seed"):
                words.setdefault((it, name), []).append(v.split()[0])
        lines.append(f"- {d} ({it} iterations, seeds {len(rs)} / {len(other)}): " + "; ".join(parts))
    if not lines:
        return []
    for it in sorted({it for it, _ in words}):
        held = [f"{name} on {sum(w != 'loses' for w in words[(it, name)])} of {len(words[(it, name)])} data sets "
                f"(wins: {words[(it, name)].count('wins')}, ties: {words[(it, name)].count('ties')}, "
                f"losses: {words[(it, name)].count('loses')})" for _, name in COMPARED if (it, name) in words]
        lines.append(f"- at {it} iterations, the claim that the learned prior matches or beats {METHODS[theirs]} "
                     f"holds for " + "; ".join(held))
    return [f"{METHODS[ours]} against {METHODS[theirs]} (lower is better; it wins or loses where the means differ by "
            f"more than {SEPARATED:g} standard errors of their difference, else it ties):"] + lines


def hyperparameters(out: Path, datasets: list[str]) -> list[str]:
    """One line per data set with the hyperparameters its cells ran with (from their config.yaml)."""
    lines = ["Hyperparameters (from the cells' config.yaml):"]
    for d in datasets:
        first = {}                                   # method -> the config of its first kept cell
        for c in sorted((out / "cells").glob(f"{d}-*")):
            if (c / "config.yaml").exists():
                first.setdefault(c.name.split("-")[1], c / "config.yaml")
        configs = {m: load_config(f) for m, f in first.items()}
        if not configs:
            continue
        c = next(iter(configs.values()))
        si, t = c.sintro, c.train
        line = (f"- {d}: beta_kl {si.beta_kl}, beta_rec {si.beta_rec}, beta_neg {si.beta_neg}, gamma_r {si.gamma_r}, "
                f"alpha {si.alpha}; lr {t.lr} x{t.lr_gamma} at steps {t.lr_milestones}; batch {t.batch_size}")
        lp = configs.get("learned_prior")
        if lp is not None:
            line += (f"; learned prior: MoG({lp.model.prior.components}) from a VampPrior converted at step "
                     f"{lp.sintro.convert_to_mog_step}, prior-{lp.sintro.prior_player} cooperation, variance clipping "
                     f"{'on' if lp.sintro.variance_clipping else 'off'}, {lp.sintro.kl_samples}-sample KLs")
        lines.append(line)
    return lines


def table_and_pictures(out: Path, command: Optional[str] = None) -> str:
    """The table of the finished cells, after (re)composing the per-data-set pictures."""
    compose_pictures(out)
    return table(out, command)


def compose_pictures(out: Path) -> list[Path]:
    """``<out>/<data>.png``: for the first seed of each method, its density picture beside its
    data / samples / latent scatter, one method per row (from the kept cell pictures)."""
    from PIL import Image, ImageDraw

    written = []
    for d in DATASETS:
        rows = []
        for m in METHODS:
            cells = sorted((out / "cells").glob(f"{d}-{m}-*it-seed*"), key=lambda c: (-int(c.name.split("-")[-2][:-2]), c.name))
            parts = [Image.open(p).convert("RGB") for c in cells[:1] for p in (c / "density.png", c / "samples.png")
                     if p.exists()]
            if not parts:
                continue
            h = max(p.height for p in parts)
            row = Image.new("RGB", (sum(p.width for p in parts), h + 24), "white")
            ImageDraw.Draw(row).text((8, 4), f"{METHODS[m]} ({' '.join(cells[0].name.split('-')[-2:])})", fill="black")
            x = 0
            for p in parts:
                row.paste(p, (x, 24))
                x += p.width
            rows.append(row)
        if rows:
            fig = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
            y = 0
            for r in rows:
                fig.paste(r, (0, y))
                y += r.height
            fig.save(out / f"{d}.png")
            written.append(out / f"{d}.png")
    return written
