"""Soft-IntroVAE (Daniel & Tamar 2021) with the prior as a third player (Athanasiadis et al. 2025).

ALGORITHMS.md sections 2 and 4. Symbols: L_r = squared error summed over data dimensions (per
example), KL(x) = KL(q(z|x) || p), ``s`` = 1 / (number of data dimensions), ``alpha`` the exponent.
One iteration draws one batch from the prior, reused by both steps:

- encoder step (decoder and prior frozen):
  L_E = s (b_rec L_r(x, rec) + b_kl KL(x)) + (1/alpha) 0.5 (mean e^{-alpha s elbo_fake} + mean e^{-alpha s elbo_rec})
        + s r_ent NegEnt,    elbo_y = b_rec L_r(y, D(E(y))) + b_neg KL(y) for y = rec.detach(), fake.detach();
- decoder step (encoder frozen), with the prior when it cooperates with the decoder:
  L_D = s [b_rec L_r(x, rec) + b_kl KL(sg q(z|x) || p) + b_kl 0.5 (KL(E(rec) || sg p) + KL(E(fake) || sg p))
           + gamma_r b_rec 0.5 (L_r(rec.detach(), D(E(rec))) + L_r(fake.detach(), D(E(fake))))],
  where fake = D(z_psi) and z_psi is drawn from the prior *with* gradient (component index without).

KL to a mixture prior is a Monte-Carlo estimate; to a Gaussian prior it is exact. Before the
adversarial phase, an optional plain-VAE warm-up trains b_rec L_r + b_kl KL (no s).
The mean of exponentials is exp(logsumexp - log n): it never overflows silently (an overflow of
the mean itself is inf and stops the loop).

"Frozen" players are left out of a step's backward pass (``backward(inputs=...)``), not switched
off: the decoder does not move before the decoder step, so rec = D(z_r) and (where the decoder
step's prior is the one before the encoder step) fake = D(z_psi) are decoded once, with their
graphs, for both steps.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch.distributions import Distribution

from ..config import PriorConfig, _range
from ..errors import UserError
from ..registry import OBJECTIVES, PRIORS
from ..distributions import DiagonalGaussian, kl_divergence
from ..models import VAE
from ..priors import MoGPrior, VampPrior
from ..parallel import global_mean
from .base import Objective, StepContext, trainable


# ------------------------------------------------------------------------------ configuration
@dataclass
class SoftIntroConfig:
    """The ``sintro`` section of a config."""

    beta_rec: float = _range(0.0, None, default=1.0)
    beta_kl: float = _range(0.0, None, default=1.0)
    beta_neg: float = _range(0.0, None, default=256.0)
    gamma_r: float = _range(0.0, None, default=1e-8)
    alpha: float = _range(above=0.0, default=2.0)      # exponent of the introspective terms (> 0: 1/alpha scales them)
    vae_only: bool = False                             # train the plain VAE loss throughout (the baseline)
    prior_player: Literal["decoder", "encoder", "fixed"] = "decoder"  # who the prior learns with after warm-up
    prior_lr: Optional[float] = _range(above=0.0, default=None)   # default: train.lr
    kl_samples: int = _range(1, None, default=100)     # Monte-Carlo samples for KL to a mixture
    variance_clipping: bool = True   # soft-clip MoG log-variances to their range at the end of warm-up (a dimension whose range is empty stays fixed)
    r_ent: float = _range(0.0, None, default=0.0)      # responsibility regularisation weight
    resp_samples: int = _range(1, None, default=100)
    convert_to_mog_step: Optional[int] = _range(0, None, default=None)   # VampPrior -> MoG at this step
    convert_to_mog_epoch: Optional[int] = _range(0, None, default=None)  # ... or at the start of this epoch

    def check(self, cfg, where: str) -> None:
        """Combinations with the rest of the config that cannot work."""
        kind = cfg.model.prior.kind
        if (self.convert_to_mog_step is not None or self.convert_to_mog_epoch is not None) \
                and kind not in ("vampprior", "vampprior-data"):
            raise UserError(f"{where}: sintro.convert_to_mog_step / _epoch converts a VampPrior, but model.prior.kind = "
                            f"{kind!r}; expected vampprior or vampprior-data (or no conversion)")
        if self.r_ent > 0 and not PRIORS.get(kind).info.get("mixture"):
            raise UserError(f"{where}: sintro.r_ent = {self.r_ent} regularises the responsibilities of a mixture prior, "
                            f"but model.prior.kind = {kind!r}; expected a mixture prior or r_ent = 0")


# ------------------------------------------------------------------------------ the maths, one piece each
def squared_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_r(x, y) = sum over data dimensions of (x - y)^2, shape (B,)."""
    return (x - y).pow(2).flatten(1).sum(1)


