"""MINE's information bottleneck (dim_keras.bottleneck, dim_keras.runs.bottleneck, apps/mine_bottleneck.py):
which loss reaches which network, the encoders' noise, MINE's estimate on analytic Gaussians, the run and the
command line."""
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from dim_keras import bottleneck as bn
from dim_keras import estimators
from dim_keras.runs import bottleneck as runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "mine_bottleneck.py")


def _tiny(beta, noise="none", input_dim=6, seed=0, **kwargs):
    return bn.build_bottleneck(input_dim, beta, noise=noise, units=4, hidden_units=(8,), statistics_units=(8,),
                               statistics_input_noise=0.0, seed=seed, **kwargs)


def _gradients(loss_fn, variables):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.fixture(scope="module")
def trained_tiny_weights():
    """The weights of a tiny deterministic model whose T has learned one batch (so that its DV bound there is
    clearly positive), and that batch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    keras.utils.set_random_seed(0)
    model = _tiny(0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), statistics_optimizer=keras.optimizers.Adam(0.02))
    step = tf.function(model.train_step)
    for _ in range(60):
        step((x, y))
    return model.get_weights(), x, y


def _trained_tiny(trained_tiny_weights):
    """A copy of that model compiled with SGD (lr 0.05) for both players, and the batch."""
    weights, x, y = trained_tiny_weights
    model = _tiny(0.0)
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.05), statistics_optimizer=keras.optimizers.SGD(0.05))
    return model, x, y


def _one_step(model, x, y, beta):
    """``(steps, expected encoder, cross-entropy-only, expected statistics gradients, DV bound)`` of one
    train_step from no EMA history (so the bias-corrected gradient is DV's own), computed independently."""
    model.beta = beta
    model.dv_log_ema.assign(-math.inf)
    encoder_vars = model.encoder.trainable_variables + model.classifier.trainable_variables
    statistics_vars = model.statistics.trainable_variables
    before = [v.numpy() for v in encoder_vars + statistics_vars]

    def cross_entropy():
        logits = model.classifier(model.encoder(x))
        return ops.mean(ops.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def dv():
        return estimators.dv_lower_bound(model.statistics(x, model.encoder(x)))

    bound = float(dv())
    expected_encoder = _gradients(lambda: cross_entropy() + beta * ops.relu(dv()), encoder_vars)
    ce_only = _gradients(cross_entropy, encoder_vars)
    expected_statistics = _gradients(lambda: -dv(), statistics_vars)
    model.train_step((x, y))
    after = [v.numpy() for v in encoder_vars + statistics_vars]
    steps = [(b - a) / 0.05 for b, a in zip(before, after)]  # SGD: the gradient
    return steps, expected_encoder, ce_only, expected_statistics, bound


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_one_step_moves_encoder_by_ib_gradient_and_statistics_by_dv_gradient(beta, trained_tiny_weights):
    model, x, y = _trained_tiny(trained_tiny_weights)
    steps, expected_encoder, ce_only, expected_statistics, bound = _one_step(model, x, y, beta)
    assert bound > 0.2
    for got, want in zip(steps, expected_encoder + expected_statistics):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    differs = max(float(np.max(np.abs(g - c))) for g, c in zip(steps, ce_only))
    assert (differs < 1e-5) if beta == 0.0 else (differs > 1e-3)  # beta = 0: the cross-entropy step
    assert np.isfinite(float(model.dv_log_ema))  # the moving average started


def test_encoder_ignores_a_negative_bound_which_the_statistics_network_still_ascends(trained_tiny_weights):
    model, x, y = _trained_tiny(trained_tiny_weights)
    score = model.statistics.score
    score.kernel.assign(-score.kernel.numpy())  # T -> -T: joint pairs now score low, the bound is negative
    score.bias.assign(-score.bias.numpy())
    steps, expected_encoder, ce_only, expected_statistics, bound = _one_step(model, x, y, 5.0)
    assert bound < -0.2
    for got, want in zip(steps, ce_only + expected_statistics):  # max(I, 0): no MI gradient for the encoder
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_deterministic_encoder_is_noise_free_and_the_stochastic_ones_are_not():
    x = np.random.default_rng(0).uniform(size=(64, 6)).astype(np.float32)
    deterministic = bn.StochasticEncoder(4, (8,), noise="none", seed=0)
    np.testing.assert_array_equal(deterministic(x).numpy(), deterministic(x).numpy())
    np.testing.assert_array_equal(deterministic(x).numpy(), deterministic.mean(x).numpy())
    for noise in ("gaussian", "additive", "propagated"):
        encoder = bn.StochasticEncoder(4, (8,), noise=noise, seed=0)
        first, second = encoder(x).numpy(), encoder(x).numpy()
        assert first.shape == (64, 4) and np.max(np.abs(first - second)) > 1e-4, noise
        np.testing.assert_array_equal(encoder.mean(x).numpy(), encoder.mean(x).numpy())


def test_gaussian_encoder_std_is_softplus_minus_five_and_additive_noise_is_sigma():
    x = np.random.default_rng(0).uniform(size=(4000, 3)).astype(np.float32)
    gaussian = bn.StochasticEncoder(3, (), noise="gaussian", seed=1)
    gaussian.build((None, 3))
    kernel = np.zeros((3, 6), np.float32)
    kernel[:, :3] = np.eye(3)  # mu(x) = x; the std half is 0, so sigma = softplus(0 - 5)
    gaussian.out.kernel.assign(kernel)
    gaussian.out.bias.assign(np.zeros(6, np.float32))
    noise = gaussian(x).numpy() - x
    assert np.std(noise) == pytest.approx(math.log1p(math.exp(-5.0)), rel=0.05)  # 0.0067: nearly deterministic
    additive = bn.StochasticEncoder(3, (), noise="additive", sigma=0.3, seed=1)
    additive.build((None, 3))
    additive.out.kernel.assign(np.eye(3, dtype=np.float32))
    additive.out.bias.assign(np.zeros(3, np.float32))
    assert np.std(additive(x).numpy() - x) == pytest.approx(0.3, rel=0.05)


def _gaussian_channel(rho, dim, seed, jit_compile):
    """A frozen linear Gaussian encoder z = rho x + sqrt(1 - rho^2) eps (mean kernel rho I, std bias set)."""
    model = bn.build_bottleneck(dim, 0.0, noise="gaussian", units=dim, hidden_units=(), statistics_units=(64,),
                                statistics_input_noise=0.0, seed=seed)
    out = model.encoder.out
    kernel = np.zeros((dim, 2 * dim), np.float32)
    kernel[:, :dim] = rho * np.eye(dim)
    std = math.sqrt(1.0 - rho ** 2)
    bias = np.zeros(2 * dim, np.float32)
    bias[dim:] = bn.GAUSSIAN_STD_OFFSET + math.log(math.expm1(std))  # softplus(b - 5) = std
    out.kernel.assign(kernel)
    out.bias.assign(bias)
    model.encoder.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), statistics_optimizer=keras.optimizers.Adam(3e-3),
                  jit_compile=jit_compile)
    return model


