"""Known-answer tests for the invertible encoders (dim_keras.invertible)."""
import numpy as np
import pytest
import tensorflow as tf

import keras

import dim_keras
from dim_keras.invertible import AffineCoupling, RealNVP, make_permutations

DIM = 6
SCALES = ["tanh", "softplus", "none"]


def _perturb(layer, std=0.5, seed=1):
    """Random weights, so the flow is far from the identity."""
    rng = np.random.RandomState(seed)
    for w in layer.weights:
        w.assign(rng.normal(0.0, std, size=w.shape).astype(w.dtype))


def _x(n=16, dim=DIM, seed=2):
    return np.random.RandomState(seed).normal(size=(n, dim)).astype("float32")


def _small_flow(scale="tanh", dim=DIM, **kwargs):
    kwargs.setdefault("num_couplings", 4)
    kwargs.setdefault("hidden_units", (8, 8))
    flow = RealNVP(dim, scale=scale, seed=3, **kwargs)
    flow.build((None, dim))
    return flow


def _numerical_log_det(fn, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jac = tape.batch_jacobian(y, x).numpy().astype("float64")
    return np.linalg.slogdet(jac)[1]


def test_exported_lazily():
    assert dim_keras.RealNVP is RealNVP
    assert dim_keras.AffineCoupling is AffineCoupling


@pytest.mark.parametrize("scale", SCALES)
def test_coupling_inverse_and_log_det(scale):
    layer = AffineCoupling(hidden_units=(8, 8), scale=scale)
    x = _x()
    layer.build(x.shape)
    _perturb(layer)
    y = layer(x)
    assert not np.allclose(keras.ops.convert_to_numpy(y), x, atol=1e-2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y)[:, :DIM // 2], x[:, :DIM // 2])
    x_back = keras.ops.convert_to_numpy(layer.inverse(y))
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    ld = keras.ops.convert_to_numpy(layer.log_det_jacobian(x))
    assert ld.shape == (x.shape[0],)
    np.testing.assert_allclose(ld, _numerical_log_det(layer, x), atol=1e-4)
    if scale == "none":
        np.testing.assert_array_equal(ld, 0.0)


@pytest.mark.parametrize("scale", SCALES)
def test_flow_inverse_at_init_and_perturbed(scale):
    flow = _small_flow(scale)
    x = _x()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flow.inverse(flow(x))), x, atol=1e-5)
    _perturb(flow, std=0.3)
    y = keras.ops.convert_to_numpy(flow(x))
    assert not np.allclose(y, x, atol=1e-2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flow.inverse(y)), x, atol=1e-5)
    # forward(inverse(y)) == y too
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flow(flow.inverse(y))), y, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_flow_log_det_matches_numerical_jacobian(scale):
    flow = _small_flow(scale)
    _perturb(flow, std=0.3)
    x = _x()
    ld = keras.ops.convert_to_numpy(flow.log_det_jacobian(x))
    np.testing.assert_allclose(ld, _numerical_log_det(flow, x), atol=1e-4)
    if scale != "none":
        assert np.abs(ld).max() > 1e-2  # a non-trivial check
    y, ld2 = flow.forward_and_log_det(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ld2), ld, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(flow(x)),
                               atol=1e-6)


def test_zero_initialised_coupling_is_identity():
    layer = AffineCoupling(hidden_units=(8,), kernel_initializer="glorot_uniform",
                           output_initializer="zeros")
    x = _x()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.log_det_jacobian(x)), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.inverse(x)), x)


def test_zero_initialised_flow_is_a_permutation():
    flow = _small_flow(output_initializer="zeros", permutation="reverse", num_couplings=3)
    x = _x()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(flow(x)), x[:, ::-1])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(flow.log_det_jacobian(x)), 0.0)


def test_default_init_is_near_identity_coupling():
    layer = AffineCoupling(hidden_units=(16, 16))
    x = _x()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-3)


def test_permutations_alternate_halves():
    perms = make_permutations(DIM, 2, "reverse")
    first_half = set(range(DIM // 2))
    assert set(perms[0][: DIM // 2]).isdisjoint(first_half)
    random = make_permutations(392, 30, "random", seed=7)
    assert all(sorted(p) == list(range(392)) for p in random)
    np.testing.assert_array_equal(random[5], make_permutations(392, 30, "random", seed=7)[5])


@pytest.mark.parametrize("dim", [32, 392])
def test_paper_dimensions(dim):
    flow = RealNVP(dim, num_couplings=2, hidden_units=(16,), seed=0)
    x = _x(n=4, dim=dim)
    y = flow(x)
    assert tuple(y.shape) == (4, dim)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flow.inverse(y)), x, atol=1e-5)


def test_paper_default_settings():
    flow = RealNVP(392)
    assert flow.num_couplings == 30 and flow.hidden_units == (512, 512)
    assert flow.couplings[0].num_masked is None  # D // 2 once built


def test_coupling_get_config_round_trip():
    layer = AffineCoupling(hidden_units=(8, 4), scale="softplus", num_masked=2,
                           log_scale_bound=1.5, activation="tanh", name="c")
    x = _x()
    layer.build(x.shape)
    _perturb(layer)
    clone = AffineCoupling.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)),
                                  keras.ops.convert_to_numpy(layer(x)))
    generic = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(generic, AffineCoupling)


def test_flow_get_config_round_trip():
    flow = _small_flow("tanh")
    _perturb(flow, std=0.3)
    clone = RealNVP.from_config(flow.get_config())
    assert clone.get_config() == flow.get_config()
    clone.build((None, DIM))
    clone.set_weights(flow.get_weights())
    x = _x()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)),
                                  keras.ops.convert_to_numpy(flow(x)))


def test_seed_none_is_recorded():
    flow = RealNVP(DIM, num_couplings=2, hidden_units=(4,))
    assert isinstance(flow.get_config()["seed"], int)


@pytest.mark.parametrize("scale", ["tanh", "none"])
def test_keras_save_load_round_trip(tmp_path, scale):
    flow = _small_flow(scale)
    _perturb(flow, std=0.3)
    x = _x()
    path = str(tmp_path / "flow.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, RealNVP)
    for method in ("__call__", "inverse", "log_det_jacobian"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(getattr(loaded, method)(x)),
            keras.ops.convert_to_numpy(getattr(flow, method)(x)))


def test_bad_arguments():
    with pytest.raises(ValueError):
        AffineCoupling(scale="exp")
    with pytest.raises(ValueError):
        RealNVP(DIM, permutation="checkerboard")
    flow = _small_flow()
    with pytest.raises(ValueError):
        flow(_x(dim=DIM + 2))


@pytest.mark.parametrize("scale", SCALES)
def test_gradients_reach_every_weight_in_a_compiled_step(scale):
    flow = _small_flow(scale, num_couplings=2)
    x = tf.constant(_x())

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            y, ld = flow.forward_and_log_det(x)
            loss = tf.reduce_mean(tf.square(y)) - tf.reduce_mean(ld)
        return tape.gradient(loss, flow.trainable_variables)

    g = grads()
    assert len(g) == len(flow.trainable_variables) > 0
    assert all(gi is not None and np.isfinite(gi.numpy()).all() for gi in g)
