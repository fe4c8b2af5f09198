"""The one place that turns a :class:`Config` into data, a model and an objective."""
from __future__ import annotations

from dataclasses import asdict

import torch

from .config import Config
from .data import Dataset, load_dataset
from .errors import UserError
from .models import HVAE, VAE, LatentVariableModel, LikelihoodHead
from .nets import gamix, sintro, vamp
from .priors import VAMPPRIOR_INIT, MoGPrior, Prior, StandardNormalPrior, VampPrior


def build_data(cfg: Config, data_dir=None) -> Dataset:
    return load_dataset(data_dir=data_dir, **asdict(cfg.data))


def likelihood_kind(cfg: Config, data: Dataset) -> str:
    """'auto' -> a likelihood that can fit the data: Bernoulli for binary data, the discretised
    logistic over the data's levels for quantised data (8-bit images, scikit-learn's 17-level
    digits), a Gaussian with a learned per-pixel variance for continuous data. (A Gaussian of fixed
    unit variance on data in [0, 1] makes the reconstruction term too weak against the KL, and the
    posterior collapses.) The introspective and adversarial objectives use squared / absolute
    error: a Gaussian mean."""
    kind = cfg.model.likelihood
    if kind != "auto":
        return kind
    if cfg.train.objective in ("sintro", "gamix") or not data.is_image:
        return "gaussian"
    return {"binary": "bernoulli", "8bit": "logistic", "discrete": "logistic"}.get(data.kind, "gaussian-learned")


def build_prior(cfg: Config, data: Dataset, latent_dim: int) -> Prior:
    p = cfg.model.prior
    if p.kind == "standard":
        return StandardNormalPrior(latent_dim)
    if p.kind == "mog":
        return MoGPrior(latent_dim, p.components, p.learn_weights, p.mog_init_std)
    if p.kind == "vampprior":
        mean, std = p.pseudo_init or VAMPPRIOR_INIT.get(data.name, (0.5, 0.05))
        if data.symmetric:
            mean = 2 * mean - 1
        return VampPrior(latent_dim, p.components, data.shape, mean, std, data.value_range, p.learn_weights,
                         trainable=p.pseudo_trainable)
    # vampprior-data: K training examples (a seeded choice) as pseudo-inputs
    if len(data.train) == 0:       # a model rebuilt without its data: the weights loaded next hold them
        images = torch.zeros(p.components, *data.shape)
    elif p.components > len(data.train):
        raise UserError(f"model.prior.components = {p.components} exceeds the {len(data.train)} training examples "
                        "available for vampprior-data")
    else:
        idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))[: p.components]
        images = data.scale(data.train.get(idx))
    return VampPrior(latent_dim, p.components, data.shape, data_range=data.value_range, learn_weights=p.learn_weights,
                     init_images=images, init_noise=p.pseudo_noise, trainable=p.pseudo_trainable)


def resolve_auto(cfg: Config, data: Dataset) -> Config:
    """Replace the settings the data decides ('auto' likelihood, the VampPrior's pseudo-input
    initialisation) by their values, so that config.yaml states what was used."""
    cfg.model.likelihood = likelihood_kind(cfg, data)
    p = cfg.model.prior
    if p.kind == "vampprior" and p.pseudo_init is None:
        if data.name in VAMPPRIOR_INIT or not data.is_image:
            p.pseudo_init = list(VAMPPRIOR_INIT.get(data.name, (0.5, 0.05)))
        elif len(data.train):        # unnamed images: their mean training pixel, std 0.05 (0.01 for binary data)
            mean = float(data.train.get(slice(0, 10_000)).mean())
            p.pseudo_init = [round(mean, 4), 0.01 if data.kind == "binary" else 0.05]
    return cfg


