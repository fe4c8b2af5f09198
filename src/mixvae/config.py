"""Typed configuration: dataclasses <-> YAML, ``--set`` overrides, validation with clear messages.

A config file is a YAML mapping with the sections below; every key is optional and unknown keys
are errors. ``base: other.yaml`` (a path relative to the file) starts from another preset and
overrides it key by key. Method-specific sections (``elbo``, ``sintro``, ``gamix``) are read only
by the objective that ``train.objective`` selects.

We convert by hand (about a hundred lines) instead of using a dict-to-dataclass library so that
every message names the file, the dotted key, the value and what was expected, and so that YAML's
``1e-4`` (a string in YAML 1.1) is accepted where a float is expected.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from . import safeio
from .errors import UserError


def _range(lo: float | None = None, hi: float | None = None, *, above: float | None = None, **kw):
    """A field with an allowed range [lo, hi] (either bound may be omitted), or (above, hi] with
    ``above`` for a lower bound the value must exceed (a learning rate > 0)."""
    return field(metadata={"min": lo, "max": hi, "above": above}, **kw)


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 80, 80, 8, 6, 3


def short(value) -> str:
    """repr of a value, bounded (a config value may be a huge list or string): for messages."""
    return _SHORT.repr(value)


# ------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """The ``data`` section: which data set, where, and how it is split and binarised."""

    name: str = "mnist"
    """mnist | fashion-mnist | binarized-mnist | frey-faces | omniglot | caltech101-silhouettes
    | histopathology | digits | cifar10 | npz | image-folder | 8gaussians | 2spirals | checkerboard | rings | 25gaussians"""
    path: Optional[str] = None               # file (npz) or folder (image-folder); else found in the data dir
    binarize: Literal["auto", "dynamic", "none"] = "auto"   # auto: dynamic for MNIST and OMNIGLOT, none otherwise
    image_size: Optional[int] = _range(4, 8192, default=None)   # resize square images (image-folder, cifar10)
    channels: Optional[Literal[1, 3]] = None  # force gray (1) or RGB (3) for image folders
    scale: Literal["unit", "symmetric"] = "unit"   # pixel values in [0, 1] or [-1, 1]
    valid_size: float = _range(0.0, None, default=0.1)  # held-out part of train when a set has no validation split (fraction < 1, or a count); MNIST, Fashion-MNIST and OMNIGLOT hold out their last images instead
    split_seed: int = 0                      # seeds the train/validation split and fixed binarisation
    train_subset: Optional[int] = _range(1, None, default=None)  # keep the first N training examples
    test_subset: Optional[int] = _range(1, None, default=None)   # keep the first N test examples (all, if fewer)
    epoch_size: int = _range(1, None, default=1000)              # batches per "epoch" for 2D samplers


@dataclass
class PriorConfig:
    """The ``model.prior`` section: the prior's kind, its K components and their initialisation."""

    kind: str = "standard"   # a registered prior: standard | mog | vampprior | vampprior-data
    components: int = _range(1, None, default=500)
    learn_weights: bool = False
    pseudo_init: Optional[list[float]] = None    # [mean, std] of pseudo-input pixels; default per data set
    pseudo_trainable: bool = True                # vampprior-data: false keeps the K training images fixed
    pseudo_noise: float = _range(0.0, None, default=0.0)   # vampprior-data: N(0, noise^2) added at init
    mog_init_std: float = _range(0.0, None, default=1.0)   # MoG means ~ N(0, std^2) at init


