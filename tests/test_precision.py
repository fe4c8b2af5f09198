"""Mixed precision (train.precision / eval.precision = bf16): products in bfloat16, densities and
losses in float32, weights that an optimizer step updates never read from a stale bfloat16 copy."""
import json
import math

import pytest
import torch

from mixvae import precision
from mixvae.app import runs
from mixvae.config import config_from_dict
from mixvae.errors import UserError
from mixvae.distributions import DiagonalGaussian, DiagonalGaussianMixture, mixture_log_prob
from mixvae.training.loop import Trainer

from .reference_losses import FILE, WORKLOADS, losses

BF16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)


def test_a_step_inside_autocast_is_seen_by_the_next_forward():
    # autocast keeps one bfloat16 copy per weight for its whole region; without the hook the second
    # forward would still use the weights from before the step
    torch.manual_seed(0)
    lin, x = torch.nn.Linear(8, 8), torch.randn(4, 8)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    precision.clear_casts_after_steps(opt)
    with BF16():
        before = lin(x).float()
        before.sum().backward()
        opt.step()
        after = lin(x).float()
    exact = x @ lin.weight.detach().T + lin.bias.detach()
    scale = exact.abs().max().item()
    assert (after - exact).abs().max() < 0.02 * scale   # bfloat16 rounding only
    assert (before - exact).abs().max() > 0.3 * scale   # what a stale copy would have given


def test_distributions_hold_float32_parameters_and_mixture_densities_are_not_rounded():
    torch.manual_seed(1)
    z, means, logvars = torch.randn(300, 3), torch.randn(16, 3) * 2, torch.randn(16, 3) * 0.3
    logw = torch.randn(16)
    exact = mixture_log_prob(z, torch.log_softmax(logw, 0), means, logvars)
    with BF16():
        q = DiagonalGaussian(means.bfloat16(), logvars.bfloat16())
        assert q.mu.dtype == q.logvar.dtype == torch.float32
        mix = DiagonalGaussianMixture(logw.bfloat16().float(), means, logvars)
        got = mix.log_prob(z)
        assert got.dtype == torch.float32
        assert mix.component_log_prob(z).dtype == torch.float32
    # the same float32 inputs give the float32 result exactly: no product was taken in bfloat16
    same = mixture_log_prob(z, torch.log_softmax(logw.bfloat16().float(), 0), means, logvars)
    assert torch.equal(got, same)
    assert (got - exact).abs().max() < 0.05             # only the rounded log-weights differ


def test_the_mixture_backward_runs_inside_autocast_and_matches_float32():
    # a bfloat16 network feeding the mixture density, differentiated inside the autocast region
    torch.manual_seed(2)
    net = torch.nn.Linear(4, 2)
    means = torch.randn(8, 2, requires_grad=True)
    logvars = torch.zeros(8, 2, requires_grad=True)
    x = torch.randn(64, 4)

    def grads(autocast: bool):
        for t in (net.weight, net.bias, means, logvars):
            t.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            mixture_log_prob(net(x), torch.full((8,), -math.log(8)), means, logvars).sum().backward()
        return [t.grad.clone() for t in (net.weight, means, logvars)]

    for g32, g16 in zip(grads(False), grads(True)):
        assert g16.dtype == torch.float32
        assert torch.allclose(g16, g32, rtol=0.05, atol=0.05 * g32.abs().max().item())


REFERENCE = json.loads(FILE.read_text())


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_kind_of_model_prior_and_objective_trains_in_bf16_close_to_fp32(name):
    spec = json.loads(json.dumps(WORKLOADS[name]))
    spec["train"]["precision"] = "bf16"
    got, want = losses(spec), REFERENCE[name]
    assert len(got) == len(want)
    # the first step sees the same weights: only bfloat16 products differ (relative rounding 2^-8,
    # summed over a few layers); later steps drift with the updates, still within a few percent
    for step, (g, w) in enumerate(zip(got, want)):
        for k in w:
            tol = 0.03 if step == 0 else 0.15
            assert g[k] == pytest.approx(w[k], rel=tol, abs=tol), (name, step, k)


def test_bf16_training_keeps_float32_weights_and_eval_precision_is_reported(tmp_path):
    cfg = config_from_dict({
        "seed": 3, "data": {"name": "digits"},
        "model": {"arch": "vae", "hidden": [16], "latent_dim": 3, "prior": {"kind": "vampprior", "components": 5}},
        "train": {"epochs": 1, "batch_size": 50, "precision": "bf16"}, "eval": {"ll_samples": 64}})
    run = runs.prepare(cfg, run_dir=tmp_path)
    Trainer(cfg, run.objective, run.data, tmp_path, progress=False).fit()
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    torch.manual_seed(0)
    fp32 = runs.evaluate(run, batch_size=200)
    run.cfg.eval.precision = "bf16"
    torch.manual_seed(0)
    bf16 = runs.evaluate(run, batch_size=200)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    # the same importance samples through bfloat16 networks: the LL moves by rounding only
    assert bf16["test_ll"] == pytest.approx(fp32["test_ll"], abs=0.3)
    assert bf16["test_ll"] != fp32["test_ll"]


def test_an_unknown_precision_is_refused_with_the_key_and_the_choices():
    with pytest.raises(UserError, match=r"train\.precision = .fp16. is not valid; expected one of .fp32., .bf16."):
        config_from_dict({"train": {"precision": "fp16"}})