@pytest.mark.parametrize("rho, jit_compile", [(0.0, False), (0.8, True)])  # XLA once (the app's setting)
def test_statistics_network_estimates_the_gaussian_channels_mi(rho, jit_compile):
    dim, batch = 2, 128
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 40, dim)).astype(np.float32)
    y = rng.integers(0, 10, size=len(x))
    model = _gaussian_channel(rho, dim, seed=0, jit_compile=jit_compile)
    model.fit(bn.batches(x, y, batch, seed=0), steps_per_epoch=400, epochs=1, verbose=0)
    held_out = rng.normal(size=(batch * 20, dim)).astype(np.float32)
    estimate = bn.mi_estimate(model, held_out, np.zeros(len(held_out), np.int64), batch)
    true_mi = -dim / 2 * math.log(1 - rho ** 2)  # 0 and 1.02 nats
    assert abs(estimate - true_mi) < 0.15 + 0.15 * true_mi, (estimate, true_mi)


def test_label_information_bound_of_a_perfect_and_a_blind_decoder():
    y = np.repeat(np.arange(10), 5)
    x = np.eye(10, dtype=np.float32)[y]
    model = bn.build_bottleneck(10, 0.0, noise="none", units=10, hidden_units=())
    model.encoder.out.kernel.assign(np.eye(10, dtype=np.float32))
    model.encoder.out.bias.assign(np.zeros(10, np.float32))
    model.classifier.kernel.assign(50.0 * np.eye(10, dtype=np.float32))
    model.classifier.bias.assign(np.zeros(10, np.float32))
    assert bn.label_information_bound(model, x, y) == pytest.approx(math.log(10), abs=1e-4)
    assert bn.test_error(model, x, y) == 0.0
    model.classifier.kernel.assign(np.zeros((10, 10), np.float32))  # uniform prediction: H(Y) - log 10 = 0
    assert bn.label_information_bound(model, x, y) == pytest.approx(0.0, abs=1e-5)


