"""Priors and the prior discriminator (DIM section 3.3, eq. 7, Table 10) against known answers.

Every test here runs on TensorFlow and on JAX (``backends`` marker; CI's second leg)."""
import math

import keras
import numpy as np
import pytest

from backend_testing import to_numpy
from dim_keras import priors

pytestmark = pytest.mark.backends


def sp(t):
    return math.log1p(math.exp(t))


def test_match_to_prior_space():
    y = np.array([[0.0, 2.0, -3.0], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(to_numpy(priors.match_to_prior_space(y, "uniform")),
                               1 / (1 + np.exp(-y)), rtol=1e-6)  # the authors' sigmoid into [0, 1]^d
    sphere = to_numpy(priors.match_to_prior_space(y, "unit_sphere"))
    np.testing.assert_allclose(sphere[0], y[0] / math.sqrt(13.0), rtol=1e-6)
    np.testing.assert_array_equal(sphere[1], 0.0)  # a zero Y stays zero (norm floored at 1e-12), no NaN
    for prior in ("gaussian", "unit_ball"):
        np.testing.assert_array_equal(to_numpy(priors.match_to_prior_space(y, prior)), y)
    half = priors.match_to_prior_space(keras.ops.convert_to_tensor(y, "float16"), "gaussian")
    assert keras.backend.standardize_dtype(half.dtype) == "float32"  # matched in float32 under mixed precision
    with pytest.raises(ValueError, match="unknown prior"):
        priors.match_to_prior_space(y, "laplace")


@pytest.mark.parametrize("prior", priors.PRIORS)
def test_sample_prior_draws_the_named_distribution(prior):
    n, dim = 20000, 3
    x = to_numpy(priors.sample_prior(prior, n, dim, seed=1))
    assert x.shape == (n, dim) and x.dtype == np.float32
    norms = np.linalg.norm(x, axis=1)
    # Standard errors at n = 20000: mean ~0.002-0.007, so these tolerances are > 4 sigma.
    if prior == "uniform":
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_allclose(x.mean(0), 0.5, atol=0.01)
        np.testing.assert_allclose(x.var(0), 1 / 12, rtol=0.04)
    elif prior == "gaussian":
        np.testing.assert_allclose(x.mean(0), 0.0, atol=0.03)
        np.testing.assert_allclose(x.std(0), 1.0, atol=0.03)
    elif prior == "unit_sphere":
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)  # no preferred direction
    else:  # unit_ball: uniform in volume, P(|x| < r) = r^dim
        assert norms.max() <= 1.0 + 1e-6
        assert np.mean(norms < 0.5) == pytest.approx(0.5 ** dim, abs=0.01)
        assert np.mean(norms < 0.9) == pytest.approx(0.9 ** dim, abs=0.015)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)
    # The same integer seed draws the same samples; a SeedGenerator draws fresh ones every call.
    np.testing.assert_array_equal(to_numpy(priors.sample_prior(prior, n, dim, seed=1)), x)
    generator = keras.random.SeedGenerator(0)
    a, b = (to_numpy(priors.sample_prior(prior, 8, dim, seed=generator)) for _ in range(2))
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown prior"):
        priors.sample_prior("laplace", 8, dim)


def test_discriminator_and_encoder_losses_by_hand():
    real = np.array([2.0, -1.0, 0.5], np.float32)
    fake = np.array([-3.0, 1.0], np.float32)
    # Eq. 7's binary cross-entropy for D: -log D(v) on prior samples, -log(1 - D(E(x))) on Y.
    expected_d = np.mean([sp(-t) for t in real]) + np.mean([sp(t) for t in fake])
    assert float(priors.discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-6)
    # The encoder's non-saturating loss: -log D(E(x)).
    assert float(priors.encoder_prior_loss(fake)) == pytest.approx(np.mean([sp(-t) for t in fake]), rel=1e-6)
    # Real > 0 and fake <= 0 are correct: 2 of 3 real, 1 of 2 fake.
    assert float(priors.discriminator_accuracy(real, fake)) == pytest.approx(3 / 5)


def test_prior_discriminator_is_table10_and_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")  # conftest restores float32
    disc = priors.PriorDiscriminator()
    logits = disc(np.zeros((5, 64), np.float32))
    assert tuple(logits.shape) == (5,)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    kernels = [tuple(layer.kernel.shape) for layer in disc.hidden + [disc.logit]]
    assert kernels == [(64, 1000), (1000, 200), (200, 1)]  # Linear 1000 ReLU, 200 ReLU, 1 logit
    assert all(layer.activation.__name__ == "relu" for layer in disc.hidden)
    # One hidden layer by hand: relu(x W1 + b1) W2 + b2.
    small = priors.PriorDiscriminator(hidden_units=(4,))
    x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    out = to_numpy(small(x))
    (w1, b1), (w2, b2) = ((to_numpy(l.kernel), to_numpy(l.bias)) for l in (small.hidden[0], small.logit))
    np.testing.assert_allclose(out, (np.maximum(x @ w1 + b1, 0) @ w2 + b2)[:, 0], rtol=1e-5, atol=1e-6)
    clone = priors.PriorDiscriminator.from_config(small.get_config())
    assert clone.hidden_units == (4,)
