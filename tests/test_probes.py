"""Latent probes: separable clusters, random labels, standardisation fit on train only."""
import warnings

import numpy as np
import torch
import torch.nn as nn

from mixvae.metrics.probes import knn_accuracy, linear_svm_probe, probe_report, sampled_latents
from mixvae.models import VAE, LikelihoodHead
from mixvae.priors import StandardNormalPrior


def clusters(centres, n_per_class, rng, spread=0.3):
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return centres[y] + spread * rng.normal(size=(y.size, centres.shape[1])), y


def test_separable_clusters_are_classified_perfectly():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 3
    z_tr, y_tr = clusters(centres, 150, rng)
    z_te, y_te = clusters(centres, 50, rng)
    report = probe_report(torch.tensor(z_tr), torch.tensor(y_tr), z_te, y_te)
    for key in ("svm_few", "svm_many", "knn_few", "knn_many"):
        assert report[key] > 0.99, key
    assert report["svm_few_converged"] and report["n_train"] == 600 and report["n_test"] == 200


def test_random_labels_give_chance_accuracy():
    # 10 classes, 1000 test points: a chance score has standard deviation ~0.0095; allow 0.04.
    rng = np.random.default_rng(1)
    z_tr, z_te = rng.normal(size=(2000, 16)), rng.normal(size=(1000, 16))
    y_tr, y_te = rng.integers(0, 10, 2000), rng.integers(0, 10, 1000)
    assert abs(linear_svm_probe(z_tr, y_tr, z_te, y_te)["accuracy"] - 0.1) < 0.04
    assert abs(knn_accuracy(z_tr, y_tr, z_te, y_te, k=5) - 0.1) < 0.04


def test_standardisation_is_fit_on_train_only():
    # Train: class 0 at x = -1, class 1 at x = +1 (mean 0, std 1). Test: the same pattern shifted to
    # x = 9 / 11. Scaled with the train statistics every test point lies on the class-1 side
    # (accuracy 1/2); scaled with its own statistics it would be -1 / +1 again (accuracy 1).
    z_tr = np.array([[-1.0], [1.0]] * 50)
    y_tr = np.array([0, 1] * 50)
    z_te = np.array([[9.0], [11.0]] * 20)
    y_te = np.array([0, 1] * 20)
    assert linear_svm_probe(z_tr, y_tr, z_te, y_te)["accuracy"] == 0.5
    assert knn_accuracy(z_tr, y_tr, z_te, y_te, k=5) == 0.5
    assert knn_accuracy(z_tr, y_tr, z_tr, y_tr, k=5) == 1.0


def test_svm_reports_non_convergence_without_warning():
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(400, 20)), rng.integers(0, 2, 400)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = linear_svm_probe(z, y, z, y, C=100.0, max_iter=3)
    assert out["converged"] is False and not record


class Encoder(nn.Module):
    def forward(self, x):
        return x[:, :2] * 10, torch.full((x.shape[0], 2), -20.0)   # nearly deterministic posterior


def test_sampled_latents_one_per_image():
    model = VAE(Encoder(), nn.Identity(), StandardNormalPrior(2), LikelihoodHead("gaussian", 1), (3,))
    model.train()
    x = torch.randn(10, 3)
    z = sampled_latents(model, [x[:4], x[4:]])
    assert z.shape == (10, 2) and model.training
    assert torch.allclose(z, x[:, :2] * 10, atol=1e-3)
    assert not torch.equal(z, x[:, :2] * 10)                     # it is a sample, not the mean