def build_model(cfg: Config, data: Dataset) -> LatentVariableModel:
    m = cfg.model
    head = LikelihoodHead(likelihood_kind(cfg, data), event_dims=len(data.shape), gaussian_logvar=m.gaussian_logvar,
                          bins=data.levels or 256)
    ppp = head.params_per_pixel
    if m.arch in ("convhvae",) and not data.is_image:
        raise UserError(f"model.arch = {m.arch!r} needs image data; data.name = {cfg.data.name!r} has shape {data.shape}")
    prior = build_prior(cfg, data, m.latent_dim)
    if m.arch == "vae":
        return VAE(vamp.Encoder(data.shape, m.latent_dim, m.hidden), vamp.Decoder(data.shape, m.latent_dim, m.hidden, ppp),
                   prior, head, data.shape)
    if m.arch in ("hvae", "convhvae"):
        conv, h = m.arch == "convhvae", m.hidden[-1]
        return HVAE(vamp.Encoder(data.shape, m.latent_dim, m.hidden, conv=conv),
                    vamp.ConditionalEncoder(data.shape, m.lower_latent_dim, m.latent_dim, h, conv=conv),
                    vamp.ConditionalPrior(m.lower_latent_dim, m.latent_dim, h),
                    vamp.HierarchicalDecoder(data.shape, m.lower_latent_dim, m.latent_dim, h, ppp, conv=conv),
                    prior, head, data.shape)
    if m.arch == "mlp2d":
        if len(data.shape) != 1:
            raise UserError(f"model.arch = 'mlp2d' needs vector data; data.name = {cfg.data.name!r} has shape {data.shape}")
        return VAE(sintro.MLPEncoder(data.shape[0], m.latent_dim, m.hidden),
                   sintro.MLPDecoder(data.shape[0], m.latent_dim, m.hidden), prior, head, data.shape)
    if m.arch == "resnet":
        if not data.is_image:
            raise UserError(f"model.arch = 'resnet' needs image data; data.name = {cfg.data.name!r} has shape {data.shape}")
        down = 2 ** len(m.channels)
        if data.shape[1] % down or data.shape[2] % down:
            raise UserError(f"model.channels = {m.channels} halves the image {len(m.channels)} times, but "
                            f"{data.shape[1]}x{data.shape[2]} is not divisible by {down}")
        return VAE(sintro.ResNetEncoder(data.shape, m.latent_dim, m.channels),
                   sintro.ResNetDecoder(data.shape, m.latent_dim, m.channels), prior, head, data.shape)
    if m.arch == "resnetv2":
        if not data.is_image:
            raise UserError(f"model.arch = 'resnetv2' needs image data; data.name = {cfg.data.name!r} has shape {data.shape}")
        width, bottleneck = m.channels
        net = dict(width=width, bottleneck=bottleneck, stages=m.stages, bn_mode=m.bn_mode)
        return VAE(gamix.ResNetV2Encoder(data.shape, m.latent_dim, **net),
                   gamix.ResNetV2Decoder(data.shape, m.latent_dim, ppp, **net), prior, head, data.shape)
    if m.arch == "custom":
        raise UserError("model.arch = 'custom': this run was trained from Python with your own networks; build "
                        "the model again and load its weights with mixvae.load_weights(model, RUN)")
    raise UserError(f"model.arch = {m.arch!r} is not available yet")


def build_objective(cfg: Config, model: LatentVariableModel):
    from .objectives.elbo import ELBO
    from .objectives.gamix import Gamix
    from .objectives.soft_intro import SoftIntroVAE
    if cfg.train.objective == "elbo":
        return ELBO(model, analytic_kl=cfg.elbo.analytic_kl)
    if cfg.train.objective == "sintro":
        if not hasattr(model, "encoder"):
            raise UserError(f"train.objective = 'sintro' needs a single-level model; model.arch = {cfg.model.arch!r}")
        return SoftIntroVAE(model, cfg.sintro)
    if cfg.train.objective == "gamix":
        if not hasattr(model, "encoder"):
            raise UserError(f"train.objective = 'gamix' needs a single-level model; model.arch = {cfg.model.arch!r}")
        if len(model.data_shape) != 3:
            raise UserError("train.objective = 'gamix' needs image data (its discriminator is a PatchGAN)")
        g = cfg.gamix
        disc = None
        if g.mode == "gamix":
            disc = gamix.PatchGAN(model.data_shape, g.disc_width, g.disc_dropout, bn_mode=cfg.model.bn_mode)
        return Gamix(model, disc, g, g.mode)
    raise UserError(f"train.objective = {cfg.train.objective!r} is not available yet")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device = {name!r} but this machine has no CUDA device; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device = {name!r} is not a device; expected cpu, cuda, cuda:N or auto") from None
