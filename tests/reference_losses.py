"""Losses of a few short training runs on fixed seeds, one per kind of model, prior and objective:
a refactoring must leave them unchanged (tests/test_reference_losses.py compares them to
tests/reference_losses.json to 1e-6).

    python tests/reference_losses.py          # print the current losses as JSON
    python tests/reference_losses.py --write  # rewrite tests/reference_losses.json (only when the maths changed on purpose)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from mixvae.app import runs  # noqa: E402
from mixvae.config import config_from_dict  # noqa: E402
from mixvae.training.loop import Trainer  # noqa: E402

FILE = HERE / "reference_losses.json"
STEPS = 6


def _vamp(arch: str, prior: str) -> dict:
    return {"seed": 3, "data": {"name": "digits"},
            "model": {"arch": arch, "hidden": [24, 24], "latent_dim": 3, "lower_latent_dim": 2,
                      "prior": {"kind": prior, "components": 5}},
            "train": {"max_steps": STEPS, "batch_size": 40, "optimizer": "adam-normgrad", "warmup_steps": 4,
                      "threads": 1}}


WORKLOADS = {
    "elbo-vae-vampprior": _vamp("vae", "vampprior"),
    "elbo-vae-standard": _vamp("vae", "standard"),
    "elbo-hvae-mog": _vamp("hvae", "mog"),
    "elbo-convhvae-vampprior-data": _vamp("convhvae", "vampprior-data"),
    "sintro-2d-learned-prior": {
        "seed": 4, "data": {"name": "8gaussians", "epoch_size": STEPS},
        "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [16, 16], "prior": {"kind": "vampprior", "components": 6}},
        "train": {"objective": "sintro", "max_steps": STEPS, "batch_size": 64, "lr": 2e-4, "warmup_steps": 3,
                  "threads": 1},
        "sintro": {"beta_kl": 0.3, "beta_rec": 0.2, "beta_neg": 0.9, "convert_to_mog_step": 2, "kl_samples": 7}},
    "sintro-2d-vampprior-with-decoder": {      # the VampPrior learns with the decoder, through the encoder
        "seed": 7, "data": {"name": "8gaussians", "epoch_size": STEPS},
        "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [16, 16], "prior": {"kind": "vampprior", "components": 6}},
        "train": {"objective": "sintro", "max_steps": STEPS, "batch_size": 64, "lr": 1e-3, "warmup_steps": 2,
                  "threads": 1},
        "sintro": {"beta_kl": 0.3, "beta_rec": 0.2, "beta_neg": 0.9, "kl_samples": 7}},
    "sintro-2d-mog-with-encoder": {
        "seed": 8, "data": {"name": "8gaussians", "epoch_size": STEPS},
        "model": {"arch": "mlp2d", "latent_dim": 2, "hidden": [16, 16],
                  "prior": {"kind": "mog", "components": 5, "learn_weights": True}},
        "train": {"objective": "sintro", "max_steps": STEPS, "batch_size": 64, "lr": 1e-3, "warmup_steps": 2,
                  "threads": 1},
        "sintro": {"beta_kl": 0.3, "beta_rec": 0.2, "beta_neg": 0.9, "kl_samples": 7, "prior_player": "encoder"}},
    "sintro-images-standard": {
        "seed": 5, "data": {"name": "digits"},
        "model": {"arch": "resnet", "latent_dim": 4, "channels": [4, 8]},
        "train": {"objective": "sintro", "max_steps": STEPS, "batch_size": 16, "warmup_steps": 2, "threads": 1},
        "sintro": {"beta_neg": 32}},
    "gamix-resnetv2-mog": {
        "seed": 6, "data": {"name": "digits", "scale": "symmetric"},
        "model": {"arch": "resnetv2", "channels": [8, 4], "latent_dim": 6, "prior": {"kind": "mog", "components": 3}},
        "train": {"objective": "gamix", "max_steps": STEPS, "batch_size": 16, "lr": 1e-3, "betas": [0.5, 0.999],
                  "threads": 1},
        "gamix": {"disc_width": 8, "kl_samples": 4}},
}


def losses(spec: dict) -> list[dict[str, float]]:
    """The logged terms of every step of the run ``spec``."""
    cfg = config_from_dict(json.loads(json.dumps(spec)), "reference")
    cfg.train.log_every = 1
    run = runs.prepare(cfg)
    trainer = Trainer(cfg, run.objective, run.data, None, progress=False)
    trainer.fit()
    return [{k: v for k, v in r.items() if k not in ("step", "epoch", "split", "time", "lr")}
            for r in trainer.log.records if r["split"] == "train"]


def current() -> dict:
    threads = torch.get_num_threads()
    try:
        return {name: losses(spec) for name, spec in WORKLOADS.items()}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    out = current()
    if "--write" in sys.argv:
        FILE.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
