"""A new component is one registration: a prior and a data set defined outside the package train
and evaluate through the real command line (``--plugin``), with a config that names them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixvae.registry import ARCHITECTURES, DATASETS, OBJECTIVES, PRIORS, load_builtins

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A toy prior (a Gaussian whose scale is learned) and a toy data set (binary stripes)."""
import numpy as np
import torch
import torch.nn as nn

from mixvae.distributions import DiagonalGaussian
from mixvae.priors import Prior
from mixvae.registry import DATASETS, PRIORS


class ScaledNormal(Prior):
    """p(z) = N(0, s^2 I) with a learnable log s."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.log_s = nn.Parameter(torch.zeros(()))

    def forward(self):
        return DiagonalGaussian(torch.zeros(self.latent_dim), (2 * self.log_s).expand(self.latent_dim))


PRIORS.add("scaled-normal", lambda options, data, latent_dim, seed: ScaledNormal(latent_dim), mixture=False)


@DATASETS.register("stripes")
def stripes(request):
    """6x6 binary images with one bright row or column."""
    rng = np.random.default_rng(request.split_seed)
    def make(n):
        x = np.zeros((n, 6, 6), np.uint8)
        for i, k in enumerate(rng.integers(0, 12, n)):
            if k < 6:
                x[i, k, :] = 1
            else:
                x[i, :, k - 6] = 1
        return x
    return {"train": make(300), "test": make(60)}, "stripes (generated)"
'''


def test_the_builtin_components_are_registered_with_what_they_need():
    load_builtins()
    assert {"standard", "mog", "vampprior", "vampprior-data"} <= set(PRIORS.names())
    assert {"vae", "hvae", "convhvae", "mlp2d", "resnet", "resnetv2"} <= set(ARCHITECTURES.names())
    assert {"elbo", "sintro", "gamix"} <= set(OBJECTIVES.names())
    assert {"mnist", "binarized-mnist", "digits", "npz", "8gaussians"} <= set(DATASETS.names())
    assert ARCHITECTURES.get("hvae").info["levels"] == 2 and ARCHITECTURES.get("convhvae").info["data"] == "image"
    assert OBJECTIVES.get("sintro").info["single_level"] and "ll" in OBJECTIVES.get("elbo").info["metrics"]
    assert PRIORS.get("mog").info["mixture"] and not PRIORS.get("standard").info["mixture"]


@pytest.mark.slow
def test_a_prior_and_a_data_set_from_outside_the_package_train_through_the_cli(tmp_path):
    plugin = tmp_path / "my_components.py"
    plugin.write_text(PLUGIN)
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"name": "stripes"},
        "model": {"arch": "vae", "hidden": [16], "latent_dim": 2, "prior": {"kind": "scaled-normal"}},
        "train": {"epochs": 2, "batch_size": 30},
        "eval": {"ll_samples": 10}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "mixvae"]
    res = subprocess.run(cli + ["train", str(config), "--out", str(run), "--quiet", "--plugin", str(plugin)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["likelihood"] == "bernoulli" and -100 < result["test_ll"] < 0   # 0/1 stripes are binary
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["prior"]["kind"] == "scaled-normal" and saved["data"]["name"] == "stripes"
    again = subprocess.run(cli + ["eval", str(run), "--json", "--ll-samples", "5", "--plugin", str(plugin)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["test_ll"] < 0
    missing = subprocess.run(cli + ["eval", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "model.prior.kind = 'scaled-normal' is not a known prior" in missing.stderr