def mean_exp(a: torch.Tensor) -> torch.Tensor:
    """mean_i exp(a_i) computed as exp(logsumexp(a) - log n)."""
    return torch.exp(torch.logsumexp(a, dim=0) - math.log(a.shape[0]))


def introspection_term(elbo_rec: torch.Tensor, elbo_fake: torch.Tensor, alpha: float, s: float) -> torch.Tensor:
    """(1/alpha) 0.5 (mean exp(-alpha s elbo_fake) + mean exp(-alpha s elbo_rec))."""
    return 0.5 / alpha * (mean_exp(-alpha * s * elbo_fake) + mean_exp(-alpha * s * elbo_rec))


def usage_negative_entropy(component_log_prob: torch.Tensor) -> torch.Tensor:
    """NegEnt = sum_k rbar_k log(rbar_k + 1e-8) / log C with rbar the mean responsibility over all
    leading dimensions of (..., C); no division when log C <= 1. Minimal (-1) for uniform usage."""
    rbar = global_mean(torch.softmax(component_log_prob, dim=-1).reshape(-1, component_log_prob.shape[-1]).mean(0))
    neg_ent = (rbar * torch.log(rbar + 1e-8)).sum()
    log_c = math.log(rbar.shape[0])
    return neg_ent / log_c if log_c > 1 else neg_ent