@dataclass
class ModelConfig:
    """The ``model`` section: architecture, latent sizes, network widths, likelihood, prior."""

    arch: str = "vae"   # a registered architecture: vae | hvae | convhvae | mlp2d | resnet | resnetv2 | custom (your own networks, Python API)
    latent_dim: int = _range(1, None, default=40)        # top latent (the one the prior sits on)
    lower_latent_dim: int = _range(1, None, default=40)  # z1 of the two-level models
    hidden: list[int] = field(default_factory=lambda: [300, 300])   # MLP widths (first layer first)
    channels: list[int] = field(default_factory=lambda: [64, 128])  # resnet: widths per stage; resnetv2: [width, bottleneck]
    stages: Optional[int] = _range(1, None, default=None)  # resnetv2: down/up-sampling stages (default from size)
    bn_mode: Literal["batch", "frozen"] = "batch"     # resnetv2 / PatchGAN BatchNorm: batch statistics, or a fixed affine map
    likelihood: Literal["auto", "bernoulli", "logistic", "gaussian", "gaussian-learned"] = "auto"
    gaussian_logvar: float = 0.0                      # fixed log-variance of the 'gaussian' likelihood
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class TrainConfig:
    """The ``train`` section: objective, budget (epochs / steps), optimiser, warm-up, stopping."""

    objective: str = "elbo"   # a registered objective: elbo | sintro | gamix
    epochs: int = _range(0, None, default=100)
    max_steps: Optional[int] = _range(1, None, default=None)   # stop after this many steps (overrides epochs)
    batch_size: int = _range(1, None, default=100)
    lr: float = _range(above=0.0, default=5e-4)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    optimizer: Literal["adam", "adam-normgrad"] = "adam"
    warmup_epochs: float = _range(0.0, None, default=0.0)   # KL warm-up (ELBO) / VAE phase (sintro), epochs
    warmup_steps: Optional[int] = _range(0, None, default=None)  # same in steps; wins over warmup_epochs
    patience: Optional[int] = _range(1, None, default=None)  # early stopping, in evaluations after warm-up
    lr_milestones: list[int] = field(default_factory=list)   # steps at which lr *= lr_gamma
    lr_gamma: float = _range(None, 1.0, above=0.0, default=0.1)
    eval_every: int = _range(1, None, default=1)     # validate every N epochs
    log_every: int = _range(1, None, default=50)     # write metrics every N steps
    checkpoint_every: int = _range(1, None, default=1000)  # save 'latest' every N steps (and each epoch)
    nan_policy: Literal["stop", "rollback"] = "stop"
    threads: Optional[int] = _range(1, 1024, default=None)
    device: str = "cpu"                               # cpu | cuda | cuda:N | auto
    deterministic: bool = False                       # torch.use_deterministic_algorithms
    precision: Literal["fp32", "bf16"] = "fp32"       # bf16: products and convolutions in bfloat16 (mixvae.precision)


@dataclass
class EvalConfig:
    """The ``eval`` section: sizes of the log-likelihood, FID and 2D-grid evaluations."""

    ll_samples: int = _range(1, None, default=5000)   # importance samples per image
    ll_chunk: int = _range(1, 1 << 16, default=4096)  # (image, sample) pairs evaluated at once: bounds memory, fits caches
    fid_samples: int = _range(0, None, default=5000)   # images for FID of prior samples (0 skips FID)
    fid_reconstructions: Optional[int] = _range(2, None, default=None)   # images for FID of reconstructions (default: fid_samples)
    toy_grid: int = _range(2, 8192, default=1024)     # 2D data: gnELBO grid is toy_grid x toy_grid (the papers' 1024)
    precision: Literal["fp32", "bf16"] = "fp32"       # of every evaluation; the reported log-likelihood stays fp32 by default


def _default_sections() -> dict:
    """A default instance of every registered objective's config section, by section name."""
    from .registry import OBJECTIVES, load_builtins
    load_builtins()
    return {e.info["section"]: e.info["config"]() for e in (OBJECTIVES.get(n) for n in OBJECTIVES.names())
            if "section" in e.info}


@dataclass
class Config:
    """The whole configuration. The method sections (``sintro``, ``gamix``, ... one per registered
    objective that has options, each a dataclass kept beside its objective's code) are in
    ``sections`` and read as attributes: ``cfg.sintro.beta_neg``."""

    seed: int = _range(-2 ** 63, 2 ** 63 - 1, default=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sections: dict = field(default_factory=_default_sections)

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"Config has no section {name!r}")


# Keys that earlier versions wrote into config.yaml and that no longer exist: read and ignored when
# they hold the value that is now the behaviour, refused otherwise.
RETIRED = {"gamix.moments_with_variance": False,
           "eval.samples_grid": 64}            # never read: samples.png always shows 64 samples


