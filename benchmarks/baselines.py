"""Straightforward plain-PyTorch implementations of the benchmarked maths (the baselines).

They compute the same quantities as mixvae, written the way research code usually is: separate
layers for the two halves of each gated layer, mixture densities by broadcasting to (N, K, D),
probabilities through sigmoid + binary cross-entropy, and the log-likelihood one image at a time
in chunks of 100 samples with the prior recomputed for every chunk.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PlainGated(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.h, self.g = nn.Linear(i, o), nn.Linear(i, o)

    def forward(self, x):
        return self.h(x) * torch.sigmoid(self.g(x))


class PlainVAE(nn.Module):
    def __init__(self, prior: str, d=784, h=300, z=40, k=500):
        super().__init__()
        self.enc = nn.Sequential(PlainGated(d, h), PlainGated(h, h))
        self.mu, self.lv = nn.Linear(h, z), nn.Linear(h, z)
        self.dec = nn.Sequential(PlainGated(z, h), PlainGated(h, h), nn.Linear(h, d))
        self.prior = prior
        if prior == "vampprior":
            self.pseudo = nn.Linear(k, d, bias=False)
            nn.init.normal_(self.pseudo.weight, 0.05, 0.01)
            self.register_buffer("idle", torch.eye(k))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), F.hardtanh(self.lv(h), -6, 2)

    def log_prior(self, z):
        if self.prior == "standard":
            return (-0.5 * (math.log(2 * math.pi) + z ** 2)).sum(-1)
        u = F.hardtanh(self.pseudo(self.idle), 0, 1)
        m, lv = self.encode(u)                                            # (K, D)
        diff = z.unsqueeze(1) - m.unsqueeze(0)                            # (N, K, D)
        lp = (-0.5 * (math.log(2 * math.pi) + lv.unsqueeze(0) + diff ** 2 / lv.exp().unsqueeze(0))).sum(-1)
        return torch.logsumexp(lp, dim=1) - math.log(m.shape[0])

    def loss(self, x):
        mu, lv = self.encode(x)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        p = torch.sigmoid(self.dec(z)).clamp(1e-5, 1 - 1e-5)
        rec = F.binary_cross_entropy(p, x, reduction="none").sum(-1)
        log_q = (-0.5 * (math.log(2 * math.pi) + lv + (z - mu) ** 2 / lv.exp())).sum(-1)
        return (rec + log_q - self.log_prior(z)).mean()


def vae_step(prior: str, batch: int = 100):
    torch.manual_seed(0)
    model = PlainVAE(prior)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    x = (torch.rand(batch, 784) < 0.2).float()

    def step():
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
    return step


def log_likelihood(model, x, num_samples: int, chunk: int = 100):
    """Per image, chunks of ``chunk`` samples, each chunk a full forward pass on repeated copies
    of the image with the prior recomputed (as the VampPrior reference code evaluates it)."""
    @torch.no_grad()
    def run():
        out = []
        for i in range(x.shape[0]):
            weights = []
            for _ in range(num_samples // chunk):
                xi = x[i:i + 1].expand(chunk, *x.shape[1:])
                log_px, kl = model.log_weights(xi, 1)
                weights.append((log_px - kl)[0])
            w = torch.cat(weights)
            out.append(torch.logsumexp(w, 0) - math.log(w.numel()))
        return torch.stack(out)
    return run


# ------------------------------------------------------------------------------------------------
# Soft-IntroVAE iteration with a learned MoG prior, written as research code usually is: every
# network call separate, the mixture density by broadcasting (S, B, K, D), gradients computed for
# every parameter in both steps (frozen players simply are not stepped).
# ------------------------------------------------------------------------------------------------
def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class PlainIntroVAE(nn.Module):
    """Encoder / decoder of any shape plus a MoG prior (means, logvars, logits)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z: int, k: int):
        super().__init__()
        self.enc, self.dec = encoder, decoder
        self.means = nn.Parameter(torch.randn(k, z))
        self.logvars = nn.Parameter(0.1 * torch.randn(k, z))
        self.logits = nn.Parameter(torch.zeros(k))

    def encode(self, x):
        mu, lv = self.enc(x).chunk(2, dim=-1)
        return mu, lv

    def log_prior(self, z, detach=False):
        m, lv, a = (self.means, self.logvars, self.logits)
        if detach:
            m, lv, a = m.detach(), lv.detach(), a.detach()
        diff = z.unsqueeze(-2) - m                                        # (..., K, D)
        lp = (-0.5 * (math.log(2 * math.pi) + lv + diff ** 2 / lv.exp())).sum(-1)
        return torch.logsumexp(lp + torch.log_softmax(a, 0), dim=-1)

    def kl(self, mu, lv, samples=100, detach_prior=False):
        z = mu + torch.exp(0.5 * lv) * torch.randn(samples, *mu.shape)
        log_q = (-0.5 * (math.log(2 * math.pi) + lv + (z - mu) ** 2 / lv.exp())).sum(-1)
        return (log_q - self.log_prior(z, detach_prior)).mean(0)

    def prior_sample(self, n):
        idx = torch.multinomial(torch.softmax(self.logits.detach(), 0), n, replacement=True)
        return self.means[idx] + torch.exp(0.5 * self.logvars[idx]) * torch.randn(n, self.means.shape[1])


def _sq(a, b):
    return ((a - b) ** 2).flatten(1).sum(1)


