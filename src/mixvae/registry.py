"""Components by name: priors, architectures, objectives and data sets register themselves here.

A component registers its name, the thing that builds it (a class or a function) and what it
needs and offers (``info``: e.g. an architecture's ``data="image"``, an objective's ``metrics``);
the factory, the config checks and the evaluation look these up instead of branching on names. A
new component (also one outside the package) is one registration::

    from mixvae.registry import PRIORS

    @PRIORS.register("laplace")
    def build_laplace(options, data, latent_dim, seed): ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UserError


@dataclass
class Entry:
    """One registered component: its ``name``, ``build`` (the class or function that makes it) and
    ``info`` (what it needs and offers; each registry below names the keys that are read)."""

    name: str
    build: Any
    info: dict = field(default_factory=dict)


class Registry:
    """Name -> :class:`Entry` for one kind of component (``what``, e.g. 'prior')."""

    def __init__(self, what: str, key: str):
        self.what, self.key = what, key      # key: the config key that names one (for messages)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **info) -> Callable:
        """Decorator: register the decorated class or function under ``name`` with ``info``."""
        def deco(obj):
            self.add(name, obj, **info)
            return obj
        return deco

    def add(self, name: str, build, **info) -> None:
        """Register ``build`` under ``name`` with ``info`` (a later registration of the name replaces it)."""
        self._entries[name] = Entry(name, build, info)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def get(self, name: str, where: str = "config") -> Entry:
        """The entry of ``name``, or one clear error naming the key, the value and the known names."""
        if name not in self._entries:
            raise UserError(f"{where}: {self.key} = {name!r} is not a known {self.what}; expected one of: "
                            f"{', '.join(self._entries)}")
        return self._entries[name]


PRIORS = Registry("prior", "model.prior.kind")
"""Priors: ``build(options, data, latent_dim, seed) -> Prior`` with ``options`` the config's
``model.prior`` section and ``data`` the data set the model is for; info ``mixture`` (bool),
``encodes_inputs`` (bool, the VampPrior protocol), ``options`` (the ``model.prior`` keys it reads
besides ``kind``; :func:`mixvae.build` refuses the others)."""
ARCHITECTURES = Registry("architecture", "model.arch")
"""Architectures: ``build(model_section, data, prior, likelihood_head) -> LatentVariableModel``;
info ``data`` ('image' (C, H, W), 'vector' (D,) or 'any') and ``levels`` (latent levels)."""
OBJECTIVES = Registry("objective", "train.objective")
"""Objectives: an :class:`~mixvae.objectives.Objective` class (``build.from_config(cfg, model)``);
info e.g. ``section`` / ``config`` (its config section and dataclass), ``likelihood``,
``single_level``, ``data``, ``adversarial``, ``metrics``."""
DATASETS = Registry("data set", "data.name")
"""Data sets: a loader ``build(request: LoadRequest) -> (arrays, where)``: arrays 'train', 'test'
(optionally 'valid', '<split>_labels') of images (N, H, W[, C]), uint8 or floats in [0, 1]; ``where``
names the files in messages. Info e.g. ``pseudo_init`` ((mean, std) of VampPrior pseudo-input
pixels), ``validation='last'`` with ``valid_count``, ``binarize='dynamic'``."""


def load_builtins() -> None:
    """Import the package's own components so that they are registered."""
    from . import data, objectives, priors  # noqa: F401
    from .models import architectures  # noqa: F401