def _logged(**terms: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms a step logs, detached (the loop turns them into numbers)."""
    return {k: v.detach() for k, v in terms.items()}


# ------------------------------------------------------------------------------ the objective
@OBJECTIVES.register("sintro", section="sintro", config=SoftIntroConfig, single_level=True, adversarial=True,
                     likelihood="gaussian", metrics=("fid", "probes"))
class SoftIntroVAE(Objective):
    """Players: ``encoder``, ``decoder`` and (if the prior has parameters) ``prior``."""

    @classmethod
    def from_config(cls, cfg, model) -> "SoftIntroVAE":
        """The objective for ``model`` with the config's ``sintro`` section."""
        return cls(model, cfg.sintro)

    select_best = False
    stackable = True     # the step's pieces go through per_member: several seeds train as one ensemble

    def __init__(self, model: VAE, cfg: SoftIntroConfig):
        super().__init__(model)
        self.cfg = cfg
        self.s = 1.0 / math.prod(model.data_shape)
        self.converted = False
        self._vampprior: Optional[VampPrior] = None

    # players ----------------------------------------------------------------------------
    def prior_parameters(self) -> list:
        """The prior's trainable parameters (empty for N(0, I) and a frozen prior)."""
        p = self.model.prior
        return trainable(p.parameters())

    def players(self):
        out = {"encoder": trainable(self.model.encoder.parameters()),
               "decoder": trainable(self.model.decoder.parameters())}
        if self.prior_parameters():
            out["prior"] = self.prior_parameters()
        return out

    def player_lr(self, name):
        return self.cfg.prior_lr if name == "prior" else None

    # state --------------------------------------------------------------------------------
    def state_dict(self):
        return {"converted": self.converted}

    def load_state_dict(self, state):
        """Rebuild the prior the state was saved with: the MoG of a converted run, or (rolling back to
        a checkpoint from before the conversion) the VampPrior again; weights are loaded afterwards."""
        if state.get("converted") and not self.converted:
            old = self.model.prior
            self._vampprior = old
            self.model.set_prior(self.per_member_module(
                lambda: MoGPrior(old.latent_dim, old.num_components).to(old.pseudo_inputs_raw.device)))
            self.converted = True
        elif not state.get("converted") and self.converted and self._vampprior is not None:
            self.model.set_prior(self._vampprior)
            self.converted = False

    def current_config(self, cfg):
        """After the conversion the model's prior is a MoG with learned weights: so says the config."""
        if self.converted:
            cfg.model.prior = PriorConfig(kind="mog", components=self.model.prior.num_components, learn_weights=True)
            cfg.sintro.convert_to_mog_step = cfg.sintro.convert_to_mog_epoch = None
        return cfg

    def _maybe_convert(self, ctx: StepContext) -> None:
        c = self.cfg
        due = (c.convert_to_mog_step is not None and ctx.step >= c.convert_to_mog_step) or \
              (c.convert_to_mog_epoch is not None and ctx.epoch >= c.convert_to_mog_epoch)
        if due and not self.converted and self.model.prior.encodes_inputs:
            with torch.no_grad():
                mix = self.per_member(self._prior_now)
            self._vampprior = self.model.prior      # kept for a rollback to before the conversion
            self.model.set_prior(self.per_member_module(lambda m: MoGPrior.from_mixture(m, learn_weights=True), mix))
            self.converted = True
            ctx.reset_player("prior")

    # losses ------------------------------------------------------------------------------
    def vae_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """b_rec L_r + b_kl KL, means over the batch (the warm-up / plain VAE loss, no s)."""
        m, c = self.model, self.cfg
        q = m.encode(x)
        rec = m.decode(q.rsample()).mean
        kl = kl_divergence(q, m.prior(), c.kl_samples)
        err = squared_error(x, rec).mean()
        loss = c.beta_rec * err + c.beta_kl * kl.mean()
        return loss, _logged(loss=loss, rec=err, kl=kl.mean())

    def encoder_loss(self, x: torch.Tensor, prior: Optional[Distribution], fake: torch.Tensor):
        """L_E. ``prior`` is the prior as the encoder sees it, detached (None: the model's prior, with
        gradient, when it cooperates with the encoder); ``fake`` = D(z) for the iteration's prior batch
        (no gradient). Returns (loss, rec, q, metrics) with rec = D(z_r), z_r ~ q(z|x), whose graph
        (decoder included) the decoder step reuses."""
        m, c, s = self.model, self.cfg, self.s
        prior = m.prior() if prior is None else prior
        q = m.encode(x)
        z_r = q.rsample()
        rec = m.decode(z_r).mean
        kl_real = kl_divergence(q, prior, c.kl_samples)
        err = squared_error(x, rec)
        loss_real = s * (c.beta_rec * err.mean() + c.beta_kl * kl_real.mean())
        q_rec, q_fake = m.encode(rec.detach()), m.encode(fake)
        rec_rec, rec_fake = m.decode(q_rec.rsample()).mean, m.decode(q_fake.rsample()).mean
        kl_rec = kl_divergence(q_rec, prior, c.kl_samples)
        kl_fake = kl_divergence(q_fake, prior, c.kl_samples)
        elbo_rec = c.beta_rec * squared_error(rec, rec_rec) + c.beta_neg * kl_rec
        elbo_fake = c.beta_rec * squared_error(fake, rec_fake) + c.beta_neg * kl_fake
        loss_fake = introspection_term(elbo_rec, elbo_fake, c.alpha, s)
        loss = loss_real + loss_fake
        metrics = _logged(enc_loss=loss, enc_real=loss_real, enc_fake=loss_fake, rec=err.mean(), kl_real=kl_real.mean(),
                          kl_rec=kl_rec.mean(), kl_fake=kl_fake.mean())
        if c.r_ent > 0 and m.prior.is_mixture:
            neg_ent = usage_negative_entropy(prior.component_log_prob(q.rsample((c.resp_samples,))))
            loss = loss + s * c.r_ent * neg_ent
            metrics["neg_entropy"] = neg_ent.detach()
        return loss, rec, q, metrics

    def decoder_loss(self, x: torch.Tensor, rec: torch.Tensor, q: DiagonalGaussian, prior_sg: Distribution,
                     fake: torch.Tensor, prior: Optional[Distribution] = None):
        """L_D, with the prior's real-data term when ``prior`` (the prior with gradient) is given: the
        prior learns with the decoder. ``rec`` = D(z_r) and ``q`` come from the encoder step (q used
        detached); ``prior_sg`` is the prior detached; ``fake`` = D(z_psi) for the prior batch
        z_psi. rec and fake carry the decoder's gradient (fake the prior's too, if it learns); rec's
        graph also reaches the encoder through z_r, which the step's backward leaves out (a plain
        ``backward()`` of L_D would not)."""
        m, c, s = self.model, self.cfg, self.s
        q_rec, q_fake = m.encode(rec), m.encode(fake)
        rec_rec = m.decode(q_rec.rsample().detach()).mean
        rec_fake = m.decode(q_fake.rsample().detach()).mean
        kl_rec = kl_divergence(q_rec, prior_sg, c.kl_samples)
        kl_fake = kl_divergence(q_fake, prior_sg, c.kl_samples)
        err = squared_error(x, rec).mean()
        inner = (c.beta_rec * err + 0.5 * c.beta_kl * (kl_rec.mean() + kl_fake.mean())
                 + 0.5 * c.gamma_r * c.beta_rec * (squared_error(rec.detach(), rec_rec).mean()
                                                   + squared_error(fake.detach(), rec_fake).mean()))
        metrics = _logged(dec_kl_rec=kl_rec.mean(), dec_kl_fake=kl_fake.mean())
        if prior is not None:     # the prior learns with the decoder: fit it to the aggregate posterior
            kl_prior = kl_divergence(q.detach(), prior, c.kl_samples)
            inner = inner + c.beta_kl * kl_prior.mean()
            metrics["prior_kl_real"] = kl_prior.mean().detach()
        loss = s * inner
        metrics["dec_loss"] = loss.detach()
        return loss, metrics

    # the step ------------------------------------------------------------------------------
    def _opt_step(self, ctx: StepContext, names: list[str], loss: torch.Tensor, keep_graph: bool = False) -> None:
        """Gradients of ``loss`` for the players ``names`` alone (``backward(inputs=...)``: the
        others' parameters get none, they are frozen for this step), then their updates. The
        optimizers' ``param_groups`` name the parameters. ``keep_graph``: the graph stays for a
        later step's use."""
        opts = [ctx.optimizers[n] for n in names if n in ctx.optimizers]
        params = [p for o in opts for g in o.param_groups for p in g["params"] if p.requires_grad]
        for o in opts:
            o.zero_grad(set_to_none=True)
        if params:       # (a stacked ensemble's loss has one entry per member: their sum, each member's own gradient)
            loss.sum().backward(inputs=params, retain_graph=keep_graph)
        for o in opts:
            o.step()

    # pieces of the step that use the weights (one member each in a stacked ensemble: per_member)
    def _start_clipping(self) -> torch.Tensor:
        """Start the prior's variance clipping; returns the number of latent dimensions whose range is empty."""
        prior = self.model.prior
        prior.start_variance_clipping()
        return (prior.clip_hi == prior.clip_lo).sum()

    def _prior_draw(self, x: torch.Tensor):
        """The prior now, detached, and the noise of one draw per example of ``x`` from it."""
        prior = self.model.prior().detach()
        return prior, prior.noise((x.shape[0],), self.model.shard)

    def _prior_now(self) -> Distribution:
        """The prior now, detached."""
        return self.model.prior().detach()

    def _decode_prior(self, draw, prior: Optional[Distribution] = None):
        """(prior, D(z)) for the prior batch's noise ``draw``, through ``prior`` (None: the model's
        prior, with gradient)."""
        prior = self.model.prior() if prior is None else prior
        return prior, self.model.decode(prior.reparameterize(draw)).mean

    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        c, m, each = self.cfg, self.model, self.per_member
        self._maybe_convert(ctx)
        if c.vae_only or ctx.in_warmup:
            loss, metrics = each(self.vae_loss, x)
            self._opt_step(ctx, ["encoder", "decoder", "prior"], loss)
            return metrics
        has_params = bool(self.prior_parameters())
        prior_learns = has_params and c.prior_player != "fixed"
        # clipping only when the prior learns: the soft clip is not the identity near the bounds, and a
        # fixed prior must stay the one fitted during the warm-up (as the authors' code does)
        if c.variance_clipping and prior_learns and hasattr(m.prior, "start_variance_clipping") and not bool(m.prior.clip_on):
            frozen_dims = int(each(self._start_clipping).max())
            if frozen_dims:
                warnings.warn(f"variance clipping started with equal log-variances in {frozen_dims} latent dimension(s); "
                              "their variances stay fixed from now on (set sintro.variance_clipping = false, or start "
                              "from a VampPrior converted to a MoG, to let them learn)", stacklevel=2)
        learns = {k: has_params and c.prior_player == k for k in ("encoder", "decoder")}
        # one prior batch per iteration, reused by both steps
        with torch.no_grad():
            prior_sg, draw = each(self._prior_draw, x)   # one prior draw, reparameterised in both steps
        # The decoder does not move before the decoder step, so one decoding of the prior batch, with
        # its graph, serves both steps, unless the decoder step's prior differs from the one now: it
        # learned in the encoder step, or it learns with the decoder through the encoder (a VampPrior
        # encodes its pseudo-inputs, and the encoder step changes the encoder).
        shared = not learns["encoder"] and not (learns["decoder"] and m.prior.encodes_inputs)
        if shared:
            prior_d, fake_d = each(self._decode_prior, draw, None if learns["decoder"] else prior_sg)
            fake = fake_d.detach()
        else:
            with torch.no_grad():
                fake = each(self._decode_prior, draw, prior_sg)[1]
        loss_e, rec, q, metrics = each(self.encoder_loss, x, None if learns["encoder"] else prior_sg, fake)
        # rec = D(z_r) keeps its graph: the decoder step's gradient to the decoder goes through it again
        self._opt_step(ctx, ["encoder"] + (["prior"] if learns["encoder"] else []), loss_e, keep_graph=True)
        del loss_e                    # the rest of the encoder step's graph goes now
        if learns["encoder"]:         # the prior moved in the encoder step: the decoder sees the new one
            with torch.no_grad():
                prior_sg = each(self._prior_now)
        if not shared:
            prior_d, fake_d = each(self._decode_prior, draw, None if learns["decoder"] else prior_sg)
        loss_d, dmetrics = each(self.decoder_loss, x, rec, q, prior_sg, fake_d, prior_d if learns["decoder"] else None)
        self._opt_step(ctx, ["decoder"] + (["prior"] if learns["decoder"] else []), loss_d)
        return {**metrics, **dmetrics}

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """b_rec L_r + b_kl KL per example (the real-data VAE loss)."""
        q = self.model.encode(x)
        kl = kl_divergence(q, self.model.prior(), self.cfg.kl_samples)
        return self.cfg.beta_rec * squared_error(x, self.model.decode(q.mu).mean) + self.cfg.beta_kl * kl
