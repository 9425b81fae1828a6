"""Estimators against hand-computed score tensors and analytic Gaussian MI."""
import math

import numpy as np
import pytest
import tensorflow as tf

from dim_keras import estimators
from dim_keras.simulation import estimate_gaussian_mi, gaussian_mi, rho_for_mi

# scores[i, j, l]: global of image i with location l of image j (2 images, 2 locations).
S = np.array([[[1.0, 2.0], [0.0, -1.0]],
              [[3.0, 0.0], [-2.0, 1.0]]], dtype=np.float32)
POS = [1.0, 2.0, -2.0, 1.0]          # S[0,0,:], S[1,1,:]
NEG = [0.0, -1.0, 3.0, 0.0]          # S[0,1,:], S[1,0,:]


def sp(t):
    return math.log1p(math.exp(t))


def test_jsd_by_hand():
    e_pos = sum(math.log(2) - sp(-t) for t in POS) / 4
    e_neg = sum(sp(t) - math.log(2) for t in NEG) / 4
    assert float(estimators.jsd_lower_bound(S)) == pytest.approx(e_pos - e_neg, abs=1e-6)


def test_dv_by_hand():
    expected = sum(POS) / 4 - math.log(sum(math.exp(t) for t in NEG) / 4)
    assert float(estimators.dv_lower_bound(S)) == pytest.approx(expected, abs=1e-6)


def test_nwj_by_hand():
    expected = sum(POS) / 4 - math.exp(-1) * sum(math.exp(t) for t in NEG) / 4
    assert float(estimators.nwj_lower_bound(S)) == pytest.approx(expected, abs=1e-6)


def test_infonce_by_hand():
    # Global 0's negatives: all locations of image 1 (S[0,1,:]); global 1's: S[1,0,:].
    terms = [
        1.0 - math.log(math.exp(1) + math.exp(0) + math.exp(-1)),
        2.0 - math.log(math.exp(2) + math.exp(0) + math.exp(-1)),
        -2.0 - math.log(math.exp(-2) + math.exp(3) + math.exp(0)),
        1.0 - math.log(math.exp(1) + math.exp(3) + math.exp(0)),
    ]
    expected = math.log(3) + sum(terms) / 4  # K = 1 + (B-1)L = 3 candidates
    assert float(estimators.infonce_lower_bound(S)) == pytest.approx(expected, abs=1e-6)


# A batch of 3 with one location: scores[i, j] = T(global i, local j).
S3 = np.array([[2.0, 0.0, -1.0],
               [1.0, 3.0, 0.0],
               [-2.0, 1.0, 1.0]], dtype=np.float32)[:, :, None]
POS3 = [2.0, 3.0, 1.0]
NEG3 = {0: [0.0, -1.0], 1: [1.0, 0.0], 2: [-2.0, 1.0]}  # row i: T(i, j) for j != i
ALL_NEG3 = [t for row in NEG3.values() for t in row]
BY_HAND_3 = {
    "jsd": (sum(math.log(2) - sp(-t) for t in POS3) / 3
            - sum(sp(t) - math.log(2) for t in ALL_NEG3) / 6),
    "dv": sum(POS3) / 3 - math.log(sum(math.exp(t) for t in ALL_NEG3) / 6),
    "nwj": sum(POS3) / 3 - math.exp(-1) * sum(math.exp(t) for t in ALL_NEG3) / 6,
    "mine_f": sum(POS3) / 3 - sum(math.exp(t - 1) for t in ALL_NEG3) / 6,  # E_J[T] - E_M[e^{T-1}]
    # K = 1 + (B - 1) L = 3 candidates per positive.
    "infonce": math.log(3) + sum(
        p - math.log(math.exp(p) + sum(math.exp(t) for t in NEG3[i]))
        for i, p in enumerate(POS3)) / 3,
}


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_odd_batch_of_three_by_hand(name):
    """No assumption on the batch size: a partial batch of 3 gives the exact bound."""
    assert float(estimators.mi_lower_bound(S3, name)) == pytest.approx(BY_HAND_3[name], abs=1e-6)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_batch_of_one_raises(name):
    with pytest.raises(ValueError, match="needs at least 2 samples per batch: the negatives are "
                                         "the other samples of the batch"):
        estimators.mi_lower_bound(S[:1, :1], name)
    # A dynamic batch dimension cannot be checked at trace time (the model
    # guards it): tracing succeeds and a batch of 3 still gives the exact bound.
    bound = tf.function(lambda s: estimators.mi_lower_bound(s, name))
    traced = bound.get_concrete_function(tf.TensorSpec([None, None, 1]))
    assert float(traced(tf.constant(S3))) == pytest.approx(BY_HAND_3[name], abs=1e-6)


def test_nwj_exact_up_to_high_scores():
    """E_J[T] - e^{-1} E_M[e^T] exactly, also where e^{T-1} is ~1e10."""
    shift = 25.0
    expected = (sum(POS) / 4 + shift
                - math.exp(shift - 1) * sum(math.exp(t) for t in NEG) / 4)
    assert float(estimators.nwj_lower_bound(S + shift)) == pytest.approx(expected, rel=1e-5)


