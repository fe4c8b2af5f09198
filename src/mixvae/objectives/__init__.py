"""Objectives: what the one training loop optimises. Each registers itself (mixvae.registry.OBJECTIVES)."""
from . import elbo, soft_intro, gamix  # noqa: F401  (registers elbo, sintro, gamix)
from .base import Objective, StepContext

__all__ = ["Objective", "StepContext"]
