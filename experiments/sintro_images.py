"""Soft-IntroVAE with the standard prior vs a learned MoG prior (with and without responsibility
regularisation) on images, at a CPU budget; writes results/sintro_images/TABLE.md.

Every cell trains a preset ``configs/sintro/<data>_<method>.yaml`` with the same budget overrides
(epochs, warm-up, network widths; the VampPrior -> MoG conversion moves to 75% of the warm-up, as
15 of 20 epochs in the paper) and evaluates its last checkpoint: FID of prior samples and of
reconstructions against the test split (standard protocol, offline Inception weights), linear-SVM
and kNN probes on one standardised sampled z per image, and inactive modes. Finished cells are kept
under results/sintro_images/cells/ and never re-run (see mixvae.app.grid).

    python experiments/sintro_images.py                          # MNIST and Fashion-MNIST, the CPU budget
    python experiments/sintro_images.py --data cifar10 --methods learned_prior --epochs 2 --train-subset 5000 \\
        --channels 16 32 64 --tag smoke --set train.threads=2     # the CIFAR-10 smoke run
    python experiments/sintro_images.py --table-only
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

METHODS = {
    "vae": "VAE",
    "sintro": "S-IntroVAE, standard prior",
    "fixed_mog": "S-IntroVAE + fixed MoG(10)",
    "learned_prior": "S-IntroVAE + learned MoG(10)",
    "learned_prior_rent": "S-IntroVAE + learned MoG(10) + resp. reg. (r_ent 100)",
}
DATA = {"mnist": "MNIST", "fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
RESULTS = ROOT / "results" / "sintro_images"


def overrides(preset: Path, args, seed: int) -> list[str]:
    cfg = load_config(preset)
    out = [f"seed={seed}", f"train.epochs={args.epochs}", f"train.warmup_epochs={args.warmup_epochs}",
           f"model.channels=[{', '.join(str(c) for c in args.channels)}]", f"eval.fid_samples={args.fid_samples}",
           f"eval.fid_reconstructions={args.fid_reconstructions}"]
    if args.train_subset:
        out.append(f"data.train_subset={args.train_subset}")
    if cfg.sintro.convert_to_mog_epoch is not None:
        n_train = args.train_subset or {"cifar10": 45_000}.get(cfg.data.name, 50_000)
        steps_per_epoch = n_train // cfg.train.batch_size
        step = round(0.75 * args.warmup_epochs * steps_per_epoch)
        out += ["sintro.convert_to_mog_epoch=null", f"sintro.convert_to_mog_step={step}"]
    return out


def table(results: Path = RESULTS) -> str:
    groups = grouped(results, "data", "tag", "method")
    if not groups:
        return "(no finished cells yet)"
    lines = [
        "Soft-IntroVAE image runs at a CPU budget (every row of a data set trained alike; the budget is in the "
        "columns). FID (standard protocol: eval mode, 299x299, 2048-d pool features, offline weights) of prior "
        "samples (n) and of m test reconstructions against n test images; probes: linear SVM (C 0.025, "
        "2000 / 10000 iterations) and kNN (k 5 / 100) on one standardised sampled z per image, fit on the training "
        "split, accuracy on the test split; inactive modes: prior weights w_k < 1/C^2 (the paper's definition). "
        "Mean ± standard error over the seeds listed (the paper's protocol: 3 seeds). Written by `python experiments/sintro_images.py` (the command of every cell is in "
        "its eval.json).",
        "",
        "| data | method | budget | seeds | FID samples | FID recs | n / m | SVM few | SVM many | kNN k=5 | kNN k=100 "
        "| inactive modes | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(DATA)
    for (d, tag, m), rs in sorted(groups.items(), key=lambda g: (order.index(g[0][0]), g[0][1], list(METHODS).index(g[0][2]))):
        col = lambda f, digits=3: column(rs, f, digits, sem=True)
        r0 = rs[0]
        budget = (f"{r0['epochs']} ep ({r0['warmup_epochs']} warm-up), widths {r0['channels']}"
                  + (f", {r0['train_subset']} train images" if r0.get("train_subset") else ""))
        inactive = (col(lambda r: r["inactive_by_weight"], 1) + f" of {r0['components']}") if "components" in r0 else "–"
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
        lines.append(
            f"| {DATA[d]} | {METHODS[m]} | {budget} | {seeds} | {col(lambda r: r['fid_samples'], 1)} | "
            f"{col(lambda r: r['fid_reconstructions'], 1)} | {r0.get('fid_images', '–')} / {r0.get('fid_reconstructed_images', '–')} | "
            f"{col(lambda r: r['probes']['svm_few'])} | {col(lambda r: r['probes']['svm_many'])} | "
            f"{col(lambda r: r['probes']['knn_few'])} | {col(lambda r: r['probes']['knn_many'])} | {inactive} | "
            f"{col(lambda r: r['train_seconds'] / 60, 1)} min |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=["mnist", "fmnist"], choices=list(DATA))
    ap.add_argument("--methods", nargs="*", default=["sintro", "learned_prior", "learned_prior_rent"], choices=list(METHODS))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--channels", nargs="+", type=int, default=[16, 32])
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--fid-samples", type=int, default=5000, help="prior samples for FID (and test images as reference)")
    ap.add_argument("--fid-reconstructions", type=int, default=2000, help="reconstructed test images for FID")
    add_grid_arguments(ap, ROOT / "runs" / "sintro-images", RESULTS)
    args = ap.parse_args()
    results = args.results.resolve()
    os.chdir(ROOT)   # presets and the commands recorded with each cell are relative to the repo
    preset = lambda d, m: Path("configs/sintro") / f"{d}_{m}.yaml"
    cells = [] if args.table_only else [
        Cell(f"{d}-{m}-{args.tag}-seed{seed}", preset(d, m), overrides(preset(d, m), args, seed) + args.overrides,
             dict(data=d, method=m, tag=args.tag, seed=seed, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                  channels=args.channels, train_subset=args.train_subset))
        for seed in args.seeds for d in args.data for m in args.methods]
    print(run_grid(cells, args.work, results, table, args.data_dir,
                   summary=lambda r: f"FID samples {r['fid_samples']:.1f}, recs {r['fid_reconstructions']:.1f}, "
                                     f"SVM {r['probes']['svm_few']:.3f}, kNN {r['probes']['knn_few']:.3f}"))


if __name__ == "__main__":
    main()
