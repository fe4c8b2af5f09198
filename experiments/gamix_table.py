"""GAMIX-VAE vs the plain VAE of the same network at a CPU budget, on CIFAR-10 (32x32) and Frey
Faces; writes results/gamix/TABLE.md.

Every cell trains a preset ``configs/gamix/<data>[_vae].yaml`` (budget overrides via --set) and
evaluates its last checkpoint on the test split: L1 and PSNR of reconstructions (z = mu, pixels in
[0, 1]), FID of reconstructions and of prior samples (standard protocol, offline weights; n images),
and the latent statistics of the variance-collapse check: the per-dimension batch mean and variance
of mu and the mean posterior variance sigma^2, summarised over dimensions. Finished cells are kept
under results/gamix/cells/ and never re-run (see mixvae.app.grid).

    python experiments/gamix_table.py                              # both data sets, the presets' budgets
    python experiments/gamix_table.py --data frey_faces --set train.epochs=5 --tag short
    python experiments/gamix_table.py --table-only
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mixvae.config import load_config  # noqa: E402
from mixvae.app.grid import Cell, add_grid_arguments, column, grouped, run_grid  # noqa: E402

DATA = {"cifar10_32": "CIFAR-10 32x32 (JPEG copy)", "frey_faces": "Frey Faces 28x20"}
METHODS = {"gamix": "GAMIX-VAE", "vae": "plain VAE, same network"}
RESULTS = ROOT / "results" / "gamix"


def paper_parameter_counts() -> str:
    """The 256x256 networks counted as Keras counts (the author reports 9,932,466 and 412,101)."""
    from mixvae.nets.gamix import PatchGAN, ResNetV2Decoder, ResNetV2Encoder, keras_param_count
    enc, dec = ResNetV2Encoder((3, 256, 256), 512), ResNetV2Decoder((3, 256, 256), 512)
    vae = keras_param_count(enc) - keras_param_count(enc.head) + keras_param_count(dec)
    return (f"256x256 networks: VAE without the two final dense layers {vae:,} parameters (paper: 9,932,466), "
            f"PatchGAN {keras_param_count(PatchGAN((3, 256, 256))):,} (paper: 412,101), counted as Keras does.")


def table(results: Path = RESULTS) -> str:
    groups = grouped(results, "data", "tag", "method")
    if not groups:
        return "(no finished cells yet)"
    lines = [
        "GAMIX-VAE vs the plain VAE of the same ResNetV2 network at a CPU budget (the budget of each row is in its "
        "preset plus the overrides in the cell's eval.json). Test split: L1 and PSNR of reconstructions from z = mu "
        "(pixels in [0, 1]); FID (standard protocol, offline weights) of reconstructions and of prior samples against "
        "n test images; latent statistics per dimension over the test split, averaged over dimensions: |E[mu]|, "
        "Var[mu], E[sigma^2] (and its median): a collapsed posterior shows sigma^2 -> 0. Mean ± std over the seeds. "
        "Written by `python experiments/gamix_table.py`.",
        "",
        "| data | method | budget | seeds | L1 | PSNR (dB) | FID recs | FID samples | n | mean sigma² | median sigma² "
        "| Var[mu] | \\|E[mu]\\| | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (d, tag, m), rs in sorted(groups.items(), key=lambda g: (list(DATA).index(g[0][0]), g[0][1], list(METHODS).index(g[0][2]))):
        col = lambda f, digits=3: column(rs, f, digits)
        r0 = rs[0]
        budget = f"{r0['steps']} steps, batch {r0['batch_size']}"
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        ls = lambda k: (lambda r: r["latent_stats"][k])
        lines.append(
            f"| {DATA[d]} | {METHODS[m]} | {budget} | {seeds} | {col(lambda r: r['rec_l1'], 4)} | "
            f"{col(lambda r: r['psnr'], 2)} | {col(lambda r: r['fid_reconstructions'], 1)} | "
            f"{col(lambda r: r['fid_samples'], 1)} | {r0.get('fid_images', '–')} | {col(ls('sigma2_avg'), 4)} | "
            f"{col(ls('sigma2_median'), 4)} | {col(ls('mu_var_avg'), 3)} | {col(ls('mu_mean_abs_avg'), 3)} | "
            f"{col(lambda r: r['train_seconds'] / 60, 1)} min |")
    lines += ["", paper_parameter_counts()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    add_grid_arguments(ap, ROOT / "runs" / "gamix-table", RESULTS)
    args = ap.parse_args()
    results = args.results.resolve()
    os.chdir(ROOT)   # presets and the commands recorded with each cell are relative to the repo
    print(paper_parameter_counts(), flush=True)
    preset = lambda d, m: Path("configs/gamix") / (f"{d}.yaml" if m == "gamix" else f"{d}_vae.yaml")
    cells = [] if args.table_only else [
        Cell(f"{d}-{m}-{args.tag}-seed{seed}", preset(d, m), [f"seed={seed}"] + args.overrides,
             dict(data=d, method=m, tag=args.tag, seed=seed,
                  batch_size=load_config(preset(d, m), args.overrides).train.batch_size))
        for seed in args.seeds for d in args.data for m in args.methods]
    print(run_grid(cells, args.work, results, table, args.data_dir,
                   summary=lambda r: f"L1 {r['rec_l1']:.4f}, PSNR {r['psnr']:.2f}, FID recs {r.get('fid_reconstructions')}, "
                                     f"samples {r.get('fid_samples')}, sigma2 {r['latent_stats']['sigma2_avg']:.4f}"))


if __name__ == "__main__":
    main()
