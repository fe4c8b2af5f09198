"""What the Python API refuses or reads correctly that a user review found wrong: sources of
batches that run out, likelihoods the data cannot have, empty validation, examples of the wrong
shape, uint8 batches, the caller's random state, and CLI commands on a run written by fit."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import mixvae
from mixvae.app.cli import main
from mixvae.errors import UserError


def binary(n=120, seed=0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < 0.3).float()


def small(data, arch="vae", **kw):
    return mixvae.build(arch, data=data, latent_dim=2, hidden=[8], **kw)


def test_a_source_of_batches_that_runs_out_is_named_instead_of_looping_forever():
    x = binary()
    model = small(x)
    with pytest.raises(UserError, match="ran out after 2 of the 3 batches of epoch 1"):
        mixvae.fit(model, [x[:30], x[30:60]], valid=x[90:], epochs=1, steps_per_epoch=3, progress=False)
    with pytest.raises(UserError, match="ran out after 0 of the 1 batches of epoch 2.*not a generator"):
        mixvae.fit(model, (b for b in [x[:30]]), valid=x[90:], epochs=2, steps_per_epoch=1, progress=False)


def test_likelihoods_on_0_1_are_refused_for_data_the_model_sees_elsewhere():
    x = binary()
    with pytest.raises(UserError, match="data.scale = 'symmetric'.*bernoulli likelihood is a density of values in"):
        mixvae.fit(small(x), x, epochs=1, progress=False, data={"scale": "symmetric"})
    points = torch.randn(200, 2)
    with pytest.raises(UserError, match=r"bernoulli likelihood is a density of values in \[0, 1\].*values in \[-"):
        small(points, likelihood="bernoulli")
    small(torch.rand(200, 5), likelihood="bernoulli")             # vectors in [0, 1]: a fair choice


def test_gaussian_mean_architectures_pick_and_require_a_gaussian():
    images = torch.rand(40, 3, 8, 8)
    model = mixvae.build("resnet", data=images, latent_dim=4, channels=[4, 8])
    assert model.likelihood.kind == "gaussian"                    # auto: what its decoder gives
    mixvae.fit(model, images, objective="sintro", max_steps=2, progress=False, sintro={"kl_samples": 2})
    assert mixvae.sample(model, 3, seed=0).shape == (3, 3, 8, 8)
    with pytest.raises(UserError, match="model.arch = 'resnet' decodes a Gaussian mean.*'logistic'"):
        mixvae.build("resnet", data=images, latent_dim=4, channels=[4, 8], likelihood="logistic")
    with pytest.raises(UserError, match="train.objective = 'sintro' trains the decoder's gaussian mean.*bernoulli"):
        mixvae.fit(small(binary()), binary(), objective="sintro", max_steps=1, progress=False)


def test_no_validation_examples_is_refused():
    x = binary()
    with pytest.raises(UserError, match="data.valid_size = 0 holds out no validation examples of 120"):
        mixvae.fit(small(x), x, epochs=1, progress=False, data={"valid_size": 0})
    with pytest.raises(UserError, match="holds out no validation examples of 4"):
        mixvae.fit(small(x), x[:4], epochs=1, progress=False)      # 10% of 4 rounds to none


def test_examples_of_the_wrong_shape_and_bad_counts_get_one_sentence():
    x = binary()
    model = small(x)
    wrong = binary(5, shape=(1, 16, 16))
    for call in (lambda: mixvae.log_likelihood(model, wrong, samples=4), lambda: mixvae.elbo(model, wrong),
                 lambda: mixvae.reconstruct(model, wrong), lambda: mixvae.active_units(model, wrong)):
        with pytest.raises(UserError, match=r"x has examples of shape \(1, 16, 16\), but the model was built for "
                                            r"examples of shape \(1, 8, 8\)"):
            call()
    with pytest.raises(UserError, match=r"mixvae.fit: the data has examples of shape \(64,\)"):
        mixvae.fit(model, torch.rand(50, 64), epochs=1, progress=False)
    for call, name in ((lambda: mixvae.log_likelihood(model, x, samples=0), "samples = 0"),
                       (lambda: mixvae.elbo(model, x, batch_size=0), "batch_size = 0"),
                       (lambda: mixvae.sample(model, 2.5), "n = 2.5"), (lambda: mixvae.sample(model, -1), "n = -1")):
        with pytest.raises(UserError, match=name):
            call()


def test_save_images_takes_arrays_gray_stacks_and_uint8_and_refuses_the_rest(tmp_path):
    assert mixvae.save_images(np.random.rand(4, 8, 8), tmp_path / "a.png").stat().st_size > 0
    assert mixvae.save_images(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), tmp_path / "b.png").stat().st_size > 0
    for bad in (torch.rand(0, 1, 8, 8), torch.rand(4, 64), torch.rand(2, 2, 8, 8)):
        with pytest.raises(UserError, match="mixvae.save_images: images of shape"):
            mixvae.save_images(bad, tmp_path / "c.png")


def test_uint8_examples_are_read_on_the_models_scale_not_by_their_own_maximum():
    u8 = torch.randint(0, 256, (150, 1, 8, 8), dtype=torch.uint8)
    model = small(u8)                                                  # 8-bit: discretised logistic
    dark = torch.randint(0, 2, (6, 1, 8, 8), dtype=torch.uint8)        # values 0 and 1 of 255
    torch.testing.assert_close(mixvae.elbo(model, dark)["elbo"], mixvae.elbo(model, dark.float() / 255)["elbo"])
    seen = []
    enc = model.encoder.forward
    model.encoder.forward = lambda x: seen.append(float(x.max())) or enc(x)
    mixvae.fit(model, [u8[:50], dark], valid=u8[100:], epochs=1, progress=False)   # a dark uint8 batch of a stream
    assert 0 < min(seen) <= 1 / 255 + 1e-6
    b = binary(20).to(torch.uint8)                                     # 0/1 uint8 to a Bernoulli model: binary
    bern = small(binary())
    torch.testing.assert_close(mixvae.elbo(bern, b)["elbo"], mixvae.elbo(bern, b.float())["elbo"])


def test_build_fit_and_active_units_leave_the_callers_state_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    x = binary()
    model = small(x)
    mixvae.fit(model, x, epochs=1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    net = mixvae.build("resnetv2", data=torch.rand(20, 3, 8, 8), latent_dim=4, channels=[4, 4], stages=1)
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    assert stats
    mixvae.active_units(net, torch.rand(20, 3, 8, 8))
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())


def test_the_cli_samples_and_exports_a_run_written_by_fit(tmp_path):
    x = binary()
    model = small(x)
    mixvae.fit(model, x, epochs=1, progress=False, out=tmp_path / "run")
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "w.safetensors"), "--quiet"]) == 0
    again = mixvae.load(tmp_path / "w.safetensors")
    torch.testing.assert_close(mixvae.sample(again, 3, seed=1), mixvae.sample(model, 3, seed=1))
    assert main(["eval", str(tmp_path / "run"), "--quiet"]) == 2      # eval needs the examples: in the caller's memory


def test_a_committed_cell_samples_and_exports_on_a_machine_without_its_data(tmp_path, monkeypatch):
    from pathlib import Path
    monkeypatch.setenv("MIXVAE_DATA", str(tmp_path))              # no data files here, and no downloads
    monkeypatch.setenv("MIXVAE_OFFLINE", "1")
    cell = Path(__file__).resolve().parents[1] / "results" / "vampprior_static" / "cells" / "vae_vampprior"
    before = sorted(p.name for p in cell.iterdir())
    assert main(["sample", str(cell), "-n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert main(["export", str(cell), "--out", str(tmp_path / "w.safetensors"), "--quiet"]) == 0
    assert main(["eval", str(cell), "--quiet", "--ll-samples", "2"]) == 2          # the log-likelihood needs them
    assert sorted(p.name for p in cell.iterdir()) == before


def test_bits_per_dim_of_a_symmetric_density_counts_bins_of_width_2_over_256(tmp_path):
    """8-bit images seen in [-1, 1] with a Gaussian likelihood: the density is over [-1, 1], so each
    value's bin is 2/256 wide and bits/dim = -(LL - D log 128) / (D log 2), not the [0, 1] form."""
    import json
    import math
    g = np.random.default_rng(0)
    np.savez(tmp_path / "u8.npz", train=g.integers(0, 256, (120, 4, 4), dtype=np.uint8),
             test=g.integers(0, 256, (30, 4, 4), dtype=np.uint8))
    sets = ["data.name=npz", f"data.path={tmp_path / 'u8.npz'}", "data.scale=symmetric", "model.likelihood=gaussian-learned",
            "model.hidden=[8]", "model.latent_dim=2", "model.prior.kind=standard", "train.max_steps=3",
            "train.batch_size=30", "eval.ll_samples=4"]
    from pathlib import Path
    base = Path(__file__).resolve().parents[1] / "configs" / "vampprior" / "_base.yaml"
    assert main(["train", str(base), "--out", str(tmp_path / "run"), "--quiet"] + [a for o in sets for a in ("--set", o)]) == 0
    r = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert r["bits_per_dim"] == pytest.approx(-(r["test_ll"] - 16 * math.log(128)) / (16 * math.log(2)))


