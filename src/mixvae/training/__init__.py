"""Training: the one loop that drives every objective (:mod:`mixvae.training.loop`), checkpoints,
optimizers and where the metrics go."""
