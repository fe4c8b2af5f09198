"""Latent-space probes (ALGORITHMS.md section 4, "Image evaluation").

One sampled z ~ q(z|x) per image, (N, D); features standardised with a ``StandardScaler`` fit on
the training latents only, then a linear SVM (``LinearSVC``, C = 0.025) and a k-nearest-neighbour
classifier are fit on train and scored on test. Accuracies are fractions in [0, 1]. Two settings:
"few" (SVM max_iter 2000, k = 5) and "many" (SVM max_iter 10000, k = 100).
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..models import LatentVariableModel
from ..models.base import evaluating

SETTINGS = {"few": {"max_iter": 2000, "k": 5}, "many": {"max_iter": 10000, "k": 100}}


@torch.no_grad()
def sampled_latents(model: LatentVariableModel, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """One z ~ q(z|x) per image over all batches, (N, D) on the CPU (model in eval mode)."""
    with evaluating(model):
        return torch.cat([model.encode(x).sample().cpu() for x in batches])


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _standardised(z_train, z_test) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(_numpy(z_train))
    return scaler.transform(_numpy(z_train)), scaler.transform(_numpy(z_test))


def linear_svm_probe(z_train, y_train, z_test, y_test, C: float = 0.025, max_iter: int = 2000,
                     random_state: int = 0) -> dict:
    """``{"accuracy": test accuracy, "converged": bool}`` of a standardised ``LinearSVC``.

    The ConvergenceWarning is suppressed; ``converged`` is False exactly when liblinear hit
    ``max_iter`` (the condition that raises the warning).
    """
    a, b = _standardised(z_train, z_test)
    svm = LinearSVC(C=C, max_iter=max_iter, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(a, _numpy(y_train))
    return {"accuracy": float(svm.score(b, _numpy(y_test))), "converged": bool(svm.n_iter_ < max_iter)}


def knn_accuracy(z_train, y_train, z_test, y_test, k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour classifier (Euclidean) on standardised latents."""
    a, b = _standardised(z_train, z_test)
    knn = KNeighborsClassifier(n_neighbors=k).fit(a, _numpy(y_train))
    return float(knn.score(b, _numpy(y_test)))


def probe_report(z_train, y_train, z_test, y_test, C: float = 0.025) -> dict:
    """All probes: ``svm_few``, ``svm_many``, ``knn_few``, ``knn_many`` (accuracies),
    ``svm_few_converged``, ``svm_many_converged``, and ``n_train``, ``n_test``.

    z: (N, D) latents (tensor or array), y: (N,) integer labels.
    """
    from ..progress import bar
    out = {"n_train": len(z_train), "n_test": len(z_test)}
    for name, s in bar(SETTINGS.items(), total=len(SETTINGS), desc="latent probes (SVM, kNN)", unit="setting"):
        svm = linear_svm_probe(z_train, y_train, z_test, y_test, C, s["max_iter"])
        out[f"svm_{name}"] = svm["accuracy"]
        out[f"svm_{name}_converged"] = svm["converged"]
        out[f"knn_{name}"] = knn_accuracy(z_train, y_train, z_test, y_test, s["k"])
    return out
