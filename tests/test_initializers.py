"""PyTorch's layer defaults on Keras layers (dim_keras.initializers) on every backend.

The full-model check (paper recipe, real fan-ins, variance) is tests/test_recipe.py's; this one runs on
TensorFlow and on JAX (``backends`` marker; CI's second leg) on a tiny encoder and critic."""
import numpy as np
import pytest

import dim_keras as dk
from backend_testing import to_numpy
from dim_keras.initializers import TORCH_BN_MOMENTUM, TORCH_NORM_EPSILON, apply_torch_layer_defaults

pytestmark = pytest.mark.backends


def test_torch_defaults_bounds_keep_list_seed_and_bn_momentum_in_the_call():
    encoder = dk.build_encoder("small", (8, 8, 3), widths=(4, 4, 4), fc_units=8, y_dim=4)
    critic = dk.EncodeAndDotCritic(8)
    critic(np.zeros((2, 4), np.float32), np.zeros((2, 4, 4, 4), np.float32))
    shortcut = to_numpy(critic.local_embedding.shortcut.kernel)
    assert apply_torch_layer_defaults(encoder, seed=3) is encoder
    apply_torch_layer_defaults(critic, seed=3)
    conv2 = to_numpy(encoder.get_layer("conv2_conv").kernel)  # 4x4x4 -> 4: fan_in 64
    assert np.abs(conv2).max() <= 1 / 8
    y_bias = to_numpy(encoder.get_layer("y").bias)  # fan_in 8; torch draws biases too (Keras: zeros)
    assert 0 < np.abs(y_bias).max() <= 1 / np.sqrt(8)
    np.testing.assert_array_equal(to_numpy(critic.local_embedding.shortcut.kernel), shortcut)  # kept
    assert critic.local_embedding.ln.epsilon == TORCH_NORM_EPSILON
    again = dk.build_encoder("small", (8, 8, 3), widths=(4, 4, 4), fc_units=8, y_dim=4)
    apply_torch_layer_defaults(again, seed=3)
    np.testing.assert_array_equal(to_numpy(again.get_layer("conv2_conv").kernel), conv2)
    # The new momentum is what the training call uses: from moving mean 0, one step moves it to
    # (1 - 0.9) * batch mean (Keras's 0.99 would give a tenth of that).
    bn = encoder.get_layer("conv1_bn")
    assert (bn.momentum, bn.epsilon) == (TORCH_BN_MOMENTUM, TORCH_NORM_EPSILON)
    images = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    conv1 = encoder.get_layer("conv1_conv")
    batch_mean = to_numpy(conv1(encoder.get_layer("to_unit_range")(images))).mean(axis=(0, 1, 2))
    encoder(images, training=True)
    np.testing.assert_allclose(to_numpy(bn.moving_mean), (1 - TORCH_BN_MOMENTUM) * batch_mean, rtol=1e-4,
                               atol=1e-6)
