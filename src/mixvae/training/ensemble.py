"""Several seeds of one configuration trained in one process: a stacked ensemble.

:class:`Ensemble` takes the M runs of one config that differ only in ``seed``, each prepared as
its separate run would be (``app.runs.prepare_seeds``: its seed's weights and random state), and
stacks their weights into the first run's model: every floating-point parameter and buffer gains
a leading member dimension (M, ...); other buffers (flags, counters) must agree and stay shared.
It is an :class:`Objective` that the one training loop drives like any other: one optimizer per
player over the stacked tensors (Adam's update is elementwise, so each member's slice moves as
its separate run's would), batches stacked from each member's seed (:class:`StackedBatches`), and
the objective's own step, whose pieces run for every member at once (``Objective.per_member``,
``torch.func.vmap``) with each member's random numbers drawn from its own stream in its separate
run's order (:mod:`mixvae.members`). Each member therefore ends where the separate run of its
seed ends, up to float rounding (tests/test_ensemble.py: 1e-5).

What differs from the separate runs: the logged validation loss is the members' mean, on streams
seeded from each member's seed at every validation batch (the separate runs continue one stream
over the batches), and a non-finite loss in any member rolls back (or stops) all of them. What a
member could not do as its separate run would is refused (:func:`check`). Code that vmap cannot
batch (the mixture kernel and its fallbacks) runs member by member (``members.one_by_one``).
:func:`member_state` cuts one member's checkpoint out of the ensemble's, which then resumes,
evaluates and reloads as a separate run of that seed would.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator

import torch
import torch.nn as nn

from ..errors import UserError
from ..members import Members, stack_into
from ..objectives.base import Objective, StepContext


def check(cfg, seeds: list[int]) -> None:
    """Refuse, in one sentence each, what a stacked ensemble cannot train as the separate runs would."""
    from .. import parallel
    from ..registry import OBJECTIVES
    t = cfg.train
    if len(set(seeds)) != len(seeds):
        raise UserError(f"an ensemble needs distinct seeds, got {list(seeds)}")
    if not getattr(OBJECTIVES.get(t.objective).build, "stackable", False):
        raise UserError(f"train.objective = {t.objective!r} cannot train several seeds in one process yet (its step "
                        "is not written with per_member); train the seeds separately")
    refused = {
        "train.precision": (t.precision != "fp32", f"{t.precision!r}: autocast does not reach the members' batched "
                            "products under vmap, so the members would not be their separate runs; expected fp32"),
        "train.optimizer": (t.optimizer == "adam-normgrad", "'adam-normgrad' normalises each gradient by its norm over "
                            "all members at once; expected adam"),
        "train.patience": (t.patience is not None, f"{t.patience} would stop every member on their mean validation "
                           "loss; expected null (no early stopping)"),
    }
    for key, (bad, why) in refused.items():
        if bad:
            raise UserError(f"several seeds in one process: {key} = {why}")
    if parallel.active():
        raise UserError("several seeds in one process run in one process; start it without torchrun")


class Ensemble(Objective):
    """The objectives of M runs (``runs``: prepared runs of one config, seeds distinct) as one,
    their weights stacked into the first run's model (see the module docstring). ``seeds``: the
    members' seeds, in order; ``objective``: the first run's objective, now over stacked weights."""

    def __init__(self, runs: list, generators: list[torch.Generator]):
        first = runs[0]
        self.seeds = [r.cfg.seed for r in runs]
        check(first.cfg, self.seeds)
        self.objective = first.objective
        super().__init__(first.model)
        for key, module in first.objective.modules().items():
            try:
                stack_into(module, [r.objective.modules()[key] for r in runs[1:]])
            except ValueError as e:
                raise UserError(f"{key}: {e}") from None
        self.members = Members(first.objective.modules(), generators)
        self.objective.members = self.members
        self.select_best = self.objective.select_best

    @property
    def size(self) -> int:
        """M, the number of members."""
        return len(self.seeds)

    def modules(self) -> dict[str, nn.Module]:
        return self.objective.modules()

    def players(self):
        return self.objective.players()

    def player_lr(self, name):
        return self.objective.player_lr(name)

    def current_config(self, cfg):
        return self.objective.current_config(cfg)

    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        """The objective's step for every member; logs each term's mean over the members and, as
        ``seed<S>/<term>``, each member's own value. x: (M, B, ...), member m's batch at x[m]."""
        per = {k: v.detach().float().cpu() for k, v in self.objective.step(x, ctx).items()}
        own = {f"seed{s}/{k}": value for k, v in per.items() for s, value in zip(self.seeds, v.tolist())}
        return {k: v.mean().item() for k, v in per.items()} | own

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean per-example validation loss on the batch x (B, ...); each member draws
        from a stream seeded with its seed + 1 (the loop's validation seed) for this batch."""
        device = x.device
        streams = [torch.Generator(device=device).manual_seed(s + 1) for s in self.seeds]
        kept, self.members.generators = self.members.generators, streams
        try:
            losses = self.objective.per_member(self.objective.validation_loss, x.expand(self.size, *x.shape))
        finally:
            self.members.generators = kept
        return losses.mean(0)

    def state_dict(self) -> dict:
        return {"objective": self.objective.state_dict(), "device": str(self.members.generators[0].device),
                "generators": [g.get_state() for g in self.members.generators]}

    def load_state_dict(self, state: dict) -> None:
        streams = state.get("generators", [])
        if len(streams) != self.size or state.get("device", str(self.members.generators[0].device)) != \
                str(self.members.generators[0].device):
            raise UserError(f"the checkpoint holds {len(streams)} members' random streams on {state.get('device')}, "
                            f"this ensemble has {self.size} on {self.members.generators[0].device}; resume it with "
                            "its own seeds and train.device")
        self.objective.load_state_dict(state.get("objective", {}))
        for g, s in zip(self.members.generators, streams):
            g.set_state(s)