def test_nwj_runaway_critic_is_finite_and_pulled_back():
    """Scores ~200: past the cap (log E_M[e^T] = 30) the term e^{lme - 1} goes on
    as e^29 (1 + lme - 30): finite, and the gradient still lowers the negatives."""
    s = tf.constant(S + 200.0)
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = estimators.nwj_lower_bound(s)
    grad = tape.gradient(value, s).numpy()
    neg_exp = [math.exp(t) for t in NEG]
    lme = 200.0 + math.log(sum(neg_exp) / 4)
    expected = sum(POS) / 4 + 200.0 - math.exp(29.0) * (1.0 + lme - 30.0)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # d bound / d T: 1/4 on each positive; -e^29 softmax(T) on the negatives,
    # so ascending the bound pushes every negative score down.
    eye = np.eye(2, dtype=bool)
    np.testing.assert_allclose(grad[eye], 0.25, rtol=1e-6)
    negatives = grad[~eye].ravel()  # order S[0, 1, :], S[1, 0, :] == NEG
    np.testing.assert_allclose(negatives, [-math.exp(29.0) * e / sum(neg_exp) for e in neg_exp],
                               rtol=1e-5)
    assert np.all(negatives < 0)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_jsd_dv_nwj_exclude_positives_infonce_only_as_numerator(name):
    """Changing a positive score must not change any negative term: raising the
    diagonal raises every bound; raising the off-diagonal lowers it."""
    base = float(estimators.mi_lower_bound(S, name))
    eye = np.eye(2, dtype=np.float32)[:, :, None]
    assert float(estimators.mi_lower_bound(S + 0.5 * eye, name)) > base
    assert float(estimators.mi_lower_bound(S + 0.5 * (1 - eye), name)) < base


def test_jsd_negatives_exclude_positives_exactly():
    """A huge positive score would dominate the negative term if it leaked in."""
    s = S.copy()
    s[0, 0, 0] = 1e4
    e_pos = (math.log(2) - 0.0 + sum(math.log(2) - sp(-t) for t in POS[1:])) / 4
    e_neg = sum(sp(t) - math.log(2) for t in NEG) / 4
    assert float(estimators.jsd_lower_bound(s)) == pytest.approx(e_pos - e_neg, abs=1e-5)


def test_local_bound_averages_over_locations_and_images():
    """JSD of an [B, B, L] tensor equals the mean of the per-location bounds."""
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 5, 7)).astype(np.float32)
    per_location = [float(estimators.jsd_lower_bound(s[:, :, l:l + 1])) for l in range(7)]
    assert float(estimators.jsd_lower_bound(s)) == pytest.approx(np.mean(per_location), abs=1e-5)
    # ... and each image counts equally: permuting images leaves the bound unchanged.
    perm = rng.permutation(5)
    permuted = s[perm][:, perm]
    for name in estimators.ESTIMATORS:
        assert float(estimators.mi_lower_bound(permuted, name)) == pytest.approx(
            float(estimators.mi_lower_bound(s, name)), abs=1e-5)


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_scores_stay_finite(name, scale):
    s = tf.constant(S * scale)
    with tf.GradientTape() as tape:
        tape.watch(s)
        value = estimators.mi_lower_bound(s, name)
    grad = tape.gradient(value, s)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_float16_scores_give_float32_bounds(name):
    value = estimators.mi_lower_bound(tf.constant(S, tf.float16), name)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(float(estimators.mi_lower_bound(S, name)), abs=1e-3)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown estimator"):
        estimators.get_estimator("kl")


def test_infonce_never_exceeds_log_candidates():
    s = np.full((8, 8, 1), -50.0, np.float32)
    s[np.arange(8), np.arange(8)] = 50.0  # a perfect critic
    assert float(estimators.infonce_lower_bound(s)) == pytest.approx(math.log(8), abs=1e-5)


# ---- analytic Gaussian MI with a small trained critic ----------------------

@pytest.mark.parametrize("name", ["dv", "nwj"])
@pytest.mark.parametrize("true_mi", [0.5, 3.0])
def test_dv_nwj_within_15_percent_of_gaussian_mi(name, true_mi):
    result = estimate_gaussian_mi(name, rho=rho_for_mi(true_mi, 2), dim=2,
                                  batch_size=512, steps=600, seed=1)
    assert result["true_mi"] == pytest.approx(true_mi)
    print(f"{name}: estimate {result['estimate']:.3f} vs true {true_mi}")
    assert abs(result["estimate"] - true_mi) <= 0.15 * true_mi


def test_infonce_below_log_batch_and_near_min_of_mi_and_log_batch():
    batch = 64
    low = estimate_gaussian_mi("infonce", rho=rho_for_mi(1.0, 2), dim=2,
                               batch_size=batch, steps=500, seed=1)
    high = estimate_gaussian_mi("infonce", rho=rho_for_mi(8.0, 4), dim=4,
                                batch_size=batch, steps=500, seed=1)
    print(f"infonce: {low['estimate']:.3f} (MI 1), {high['estimate']:.3f} (MI 8), log B {math.log(batch):.3f}")
    for r in (low, high):
        assert r["estimate"] <= math.log(batch) + 1e-6
    assert low["estimate"] == pytest.approx(1.0, rel=0.15)
    assert high["estimate"] == pytest.approx(math.log(batch), rel=0.15)


def test_jsd_grows_monotonically_with_rho():
    values = [estimate_gaussian_mi("jsd", rho=rho, dim=2, batch_size=128, steps=200, seed=1)["estimate"]
              for rho in (0.0, 0.5, 0.8, 0.95)]
    print("jsd vs rho:", values)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert abs(values[0]) < 0.05


def test_gaussian_mi_formula():
    assert gaussian_mi(0.0, 3) == 0.0
    assert gaussian_mi(0.5, 2) == pytest.approx(-math.log(0.75))
    assert rho_for_mi(gaussian_mi(0.7, 5), 5) == pytest.approx(0.7)
