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
