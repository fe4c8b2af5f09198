"""Would a stacked ensemble (several seeds in one process, one batched product per layer) make the
2D protocol faster on this CPU? Times forward and backward of M separate 2D MLPs (2-256x4-4, batch
512, the Soft-IntroVAE 2D networks' shapes) against the same M stacked into batched products
(``torch.baddbmm``), alternately, one thread, and prints the ratio.

    OMP_NUM_THREADS=1 python benchmarks/stacked_members.py [--members 3]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from run import alternate_medians

SIZES = [2, 256, 256, 256, 256, 4]      # encoder 2 -> 256 x 4 -> (mu, logvar) of a 2D latent
BATCH = 512


def separate_step(params, xs) -> None:
    """Forward and backward of each member's MLP on its own batch."""
    loss = 0.0
    for layers, x in zip(params, xs):
        h = x
        for j, (w, b) in enumerate(layers):
            h = F.linear(h, w, b)
            h = torch.relu(h) if j < len(layers) - 1 else h
        loss = loss + h.pow(2).mean()
    loss.backward()


def stacked_step(layers, x) -> None:
    """The same maths with the members stacked: weights (M, in, out), batches (M, B, in)."""
    h = x
    for j, (w, b) in enumerate(layers):
        h = torch.baddbmm(b, h, w)
        h = torch.relu(h) if j < len(layers) - 1 else h
    h.pow(2).mean((1, 2)).sum().backward()


def build(members: int):
    """(per-member layers [(w (out, in), b (out,))], the same stacked [(w (M, in, out), b (M, 1, out))],
    per-member batches (B, 2), the stacked batch (M, B, 2))."""
    torch.manual_seed(0)
    params = [[(torch.randn(o, i).div_(i ** 0.5).requires_grad_(), torch.zeros(o, requires_grad=True))
               for i, o in zip(SIZES[:-1], SIZES[1:])] for _ in range(members)]
    stacked = [(torch.stack([m[j][0].detach().t() for m in params]).requires_grad_(),
                torch.stack([m[j][1].detach() for m in params]).unsqueeze(1).requires_grad_())
               for j in range(len(SIZES) - 1)]
    xs = [torch.randn(BATCH, SIZES[0]) for _ in range(members)]
    return params, stacked, xs, torch.stack(xs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20, help="rounds of the two forms in turn")
    ap.add_argument("--calls", type=int, default=5, help="timed calls per round and form")
    args = ap.parse_args(argv)
    params, stacked, xs, x = build(args.members)
    fns = {"separate": lambda: separate_step(params, xs), "stacked": lambda: stacked_step(stacked, x)}
    for fn in fns.values():               # warm-up
        fn()
    ms = alternate_medians(fns, args.rounds, args.calls)
    s, t = ms["separate"], ms["stacked"]
    print(f"{args.members} members, {torch.get_num_threads()} thread(s): separate {s:.2f} ms, stacked {t:.2f} ms, "
          f"stacked is {s / t:.2f}x the speed of separate")


if __name__ == "__main__":
    main()