def test_metrics_restore_the_models_mode_also_when_they_fail():
    """The metrics evaluate in eval mode and hand the model back in the mode it came in, however they end."""
    from mixvae.metrics.likelihood import elbo_parts, log_likelihood
    from mixvae.metrics.probes import sampled_latents
    model = small(binary(16, shape=(1, 4, 4)))
    model.train()
    wrong = torch.rand(3, 5)                          # not (N, 1, 4, 4): every metric fails part-way
    for metric in (lambda: log_likelihood(model, wrong, 4), lambda: elbo_parts(model, [wrong]),
                   lambda: sampled_latents(model, [wrong])):
        with pytest.raises(RuntimeError):
            metric()
        assert model.training
    assert log_likelihood(model, torch.rand(2, 1, 4, 4), 4).shape == (2,) and model.training


def test_vectors_get_the_likelihood_their_values_call_for():
    """'auto' reads vectors (N, D) as it reads images: binary -> Bernoulli, 8-bit -> discretised
    logistic, continuous -> Gaussian with a learned variance (not a fixed unit variance)."""
    assert small(binary(50, shape=(12,))).likelihood.kind == "bernoulli"
    assert small(torch.randint(0, 256, (50, 12), dtype=torch.uint8)).likelihood.kind == "logistic"
    assert small(torch.randn(50, 12)).likelihood.kind == "gaussian-learned"


