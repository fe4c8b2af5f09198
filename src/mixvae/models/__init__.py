"""Models: VAE and two-level HVAE sharing one interface (see :mod:`mixvae.models.base`)."""
from .base import LatentVariableModel
from .hvae import HVAE
from .likelihood import LikelihoodHead, PARAMS_PER_PIXEL
from .vae import VAE

__all__ = ["LatentVariableModel", "VAE", "HVAE", "LikelihoodHead", "PARAMS_PER_PIXEL"]
