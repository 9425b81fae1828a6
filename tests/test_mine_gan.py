"""dim_keras.mine_gan (MINE Sec. 5.1, GAN + MINE on 25 Gaussians) and apps/mine_gan.py: known answers."""
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

from dim_keras import estimators
from dim_keras import mine_gan as mg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "mine_gan.py")


# ---------------------------------------------------------------------- data
def test_grid_is_5x5_with_spacing_2_centred_at_0():
    centers = mg.grid_centers()
    assert centers.shape == (25, 2) and centers.dtype == np.float32
    assert sorted(set(centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert sorted(set(centers[:, 1].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in centers.tolist()}) == 25
    np.testing.assert_array_equal(centers[7], [-2.0, 0.0])  # row-major: (x[7 // 5], x[7 % 5])


def test_sampler_has_equal_weights_and_std_0_05():
    samples, modes = mg.sample_25_gaussians(50_000, seed=1, return_modes=True)
    assert samples.shape == (50_000, 2) and samples.dtype == np.float32
    residual = samples - mg.grid_centers()[modes]
    assert np.std(residual) == pytest.approx(0.05, rel=0.02)
    assert np.abs(residual.mean(axis=0)).max() < 0.002
    frequencies = np.bincount(modes, minlength=25) / len(modes)
    assert np.abs(frequencies - 0.04).max() < 0.005  # 5 sigma of a binomial(50k, 0.04) is ~0.0044
    # Real data: every mode covered, and within 3 std of its mode with probability 1 - exp(-9/2) (2-D Rayleigh).
    coverage = mg.mode_coverage(samples)
    assert coverage["covered_modes"] == 25
    assert coverage["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.002)


# ------------------------------------------------------------------ measures
def test_mode_coverage_of_hand_made_samples():
    std = 0.05
    c = mg.grid_centers()
    on_modes = np.concatenate([np.repeat(c[[0]], 40, 0), np.repeat(c[[12]], 30, 0), np.repeat(c[[24]], 20, 0)])
    inside = c[[12]] + [[2.9 * std, 0.0]] * np.ones((5, 1))  # within 3 std of mode 12
    outside = c[[3]] + [[0.0, 3.1 * std]] * np.ones((4, 1))  # nearest mode 3, but not within 3 std
    between = np.array([[1.0, 1.0], [-3.0, 3.0]])  # halfway between modes
    far = np.array([[10.0, 10.0]])
    samples = np.concatenate([on_modes, inside, outside, between, far])
    coverage = mg.mode_coverage(samples, std=std)
    assert coverage["covered_modes"] == 3
    assert coverage["high_quality_fraction"] == pytest.approx(95 / 102)
    counts = np.zeros(25, int)
    counts[[0, 12, 24]] = [40, 35, 20]
    assert coverage["counts"] == counts.tolist()
    assert mg.mode_coverage(samples, std=std, min_count=21)["covered_modes"] == 2
    assert mg.mode_coverage(samples, std=std, num_std=3.2)["covered_modes"] == 4  # mode 3 gets its 4 points


def test_mode_coverage_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        mg.mode_coverage(np.zeros((4, 3)))


# ------------------------------------------------------------------ clipping
def test_adaptive_clip_keeps_direction_and_caps_norm_at_gan_gradient():
    g_u = [tf.constant([3.0, 0.0]), tf.constant([[0.0]])]  # ||g_u|| = 3
    big = [tf.constant([0.0, 6.0]), tf.constant([[8.0]])]  # ||g_m|| = 10 -> scaled to 3
    clipped = mg.adaptive_clip(g_u, big)
    np.testing.assert_allclose(clipped[0], [0.0, 1.8], atol=1e-6)
    np.testing.assert_allclose(clipped[1], [[2.4]], atol=1e-6)
    small = [tf.constant([0.0, 1.0]), tf.constant([[0.0]])]  # ||g_m|| = 1 < 3: unchanged
    np.testing.assert_allclose(mg.adaptive_clip(g_u, small)[0], [0.0, 1.0])
    zero = [tf.zeros(2), tf.zeros((1, 1))]
    assert all(np.all(np.asarray(g) == 0) for g in mg.adaptive_clip(g_u, zero))


# --------------------------------------------------------------------- model
def _tiny(beta, seed=0, **kwargs):
    return mg.build_mine_gan(beta=beta, noise_dim=2, code_dim=2, generator_units=(8, 8),
                             discriminator_units=(8, 8), statistics_units=(8, 8), seed=seed, **kwargs)


def test_beta_zero_gives_the_plain_gan_generator_gradient_and_beta_one_adds_the_clipped_mi_gradient():
    plain = _tiny(0.0)
    with_mine = mg.MineGAN(plain.generator, plain.discriminator, mg.build_statistics_network((8, 8), code_dim=2),
                           noise_dim=2, code_dim=2, beta=1.0)
    z = tf.random.stateless_normal((16, 4), seed=(1, 2))
    variables = plain.generator.trainable_variables
    with tf.GradientTape() as tape:  # the non-saturating GAN loss, by hand
        loss = tf.reduce_mean(tf.nn.softplus(-plain.discriminator(plain.generator(z, training=True))))
    expected = tape.gradient(loss, variables)

    gradients, statistics_gradients, gan_loss, bound, _ = plain.generator_gradients(z)
    assert statistics_gradients is None and float(bound) == 0.0
    assert float(gan_loss) == pytest.approx(float(loss), rel=1e-6)
    for got, want in zip(gradients, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    gradients, statistics_gradients, _, bound, new_log_ema = with_mine.generator_gradients(z)
    assert len(statistics_gradients) == len(with_mine.statistics_network.trainable_variables)
    assert math.isfinite(float(bound)) and math.isfinite(float(new_log_ema))
    difference = mg.global_norm([g - e for g, e in zip(gradients, expected)])
    assert 0.0 < float(difference) <= float(mg.global_norm(expected)) * (1 + 1e-5)  # clipped to ||g_u||

    # The MI part by hand: the gradient of -surrogate (the generator *ascends* the bound), rescaled to
    # min(||g_u||, ||g_m||) (MINE's adaptive clipping), added to the GAN gradient with beta = 1.
    with tf.GradientTape() as tape:
        fake = with_mine.generator(z, training=True)
        scores = with_mine.statistics_network(fake, z[:, 2:], training=True)  # the code is z's last 2 entries
        _, surrogate, _ = estimators.dv_bias_corrected(scores, with_mine.mine_log_ema, with_mine.ema_decay)
        mi_loss = -surrogate
    mi_gradients = tape.gradient(mi_loss, variables)
    scale = min(float(mg.global_norm(expected)), float(mg.global_norm(mi_gradients))) / float(
        mg.global_norm(mi_gradients))
    for got, gan, mi in zip(gradients, expected, mi_gradients):
        np.testing.assert_allclose(got, gan + scale * mi, rtol=1e-4, atol=1e-6)


def test_train_step_updates_the_networks_and_the_ema_only_with_mine():
    real = tf.constant(mg.sample_25_gaussians(32, seed=0))
    for beta in (0.0, 1.0):
        model = _tiny(beta)
        model.compile()
        before = [v.numpy() for v in model.generator.trainable_variables]
        logs = model.train_step(real)
        assert set(logs) == {"discriminator_loss", "generator_loss", "mutual_information"}
        assert all(math.isfinite(float(v)) for v in logs.values())
        assert any(not np.allclose(b, v) for b, v in zip(before, model.generator.trainable_variables))
        assert math.isfinite(float(model.mine_log_ema)) == (beta > 0)  # -inf: no history for the plain GAN
        assert any(v is model.mine_log_ema for v in model.non_trainable_weights)


def test_config_round_trip():
    model = _tiny(1.0, ema_decay=0.9, adaptive_clipping=False)
    clone = mg.MineGAN.from_config(model.get_config())
    assert (clone.beta, clone.ema_decay, clone.adaptive_clipping, clone.noise_dim, clone.code_dim) == (
        1.0, 0.9, False, 2, 2)
    assert clone.statistics_network.hidden_units == (8, 8)
    assert mg.MineGAN.from_config(_tiny(0.0).get_config()).statistics_network is None


def _trained_dv_bound(generator, steps=300, batch=128):
    """Trains a statistics network alone (through MineGAN's MINE update) on (G([eps, c]), c); returns the DV
    bound averaged over 10 fresh batches."""
    model = mg.MineGAN(generator, mg.build_discriminator(hidden_units=(4,)),
                       mg.build_statistics_network((32, 32), code_dim=2), noise_dim=2, code_dim=2, beta=1.0, seed=3)
    model.compile(statistics_optimizer=keras.optimizers.Adam(3e-3))

    @tf.function
    def train(n):
        for _ in tf.range(n):
            _, statistics_gradients, _, _, new_log_ema = model.generator_gradients(model.sample_prior(batch))
            model.statistics_optimizer.apply(statistics_gradients, model.statistics_network.trainable_variables)
            model.mine_log_ema.assign(new_log_ema)

    train(tf.constant(steps))
    bounds = []
    for _ in range(10):
        z = model.sample_prior(batch)
        scores = model.statistics_network(generator(z, training=False), model.code_of(z))
        bounds.append(float(estimators.dv_lower_bound(scores)))
    return float(np.mean(bounds))


def _linear_generator(code_weight):
    """G([eps, c]) = eps + code_weight * c (2-D eps and c): ignores c when code_weight is 0."""
    z = keras.Input((4,))
    dense = keras.layers.Dense(2, use_bias=False, trainable=False)
    model = keras.Model(z, dense(z))
    dense.set_weights([np.concatenate([np.eye(2), code_weight * np.eye(2)]).astype(np.float32)])
    return model


def test_dv_bound_is_near_zero_for_a_generator_that_ignores_the_code():
    assert abs(_trained_dv_bound(_linear_generator(0.0))) < 0.1
    # x = eps + 3c: I(x; c) = 2 * 0.5 * log(1 + 9) = 2.30 nats; the trained bound is well above 0.
    assert _trained_dv_bound(_linear_generator(3.0)) > 1.0


# ----------------------------------------------------------------------- app
@pytest.mark.parametrize("args, message", [
    (["--beta=0"], "--beta must be > 0.0"),
    (["--generator_units=8,x"], "--generator_units must be a comma-separated list of integers"),
    (["--min_count=5", "--strict_min_count=2"], "--strict_min_count=2 is less than --min_count=5"),
    (["--batch_size=16", "--statistics_batch_size=32"], "--statistics_batch_size=32 must be 0 (the whole batch)"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_tiny_app_run_writes_png_and_json(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, APP, "--steps=20", "--seeds=1", "--eval_samples=300",
                             "--generator_units=8,8", "--discriminator_units=8", "--statistics_units=8",
                             f"--output_dir={out}", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("modes_gan", "modes_gan_mine", "high_quality_gan", "high_quality_gan_mine", "modes_gan_std",
                "modes_gan_mine_std", "high_quality_gan_std", "high_quality_gan_mine_std", "per_seed"):
        assert key in payload
    assert 0 <= payload["modes_gan"] <= 25 and 0.0 <= payload["high_quality_gan_mine"] <= 1.0
    assert [len(payload["per_seed"][k]) for k in ("gan", "gan_mine")] == [1, 1]
    assert sorted(os.listdir(out)) == ["mine_gan.json", "mine_gan.png"]  # no temporaries left
    with open(out / "mine_gan.png", "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(out / "mine_gan.json") as stream:
        assert json.load(stream)["modes_gan_mine"] == payload["modes_gan_mine"]
