"""GAMIX-VAE (Rivera, "How to train your VAE", ICIP 2024): ALGORITHMS.md section 5.

Two players step every iteration, both from the same forward pass (as the author's two gradient
tapes): the autoencoder (encoder, decoder, and a learnable prior if any) and a PatchGAN
discriminator that sees real images and reconstructions.

- autoencoder: ``L_G = w_rec mean|x - x_hat| + w_kl KL_pop + KL_ind + w_adv BCE(1, D(x_hat))``
- discriminator: ``L_D = w_adv (BCE(1, D(x)) + BCE(0, D(x_hat)))``

``KL_pop`` is the batch-mixture KL. For the standard prior (the faithful default) it matches the
moments of the batch's posterior means to N(0, I): ``0.5 sum_k (zv_k + zm_k^2 - 1 - log zv_k)``
with zm, zv the batch mean and (biased) variance of mu_k; individual means are not pulled to 0.
For any other prior p the moment match does not apply; KL_pop becomes the Monte-Carlo estimate of
KL(q_B || p) between the batch mixture q_B(z) = (1/B) sum_i q(z|x_i) and p, with ``kl_samples``
draws z ~ q(z|x_i) per example: mean[log q_B(z) - log p(z)].
``KL_ind = w_var mean_i sum_k (sigma^2_ik - log sigma^2_ik - 1)`` keeps posteriors from collapsing
to points (minimal at sigma^2 = 1). The paper's baseline, ``mode = vae``, trains the same network
with the same reconstruction term and the per-example KL to the prior, without a discriminator.

Options beside the faithful default (all off): hinge loss, a discriminator start step, an adaptive
adversarial weight ``||grad_W rec|| / (||grad_W adv|| + 1e-4)`` at the decoder's last layer W.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dataclasses import dataclass
from typing import Literal, Optional

from ..config import _range
from ..registry import OBJECTIVES
from ..distributions import DiagonalGaussian, DiagonalGaussianMixture, kl_divergence
from ..models import VAE
from ..parallel import global_mean
from ..nets.gamix import PatchGAN
from .base import Objective, StepContext, trainable


# ------------------------------------------------------------------------------ configuration
@dataclass
class GamixConfig:
    """The ``gamix`` section of a config."""

    mode: Literal["gamix", "vae"] = "gamix"             # vae: the same network as a plain VAE (no discriminator)
    w_rec: float = _range(0.0, None, default=5000.0)
    w_kl: float = _range(0.0, None, default=1.0)
    w_var: float = _range(0.0, None, default=0.1)
    w_adv: float = _range(0.0, None, default=100.0)
    adv_loss: Literal["bce", "hinge"] = "bce"
    disc_start: int = _range(0, None, default=0)
    adaptive_weight: bool = False
    disc_lr: Optional[float] = _range(above=0.0, default=None)     # default: train.lr
    disc_width: int = _range(1, None, default=128)
    disc_dropout: float = _range(0.0, 1.0, default=0.25)
    kl_samples: int = _range(1, None, default=16)      # KL to a mixture prior (non-standard priors)


# ------------------------------------------------------------------------------ the maths, one piece each
def l1_reconstruction(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """mean |x - x_hat| over all elements (a scalar)."""
    return (x - x_hat).abs().mean()


MOMENT_VARIANCE_FLOOR = 1e-8   # smallest batch variance the moment-matching KL takes the log of


def moment_matching_kl(mu: torch.Tensor) -> torch.Tensor:
    """KL(N(zm, diag zv) || N(0, I)) = 0.5 sum_k (zv_k + zm_k^2 - 1 - log zv_k), summed over dims.

    zm, zv: the batch mean and biased variance of mu (B, D) (over every process's share of the
    batch). zv is floored at ``MOMENT_VARIANCE_FLOOR`` = 1e-8: a batch of one (or of identical means) has zv = 0,
    whose log would make the KL infinite; at the floor each such dimension costs about 9.2 nats and
    passes no gradient through zv."""
    zm = global_mean(mu.mean(0))
    zv = global_mean((mu - zm).pow(2).mean(0))        # centred: never negative by cancellation
    zv = zv.clamp_min(MOMENT_VARIANCE_FLOOR)
    return 0.5 * (zv + zm * zm - 1.0 - torch.log(zv)).sum()


def batch_mixture_kl(q: DiagonalGaussian, prior, samples: int) -> torch.Tensor:
    """Monte-Carlo KL(q_B || p), q_B = (1/B) sum_i q(z|x_i): mean over z ~ q(z|x_i) of
    log q_B(z) - log p(z) (a scalar). With several processes q_B is each process's share of the
    batch, so this term (unlike the moment match) is not the single-process one."""
    z = q.rsample((samples,))                                        # (S, B, D)
    batch_mix = DiagonalGaussianMixture(torch.zeros(q.mu.shape[0], device=q.mu.device), q.mu, q.logvar)
    return (batch_mix.log_prob(z) - prior.log_prob(z)).mean()


def variance_regulariser(logvar: torch.Tensor) -> torch.Tensor:
    """mean_i sum_k (sigma^2_ik - log sigma^2_ik - 1), minimal (0) at sigma^2 = 1."""
    return (logvar.exp() - logvar - 1.0).sum(-1).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """BCE(1, D(x)) + BCE(0, D(x_hat)) averaged over patches (or the hinge version)."""
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Non-saturating BCE(1, D(x_hat)) (or -mean D(x_hat) for the hinge version)."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# ------------------------------------------------------------------------------ the objective
@OBJECTIVES.register("gamix", section="gamix", config=GamixConfig, single_level=True, data="image", adversarial=True,
                     likelihood="gaussian", metrics=("fid", "latent_stats"))
class Gamix(Objective):
    """Players ``autoencoder`` and (mode gamix) ``discriminator``; modules ``model`` and ``discriminator``."""

    select_best = False

    @classmethod
    def from_config(cls, cfg, model) -> "Gamix":
        """The objective for ``model`` with the config's ``gamix`` section (and, in mode gamix, a
        PatchGAN discriminator for the model's data shape)."""
        g = cfg.gamix
        disc = PatchGAN(model.data_shape, g.disc_width, g.disc_dropout, bn_mode=cfg.model.bn_mode) \
            if g.mode == "gamix" else None
        return cls(model, disc, g, g.mode)

    def __init__(self, model: VAE, discriminator: nn.Module | None, cfg: GamixConfig, mode: str = "gamix"):
        super().__init__(model)
        self.discriminator, self.cfg, self.mode = discriminator, cfg, mode

    def modules(self):
        out = {"model": self.model}
        if self.discriminator is not None:
            out["discriminator"] = self.discriminator
        return out

    def players(self):
        out = {"autoencoder": trainable(self.model.parameters())}
        if self.discriminator is not None:
            out["discriminator"] = trainable(self.discriminator.parameters())
        return out

    def player_lr(self, name):
        return self.cfg.disc_lr if name == "discriminator" else None

    def latent_kl(self, q: DiagonalGaussian) -> torch.Tensor:
        """KL_pop (gamix) or the mean per-example KL to the prior (vae)."""
        prior = self.model.prior()
        if self.mode == "vae":
            return kl_divergence(q, prior, self.cfg.kl_samples).mean()
        if self.model.prior.is_standard_normal:
            return moment_matching_kl(q.mu)
        return batch_mixture_kl(q, prior, self.cfg.kl_samples)

    def _adaptive_weight(self, rec: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        last = [w for n, w in self.model.decoder.named_parameters() if n.endswith("weight") and w.dim() > 1][-1]
        g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
        return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        c, m = self.cfg, self.model
        q = m.encode(x)
        x_hat = m.decode(q.rsample()).mean
        rec = c.w_rec * l1_reconstruction(x, x_hat)
        kl = self.latent_kl(q)
        var = c.w_var * variance_regulariser(q.logvar)
        loss_g = rec + c.w_kl * kl + (var if self.mode == "gamix" else 0.0)
        metrics = {"rec": rec.item(), "kl": kl.item(), "var_reg": var.item(),
                   "sigma2": q.variance.mean().item()}
        adversarial = self.mode == "gamix" and ctx.step >= c.disc_start
        if adversarial:
            # real and reconstructed images through the discriminator in one batch (BatchNorm sees both)
            logits = self.discriminator(torch.cat([x, x_hat]))
            real, fake = logits[: x.shape[0]], logits[x.shape[0]:]
            loss_d = c.w_adv * discriminator_loss(real, fake, c.adv_loss)   # its gradient goes to D only (below)
            adv = generator_loss(fake, c.adv_loss)
            weight = self._adaptive_weight(rec, adv) if c.adaptive_weight else 1.0
            loss_g = loss_g + c.w_adv * weight * adv
            metrics.update(disc=loss_d.item(), adv=adv.item(), d_real=torch.sigmoid(real).mean().item(),
                           d_fake=torch.sigmoid(fake).mean().item())
            if c.adaptive_weight:
                metrics["adv_weight"] = float(weight)
        # two players, one forward pass: each loss's gradient goes to its own player only
        ae = ctx.optimizers["autoencoder"]
        ae_params = [p for g in ae.param_groups for p in g["params"]]
        grads = torch.autograd.grad(loss_g, ae_params, retain_graph=adversarial, allow_unused=True)
        if adversarial:
            dis = ctx.optimizers["discriminator"]
            d_params = [p for g in dis.param_groups for p in g["params"]]
            d_grads = torch.autograd.grad(loss_d, d_params, allow_unused=True)
            for p, g in zip(d_params, d_grads):
                p.grad = g
            dis.step()
        for p, g in zip(ae_params, grads):
            p.grad = g
        ae.step()
        metrics["loss"] = loss_g.item()
        return metrics

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example mean |x - x_hat| of the reconstruction from z = mu, in data units."""
        x_hat = self.model.decode(self.model.encode(x).mu).mean
        return (x - x_hat).abs().flatten(1).mean(1)