# ------------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp, key: str, where: str):
    def bad():
        return UserError(f"{where}: {key} = {short(value)} is not valid; expected {_type_name(tp)}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, inner, key, where)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise bad()
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _from_dict(tp, value, key + ".", where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise TypeError(f"unsupported config type {tp}")  # a bug in this file, not user input


def _config_from_dict(data: dict, where: str) -> Config:
    """The top level: the fixed sections, then the registered method sections."""
    cfg = Config()
    fixed = {k: v for k, v in data.items() if k not in cfg.sections}
    out = _from_dict(Config, fixed, "", where, extra=tuple(cfg.sections))
    for name, value in data.items():
        if name not in cfg.sections:
            continue
        if not isinstance(value, dict):
            raise UserError(f"{where}: {name} = {short(value)} is not valid; expected a mapping")
        out.sections[name] = _from_dict(type(cfg.sections[name]), value, name + ".", where)
    return out


def _from_dict(cls, data: dict, prefix: str, where: str, extra: tuple[str, ...] = ()):
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls) if f.name != "sections"}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in RETIRED:
            if value != RETIRED[dotted]:
                raise UserError(f"{where}: {dotted} was removed in mixvae 0.2; only {RETIRED[dotted]!r} is supported")
            continue
        if key == "elbo" and cls is Config and set(value or {}) <= {"analytic_kl"}:   # a retired section
            if (value or {}).get("analytic_kl", False):
                raise UserError(f"{where}: elbo.analytic_kl was removed in mixvae 0.2; the ELBO uses one sample")
            continue
        if key not in names:
            raise UserError(f"{where}: unknown key '{dotted}'; expected one of: {', '.join(list(names) + list(extra))}")
        kwargs[key] = _convert(value, hints[key], dotted, where)
        meta = names[key].metadata
        lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
        v = kwargs[key]
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)
                              or (above is not None and v <= above)):
            low = f"> {above}" if above is not None else (f">= {lo}" if lo is not None else None)
            bounds = (low if hi is None else f"<= {hi}" if low is None
                      else f"in ({above}, {hi}]" if above is not None else f"in [{lo}, {hi}]")
            raise UserError(f"{where}: {dotted} = {short(value)} is out of range; expected a value {bounds}")
    return cls(**kwargs)


def _check(cfg: Config, where: str) -> Config:
    """Combinations that are each valid alone but not together."""
    t, m = cfg.train, cfg.model
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise UserError(f"{where}: train.betas = {short(t.betas)} is not valid; expected two numbers in [0, 1)")
    if m.prior.pseudo_init is not None and (len(m.prior.pseudo_init) != 2 or m.prior.pseudo_init[1] < 0):
        raise UserError(f"{where}: model.prior.pseudo_init = {short(m.prior.pseudo_init)} is not valid; expected [mean, std] with std >= 0")
    if not m.hidden or min(m.hidden) < 1:
        raise UserError(f"{where}: model.hidden = {short(m.hidden)} is not valid; expected a non-empty list of positive widths")
    if not m.channels or min(m.channels) < 1:
        raise UserError(f"{where}: model.channels = {short(m.channels)} is not valid; expected a non-empty list of positive widths")
    if cfg.data.valid_size >= 1 and cfg.data.valid_size != int(cfg.data.valid_size):
        raise UserError(f"{where}: data.valid_size = {cfg.data.valid_size} is not valid; expected a fraction < 1 or a "
                        "whole number of examples")
    if t.epochs == 0 and t.max_steps is None:
        raise UserError(f"{where}: train.epochs = 0 and no train.max_steps; expected a positive budget")
    if any(s < 0 for s in t.lr_milestones):
        raise UserError(f"{where}: train.lr_milestones = {short(t.lr_milestones)} is not valid; expected step numbers >= 0")
    if cfg.eval.fid_samples == 1:
        raise UserError(f"{where}: eval.fid_samples = 1 is not valid; expected 0 (skip FID) or at least 2 images")
    from .registry import ARCHITECTURES, OBJECTIVES, PRIORS, load_builtins
    load_builtins()
    arch, objective = ARCHITECTURES.get(m.arch, where), OBJECTIVES.get(t.objective, where)
    PRIORS.get(m.prior.kind, where)
    if "check" in arch.info:
        arch.info["check"](m, where)
    if objective.info.get("single_level") and arch.info.get("levels", 1) > 1:
        raise UserError(f"{where}: model.arch = {m.arch!r} has {arch.info['levels']} latent levels; train.objective = "
                        f"{t.objective!r} needs a single-level model")
    section = objective.info.get("section")
    if section is not None and hasattr(cfg.sections[section], "check"):
        cfg.sections[section].check(cfg, where)
    return cfg


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


