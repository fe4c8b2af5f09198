"""The one place that turns a :class:`Config` into data, a model and an objective."""
from __future__ import annotations

from dataclasses import asdict

import torch

from .config import Config
from .data import Dataset, load_dataset
from .errors import UserError
from .models import LatentVariableModel, LikelihoodHead
from .models import architectures  # noqa: F401  (registers the papers' architectures)
from .priors import Prior, pseudo_input_init
from .registry import ARCHITECTURES, OBJECTIVES, PRIORS


def build_data(cfg: Config, data_dir=None) -> Dataset:
    """The data set of the config's ``data`` section, its files in ``data_dir`` (default:
    $MIXVAE_DATA, else the download cache)."""
    return load_dataset(data_dir=data_dir, **asdict(cfg.data))


def likelihood_kind(cfg: Config, data: Dataset) -> str:
    """'auto' -> a likelihood that can fit the data, images and vectors alike: Bernoulli for binary
    data, the discretised logistic over the data's levels for quantised data (8-bit images,
    scikit-learn's 17-level digits), a Gaussian with a learned per-dimension variance for
    continuous data and for any data seen in [-1, 1] (``data.scale: symmetric``). (A Gaussian of
    fixed unit variance on data in [0, 1] makes the reconstruction term too weak against the KL,
    and the posterior collapses.) The introspective and adversarial objectives use squared /
    absolute error: a Gaussian mean."""
    kind = cfg.model.likelihood
    if kind != "auto":
        return kind
    only = ARCHITECTURES.get(cfg.model.arch).info.get("likelihoods")
    if only:
        return only[0]
    fixed = OBJECTIVES.get(cfg.train.objective).info.get("likelihood")
    if fixed is not None:
        return fixed
    if data.symmetric:
        return "gaussian-learned"
    return {"binary": "bernoulli", "8bit": "logistic", "discrete": "logistic"}.get(data.kind, "gaussian-learned")


def check_likelihood(kind: str, data: Dataset, where: str) -> None:
    """Refuse a Bernoulli or discretised-logistic likelihood (densities of values in [0, 1]) for
    data the model would see outside [0, 1]: ``data.scale = symmetric``, or vectors beyond it."""
    if kind not in ("bernoulli", "logistic"):
        return
    expected = "expected a Gaussian likelihood (model.likelihood = gaussian or gaussian-learned)"
    if data.symmetric:
        raise UserError(f"{where}: data.scale = 'symmetric' hands the model values in [-1, 1], but the {kind} "
                        f"likelihood is a density of values in [0, 1]; {expected}, or data.scale = 'unit'")
    values = data.train.values
    if not data.is_image and len(values) and values.is_floating_point():
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = data.value_range        # images: [0, 1]; the 2D sets: their box
    if lo < 0 or hi > 1:
        raise UserError(f"{where}: the {kind} likelihood is a density of values in [0, 1], but data.name = "
                        f"{data.name!r} has values in [{lo:.3g}, {hi:.3g}]; {expected}")


def check_training_data(kind: str, data: Dataset, where: str) -> None:
    """Refuse to train a Bernoulli likelihood on data that are neither binary nor binarised
    (``data.binarize = dynamic``): its loss would be no log-likelihood of anything. (Models that
    were trained so before this check still load and evaluate.)"""
    if kind == "bernoulli" and data.kind != "binary":
        raise UserError(f"{where}: the Bernoulli likelihood is a distribution of binary values, but data.name = "
                        f"{data.name!r} has {data.kind} values; set data.binarize = dynamic (re-binarised every batch, "
                        "as the VampPrior paper does), binarise the data, or choose a likelihood of such values "
                        "(model.likelihood = auto)")


def build_prior(cfg: Config, data: Dataset, latent_dim: int) -> Prior:
    """The registered prior ``model.prior.kind`` for this data."""
    return PRIORS.get(cfg.model.prior.kind).build(cfg.model.prior, data, latent_dim, cfg.seed)


def resolve_auto(cfg: Config, data: Dataset) -> Config:
    """Replace the settings the data decides ('auto' likelihood, the VampPrior's pseudo-input
    initialisation) by their values, so that config.yaml states what was used."""
    cfg.model.likelihood = likelihood_kind(cfg, data)
    p = cfg.model.prior
    if p.kind == "vampprior" and p.pseudo_init is None:
        init = pseudo_input_init(data.name)
        if init is not None or not data.is_image:
            p.pseudo_init = list(init or (0.5, 0.05))
        elif len(data.train):        # unnamed images: their mean training pixel, std 0.05 (0.01 for binary data)
            mean = float(data.train.get(slice(0, 10_000)).mean())
            p.pseudo_init = [round(mean, 4), 0.01 if data.kind == "binary" else 0.05]
    return cfg


def build_model(cfg: Config, data: Dataset) -> LatentVariableModel:
    """The registered architecture ``model.arch`` with its prior and likelihood, for this data."""
    m = cfg.model
    arch = ARCHITECTURES.get(m.arch)
    needs = arch.info.get("data", "any")
    if (needs == "image" and not data.is_image) or (needs == "vector" and len(data.shape) != 1):
        raise UserError(f"model.arch = {m.arch!r} needs {needs} data; data.name = {cfg.data.name!r} has shape {data.shape}")
    kind = likelihood_kind(cfg, data)
    only = arch.info.get("likelihoods")
    if only and kind not in only:
        raise UserError(f"model.arch = {m.arch!r} decodes a Gaussian mean, one value per data dimension; model.likelihood "
                        f"= {kind!r} is not one it can parameterise; expected {' or '.join(only)} (or auto)")
    check_likelihood(kind, data, "model.likelihood")
    head = LikelihoodHead(kind, event_dims=len(data.shape), gaussian_logvar=m.gaussian_logvar, bins=data.levels or 256)
    return arch.build(m, data, build_prior(cfg, data, m.latent_dim), head)


def build_objective(cfg: Config, model: LatentVariableModel):
    """The registered objective ``train.objective`` driving ``model``."""
    entry = OBJECTIVES.get(cfg.train.objective)
    name = cfg.train.objective
    if entry.info.get("single_level") and not hasattr(model, "encoder"):
        raise UserError(f"train.objective = {name!r} needs a single-level model; model.arch = {cfg.model.arch!r}")
    if entry.info.get("data") == "image" and len(model.data_shape) != 3:
        raise UserError(f"train.objective = {name!r} needs image data; the data have shape {tuple(model.data_shape)}")
    needs, has = entry.info.get("likelihood"), getattr(getattr(model, "likelihood", None), "kind", None)
    if needs and has and has != needs:
        raise UserError(f"train.objective = {name!r} trains the decoder's {needs} mean (squared / absolute errors); the "
                        f"model has a {has} likelihood; expected model.likelihood = {needs!r} (build it with "
                        f"likelihood='{needs}', or from the objective's preset)")
    return entry.build.from_config(cfg, model)


def resolve_device(name: str, where: str = "train.device") -> torch.device:
    """A device setting (``where`` names it in errors) as a torch device: 'auto' is CUDA where
    available, else the CPU; a device this machine lacks is refused in one sentence."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{where} = {name!r} but this machine has no CUDA device; use 'cpu' or 'auto'")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    mps = device is not None and device.type == "mps" and torch.backends.mps.is_available()   # untested here
    if device is None or device.type not in ("cpu", "cuda") and not mps:
        raise UserError(f"{where} = {name!r} is not a device mixvae can run on here; expected cpu, cuda, cuda:N "
                        "or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{where} = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
