"""Encoders: the paper's feature taps and shapes (App. A.2).

Tests marked ``backends`` run on TensorFlow and on JAX (CI's second leg, ``KERAS_BACKEND=jax``)."""
import os
import subprocess
import sys
import textwrap

import keras
import pytest

import dim_keras as dk
from dim_keras import encoders

backends = pytest.mark.backends


def shapes(model):
    return {k: tuple(v.shape[1:]) for k, v in model.output.items()}


@backends
def test_dcgan_32x32_matches_table1_encoder():
    model = dk.build_encoder("dcgan", (32, 32, 3))
    assert shapes(model) == {"local": (8, 8, 128), "conv": (4, 4, 256), "fc": (1024,), "y": (64,)}
    conv1 = model.get_layer("conv1_conv")
    assert conv1.kernel_size == (4, 4) and conv1.strides == (2, 2)
    # The local map is taken after BN + ReLU.
    assert model.output["local"] is model.get_layer("conv2_relu").output
    assert model.get_layer("y").activation.__name__ == "linear"


@backends
def test_alexnet_64x64_matches_table2_encoder():
    model = dk.build_encoder("alexnet", (64, 64, 3))
    assert shapes(model) == {"local": (15, 15, 384), "conv": (7, 7, 192), "fc": (4096,), "y": (64,)}
    assert model.get_layer("conv1_conv").kernel_size == (3, 3)
    assert model.get_layer("fc2_dense").units == 4096


@backends
def test_small_encoder_and_auto_selection():
    assert shapes(dk.build_encoder("auto", (28, 28, 3)))["local"] == (14, 14, 64)
    assert dk.build_encoder("auto", (8, 8, 3)).output["y"].shape[-1] == 64
    assert encoders.auto_encoder_name(32) == "dcgan"
    assert encoders.auto_encoder_name(64) == "alexnet"


@backends
def test_configurable_widths_y_and_local_layer():
    model = dk.build_encoder("dcgan", (32, 32, 3), y_dim=16, widths=(8, 16, 32),
                             fc_units=64, local_layer=1)
    assert shapes(model) == {"local": (16, 16, 8), "conv": (4, 4, 32), "fc": (64,), "y": (16,)}


@backends
@pytest.mark.parametrize("name,shape", [("dcgan", (30, 30, 3)), ("dcgan", (8, 8, 3)),
                                        ("alexnet", (16, 16, 3)), ("small", (64, 64, 3)),
                                        ("dcgan", (32, 32, 1))])
def test_sizes_an_encoder_cannot_take(name, shape):
    with pytest.raises(ValueError):
        dk.build_encoder(name, shape)


@backends
def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"):
        dk.build_encoder("resnet", (32, 32, 3))


@backends
def test_synchronized_bn_is_tensorflow_only():
    """``synchronized_bn`` asks tf.distribute for cross-replica BN statistics.  Keras refuses the flag on
    other backends, and JAX does not need it (next test), so there the encoder builds with plain BN."""
    model = dk.build_encoder("small", (8, 8, 3), widths=(4, 4, 4), fc_units=8, y_dim=4, synchronized_bn=True)
    flags = {layer.synchronized for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert flags == {keras.backend.backend() == "tensorflow"}


_GLOBAL_BN_ON_TWO_JAX_DEVICES = textwrap.dedent("""
    import jax, keras, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from dim_keras import encoders
    assert len(jax.devices()) == 2
    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    x[4:] += 1.0  # the two devices' halves have different statistics

    def bn_moving_mean(batch, distribution=None):
        keras.utils.set_random_seed(0)  # the same initial weights every time
        build = lambda: encoders.build_encoder("small", (8, 8, 3), widths=(4, 4, 4), fc_units=8, y_dim=4,
                                               synchronized_bn=True)
        if distribution is None:
            model = build()
        else:
            with distribution.scope():
                model = build()
            batch = jax.device_put(batch, NamedSharding(distribution.device_mesh.backend_mesh,
                                                        PartitionSpec("batch")))
            assert len(batch.sharding.device_set) == 2
        model(batch, training=True)
        return np.asarray(model.get_layer("conv1_bn").moving_mean.value)

    one_device = bn_moving_mean(x)
    two_devices = bn_moving_mean(x, keras.distribution.DataParallel(devices=jax.devices()))
    first_half = bn_moving_mean(x[:4])
    np.testing.assert_allclose(two_devices, one_device, atol=1e-7)
    assert np.abs(first_half - one_device).max() > 1e-3  # per-device statistics would be told apart
""")


def test_jax_data_parallel_bn_uses_the_global_batch():
    """What ``synchronized_bn`` buys on TF holds on JAX without it: under ``keras.distribution.DataParallel``
    over two (virtual CPU) devices, the encoder's BN moving mean after a training call on a batch split across
    the devices equals the one-device value of the whole batch, not of a device's half.  A fresh process,
    since the device count is fixed when JAX starts."""
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run([sys.executable, "-c", _GLOBAL_BN_ON_TWO_JAX_DEVICES], env=env,
                            capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-3000:]
