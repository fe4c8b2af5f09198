"""Models: VAE, two-level HVAE and PixelHVAE sharing one interface (see :mod:`mixvae.models.base`)."""
from .base import LatentVariableModel
from .hvae import HVAE
from .pixel_hvae import PixelCNNLikelihood, PixelHVAE
from .likelihood import LikelihoodHead, PARAMS_PER_PIXEL
from .vae import VAE

__all__ = ["LatentVariableModel", "VAE", "HVAE", "PixelHVAE", "PixelCNNLikelihood", "LikelihoodHead", "PARAMS_PER_PIXEL"]
