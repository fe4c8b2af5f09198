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
    name: str
    build: Any                         # the class or function that makes the component
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
        self._entries[name] = Entry(name, build, info)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str, where: str = "config") -> Entry:
        """The entry of ``name``, or one clear error naming the key, the value and the known names."""
        if name not in self._entries:
            raise UserError(f"{where}: {self.key} = {name!r} is not a known {self.what}; expected one of: "
                            f"{', '.join(self._entries)}")
        return self._entries[name]


PRIORS = Registry("prior", "model.prior.kind")
ARCHITECTURES = Registry("architecture", "model.arch")
OBJECTIVES = Registry("objective", "train.objective")
DATASETS = Registry("data set", "data.name")


def load_builtins() -> None:
    """Import the package's own components so that they are registered."""
    from . import data, objectives, priors  # noqa: F401
    from .models import architectures  # noqa: F401