class StackedBatches:
    """A data set whose training batches are the members' batches stacked, (M, B, ...): member m
    gets what a separate run with seed ``seeds[m]`` would (the loop's own seed is ignored). Every
    other attribute is the data set's."""

    def __init__(self, data, seeds: list[int]):
        self.data, self.seeds = data, list(seeds)

    def train_batches(self, seed: int, epoch: int, batch_size: int, start: int = 0,
                      rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
        """Each member's batches ``start..`` of ``epoch`` (``Dataset.train_batches`` at its seed), stacked: (M, B, ...)."""
        streams = [self.data.train_batches(s, epoch, batch_size, start, rank, world) for s in self.seeds]
        for xs in zip(*streams):
            yield torch.stack(xs)

    def __getattr__(self, name):
        return getattr(self.data, name)


def member_state(state: dict, index: int) -> dict:
    """Member ``index``'s training state cut out of the ensemble's (``Trainer.checkpoint_state``):
    the state its separate run would hold at the same step, which that run resumes, evaluates
    and reloads. Every floating-point tensor of the weights, and every tensor of the optimizer
    states with dimensions, is stacked (its slice is taken); the rest is shared. The ensemble
    validated the members' mean, so the member holds no best validation loss of its own."""
    def weights(sd: dict) -> dict:
        return {k: v[index].clone() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in sd.items()}

    def optimizer(sd: dict) -> dict:
        per = {p: {k: v[index].clone() if torch.is_tensor(v) and v.dim() > 0 else v for k, v in st.items()}
               for p, st in sd["state"].items()}
        return {**sd, "state": per}

    inner = state["objective"]
    rng, device = dict(state["rng"]), torch.device(inner["device"])
    if device.type == "cuda":      # the member's stream is its device's generator
        rng["cuda"] = list(rng["cuda"])
        rng["cuda"][device.index or 0] = inner["generators"][index]
    else:
        rng["torch"] = inner["generators"][index]
    loop = {**state["loop"], "best_loss": math.inf, "best_step": -1, "bad_evals": 0}   # validated: the members' mean
    return {**state, "loop": loop, "modules": {k: weights(v) for k, v in state["modules"].items()},
            "objective": inner["objective"],
            "optimizers": {k: optimizer(v) for k, v in state["optimizers"].items()}, "rng": rng}


def member_records(records: list[dict], seed: int) -> list[dict]:
    """Member ``seed``'s rows of the ensemble's metrics: its own training terms (``seed<S>/<term>``
    renamed ``<term>``); the validation rows (the members' mean) are left out."""
    prefix, out = f"seed{seed}/", []
    for r in records:
        if r.get("split") == "valid":
            continue
        if r.get("split") == "train":
            own = {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
            r = {k: v for k, v in r.items() if "/" not in k and k not in own} | own
        out.append(r)
    return out
