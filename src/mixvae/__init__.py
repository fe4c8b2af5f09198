"""mixvae: variational autoencoders with multimodal priors (MoG, VampPrior) and introspective /
adversarial training (Soft-IntroVAE with a learned prior, GAMIX-VAE).

The Python API (:mod:`mixvae.api`)::

    import mixvae
    model = mixvae.build("vae", data=x_train, prior="vampprior", components=500)
    mixvae.fit(model, x_train, epochs=30, warmup_epochs=10)
    print(mixvae.log_likelihood(model, x_test).mean())        # nats
    mixvae.save_images(mixvae.sample(model, 64), "samples.png")

Models from parts: :class:`VAE` / :class:`HVAE` with your own encoder and decoder modules, a prior
(:class:`StandardNormalPrior`, :class:`MoGPrior`, :class:`VampPrior`) and a :class:`LikelihoodHead`.
"""
__version__ = "0.2.0"

from .api import (active_units, build, elbo, fit, load, load_weights, log_likelihood, reconstruct,  # noqa: E402
                  sample, save_images)
from .config import Config, load_config  # noqa: E402
from .data import Dataset, from_tensors, load_dataset  # noqa: E402
from .models import HVAE, VAE, LatentVariableModel, LikelihoodHead  # noqa: E402
from .priors import MoGPrior, Prior, StandardNormalPrior, VampPrior  # noqa: E402

__all__ = ["build", "fit", "log_likelihood", "elbo", "active_units", "sample", "reconstruct", "save_images", "load",
           "load_weights",
           "VAE", "HVAE", "LatentVariableModel", "LikelihoodHead", "Prior", "StandardNormalPrior", "MoGPrior",
           "VampPrior", "Config", "load_config", "Dataset", "from_tensors", "load_dataset"]
