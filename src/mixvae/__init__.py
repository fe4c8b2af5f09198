"""mixvae: variational autoencoders with multimodal priors and introspective / adversarial training."""
__version__ = "0.1.0"
