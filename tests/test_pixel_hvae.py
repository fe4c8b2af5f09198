"""PixelHVAE: causal masks, exact ancestral sampling, the importance-sampled LL, and a preset end to end."""
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from mixvae.app import runs
from mixvae.app.cli import main
from mixvae.config import config_from_dict
from mixvae.metrics.likelihood import log_likelihood
from mixvae.models import LikelihoodHead, PixelCNNLikelihood
from mixvae.nets.pixelcnn import PixelCNNDecoder, causal_mask

ROOT = Path(__file__).resolve().parents[1]


def decoder(shape, kind="bernoulli", layers=2, channels=6):
    torch.manual_seed(0)
    head = LikelihoodHead(kind, event_dims=3)
    return PixelCNNDecoder(shape, 3, 2, head.params_per_pixel, channels=channels, layers=layers).double(), head


def raster(c, i, j, shape):
    """Position of value (c, i, j) in the order rows, then columns, then colors."""
    C, H, W = shape
    return (i * W + j) * C + c


def test_mask_types_differ_only_at_the_centre_by_the_colour_rule():
    a, b = causal_mask(6, 3, 3, "A", 3), causal_mask(6, 3, 3, "B", 3)
    assert torch.equal(a[:, :, 0], torch.ones(6, 3, 3)) and a[:, :, 2].sum() == 0 and a[:, :, 1, 2].sum() == 0
    groups_out, groups_in = torch.arange(6) % 3, torch.arange(3)
    assert torch.equal(a[:, :, 1, 1], (groups_in[None] < groups_out[:, None]).float())
    assert torch.equal(b[:, :, 1, 1], (groups_in[None] <= groups_out[:, None]).float())
    cond = causal_mask(4, 1, 3, "A", 1, conditioning=2)
    assert torch.equal(cond[:, 1:], torch.ones(4, 2, 3, 3))          # latent maps are never masked


@pytest.mark.parametrize("shape", [(1, 5, 4), (3, 4, 3)])
def test_every_parameter_of_a_value_depends_only_on_the_values_before_it(shape):
    dec, _ = decoder(shape, kind="logistic", layers=3)
    cond = torch.randn(1, 2 * shape[0], *shape[1:], dtype=torch.double)
    x = torch.rand(1, *shape, dtype=torch.double)
    jac = torch.autograd.functional.jacobian(lambda v: dec(v, cond), x)   # (1, P, C, H, W, 1, C, H, W)
    jac = jac[0].abs().sum(0)[..., 0, :, :, :]                         # (C, H, W, C, H, W)
    C, H, W = shape
    seen_before = 0
    for c, i, j in itertools.product(range(C), range(H), range(W)):
        k = raster(c, i, j, shape)
        for c2, i2, j2 in itertools.product(range(C), range(H), range(W)):
            dep = jac[c, i, j, c2, i2, j2]
            if raster(c2, i2, j2, shape) >= k:
                assert dep == 0, ((c, i, j), (c2, i2, j2))
            elif (i2, j2) in ((i, j - 1), (i - 1, j)) or (i2, j2) == (i, j):
                seen_before += dep > 0
    assert seen_before > 0.9 * C * H * W                          # the neighbours before do matter


@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 6, 3)])
def test_sampling_row_windows_give_the_full_pass_conditionals(shape):
    # the sampler reads only the rows a value can depend on; along the path it drew, its means must
    # be the conditionals of one full pass over the drawn image (layers=2, so windows are cropped)
    dec, head = decoder(shape, kind="logistic", layers=2)
    cond = torch.randn(4, 2 * shape[0], *shape[1:], dtype=torch.double)
    lik = PixelCNNLikelihood(dec, head, cond)
    torch.manual_seed(1)
    x, means = lik.generate()
    torch.testing.assert_close(means, lik.conditionals(x).mean)
    assert ((x * 255).round() == x * 255).all() and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 1, 2)])
def test_ancestral_samples_follow_the_models_joint_distribution(shape):
    # binary images of 4 values: the 16 joint probabilities from log_prob sum to one, and the
    # frequencies of 40 000 draws match them (4 standard errors)
    dec, head = decoder(shape, layers=2)
    n = 40_000
    cond = torch.randn(1, 2 * shape[0], *shape[1:], dtype=torch.double)
    lik = PixelCNNLikelihood(dec, head, cond)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.double).reshape(16, *shape)
    p = lik.log_prob(images).exp()                                 # (16,): cond broadcasts over images
    assert abs(p.sum().item() - 1) < 1e-10
    torch.manual_seed(2)
    draws = PixelCNNLikelihood(dec, head, cond.expand(n, *cond.shape[1:])).sample()
    codes = (draws.reshape(n, 4) * torch.tensor([8.0, 4, 2, 1], dtype=torch.double)).sum(1).long()
    freq = torch.bincount(codes, minlength=16).double() / n
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-4).all(), (freq, p)


def tiny_pixel(prior="vampprior"):
    return config_from_dict({
        "seed": 0, "data": {"name": "digits"},
        "model": {"arch": "pixelhvae", "hidden": [24], "latent_dim": 3, "lower_latent_dim": 2,
                  "prior": {"kind": prior, "components": 4}},
        "train": {"epochs": 1, "batch_size": 50},
    })


def test_the_log_likelihood_is_a_lower_bound_that_rises_with_the_samples():
    run = runs.prepare(tiny_pixel())
    model = run.model.eval()
    x = torch.cat([next(run.data.train_batches(0, k, 50)) for k in range(4)])     # 200 images
    est = []
    for s in (1, 16, 256):
        torch.manual_seed(3)
        est.append(log_likelihood(model, x, num_samples=s, chunk=4096).mean().item())
    # the S = 1 estimate is the ELBO; the bound tightens with S, with a shrinking gain (IWAE);
    # digits take a discretised logistic, so every estimate is a log-probability below zero
    assert est[0] < est[1] < est[2] < 0, est
    assert est[2] - est[1] < est[1] - est[0], est


def test_a_pixelhvae_preset_trains_evaluates_and_samples_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    preset = ROOT / "configs/vampprior/pixelhvae_vampprior_static_mnist.yaml"
    sets = ["data.name=digits", "train.max_steps=3", "train.batch_size=20", "model.prior.components=10",
            "eval.ll_samples=4", "data.test_subset=30"]
    assert main(["train", str(preset), "--out", str(run), "--quiet"] + [a for s in sets for a in ("--set", s)]) == 0
    out = json.loads((run / "eval.json").read_text())
    assert math.isfinite(out["test_ll"]) and out["test_ll"] < 0 and out["test_ll_samples"] == 4
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    assert (run / "ll_histogram.png").is_file()
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert (tmp_path / "s.png").is_file()
