"""The Python API (mixvae.build / fit / log_likelihood / load ...): the README's first Python block
runs as written; models from parts with the user's own networks; tensors, arrays and iterables of
batches; run folders and safetensors files load back into the same model."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import mixvae
from mixvae.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_readmes_first_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    block = readme_python_block()
    assert len([line for line in block.splitlines() if line.strip()]) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    ll = float(re.search(r"test log-likelihood: (-?[0-9.]+)", out).group(1))
    assert -800 < ll < 0
    assert (tmp_path / "samples.png").stat().st_size > 0


def tiny_binary(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) < 0.3).float()


def test_fit_on_tensors_arrays_and_batches_uses_the_same_loop(tmp_path):
    x = tiny_binary()
    kw = dict(data=x, prior="vampprior", components=5, latent_dim=3, hidden=[16])
    a, b = mixvae.build("vae", **kw), mixvae.build("vae", **kw)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)                                   # seeded builds are identical
    ha = mixvae.fit(a, x, epochs=2, batch_size=30, progress=False)
    hb = mixvae.fit(b, (x.numpy() * 255).astype(np.uint8), epochs=2, batch_size=30, progress=False)
    assert ha["steps"] == hb["steps"] == 2 * (270 // 30)
    for p, q in zip(a.parameters(), b.parameters()):               # uint8 0/255 arrays are the same binary data
        assert torch.equal(p, q)
    assert [r["split"] for r in ha["records"]].count("valid") == 2
    c = mixvae.build("vae", **kw)
    batches = [x[i:i + 30] for i in range(0, 270, 30)]
    hc = mixvae.fit(c, batches, valid=x[270:], epochs=2, progress=False)
    assert hc["steps"] == 18 and np.isfinite(hc["best_valid_loss"])
    with pytest.raises(UserError, match="valid"):
        mixvae.fit(c, iter(batches), epochs=1)
    with pytest.raises(UserError, match="unknown key 'train.epoch'"):
        mixvae.fit(c, x, epoch=1)


def test_metrics_on_any_tensor_agree_with_their_definitions():
    x = tiny_binary()
    model = mixvae.build("vae", data=x, latent_dim=3, hidden=[16])
    mixvae.fit(model, x, epochs=1, batch_size=50, progress=False)
    ll = mixvae.log_likelihood(model, x[:20], samples=64)
    assert ll.shape == (20,) and (ll < 0).all()
    e = mixvae.elbo(model, x[:20])
    assert e["elbo"] == pytest.approx(-(e["rec"] + e["kl"]))
    assert ll.mean() > e["elbo"] - 1.0                               # IS with 64 draws is above the ELBO on average
    au = mixvae.active_units(model, x)
    assert set(au) == {"z"} and 0 <= au["z"] <= 3


class MyEncoder(nn.Module):
    """The contract: x (N, *data_shape) -> (mu, logvar), each (N, D)."""

    def __init__(self, d=2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 2 * d))

    def forward(self, x):
        return self.net(x).chunk(2, dim=-1)


class MyDecoder(nn.Module):
    """The contract: z (..., D) -> raw likelihood parameters (..., P, *data_shape)."""

    def __init__(self, d=2, params=1):
        super().__init__()
        self.params = params
        self.net = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, params * 64))

    def forward(self, z):
        return self.net(z).reshape(*z.shape[:-1], self.params, 1, 8, 8)


def test_a_model_from_parts_with_the_users_own_networks_trains_and_reloads(tmp_path):
    x = tiny_binary()
    model = mixvae.VAE(MyEncoder(), MyDecoder(), mixvae.MoGPrior(2, 4), mixvae.LikelihoodHead("bernoulli", 3), (1, 8, 8))
    h = mixvae.fit(model, x, epochs=2, batch_size=50, out=tmp_path / "run", progress=False)
    assert h["steps"] == 10 and (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    again = mixvae.VAE(MyEncoder(), MyDecoder(), mixvae.MoGPrior(2, 4), mixvae.LikelihoodHead("bernoulli", 3), (1, 8, 8))
    mixvae.load_weights(again, tmp_path / "run")
    for p, q in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)
    with pytest.raises(UserError, match="load_weights"):           # its config cannot rebuild your networks
        mixvae.load(tmp_path / "run")


def test_a_run_folder_and_an_exported_file_load_back_into_the_same_model(tmp_path):
    from mixvae.app.cli import main
    x = tiny_binary()
    model = mixvae.build("vae", data=x, prior="vampprior", components=5, latent_dim=3, hidden=[16])
    mixvae.fit(model, x, epochs=2, batch_size=50, out=tmp_path / "run", progress=False)
    loaded = mixvae.load(tmp_path / "run")
    for (k, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), k
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "fit.safetensors")]) == 0  # no data needed
    for p, q in zip(model.state_dict().values(), mixvae.load(tmp_path / "fit.safetensors").state_dict().values()):
        assert torch.equal(p, q)

    # a CLI run exported to safetensors loads from the file alone (its config travels in the metadata)
    sets = ["data.name=digits", "model.hidden=[16]", "model.latent_dim=3", "model.prior.kind=vampprior",
            "model.prior.components=4", "train.max_steps=5", "train.batch_size=50"]
    cli_run = tmp_path / "cli"
    assert main(["train", str(ROOT / "configs/vampprior/_base.yaml"), "--out", str(cli_run), "--quiet", "--no-eval"]
                + [a for o in sets for a in ("--set", o)]) == 0
    assert main(["export", str(cli_run), "--out", str(tmp_path / "w.safetensors")]) == 0
    from_file, from_run = mixvae.load(tmp_path / "w.safetensors"), mixvae.load(cli_run)
    for p, q in zip(from_file.state_dict().values(), from_run.state_dict().values()):
        assert torch.equal(p, q)
    assert from_file.likelihood.kind == "logistic" and from_file.likelihood.bins == 17


def test_a_preset_by_name_builds_the_papers_model_for_your_data():
    x = tiny_binary(50)
    model = mixvae.build("vampprior/hvae_vampprior_static_mnist", data=x, components=7)
    assert isinstance(model, mixvae.HVAE) and model.prior.num_components == 7 and model.latent_dim == 40
    # unnamed binary images: pseudo-inputs start at their mean pixel, std 0.01 (stated in the config)
    mean = float(mixvae.from_tensors(x).train.get().mean())          # the training part (10% is validation)
    assert model.config.model.prior.pseudo_init == [pytest.approx(mean, abs=1e-4), 0.01]


def test_fit_applies_threads_deterministic_and_device_and_restores_the_process_settings(monkeypatch):
    """Options that are process settings hold while fit runs and are put back afterwards; device=
    moves the model (a machine without CUDA refuses 'cuda' in one line)."""
    from mixvae.training.loop import Trainer
    seen = {}
    fit = Trainer.fit

    def recording_fit(self):
        seen.update(threads=torch.get_num_threads(), deterministic=torch.are_deterministic_algorithms_enabled())
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    torch.set_num_threads(2)
    x = tiny_binary(100)
    model = mixvae.build("vae", data=x, latent_dim=2, hidden=[8])
    mixvae.fit(model, x, epochs=1, batch_size=30, progress=False, threads=1, deterministic=True, device="cpu")
    assert seen == {"threads": 1, "deterministic": True}
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    if torch.cuda.is_available():
        mixvae.fit(model, x, epochs=1, batch_size=30, progress=False, device="cuda")
        assert next(model.parameters()).is_cuda
    else:
        with pytest.raises(UserError, match="train.device = 'cuda' but this machine has no CUDA device"):
            mixvae.fit(model, x, epochs=1, progress=False, device="cuda")


def test_deterministic_cuda_sets_the_cublas_workspace_before_cuda_starts_or_says_why_not(monkeypatch):
    from mixvae.app.runs import deterministic_algorithms
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(UserError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8"):
        deterministic_algorithms(True, torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    deterministic_algorithms(True, torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.are_deterministic_algorithms_enabled()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    deterministic_algorithms(True, torch.device("cpu"))                # the CPU needs no workspace setting
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_fit_and_the_measures_hand_a_symmetric_model_images_in_its_range(monkeypatch):
    """data.scale = symmetric: fit trains on [-1, 1] and elbo / log_likelihood / active_units take the
    user's [0, 1] images and scale them as the run's own evaluation does."""
    from mixvae.metrics.likelihood import elbo_parts
    from mixvae.training.loop import Trainer
    seen = {}
    fit = Trainer.fit

    def recording_fit(self):
        seen["min"] = float(next(self.data.train_batches(0, 0, 30)).min())
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    x = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model = mixvae.build("vae", data=x, latent_dim=2, hidden=[8])
    mixvae.fit(model, x, epochs=1, batch_size=30, progress=False, data={"scale": "symmetric"})
    assert model.config.data.scale == "symmetric" and seen["min"] < -0.9
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = elbo_parts(model, [x[:50] * 2 - 1])
    assert mixvae.elbo(model, x[:50]) == expected
    # sample and reconstruct give [0, 1] back: the model's [-1, 1] output, moved
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        raw = model.eval().sample(5)
    model.train()
    state = torch.random.get_rng_state()
    got = mixvae.sample(model, 5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state) and model.training     # nothing else touched
    torch.testing.assert_close(got, (raw + 1) / 2)
    torch.testing.assert_close(mixvae.reconstruct(model, x[:7], batch_size=3), (model.reconstruct(x[:7] * 2 - 1) + 1) / 2)


def test_fit_applies_the_data_keys_it_can_and_refuses_the_others():
    x = tiny_binary(100)
    model = mixvae.build("vae", data=x, latent_dim=2, hidden=[8])
    assert mixvae.fit(model, x, epochs=1, batch_size=30, progress=False)["steps"] == 3          # 90 of 100 train
    assert mixvae.fit(model, x, epochs=1, batch_size=30, progress=False, data={"train_subset": 70})["steps"] == 2
    with pytest.raises(UserError, match="data.epoch_size applies to data sets read from files"):
        mixvae.fit(model, x, epochs=1, progress=False, data={"epoch_size": 7})
    with pytest.raises(UserError, match="steps_per_epoch is for an iterable of batches"):
        mixvae.fit(model, x, epochs=1, progress=False, steps_per_epoch=3)
    with pytest.raises(UserError, match="batch_size is for examples in memory"):
        mixvae.fit(model, [x[:30], x[30:60]], valid=x[60:], epochs=1, progress=False, batch_size=10)


def test_load_gives_the_last_weights_of_an_adversarial_run_as_fit_does(tmp_path):
    x = torch.rand(120, 2, generator=torch.Generator().manual_seed(2))
    model = mixvae.build("mlp2d", data=x, latent_dim=2, hidden=[8, 8])
    h = mixvae.fit(model, x, objective="sintro", out=tmp_path / "run", epochs=6, batch_size=27, progress=False,
                   warmup_epochs=1, lr=0.05)
    assert h["best_step"] < h["steps"]                       # the best validation loss is not the last step
    for name in ("load", "load_weights"):
        again = mixvae.load(tmp_path / "run") if name == "load" else \
            mixvae.load_weights(mixvae.build("mlp2d", data=x, latent_dim=2, hidden=[8, 8]), tmp_path / "run")
        for (k, p), q in zip(model.state_dict().items(), again.state_dict().values()):
            assert torch.equal(p, q), (name, k)


def test_build_refuses_prior_options_its_prior_does_not_read():
    x = tiny_binary(50)
    with pytest.raises(UserError, match="the standard prior does not use components; it reads no options"):
        mixvae.build("vae", data=x, components=10, learn_weights=True)
    with pytest.raises(UserError, match="the mog prior does not use pseudo_init; it reads components, learn_weights"):
        mixvae.build("vae", data=x, prior="mog", pseudo_init=[0.9, 0.0])
    assert mixvae.build("vae", data=x, prior="mog", components=3, hidden=[8]).prior.num_components == 3


def test_a_model_whose_fit_converted_its_vampprior_is_described_and_reloaded_as_a_mog(tmp_path):
    x = torch.rand(120, 2, generator=torch.Generator().manual_seed(4))
    model = mixvae.build("mlp2d", data=x, latent_dim=2, hidden=[8, 8], prior="vampprior", components=4)
    opts = dict(objective="sintro", batch_size=30, warmup_steps=3, progress=False, sintro={"convert_to_mog_step": 2,
                                                                                        "kl_samples": 5})
    mixvae.fit(model, x, max_steps=5, **opts)
    assert not model.prior.encodes_inputs                      # a MoG now, with learned weights
    assert model.config.model.prior.kind == "mog" and model.config.model.prior.learn_weights
    opts["sintro"] = {"kl_samples": 5}                                  # (converting a MoG is refused)
    mixvae.fit(model, x, max_steps=2, out=tmp_path / "again", **opts)   # a later fit's run folder ...
    again = mixvae.load(tmp_path / "again")                             # ... rebuilds the model
    assert torch.equal(mixvae.sample(model, 6, seed=1), mixvae.sample(again, 6, seed=1))
