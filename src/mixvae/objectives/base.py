"""The contract between the one training loop and every method.

An objective names its players (groups of parameters, one optimizer each, built by the loop)
and performs one training step on a batch, calling ``zero_grad`` / ``backward`` / ``step`` on
the optimizers the loop hands it. It returns plain floats to log. The loop knows nothing else
about the method.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..models import LatentVariableModel


@dataclass
class StepContext:
    """What the loop tells an objective about the current step: ``step`` (global, 0-based),
    ``epoch`` (0-based), ``warmup`` (the fraction of the KL warm-up reached, in (0, 1]), the
    players' ``optimizers`` by name, ``reset_player(name)`` (re-create a player's optimizer for
    new parameters) and ``in_warmup`` (this step lies in the warm-up phase)."""

    step: int                 # global step index, 0-based
    epoch: int                # 0-based
    warmup: float             # KL annealing: fraction of the warm-up reached at this step, in (0, 1]
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    # Re-create a player's optimizer for new parameters (e.g. after replacing the prior).
    reset_player: Callable[[str], None] = lambda name: None
    in_warmup: bool = False   # this step lies in the warm-up phase: step < warmup_steps (or epoch < warmup_epochs)


class Objective(ABC):
    """Base class of what the training loop optimises. ``model`` is any :class:`LatentVariableModel`
    (plus extra networks if needed). A registered objective (:data:`mixvae.registry.OBJECTIVES`)
    also offers ``from_config(cfg, model)``, the factory's way to build it. Losses are in nats per
    example (or the method's own units), returned as plain floats by :meth:`step`."""

    # Evaluate the checkpoint with the best validation loss (likelihood training) or the last one
    # (adversarial training, where the validation loss does not measure what is being optimised).
    select_best = True
    # Set by a stacked ensemble (mixvae.training.ensemble): the members that per_member maps over.
    members = None
    stackable = False    # every weight-dependent piece of step() goes through per_member (ensembles allowed)

    def __init__(self, model: LatentVariableModel):
        self.model = model

    def per_member(self, fn: Callable, *args):
        """``fn(*args)``, a piece of a step that uses the weights and draws random numbers. In a
        stacked ensemble of several seeds it runs for every member at once (``torch.func.vmap``
        over the members' weights and random streams, :class:`mixvae.members.Members`): its tensor
        arguments and results then have a leading member dimension. ``fn`` calls no optimizer and
        returns tensors (also in tuples, dicts or distributions), no Python numbers."""
        return fn(*args) if self.members is None else self.members.map(fn, *args)

    def per_member_module(self, make: Callable[..., nn.Module], *args) -> nn.Module:
        """``make(*args)``: a module built during training (e.g. a prior replaced by another). In a
        stacked ensemble, one per member from its slices of the tensors in ``args``, stacked."""
        return make(*args) if self.members is None else self.members.build(make, *args)

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose weights are saved in a checkpoint (default: the model)."""
        return {"model": self.model}

    @abstractmethod
    def players(self) -> dict[str, list[nn.Parameter]]:
        """name -> parameters that the player's optimizer updates."""

    def player_lr(self, name: str) -> float | None:
        """Learning rate of a player, or None for train.lr."""
        return None

    @abstractmethod
    def step(self, x: torch.Tensor, ctx: StepContext) -> dict[str, float | torch.Tensor]:
        """One training step on batch x; returns named scalars to log (floats or 0-d tensors; in a
        stacked ensemble (M,) tensors, one value per member)."""

    @torch.no_grad()
    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example loss for early stopping and 'best' checkpoints (lower is better): -ELBO."""
        log_px, kl = self.model.log_weights(x, 1)
        return -(log_px - kl)[0]

    def current_config(self, cfg):
        """``cfg`` (a copy the caller owns) changed to describe the model as it is now, for an
        objective that changes the model's structure while it trains; default: unchanged."""
        return cfg

    def state_dict(self) -> dict:
        """Objective state beyond module weights (must be tensors / plain containers)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (default: nothing to restore)."""
        pass


def trainable(params) -> list[nn.Parameter]:
    """Unique parameters that require gradients, in order."""
    seen, out = set(), []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