MAX_YAML_NODES = 100_000   # values in one YAML document after expanding its aliases (a config has ~100)
MAX_YAML_DEPTH = 64
MAX_BASE_CHAIN = 32        # nested ``base:`` files


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML would silently keep the
    last one, so a config could say two things and mean one)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {short(key)} is given twice (first at line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _check_nodes(node, where: str) -> None:
    """Refuse a document that would expand to more than MAX_YAML_NODES values through its aliases
    (a 'billion laughs' file), nests deeper than MAX_YAML_DEPTH, or contains itself."""
    sizes: dict[int, int] = {}
    stack = [(node, 0, False)]
    active: set[int] = set()
    while stack:
        n, depth, done = stack.pop()
        children = ([c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode)
                    else list(n.value) if isinstance(n, yaml.SequenceNode) else [])
        if done:
            active.discard(id(n))
            sizes[id(n)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(n)] > MAX_YAML_NODES:
                raise UserError(f"{where}: the YAML document expands to more than {MAX_YAML_NODES} values through "
                                "its aliases (&anchor / *alias); refusing to read it")
            continue
        if id(n) in sizes:
            continue
        if id(n) in active:
            raise UserError(f"{where}: the YAML document contains itself (an alias inside its own anchor)")
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"{where}: the YAML document nests deeper than {MAX_YAML_DEPTH} levels")
        active.add(id(n))
        stack.append((n, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def parse_yaml(text: str, where: str):
    """A YAML document with the checks of :class:`_Loader` and :func:`_check_nodes`; a YAML error
    becomes one line naming ``where`` and the position."""
    loader = None
    try:
        loader = _Loader(text)     # reading the text may fail already (e.g. control characters)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise UserError(f"{where}: the YAML document nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    data = parse_yaml(safeio.read_text(path, "config file ", safeio.MAX_CONFIG_BYTES), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of sections (data, model, train, ...), got {type(data).__name__}")
    if "base" in data:
        base = data.pop("base")
        if not isinstance(base, str):
            raise UserError(f"{path}: base = {short(base)} is not valid; expected a path to another config file")
        base_path = (path.parent / base).resolve()
        if base_path in seen:
            raise UserError(f"{path}: base = {base!r} includes itself")
        if len(seen) >= MAX_BASE_CHAIN:
            raise UserError(f"{path}: more than {MAX_BASE_CHAIN} nested base files")
        data = _deep_merge(_read_yaml(base_path, seen + (path.resolve(),)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=value' -> (['section', 'key'], value parsed as YAML)."""
    if "=" not in text:
        raise UserError(f"--set {text!r} is not valid; expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"--set {text!r} is not valid; expected section.key=value")
    try:
        value = parse_yaml(raw, "--set") if raw.strip() else None
    except UserError:
        raise UserError(f"--set {short(text)}: the value {short(raw)} is not valid YAML (or too large)") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of the config mapping ``data`` with each 'section.key=value' override set."""
    data = _deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def config_from_dict(data: dict, where: str = "config") -> Config:
    """A checked :class:`Config` from plain data (the YAML layout); ``where`` names the source in
    error messages (a :class:`~mixvae.errors.UserError` for every mistake)."""
    return _check(_config_from_dict(data, where), where)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML preset (or the defaults if ``path`` is None) and apply ``--set`` overrides."""
    data = _read_yaml(Path(path)) if path is not None else {}
    where = str(path) if path is not None else "config"
    if overrides:
        data = apply_overrides(data, list(overrides))
        where += " (with --set overrides)"
    return config_from_dict(data, where)


def config_to_dict(cfg: Config) -> dict:
    """The config as plain data, the method sections at the top level (the YAML layout)."""
    out = {f.name: dataclasses.asdict(getattr(cfg, f.name)) if dataclasses.is_dataclass(getattr(cfg, f.name))
           else getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "sections"}
    out.update({name: dataclasses.asdict(section) for name, section in cfg.sections.items()})
    return out


def config_changes(old: Config, new: Config) -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every setting that differs between two configs."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    a, b = dict(flat(config_to_dict(old))), dict(flat(config_to_dict(new)))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (to a temporary file renamed into place: never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    tmp.replace(path)
