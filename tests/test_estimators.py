"""Estimators against hand-computed score tensors and analytic Gaussian MI.

Tests marked ``backends`` run on TensorFlow and on JAX (CI's second leg, ``KERAS_BACKEND=jax``): they
use NumPy inputs and :mod:`backend_testing` for gradients and compilation.  The Gaussian-MI tests train a
critic with the TensorFlow-only simulation and run on TensorFlow only.
"""
import math

import keras
import numpy as np
import pytest

from backend_testing import backend, compiled, traced_ops, value_and_grad
from dim_keras import estimators

backends = pytest.mark.backends

# scores[i, j, l]: global of image i with location l of image j (2 images, 2 locations).
S = np.array([[[1.0, 2.0], [0.0, -1.0]],
              [[3.0, 0.0], [-2.0, 1.0]]], dtype=np.float32)
POS = [1.0, 2.0, -2.0, 1.0]          # S[0,0,:], S[1,1,:]
NEG = [0.0, -1.0, 3.0, 0.0]          # S[0,1,:], S[1,0,:]


def sp(t):
    return math.log1p(math.exp(t))


@backends
def test_jsd_by_hand():
    e_pos = sum(math.log(2) - sp(-t) for t in POS) / 4
    e_neg = sum(sp(t) - math.log(2) for t in NEG) / 4
    assert float(estimators.jsd_lower_bound(S)) == pytest.approx(e_pos - e_neg, abs=1e-6)


@backends
def test_dv_by_hand():
    expected = sum(POS) / 4 - math.log(sum(math.exp(t) for t in NEG) / 4)
    assert float(estimators.dv_lower_bound(S)) == pytest.approx(expected, abs=1e-6)


@backends
def test_nwj_by_hand():
    expected = sum(POS) / 4 - math.exp(-1) * sum(math.exp(t) for t in NEG) / 4
    assert float(estimators.nwj_lower_bound(S)) == pytest.approx(expected, abs=1e-6)


@backends
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


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_odd_batch_of_three_by_hand(name):
    """No assumption on the batch size: a partial batch of 3 gives the exact bound."""
    assert float(estimators.mi_lower_bound(S3, name)) == pytest.approx(BY_HAND_3[name], abs=1e-6)


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_batch_of_one_raises(name):
    with pytest.raises(ValueError, match="needs at least 2 samples per batch: the negatives are "
                                         "the other samples of the batch"):
        estimators.mi_lower_bound(S[:1, :1], name)
    # A dynamic batch dimension (TF) cannot be checked at trace time (the model
    # guards it): tracing succeeds and a batch of 3 still gives the exact bound,
    # as it does under jax.jit.
    traced = compiled(lambda s: estimators.mi_lower_bound(s, name), S3)
    assert float(traced(S3)) == pytest.approx(BY_HAND_3[name], abs=1e-6)


@backends
def test_nwj_exact_up_to_high_scores():
    """E_J[T] - e^{-1} E_M[e^T] exactly, also where e^{T-1} is ~1e10."""
    shift = 25.0
    expected = (sum(POS) / 4 + shift
                - math.exp(shift - 1) * sum(math.exp(t) for t in NEG) / 4)
    assert float(estimators.nwj_lower_bound(S + shift)) == pytest.approx(expected, rel=1e-5)


@backends
def test_nwj_runaway_critic_is_finite_and_pulled_back():
    """Scores ~200: past the cap (log E_M[e^T] = 30) the term e^{lme - 1} goes on
    as e^29 (1 + lme - 30): finite, and the gradient still lowers the negatives."""
    value, grad = value_and_grad(estimators.nwj_lower_bound, S + 200.0)
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


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_jsd_dv_nwj_exclude_positives_infonce_only_as_numerator(name):
    """Changing a positive score must not change any negative term: raising the
    diagonal raises every bound; raising the off-diagonal lowers it."""
    base = float(estimators.mi_lower_bound(S, name))
    eye = np.eye(2, dtype=np.float32)[:, :, None]
    assert float(estimators.mi_lower_bound(S + 0.5 * eye, name)) > base
    assert float(estimators.mi_lower_bound(S + 0.5 * (1 - eye), name)) < base


@backends
def test_jsd_negatives_exclude_positives_exactly():
    """A huge positive score would dominate the negative term if it leaked in."""
    s = S.copy()
    s[0, 0, 0] = 1e4
    e_pos = (math.log(2) - 0.0 + sum(math.log(2) - sp(-t) for t in POS[1:])) / 4
    e_neg = sum(sp(t) - math.log(2) for t in NEG) / 4
    assert float(estimators.jsd_lower_bound(s)) == pytest.approx(e_pos - e_neg, abs=1e-5)