def test_a_bernoulli_model_scores_binary_examples_only():
    model = small(binary(60, shape=(1, 4, 4)))
    gray = torch.rand(5, 1, 4, 4)
    for metric in (lambda: mixvae.log_likelihood(model, gray, samples=4, progress=False), lambda: mixvae.elbo(model, gray)):
        with pytest.raises(UserError, match="Bernoulli likelihood is a distribution of binary values"):
            metric()
    assert mixvae.log_likelihood(model, torch.bernoulli(gray), samples=4, progress=False).shape == (5,)
    nearly = torch.bernoulli(gray) * 0.99995                       # binary as the data's kind is read (1e-4)
    assert torch.equal(mixvae.log_likelihood(model, nearly, samples=4, progress=False, seed=1),
                       mixvae.log_likelihood(model, nearly.round(), samples=4, progress=False, seed=1))
    assert mixvae.reconstruct(model, gray).shape == (5, 1, 4, 4)      # encoding gray examples is fine


def test_api_file_mistakes_get_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        mixvae.load(tmp_path / "no_such_run")
    with pytest.raises(UserError, match="no picture file extension"):
        mixvae.save_images(torch.rand(2, 1, 4, 4), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    model = small(binary(40, shape=(1, 4, 4)))
    other = mixvae.build("vae", data=binary(40, shape=(1, 4, 4)), latent_dim=2, hidden=[6])
    mixvae.fit(other, binary(40, shape=(1, 4, 4)), epochs=1, out=tmp_path / "run", progress=False)
    with pytest.raises(UserError, match=r"do not fit this model \(.*size mismatch"):
        mixvae.load_weights(model, tmp_path / "run")


def test_build_reads_any_number_of_examples_and_names_itself_in_its_errors():
    assert small(binary(5)).data_shape == (1, 8, 8)                   # build needs no validation split
    with pytest.raises(UserError, match=r"^mixvae.build: data: contains NaN"):
        small(torch.full((20, 1, 4, 4), float("nan")))
    with pytest.raises(UserError, match=r"channels-last images use x.permute\(0, 3, 1, 2\)"):
        small(torch.rand(20, 8, 8, 3).numpy())


def test_fit_names_a_section_the_config_does_not_have():
    x = binary(40, shape=(1, 4, 4))
    with pytest.raises(UserError, match=r"elbo=\{...\} is not a section of the config; expected one of data, eval"):
        mixvae.fit(small(x), x, epochs=1, elbo={"beta": 1.0}, progress=False)


def test_uint8_batches_are_read_on_the_scale_of_float_validation_examples(monkeypatch):
    from mixvae.training.loop import Trainer
    seen, fit = [], Trainer.fit

    def recording_fit(self):
        seen.extend(float(b.max()) for b in self.data.train_batches(0, 0, 30))
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    u8 = torch.randint(0, 256, (90, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model = mixvae.build("vae", data=u8, latent_dim=2, hidden=[8])
    mixvae.fit(model, [u8[:30], u8[30:60]], u8[60:].float() / 255, epochs=1, progress=False)
    assert seen and max(seen) == 1.0          # 0..255 read as k / 255, not as values up to 255
    with pytest.raises(UserError, match="training batch 0 holds uint8 values up to 255, but its data set's uint8 "
                                        "values are read as value / 1"):
        mixvae.fit(small(binary(60, shape=(1, 4, 4))), [u8[:30]], binary(30, shape=(1, 4, 4)), epochs=1, progress=False)


def test_batches_of_another_shape_than_the_validation_examples_get_one_sentence():
    x = binary()
    with pytest.raises(UserError, match=r"training batch 1 has examples of shape \(1, 7, 7\), but the validation "
                                        r"examples have shape \(1, 8, 8\)"):
        mixvae.fit(small(x), [x[:30], x[30:60, :, :7, :7]], valid=x[90:], epochs=1, progress=False)


def test_sample_draws_afresh_without_a_seed_and_repeats_with_one():
    model = small(binary())
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b = mixvae.sample(model, 4), mixvae.sample(model, 4)
    assert not torch.equal(a, b) and not torch.equal(torch.random.get_rng_state(), state)
    state = torch.random.get_rng_state()
    assert torch.equal(mixvae.sample(model, 4, seed=1), mixvae.sample(model, 4, seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_fit_uses_its_own_options_not_those_of_an_earlier_fit():
    x = binary()
    model = small(x)
    first = mixvae.fit(model, x, max_steps=2, lr=1e-2, patience=1, progress=False, data={"valid_size": 0.2})
    assert first["steps"] == 2
    second = mixvae.fit(model, x, epochs=2, batch_size=54, progress=False)
    assert second["steps"] == 2 * 2                         # 108 training examples (10% held out) in batches of 54
    assert model.config.train.lr == mixvae.Config().train.lr and model.config.data.valid_size == 0.1
    sym = small(torch.rand(60, 1, 4, 4))
    mixvae.fit(sym, torch.rand(60, 1, 4, 4), max_steps=1, progress=False, data={"scale": "symmetric"})
    assert sym.config.data.scale == "symmetric"              # the layout the model was trained on stays


def test_a_fit_that_fails_gives_the_model_back_as_it_was(unvalidated):   # a NaN reaches the loss, as outside tests
    from mixvae.errors import TrainingDiverged
    x = binary()
    model = small(x)
    mixvae.fit(model, x, max_steps=2, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged):
        mixvae.fit(model, x, lr=1e30, max_steps=5, progress=False)
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert mixvae.fit(model, x, max_steps=2, progress=False)["steps"] == 2     # and trains again


def test_a_bernoulli_model_of_gray_data_binarises_them_and_refuses_gray_data_otherwise():
    gray = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    model = small(gray, likelihood="bernoulli")
    assert model.config.data.binarize == "dynamic"
    h = mixvae.fit(model, gray, max_steps=2, progress=False)
    assert h["steps"] == 2 and model.config.data.binarize == "dynamic"
    with pytest.raises(UserError, match="Bernoulli likelihood is a distribution of binary values, but data.name = "
                                        "'tensors' has continuous values; set data.binarize = dynamic"):
        mixvae.fit(small(binary(60, shape=(1, 4, 4))), gray, max_steps=1, progress=False)


def test_devices_are_given_as_strings_or_torch_devices_and_bad_ones_get_one_sentence(tmp_path):
    x = binary()
    model = small(x)
    mixvae.fit(model, x, max_steps=1, progress=False, device=torch.device("cpu"), out=tmp_path / "run")
    assert next(mixvae.load(tmp_path / "run", device="auto").parameters()).device.type == (
        "cuda" if torch.cuda.is_available() else "cpu")
    bad = ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for name in bad:
        with pytest.raises(UserError, match=f"mixvae.load: device = '{name}'"):
            mixvae.load(tmp_path / "run", device=name)


def test_reconstructions_drawn_pixel_by_pixel_are_seeded_and_leave_the_global_state_alone():
    x = binary(40, shape=(1, 4, 4))
    model = mixvae.build("pixelhvae", data=x, latent_dim=2)
    state = torch.random.get_rng_state()
    a, b = mixvae.reconstruct(model, x[:5]), mixvae.reconstruct(model, x[:5])
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(a, mixvae.reconstruct(model, x[:5], seed=1))


def test_numpy_counts_are_counts_and_images_that_are_not_pictures_get_one_sentence(tmp_path):
    x = binary(40, shape=(1, 4, 4))
    model = small(x)
    assert mixvae.sample(model, np.int64(3)).shape == (3, 1, 4, 4)
    assert mixvae.log_likelihood(model, x[:2], samples=np.int32(4), progress=False).shape == (2,)
    with pytest.raises(UserError, match="images of dtype torch.int64; expected floats in"):
        mixvae.save_images(torch.full((2, 1, 4, 4), 200), tmp_path / "a.png")
    with pytest.raises(UserError, match="contain NaN"):
        mixvae.save_images(torch.full((2, 1, 4, 4), float("nan")), tmp_path / "a.png")
    with pytest.raises(UserError, match="the training batches are empty"):
        mixvae.fit(model, [], valid=x, epochs=1, progress=False)


def _recorded_batches(monkeypatch):
    from mixvae.training.loop import Trainer
    seen, fit = [], Trainer.fit

    def recording_fit(self):
        seen.extend(next(iter([list(self.data.train_batches(0, 0, 30))])))
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    return seen


def test_batches_of_an_iterable_are_binarised_or_checked_as_the_validation_examples_are(monkeypatch):
    seen = _recorded_batches(monkeypatch)
    gray = torch.rand(90, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    model = small(gray, likelihood="bernoulli")                         # data.binarize: dynamic
    mixvae.fit(model, [gray[:30], gray[30:60]], valid=gray[60:], max_steps=1, progress=False)
    assert len(seen) == 2 and all(bool(((b == 0) | (b == 1)).all()) for b in seen)
    seen.clear()
    mixvae.fit(small(gray), [gray[:30] > 0.5], valid=gray[60:], max_steps=1, progress=False)
    assert seen[0].max() == 1.0                                          # bool batches are 0/1, not k / 255
    with pytest.raises(UserError, match="training batch 0 holds uint8 values 0 and 1 only"):
        mixvae.fit(small(gray), [(gray[:30] > 0.5).to(torch.uint8)], valid=gray[60:], max_steps=1, progress=False)
    bits = binary(60, shape=(1, 4, 4))
    with pytest.raises(UserError, match="training batch 0 has values between 0 and 1, but the validation examples "
                                        "are binary"):
        mixvae.fit(small(bits), [gray[:30]], valid=bits, max_steps=1, progress=False)
    gray8 = (gray * 255).round().to(torch.uint8)
    seen.clear()                                # bool validation examples are floats 0/1, not uint8 of scale 1
    mixvae.fit(model, [gray8[:30]], valid=gray8[60:] > 127, max_steps=1, progress=False)
    assert bool(((seen[0] == 0) | (seen[0] == 1)).all()) and 0.2 < float(seen[0].mean()) < 0.8
    with pytest.raises(UserError, match="valid holds uint8 values up to 25[0-9], but its data set's uint8 values are "
                                        "read as value / 1"):
        mixvae.fit(small(bits), gray8[:60] > 127, valid=gray8[60:], max_steps=1, progress=False)
    ds = mixvae.from_tensors(gray)
    with pytest.raises(UserError, match="the Dataset given does not"):
        mixvae.fit(model, ds, max_steps=1, progress=False)


def test_a_fit_that_fails_after_reaching_best_weights_or_is_interrupted_ends_as_a_finished_fit(monkeypatch):
    from mixvae.objectives.elbo import ELBO
    step, at = ELBO.step, {}

    def failing(self, x, ctx):
        if ctx.step == at["step"]:
            raise at["error"]
        return step(self, x, ctx)

    monkeypatch.setattr(ELBO, "step", failing)
    x = torch.rand(100, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        at.update(step=7, error=error)
        model = small(x)
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(type(error)):     # 3 steps per epoch: best weights after epochs 1 and 2
            mixvae.fit(model, x, batch_size=30, epochs=5, progress=False, data={"scale": "symmetric"})
        assert not model.training and model.config.data.scale == "symmetric"
        assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_run_trained_before_the_bernoulli_check_still_loads(tmp_path):
    import json
    bits = binary(60, shape=(1, 4, 4))
    mixvae.fit(small(bits), bits, max_steps=1, progress=False, out=tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["data"]["kind"] = info["data_kind"] = "continuous"             # as a Bernoulli model fit on gray data
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    assert mixvae.load(tmp_path / "run").likelihood.kind == "bernoulli"
