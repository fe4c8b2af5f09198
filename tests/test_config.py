"""Config: YAML <-> dataclasses, overrides, and one clear message per mistake."""
from pathlib import Path

import pytest

from mixvae.config import Config, config_from_dict, load_config, save_config
from mixvae.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config) and cfg.train.objective == "elbo"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_yaml_float_forms_and_overrides(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1e-4\n  epochs: 3\nmodel:\n  prior:\n    kind: mog\n")
    cfg = load_config(p, ["train.epochs=7", "model.prior.components=12", "model.hidden=[10, 20]"])
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.epochs == 7
    assert cfg.model.prior.kind == "mog" and cfg.model.prior.components == 12 and cfg.model.hidden == [10, 20]


@pytest.mark.parametrize("text, overrides, fragment", [
    ("train:\n  epochs: [1\n", [], "malformed YAML at line"),
    ("train:\n  epoch: 3\n", [], "unknown key 'train.epoch'"),
    ("train:\n  epochs: three\n", [], "train.epochs = 'three' is not valid; expected an integer"),
    ("train:\n  lr: -1\n", [], "train.lr = -1 is out of range"),
    ("model:\n  prior:\n    kind: vamp\n", [], "model.prior.kind = 'vamp' is not a known prior; expected one of: standard, mog"),
    ("- a\n- b\n", [], "expected a YAML mapping"),
    ("train:\n  epochs: 3\n", ["train.batch_size=0"], "train.batch_size = 0 is out of range"),
    ("train:\n  epochs: 3\n", ["nonsense"], "expected section.key=value"),
    ("train:\n  epochs: 3\n", ["train.epochs.x=1"], "'epochs' is a value, not a section"),
    ("train:\n  shuffle: true\n", [], "expected one of: objective, epochs"),
    ("model:\n  arch: hvae\ntrain:\n  objective: sintro\n", [], "has 2 latent levels; train.objective = 'sintro' needs a single-level model"),
    ("train:\n  objective: sintro\nsintro:\n  convert_to_mog_step: 5\n", [], "converts a VampPrior"),
    ("train:\n  objective: sintro\nsintro:\n  r_ent: 10\n", [], "expected a mixture prior or r_ent = 0"),
    ("model:\n  arch: resnetv2\n  channels: [8]\n", [], "expected [width, bottleneck]"),
    ("eval:\n  fid_samples: 1\n", [], "expected 0 (skip FID) or at least 2"),
])
def test_bad_configs_name_the_key_and_expectation(tmp_path, text, overrides, fragment):
    p = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_config(p, overrides)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and str(p) in msg or fragment in msg and "--set" in msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_base_presets_merge_and_cycles(tmp_path):
    write(tmp_path, "train:\n  epochs: 5\n  lr: 0.1\n", "base.yaml")
    p = write(tmp_path, "base: base.yaml\ntrain:\n  lr: 0.2\n")
    cfg = load_config(p)
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.2
    write(tmp_path, "base: loop.yaml\n", "loop.yaml")
    with pytest.raises(UserError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_every_preset_loads():
    presets = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))
    assert len(presets) >= 36
    for p in presets:
        load_config(p)


def test_config_from_dict_rejects_bools_for_ints():
    with pytest.raises(UserError, match="expected an integer"):
        config_from_dict({"train": {"epochs": True}})


@pytest.mark.parametrize("text, kept", [("eval:\n  samples_grid: 64\n", "eval.samples_grid"),
                                        ("gamix:\n  moments_with_variance: false\n", "gamix.moments_with_variance")])
def test_retired_keys_are_read_at_their_old_default_and_refused_otherwise(tmp_path, text, kept):
    # config.yaml files of earlier runs hold them; a value that would change something is refused
    assert load_config(write(tmp_path, text)) == load_config(None)
    changed = text.replace("64", "16").replace("false", "true")
    with pytest.raises(UserError, match=f"{kept} was removed"):
        load_config(write(tmp_path, changed))