@backends
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


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_scores_stay_finite(name, scale):
    value, grad = value_and_grad(lambda s: estimators.mi_lower_bound(s, name), S * scale)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad))


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_float16_scores_give_float32_bounds(name):
    value = estimators.mi_lower_bound(keras.ops.convert_to_tensor(S, "float16"), name)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(float(estimators.mi_lower_bound(S, name)), abs=1e-3)


@backends
def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown estimator"):
        estimators.get_estimator("kl")


@backends
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_scores_of_another_rank_raise(name):
    with pytest.raises(ValueError, match=r"scores must have shape \[B, B, L\], got rank 2"):
        estimators.mi_lower_bound(S[:, :, 0], name)


@backends
def test_infonce_never_exceeds_log_candidates():
    s = np.full((8, 8, 1), -50.0, np.float32)
    s[np.arange(8), np.arange(8)] = 50.0  # a perfect critic
    assert float(estimators.infonce_lower_bound(s)) == pytest.approx(math.log(8), abs=1e-5)


@backends
@pytest.mark.parametrize("name", ["infonce_lower_bound", "kpair_triplet_loss"])
def test_infonce_has_no_b_l_bl_intermediate(name):
    """The negatives of global i are shared by its L locations: one log-sum-exp per row, so no tensor
    of the forward or backward pass is larger than the [B, B, L] scores (a per-(i, l) softmax over all
    B*L candidates would build [B, L, B*L], L times larger)."""
    batch, locations = 6, 10
    s = np.random.default_rng(0).normal(size=(batch, batch, locations)).astype(np.float32)
    ops = traced_ops(getattr(estimators, name), s, with_grad=True)
    sizes = [n for _, outputs in ops for n in outputs if n is not None]
    assert len(ops) > 10 and max(sizes) == batch * batch * locations


# MINE's moving average (Sec. 3.2) with its state outside (pure) and inside (keras.Variable).
S3_NEG_MEAN = sum(math.exp(t) for row in NEG3.values() for t in row) / 6  # batch_mean(e^T) of S3


@backends
def test_update_log_ema_and_bias_corrected_dv_by_hand():
    # ema = 0.9 * 2.0 + 0.1 * 5.0 = 2.3; -inf (no history) or decay 0: the batch value.
    assert float(estimators.update_log_ema(math.log(2.0), math.log(5.0), 0.9)) == pytest.approx(
        math.log(2.3), abs=1e-6)
    assert float(estimators.update_log_ema(-math.inf, math.log(5.0), 0.9)) == pytest.approx(math.log(5.0))
    assert float(estimators.update_log_ema(math.log(2.0), math.log(5.0), 0.0)) == pytest.approx(math.log(5.0))
    big = estimators.update_log_ema(1000.0, 1002.0, 0.5)  # no overflow
    assert float(big) == pytest.approx(1002.0 + math.log(0.5 + 0.5 * math.exp(-2.0)), abs=1e-3)
    bound, surrogate, new_log_ema = estimators.dv_bias_corrected(S3, math.log(4.0), 0.5)
    ema = 0.5 * 4.0 + 0.5 * S3_NEG_MEAN
    assert float(bound) == pytest.approx(BY_HAND_3["dv"], abs=1e-6)
    assert float(new_log_ema) == pytest.approx(math.log(ema), abs=1e-6)
    assert float(surrogate) == pytest.approx(sum(POS3) / 3 - S3_NEG_MEAN / ema, abs=1e-6)
    # Its gradient: the DV gradient with the batch denominator replaced by the average.
    _, grad = value_and_grad(lambda s: estimators.dv_bias_corrected(s, math.log(4.0), 0.5)[1], S3)
    assert grad[1, 1, 0] == pytest.approx(1 / 3)
    assert grad[0, 2, 0] == pytest.approx(-math.exp(-1.0) / 6 / ema, rel=1e-5)
    _, dv_grad = value_and_grad(estimators.dv_lower_bound, S3)
    _, decay0_grad = value_and_grad(lambda s: estimators.dv_bias_corrected(s, 7.0, 0.0)[1], S3)
    np.testing.assert_allclose(decay0_grad, dv_grad, atol=1e-7)


