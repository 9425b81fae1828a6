"""Tschannen et al. Sec. 3.1 in apps/mi_lab.py: the residual MLP and the Jacobian's condition number, coupled
noise, the adversarial game of App. B, RealNVP's inverse after training, and the invertible experiment end to
end (tiny sizes; the real runs are in docs/MI_LAB.md)."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from official_formats import WITHOUT_TENSORFLOW

from dim_keras.adversarial_invertible import AdversarialInvertible, uniform_cross_entropy
from dim_keras.config import MILabConfig, validate
from dim_keras.invertible import RealNVP
from dim_keras.multiview import (CoupledNoiseTwoViewInfoMax, ResidualMLP, build_view_encoder,
                                 jacobian_condition_numbers, load_views)
from dim_keras.runs.mi_lab import conditioning, invertible

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "mi_lab.py")


# ------------------------------------------------------------------------- residual MLP, condition numbers
def test_residual_mlp_with_zero_weights_is_the_identity_with_condition_number_one():
    encoder = build_view_encoder("residual_mlp", 6)
    assert isinstance(encoder, ResidualMLP) and len(encoder.residual_layers) == 5  # 4 hidden + output
    encoder.build((None, 6))
    encoder.set_weights([np.zeros_like(w) for w in encoder.get_weights()])
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(encoder(x).numpy(), x)
    np.testing.assert_array_equal(jacobian_condition_numbers(encoder, x), np.ones(5))


def test_residual_mlp_starts_close_to_the_identity_and_can_be_made_singular():
    encoder = ResidualMLP(4, kernel_stddev=1e-4)
    encoder.build((None, 4))
    x = np.random.default_rng(1).uniform(size=(3, 4)).astype(np.float32)
    assert np.max(np.abs(encoder(x).numpy() - x)) < 1e-3
    assert np.all(jacobian_condition_numbers(encoder, x) < 1.01)
    # The output layer's skip: x + W x with W = -e_1 e_1^T zeroes the first coordinate, a singular Jacobian.
    weights = [np.zeros_like(w) for w in encoder.get_weights()]
    weights[-2][0, 0] = -1.0
    encoder.set_weights(weights)
    assert np.all(encoder(x).numpy()[:, 0] == 0)
    assert np.all(np.isinf(jacobian_condition_numbers(encoder, x)))


def test_condition_number_of_a_known_linear_map():
    x = np.random.default_rng(2).normal(size=(4, 2)).astype(np.float32)
    np.testing.assert_array_equal(jacobian_condition_numbers(lambda v: v * tf.constant([1.0, 10.0]), x),
                                  np.full(4, 10.0))
    # A rotation times diag(2, 1/2): singular values 2 and 1/2, condition number 4; not batch-diagonal.
    c, s = math.cos(0.3), math.sin(0.3)
    matrix = tf.constant([[2 * c, 2 * s], [-0.5 * s, 0.5 * c]])
    np.testing.assert_allclose(jacobian_condition_numbers(lambda v: tf.matmul(v, matrix), x), 4.0, rtol=1e-6)


def test_pooled_percentiles_pool_the_runs():
    runs = [[{"step": 0, "log_condition": list(range(0, 50))}, {"step": 5, "log_condition": [1.0] * 50}],
            [{"step": 0, "log_condition": list(range(50, 101))}, {"step": 5, "log_condition": [3.0] * 51}]]
    steps, bands = conditioning.pooled_percentiles(runs)
    assert steps == [0, 5] and bands.shape == (6, 2)
    np.testing.assert_allclose(bands[:, 0], [0, 20, 40, 60, 80, 100])  # 0..100 pooled
    np.testing.assert_allclose(bands[[0, -1], 1], [1.0, 3.0])


def test_coupled_noise_is_the_same_vector_on_both_views():
    model = CoupledNoiseTwoViewInfoMax(ResidualMLP(8), ResidualMLP(8), _bilinear(), "infonce", noise_std=0.05,
                                       seed=3)
    top, bottom = np.zeros((4000, 8), np.float32), np.ones((4000, 8), np.float32)
    noisy_top, noisy_bottom = (v.numpy() for v in model._views((top, bottom)))
    np.testing.assert_allclose(noisy_bottom - 1.0, noisy_top, atol=1e-6)
    assert abs(np.std(noisy_top) - 0.05) < 0.002 and abs(np.mean(noisy_top)) < 0.002
    with pytest.raises(ValueError, match="same width"):
        model.build(((None, 8), (None, 9)))


def _bilinear():
    from dim_keras.critics import BilinearCritic
    return BilinearCritic()


# ------------------------------------------------------------------------------------------ adversarial
def test_uniform_cross_entropy_by_hand():
    logits = np.array([[0.0, 0.0, 0.0], [math.log(1), math.log(2), math.log(3)]], np.float32)
    # Row 0: softmax uniform, -(1/3) * 3 log(1/3) = log 3.  Row 1: softmax (1, 2, 3) / 6, so
    # -(1/3) (log 1/6 + log 2/6 + log 3/6) = log 6 - (1/3) log 6 = (2/3) log 6.
    expected = (math.log(3) + 2 / 3 * math.log(6)) / 2
    assert float(uniform_cross_entropy(logits)) == pytest.approx(expected, rel=1e-6)


def test_adversarial_losses_and_update_counts():
    identity = ResidualMLP(3)  # with zero weights: exactly the identity, yet trainable
    identity.build((None, 3))
    identity.set_weights([np.zeros_like(w) for w in identity.get_weights()])
    model = AdversarialInvertible(identity, num_classes=3, classifier_steps=4)
    model.build((None, 3))
    model.compile()
    kernel = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
    model.classifier.set_weights([kernel, np.zeros(3, np.float32)])
    x = np.array([[0.0, 0.0, 0.0], [0.0, math.log(2) / 2, math.log(3) / 3]], np.float32)
    labels = np.array([0, 2])
    # identity encoder: logits = x @ kernel = the rows of test_uniform_cross_entropy_by_hand.
    logs = model.test_step((tf.constant(x), tf.constant(labels)))
    assert float(logs["encoder_loss"]) == pytest.approx((math.log(3) + 2 / 3 * math.log(6)) / 2, rel=1e-5)
    classifier_loss = (-math.log(1 / 3) - math.log(3 / 6)) / 2  # the true labels' softmax probabilities
    assert float(logs["classifier_loss"]) == pytest.approx(classifier_loss, rel=1e-5)

    # One round: 4 classifier updates on 4 batches, then 1 encoder update on a 5th.
    encoder_before = [w.copy() for w in model.encoder.get_weights()]
    batch = np.random.default_rng(4).uniform(size=(5 * 6, 3)).astype(np.float32)
    model.train_step((tf.constant(batch), tf.constant(np.arange(30) % 3)))
    assert int(model.classifier_optimizer.iterations) == 4 and int(model.encoder_optimizer.iterations) == 1
    assert any(np.any(a != b) for a, b in zip(model.encoder.get_weights(), encoder_before))
    # The warm-up trains the classifier alone.
    encoder_before = [w.copy() for w in model.encoder.get_weights()]
    warm = tf.data.Dataset.from_tensor_slices((batch, np.arange(30) % 3)).repeat().batch(6)
    model.warm_up(warm, 7)
    assert int(model.classifier_optimizer.iterations) == 11 and int(model.encoder_optimizer.iterations) == 1
    assert all(np.array_equal(a, b) for a, b in zip(model.encoder.get_weights(), encoder_before))


def test_adversarial_players_descend_their_own_losses():
    # Plain SGD with a small step: each update must lower its own player's loss on the batch it saw (a sign
    # error, e.g. the encoder ascending the uniform cross-entropy, would raise it).
    encoder = ResidualMLP(3, kernel_stddev=0.3)
    encoder.build((None, 3))
    model = AdversarialInvertible(encoder, num_classes=3, classifier_steps=1)
    model.build((None, 3))
    model.compile(classifier_optimizer=keras.optimizers.SGD(0.05), encoder_optimizer=keras.optimizers.SGD(0.05))
    model.classifier.set_weights([np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -1.0], [1.0, 0.0, 2.0]], np.float32),
                                  np.zeros(3, np.float32)])
    x = tf.constant(np.random.default_rng(5).uniform(size=(12, 3)).astype(np.float32))
    labels = tf.constant(np.arange(12) % 3)

    def classifier_loss():
        logits = model.classifier(model.encoder(x))
        return float(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)))

    before = classifier_loss()
    model._classifier_update(model.encoder(x), labels)
    assert classifier_loss() < before
    before = float(uniform_cross_entropy(model.classifier(model.encoder(x))))
    model._encoder_update(x)
    assert float(uniform_cross_entropy(model.classifier(model.encoder(x)))) < before


# ------------------------------------------------------------------------------------------- invertible
def test_realnvp_stays_invertible_after_training_steps():
    config = validate(MILabConfig(experiment="invertible", realnvp_couplings=3, realnvp_hidden_units=(16, 16),
                                  learning_rate=3e-2))
    train = load_views("digits", "train")
    model = invertible.build_invertible_model(config, 32, 32, "infonce", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=False)  # no XLA: quicker here
    data = tf.data.Dataset.from_tensor_slices((train.top, train.bottom)).repeat().batch(128)
    x = train.top[:256]
    start = model.encoder_top(x).numpy()
    model.fit(data, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)
    moved = np.max(np.abs(model.encoder_top(x).numpy() - start))
    assert moved > 1e-2  # training changed g1's function, not only its weights
    assert invertible.inverse_error(model.encoder_top, x) < 1e-5


def test_invertible_app_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, APP, "invertible", "--steps=4", "--eval_every=2", "--seeds=1", "--estimators=infonce",
         "--realnvp_couplings=1", "--realnvp_hidden_units=4", "--probe_examples=300", f"--output_dir={tmp_path}",
         "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["experiment"] == "invertible" and payload["steps"] == 4
    rows = payload["runs"]["I_NCE"][0]
    assert [row["step"] for row in rows] == [0, 2, 4]
    assert set(rows[0]) == {"step", "train_mi", "test_mi", "accuracy", "inverse_error", "relative_change"}
    assert payload["max_inverse_error"] < 1e-5
    assert set(payload["final"]["I_NCE"]) == {"test_mi", "accuracy", "inverse_error", "relative_change"}
    with open(tmp_path / "invertible.json") as stream:
        assert json.load(stream)["runs"] == payload["runs"]
    with open(tmp_path / "invertible.png", "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "claim (I_NCE" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["adversarial", "--encoder_learning_rate=0"], "--encoder_learning_rate must be > 0"),
    (["invertible", "--realnvp_hidden_units=0"], "--realnvp_hidden_units must be >= 1"),
    (["conditioning", "--noise_std=-1"], "--noise_std must be >= 0"),
])
def test_bad_flags_are_one_line_before_tensorflow(args, message):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_probe_noise_is_fixed_per_example():
    x = np.random.default_rng(5).uniform(size=(300, 8)).astype(np.float32)
    noise = conditioning.example_noise(x, 0.05, seed=1)
    np.testing.assert_array_equal(conditioning.example_noise(x[100:200], 0.05, seed=1), noise[100:200])
    assert not np.any(conditioning.example_noise(x, 0.05, seed=2) == noise)
    assert abs(np.std(noise) - 0.05) < 0.003
    noisy_pixels = conditioning.NoisyRepresentation(None, 0.05, seed=1)
    np.testing.assert_array_equal(noisy_pixels(x), x + noise)
