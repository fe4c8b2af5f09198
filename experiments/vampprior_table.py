"""The VampPrior results table on dynamic MNIST at a CPU budget (results/vampprior/TABLE.md).

Every row trains its preset from configs/vampprior/ with the same budget (epochs, warm-up) and
seeds, reloads the best checkpoint (validation ELBO), and evaluates the importance-sampled test
log-likelihood with S samples on the whole test set. Finished rows are kept under
results/vampprior/cells/ (eval.json, config.yaml, metrics.jsonl, pictures) so the table can be
completed over several sessions; a row whose eval.json exists is not re-run.

    python experiments/vampprior_table.py                      # all rows, 30 epochs, seed 0
    python experiments/vampprior_table.py --seeds 0 1 --rows vae_standard
    python experiments/vampprior_table.py --table-only         # rewrite the table from results/
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mixvae.app.grid import Cell, grouped, mean_std, run_grid  # noqa: E402

ROWS = {  # row key -> (label, preset)
    "vae_standard": ("VAE + standard prior", "vae_standard_dynamic_mnist.yaml"),
    "vae_mog": ("VAE + MoG (K=500)", "vae_mog_dynamic_mnist.yaml"),
    "vae_vampprior": ("VAE + VampPrior (K=500)", "vae_vampprior_dynamic_mnist.yaml"),
    "vae_vampprior_data": ("VAE + VampPrior-data (K=500)", "vae_vampprior_data_dynamic_mnist.yaml"),
    "hvae_vampprior": ("HVAE + VampPrior (K=500)", "hvae_vampprior_dynamic_mnist.yaml"),
}
RESULTS = ROOT / "results" / "vampprior"


def cell(key: str, seed: int, epochs: int, warmup: int, samples: int) -> Cell:
    overrides = [f"train.epochs={epochs}", f"train.warmup_epochs={warmup}", f"seed={seed}", f"eval.ll_samples={samples}"]
    return Cell(f"{key}-seed{seed}", Path("configs/vampprior") / ROWS[key][1], overrides,
                dict(row=key, seed=seed, epochs=epochs, warmup_epochs=warmup, preset=ROWS[key][1]))


def table(results: Path = RESULTS) -> str:
    found = {key[0]: rs for key, rs in grouped(results, "row").items()}
    if not found:
        return "(no finished rows yet)"
    any_r = next(iter(found.values()))[0]
    lines = [
        f"Dynamic MNIST, every row trained for {any_r['epochs']} epochs (KL warm-up {any_r['warmup_epochs']} epochs), "
        f"AdamNormGrad lr 5e-4, batch 100; best checkpoint by validation ELBO; test log-likelihood with "
        f"S = {any_r['test_ll_samples']} importance samples on all {any_r['test_examples']} test images "
        "(nats, higher is better; ± is the std over seeds). Written by `python experiments/vampprior_table.py`.",
        "",
        "| model | seeds | test LL (nats) | active units | train time | paper (2000 epochs) |",
        "|---|---|---|---|---|---|",
    ]
    paper = {"vae_standard": "-84.50*", "vae_vampprior": "-82.38*", "hvae_vampprior": "-81.24*"}
    for key, (label, _) in ROWS.items():
        rs = found.get(key, [])
        if not rs:
            lines.append(f"| {label} | – | not run yet | | | {paper.get(key, '')} |")
            continue
        seeds = ",".join(str(r["seed"]) for r in rs)
        au = mean_std([r["active_units"] for r in rs], 0)
        au_of = rs[0].get("active_units_by_level")
        au += f" (of {sum(1 for _ in au_of) * rs[0]['latent_dim']})" if au_of else f" (of {rs[0]['latent_dim']})"
        minutes = mean_std([r["train_seconds"] / 60 for r in rs], 1) + " min"
        lines.append(f"| {label} | {seeds} | {mean_std([r['test_ll'] for r in rs])} | {au} | {minutes} | {paper.get(key, '')} |")
    lines.append("")
    lines.append("\\* the paper's values (../shared/spec/REFERENCE.md, outside this repository, marks them unverified) after up to 2000 epochs; not comparable "
                 "with a 30-epoch budget. Train time is wall time on the 2-core CPU machine, validation included.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "vampprior-table")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)   # presets and the commands recorded with each row are relative to the repo
    cells = [] if args.table_only else [cell(k, seed, args.epochs, args.warmup, args.samples)
                                        for seed in args.seeds for k in args.rows]
    print(run_grid(cells, args.work, RESULTS, table, args.data_dir,
                   summary=lambda r: f"test LL {r['test_ll']:.2f}, AU {r['active_units']}, "
                                     f"{r['train_seconds'] / 60:.1f} min"))


if __name__ == "__main__":
    main()