def soft_intro_step(model: PlainIntroVAE, x, opt_e, opt_d, beta_rec, beta_kl, beta_neg, s, gamma_r=1e-8):
    """One iteration (encoder step, then decoder + prior step) of ALGORITHMS.md sections 2 and 4."""
    flat = lambda t: t.reshape(x.shape)
    z_p = model.prior_sample(x.shape[0])
    # encoder step
    fake = flat(model.dec(z_p.detach()))
    mu, lv = model.encode(x)
    z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
    rec = flat(model.dec(z))
    loss_real = s * (beta_rec * _sq(x, rec).mean() + beta_kl * model.kl(mu, lv, detach_prior=True).mean())
    mu_r, lv_r = model.encode(rec.detach())
    mu_f, lv_f = model.encode(fake.detach())
    rec_rec = flat(model.dec(mu_r + torch.exp(0.5 * lv_r) * torch.randn_like(mu_r)))
    rec_fake = flat(model.dec(mu_f + torch.exp(0.5 * lv_f) * torch.randn_like(mu_f)))
    elbo_rec = beta_rec * _sq(rec, rec_rec) + beta_neg * model.kl(mu_r, lv_r, detach_prior=True)
    elbo_fake = beta_rec * _sq(fake, rec_fake) + beta_neg * model.kl(mu_f, lv_f, detach_prior=True)
    loss_e = loss_real + 0.25 * (torch.exp(-2 * s * elbo_fake).mean() + torch.exp(-2 * s * elbo_rec).mean())
    opt_e.zero_grad()
    opt_d.zero_grad()
    loss_e.backward()
    opt_e.step()
    # decoder (and prior) step
    fake = flat(model.dec(z_p))
    rec = flat(model.dec(z.detach()))
    mu_r, lv_r = model.encode(rec)
    mu_f, lv_f = model.encode(fake)
    rec_rec = flat(model.dec((mu_r + torch.exp(0.5 * lv_r) * torch.randn_like(mu_r)).detach()))
    rec_fake = flat(model.dec((mu_f + torch.exp(0.5 * lv_f) * torch.randn_like(mu_f)).detach()))
    loss_d = s * (beta_rec * _sq(x, rec).mean() + beta_kl * model.kl(mu.detach(), lv.detach()).mean()
                  + 0.5 * beta_kl * (model.kl(mu_r, lv_r, detach_prior=True).mean()
                                     + model.kl(mu_f, lv_f, detach_prior=True).mean())
                  + 0.5 * gamma_r * beta_rec * (_sq(rec.detach(), rec_rec).mean() + _sq(fake.detach(), rec_fake).mean()))
    opt_e.zero_grad()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()


def soft_intro_2d(batch=512, k=64, z=2):
    torch.manual_seed(0)
    model = PlainIntroVAE(_mlp([2, 256, 256, 256, 256, 2 * z]), _mlp([z, 256, 256, 256, 256, 2]), z, k)
    opt_e = torch.optim.Adam(model.enc.parameters(), 2e-4)
    opt_d = torch.optim.Adam(list(model.dec.parameters()) + [model.means, model.logvars, model.logits], 2e-4)
    x = torch.randn(batch, 2)
    return lambda: soft_intro_step(model, x, opt_e, opt_d, 0.2, 0.3, 0.9, 0.5)


def soft_intro_images(encoder, decoder, z, k, x, beta_neg=128.0):
    """The same iteration for image networks (any (N, C, H, W) encoder / decoder pair)."""
    torch.manual_seed(0)

    class Dec(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = decoder

        def forward(self, zz):
            return self.net(zz).squeeze(-4)           # drop mixvae's parameter axis

    model = PlainIntroVAE(nn.Sequential(encoder, _Cat()), Dec(), z, k)
    opt_e = torch.optim.Adam(model.enc.parameters(), 2e-4)
    opt_d = torch.optim.Adam(list(model.dec.parameters()) + [model.means, model.logvars, model.logits], 2e-4)
    return lambda: soft_intro_step(model, x, opt_e, opt_d, 1.0, 1.0, beta_neg, 1.0 / x[0].numel())


class _Cat(nn.Module):
    """(mu, logvar) -> one tensor, so the plain model can chunk it again."""

    def forward(self, pair):
        return torch.cat(pair, dim=-1)


# ------------------------------------------------------------------------------------------------
# GAMIX-VAE iteration as usually written: a discriminator step (real and fake batches through the
# discriminator separately), then an autoencoder step that runs the discriminator again.
# ------------------------------------------------------------------------------------------------
def gamix_step(encoder, decoder, disc, x, opt_g, opt_d):
    mu, lv = encoder(x)
    x_hat = decoder(mu + torch.exp(0.5 * lv) * torch.randn_like(mu)).squeeze(1)
    d_real, d_fake = disc(x), disc(x_hat.detach())
    loss_d = 100 * (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                    + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    zm, zv = mu.mean(0), mu.var(0, unbiased=False)
    kl_pop = 0.5 * (zv + zm ** 2 - 1 - torch.log(zv)).sum()
    kl_ind = 0.1 * (lv.exp() - lv - 1).sum(1).mean()
    g = disc(x_hat)
    loss_g = (5000 * (x - x_hat).abs().mean() + kl_pop + kl_ind
              + 100 * F.binary_cross_entropy_with_logits(g, torch.ones_like(g)))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def gamix(encoder, decoder, disc, x):
    opt_g = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), 1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 1e-4, betas=(0.5, 0.999))
    return lambda: gamix_step(encoder, decoder, disc, x, opt_g, opt_d)


# ------------------------------------------------------------------------------------------------
# FID features: the network in its stored layout, images in NCHW batches of 50.
# ------------------------------------------------------------------------------------------------
def inception_features(net, images, batch=50):
    @torch.no_grad()
    def run():
        out = []
        for b in images.split(batch):
            x = F.interpolate(b.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net(x * 2 - 1))
        return torch.cat(out)
    return run