def test_reinitialize_restarts_training_exactly_like_a_fresh_model():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(16, 6)).astype(np.float32)
    y = rng.integers(0, 10, size=16)

    def fresh(seed, beta):
        keras.utils.set_random_seed(seed)
        return _tiny(beta, noise="gaussian", seed=seed)

    def train(model):
        for _ in range(3):
            logs = model.train_step((x, y))
        return {name: float(value) for name, value in logs.items()}, [w.numpy() for w in model.weights]

    reference = fresh(3, 0.5)
    reference.compile(optimizer=keras.optimizers.Adam(0.01), statistics_optimizer=keras.optimizers.Adam(0.01))
    expected_logs, expected_weights = train(reference)
    reused = fresh(1, 0.0)
    reused.compile(optimizer=keras.optimizers.Adam(0.01), statistics_optimizer=keras.optimizers.Adam(0.01))
    train(reused)  # optimizer moments, steps, the EMA and the noise state all move
    reused.reinitialize(fresh(3, 0.5))
    assert reused.beta == 0.5 and float(reused.dv_log_ema) == -math.inf
    reused.reset_metrics()
    logs, weights = train(reused)
    for name, value in expected_logs.items():
        assert logs[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for got, want in zip(weights, expected_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_flat_digits_and_mnist_are_flat_pixels_in_unit_range(tmp_path):
    x, y = bn.flat_digits("digits", "test")
    assert x.shape == (359, 64) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert y.dtype == np.int64 and set(y) == set(range(10))
    from official_formats import write_mnist
    images, labels = write_mnist(tmp_path, np.random.default_rng(0), n_train=5, n_test=3)
    x, y = bn.flat_digits("mnist", "train", str(tmp_path))
    np.testing.assert_allclose(x, images["train"].reshape(5, 784) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels["train"])


def test_epochs_cover_exactly_the_steps():
    for steps in (1, 7, 10, 25, 300):
        epochs, per_epoch = runs.epochs_of(steps)
        assert epochs * per_epoch == steps and epochs >= min(10, steps)
    assert runs.epochs_of(300) == (10, 30)


@pytest.mark.parametrize("args, message", [
    (["--betas=0,-1"], "--betas must be >= 0.0"),
    (["--betas=0.1,0.1"], "--betas lists a value twice"),
    (["--noise=none"], "--noise=none is the deterministic baseline"),
    (["--noise=laplace"], "--noise: unknown value 'laplace'"),
    (["--dataset=cifar10"], "--dataset: unknown value 'cifar10'"),
    (["--steps=0"], "--steps must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run([sys.executable, APP, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_app_end_to_end_writes_json_and_png(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, APP, "--steps=2", "--seeds=2", "--betas=0,0.5", "--batch_size=32", "--hidden_units=16",
         "--representation_dim=4", "--statistics_units=8", "--test_samples=2", "--nojit_compile", f"--output_dir={out}", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1])
    assert set(payload["results"]) == {"deterministic", "beta=0", "beta=0.5"}
    deterministic = payload["results"]["deterministic"]
    assert deterministic["noise"] == "none" and deterministic["beta"] == 0.0
    for row in payload["results"].values():
        assert set(row) >= {"noise", "beta", "test_error", "test_mi", "label_information", "runs"}
        errors = np.array(row["test_error"]["values"]) * 359  # fractions of the 359 test digits
        assert len(errors) == 2 and np.allclose(errors, np.round(errors), atol=1e-6)
        assert row["test_error"]["mean"] == pytest.approx(np.mean(row["test_error"]["values"]))
    assert any(line.startswith("| beta=0.5 |") for line in lines)
    with open(out / "mine_bottleneck.png", "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "mine_bottleneck.json").read_text())
    assert saved["results"]["beta=0.5"]["test_error"] == payload["results"]["beta=0.5"]["test_error"]
    assert sorted(os.listdir(out)) == ["mine_bottleneck.json", "mine_bottleneck.png"]  # no temporaries