def _log_emas_by_hand(steps, decay):
    """log ema after each step of S3 + k (k = 0, 1, ...): batch_mean(e^T) = e^k S3_NEG_MEAN."""
    ema, out = None, []
    for k in range(steps):
        batch = math.exp(k) * S3_NEG_MEAN
        ema = batch if ema is None else decay * ema + (1 - decay) * batch
        out.append(math.log(ema))
    return out


@backends
def test_stateful_bias_corrected_dv_tracks_the_average():
    helper = estimators.BiasCorrectedDV(0.5)
    assert not helper.log_ema.trainable and float(helper.log_ema) == -math.inf
    expected = _log_emas_by_hand(3, 0.5)
    for k in range(3):
        bound, _ = helper(S3 + float(k))
        assert float(helper.log_ema) == pytest.approx(expected[k], abs=1e-5)
    assert float(bound) == pytest.approx(BY_HAND_3["dv"], abs=1e-5)  # DV is shift-invariant
    helper.reset()
    assert float(helper.log_ema) == -math.inf
    with pytest.raises(ValueError, match="decay must be in"):
        estimators.BiasCorrectedDV(1.0)


@backends
def test_stateful_bias_corrected_dv_state_stays_float32_under_mixed_precision():
    """Inside a layer under mixed_float16 Keras autocasts float variables it reads to float16; the EMA
    state is read in float32 (autocast=False), so the average keeps float32 precision."""

    class Step(keras.layers.Layer):
        def __init__(self):
            super().__init__(dtype="mixed_float16")
            self.dv = estimators.BiasCorrectedDV(0.5)

        def call(self, scores):
            return self.dv(scores)[0]

    step = Step()
    expected = _log_emas_by_hand(3, 0.5)
    for k in range(3):
        step(S3 + float(k))
        assert float(step.dv.log_ema) == pytest.approx(expected[k], abs=1e-6)


@backends
def test_compiled_step_carries_the_ema_state():
    """What a compiled training step does: TF assigns the variable inside tf.function (XLA too); a JAX
    step cannot assign inside jit, so it passes ``log_ema`` through dv_bias_corrected and stores the
    result outside.  Both give the hand-computed averages."""
    expected = _log_emas_by_hand(3, 0.9)
    if backend() == "tensorflow":
        import tensorflow as tf

        for jit_compile in (False, True):
            helper = estimators.BiasCorrectedDV(0.9)
            step = tf.function(lambda s: helper(s), jit_compile=jit_compile)
            for k in range(3):
                step(S3 + float(k))
                assert float(helper.log_ema) == pytest.approx(expected[k], abs=1e-5)
    else:
        import jax

        helper = estimators.BiasCorrectedDV(0.9)
        step = jax.jit(lambda s, log_ema: estimators.dv_bias_corrected(s, log_ema, 0.9))
        for k in range(3):
            _, _, new_log_ema = step(S3 + float(k), helper.log_ema.value)
            helper.log_ema.assign(new_log_ema)
            assert float(helper.log_ema) == pytest.approx(expected[k], abs=1e-5)


# ---- analytic Gaussian MI with a small trained critic ----------------------

@pytest.mark.parametrize("name", ["dv", "nwj"])
@pytest.mark.parametrize("true_mi", [0.5, 3.0])
def test_dv_nwj_within_15_percent_of_gaussian_mi(name, true_mi):
    from dim_keras.simulation import estimate_gaussian_mi, rho_for_mi

    result = estimate_gaussian_mi(name, rho=rho_for_mi(true_mi, 2), dim=2,
                                  batch_size=512, steps=600, seed=1)
    assert result["true_mi"] == pytest.approx(true_mi)
    print(f"{name}: estimate {result['estimate']:.3f} vs true {true_mi}")
    assert abs(result["estimate"] - true_mi) <= 0.15 * true_mi


def test_infonce_below_log_batch_and_near_min_of_mi_and_log_batch():
    from dim_keras.simulation import estimate_gaussian_mi, rho_for_mi

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
    from dim_keras.simulation import estimate_gaussian_mi

    values = [estimate_gaussian_mi("jsd", rho=rho, dim=2, batch_size=128, steps=200, seed=1)["estimate"]
              for rho in (0.0, 0.5, 0.8, 0.95)]
    print("jsd vs rho:", values)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert abs(values[0]) < 0.05


def test_gaussian_mi_formula():
    from dim_keras.simulation import gaussian_mi, rho_for_mi

    assert gaussian_mi(0.0, 3) == 0.0
    assert gaussian_mi(0.5, 2) == pytest.approx(-math.log(0.75))
    assert rho_for_mi(gaussian_mi(0.7, 5), 5) == pytest.approx(0.7)
