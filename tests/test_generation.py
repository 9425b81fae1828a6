"""Tests of dim_keras.generation (App. A.8-A.9 implicit generator, Table 11 baselines), its run layer
dim_keras.runs.generate and apps/generate.py.

Known answers only: analytic Fréchet/KID/overlap values, analytic penalties of linear networks, SavedModel
round-trips, and measured mode coverage on the ring of 8 Gaussians (printed with ``pytest -s``).
"""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from app_testing import assert_usage_error
from official_formats import WITHOUT_TENSORFLOW
import tensorflow as tf

from dim_keras.generation import (
    NSGANCP,
    WGANGP,
    ImplicitPriorGenerator,
    ResidualBlock,
    build_networks,
    build_scalar_discriminator,
    jsd_fgan_bound,
)
from dim_keras.config import GenerateConfig
from dim_keras.errors import DataError, UsageError
from dim_keras.generation import quality
from dim_keras.generation.export import export_generator, load_generator
from dim_keras.models import default_optimizer
from dim_keras.runs.generate import image_grid, summary_line, train_generator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "apps", "generate.py")


# -- quality measures --------------------------------------------------------------------------------------

def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.default_rng(0).standard_normal((500, 16))
    assert quality.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_set_is_squared_shift():
    features = np.random.default_rng(1).standard_normal((400, 8)) @ np.random.default_rng(2).standard_normal((8, 8))
    shift = np.arange(8, dtype=np.float64) / 4.0
    # Equal covariances: the trace term vanishes, leaving ||mu_1 - mu_2||^2.
    assert quality.frechet_distance(features, features + shift) == pytest.approx(np.sum(shift ** 2), rel=1e-7)


def test_frechet_distance_with_different_covariances_is_analytic():
    features = np.random.default_rng(3).standard_normal((400, 6)) @ np.random.default_rng(4).standard_normal((6, 6))
    features += 1.5
    # b = 2a: mean shift mu_a, covariance 4 S, Tr(S + 4S - 2 (4 S^2)^(1/2)) = Tr(S).
    expected = np.sum(features.mean(axis=0) ** 2) + np.trace(np.cov(features, rowvar=False))
    assert quality.frechet_distance(features, 2 * features) == pytest.approx(expected, rel=1e-7)
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2 with sample statistics.
    a, b = features[:, :1], 0.5 * features[:, 1:2] - 3.0
    expected_1d = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert quality.frechet_distance(a, b) == pytest.approx(expected_1d, rel=1e-7)


def test_kernel_distance_is_zero_for_one_distribution_and_analytic_for_a_shift():
    rng = np.random.default_rng(5)
    first, second = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    same, same_std = quality.kernel_distance(first, second, num_subsets=10, subset_size=500)
    shifted, _ = quality.kernel_distance(first, second + 0.5, num_subsets=10, subset_size=500)
    print(f"KID same distribution {same:.5f} +- {same_std:.5f}, shifted by 0.5: {shifted:.5f}")
    assert abs(same) < 0.02 * shifted
    # Linear kernel x.y/d + 1: the unbiased MMD^2 estimates ||mu_a - mu_b||^2 / d = 16 * 0.25 / 16.
    linear, _ = quality.kernel_distance(first, second + 0.5, degree=1, num_subsets=10, subset_size=1000)
    assert linear == pytest.approx(0.25, abs=0.02)


def test_mode_overlap_matches_two_unit_gaussians():
    rng = np.random.default_rng(6)
    distance = 2.0
    overlap = quality.mode_overlap(rng.standard_normal(200_000), distance + rng.standard_normal(200_000))
    assert overlap["bhattacharyya"] == pytest.approx(math.exp(-distance ** 2 / 8), abs=0.01)
    assert overlap["overlap"] == pytest.approx(math.erfc(distance / 2 / math.sqrt(2)), abs=0.01)  # 2 Phi(-d/2)
    assert quality.mode_overlap([0.0, 0.1], [5.0, 5.1])["bhattacharyya"] == 0.0


def test_ring_mode_coverage_counts_modes():
    centers = quality.ring_mode_centers()
    assert np.allclose(np.linalg.norm(centers, axis=1), 2.0)
    coverage = quality.ring_mode_coverage(np.repeat(centers, 20, axis=0))
    assert coverage["covered_modes"] == 8 and coverage["high_quality_fraction"] == 1.0
    one_mode = quality.ring_mode_coverage(np.repeat(centers[:1], 100, axis=0) + 0.2)  # 0.28 > 3 std away
    assert one_mode["covered_modes"] == 0 and one_mode["high_quality_fraction"] == 0.0
    samples = quality.sample_ring_of_gaussians(4000, seed=0)
    assert quality.ring_mode_coverage(samples)["covered_modes"] == 8


def test_encoder_feature_extractor_reads_an_exported_dim_encoder(tmp_path):
    from dim_keras.export import export_encoder

    images = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    encoder = keras.Model(images, {"fc": keras.layers.Dense(4, name="fc")(pooled), "y": pooled})
    extract = quality.encoder_feature_extractor(export_encoder(encoder, str(tmp_path / "encoder")), "fc")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    expected = encoder(pixels.astype(np.float32) / 255.0)["fc"].numpy()
    np.testing.assert_allclose(quality.compute_features(extract, pixels), expected, atol=1e-5)
    np.testing.assert_allclose(extract(pixels.astype(np.float32) / 255.0), expected, atol=1e-5)  # floats in [0, 1]
    with pytest.raises(ValueError, match="no output 'conv'"):
        quality.encoder_feature_extractor(str(tmp_path / "encoder"), "conv")(pixels)


# -- networks -----------------------------------------------------------------------------------------------

def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        for sublayer in getattr(layer, "_layers", []):
            yield sublayer


@pytest.mark.parametrize("architecture, side", [("dcgan", 32), ("dcgan", 16), ("resnet", 32), ("resnet", 16)])
def test_networks_shapes_batch_norm_and_config_round_trip(architecture, side):
    generator, encoder = build_networks(architecture, (side, side, 3), z_dim=8, base_filters=4)
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    images = generator(z, training=False)
    assert tuple(images.shape) == (3, side, side, 3)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert tuple(encoder(images).shape) == (3, 1)
    # App. A.9: batch norm on the generator, not on the encoder.
    generator_layers = [type(layer).__name__ for layer in generator.layers]
    assert "BatchNormalization" in generator_layers or any(
        isinstance(layer, ResidualBlock) and layer.use_batch_norm for layer in generator.layers)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in _layers(encoder))
    assert not any(isinstance(layer, ResidualBlock) and layer.use_batch_norm for layer in encoder.layers)
    clone = keras.Model.from_config(generator.get_config())
    clone.set_weights(generator.get_weights())
    np.testing.assert_allclose(clone(z, training=False), images, atol=1e-6)


def test_network_builders_reject_bad_shapes():
    with pytest.raises(ValueError, match="square"):
        build_networks("dcgan", (32, 16, 3))
    with pytest.raises(ValueError, match="side 8 to 32"):
        build_networks("dcgan", (64, 64, 3))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_networks("vae", (32, 32, 3))


# -- models: losses with known values ------------------------------------------------------------------

def _linear(input_dim, weights, name):
    """x -> x W as a functional model with fixed weights (E(x) = w.x for a vector w)."""
    weights = np.asarray(weights, np.float32).reshape(input_dim, -1)
    inputs = keras.Input((input_dim,))
    layer = keras.layers.Dense(weights.shape[1], use_bias=False, name=name)
    model = keras.Model(inputs, layer(inputs), name=name)
    layer.set_weights([weights])
    return model


def test_jsd_fgan_bound_known_values():
    assert float(jsd_fgan_bound(tf.zeros(5), tf.zeros(7))) == pytest.approx(0.0, abs=1e-7)
    # Perfect separation: the bound approaches 2 log 2 (twice the JSD of disjoint distributions).
    assert float(jsd_fgan_bound(tf.fill([4], 30.0), tf.fill([4], -30.0))) == pytest.approx(2 * math.log(2), abs=1e-6)


def test_penalties_of_linear_networks_are_analytic():
    """With E(x) = w.x, ||dE/dx||^2 = ||w||^2 (contractive penalty) and the WGAN-GP penalty is (||w|| - 1)^2.
    Zero learning rates keep the weights, so the reported metrics are exactly these values."""
    weights = [3.0, 4.0]  # ||w|| = 5
    points = quality.sample_ring_of_gaussians(64, seed=0)

    def frozen():
        return dict(generator_optimizer=keras.optimizers.SGD(0.0), encoder_optimizer=keras.optimizers.SGD(0.0))

    implicit = ImplicitPriorGenerator(
        _linear(2, [[1.0, 0.5], [0.0, 1.0]], "generator"), _linear(2, weights, "encoder"),
        build_scalar_discriminator(name="t_p"), build_scalar_discriminator(name="t_q"), z_dim=2, seed=0)
    implicit.compile(discriminator_optimizer=keras.optimizers.SGD(0.0), **frozen())
    logs = implicit.fit(points, batch_size=32, epochs=1, verbose=0).history
    assert logs["contractive_penalty"][-1] == pytest.approx(25.0, rel=1e-5)
    assert set(logs) == {"discriminator_loss", "encoder_loss", "contractive_penalty", "generator_loss",
                         "encoded_real_mean", "encoded_fake_mean"}

    nsgan = NSGANCP(_linear(2, [[1.0, 0.5], [0.0, 1.0]], "generator"), _linear(2, weights, "encoder"), z_dim=2, seed=0)
    nsgan.compile(**frozen())
    assert nsgan.fit(points, batch_size=32, verbose=0).history["contractive_penalty"][-1] == pytest.approx(25.0)

    wgan = WGANGP(_linear(2, [[1.0, 0.5], [0.0, 1.0]], "generator"), _linear(2, weights, "encoder"), z_dim=2, seed=0)
    wgan.compile(**frozen())
    assert wgan.fit(points, batch_size=32, verbose=0).history["gradient_penalty"][-1] == pytest.approx(16.0, rel=1e-5)


def test_generator_loss_is_eq_15():
    """G(z) = 0 and E(x) = w.x + b give E(G(z)) = b, so the generator loss is (b - mu_P)^2."""
    z_input = keras.Input((2,))
    generator = keras.Model(z_input, keras.layers.Dense(2, kernel_initializer="zeros", use_bias=False)(z_input))
    inputs = keras.Input((2,))
    bias_layer = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(-0.5))
    encoder = keras.Model(inputs, bias_layer(inputs))
    model = ImplicitPriorGenerator(generator, encoder, build_scalar_discriminator(name="t_p"),
                                   build_scalar_discriminator(name="t_q"), mu_p=2.0, mu_q=-2.0, seed=0)
    model.compile(generator_optimizer=keras.optimizers.SGD(0.0), encoder_optimizer=keras.optimizers.SGD(0.0),
                  discriminator_optimizer="adam")
    logs = model.fit(np.ones((16, 2), np.float32), batch_size=16, verbose=0).history
    assert logs["generator_loss"][-1] == pytest.approx((-0.5 - 2.0) ** 2)


def test_model_config_round_trip():
    generator, encoder = build_networks("mlp", (2,), z_dim=3, base_filters=8)
    model = ImplicitPriorGenerator(generator, encoder, build_scalar_discriminator(name="t_p"),
                                   build_scalar_discriminator(name="t_q"), mu_p=0.5, mu_q=-1.5,
                                   contractive_penalty_weight=0.3, encoder_steps=2, seed=7)
    clone = ImplicitPriorGenerator.from_config(model.get_config())
    assert (clone.mu_p, clone.mu_q, clone.contractive_penalty_weight, clone.encoder_steps, clone.z_dim) == (
        0.5, -1.5, 0.3, 2, 3)
    assert clone.generator.count_params() == generator.count_params()
    with pytest.raises(ValueError, match="differ"):
        ImplicitPriorGenerator(generator, encoder, build_scalar_discriminator(), build_scalar_discriminator(),
                               mu_p=1.0, mu_q=1.0)


# -- the implicit generator covers the ring of 8 Gaussians ---------------------------------------------

RING_GENERATOR_UPDATES = 800


def test_implicit_generator_covers_ring_of_eight_gaussians():
    """A short CPU run (800 generator updates, batch 128) of App. A.8 on the 2-D ring: >= 6 of 8 modes.

    mu_Q - mu_P = -4 and 2 encoder updates per generator update: a stronger encoder than with unit-distance
    targets (App. A.8: "by choosing the overlap, we fix the strength of the encoder"); with mu_Q = -1 and one
    encoder update the same run covered 1-8 modes depending on the seed (docs/GENERATION.md)."""
    keras.utils.set_random_seed(0)
    data = quality.sample_ring_of_gaussians(RING_GENERATOR_UPDATES * 128, std=0.05, seed=0)
    generator, encoder = build_networks("mlp", (2,), z_dim=2, base_filters=128)
    model = ImplicitPriorGenerator(generator, encoder, build_scalar_discriminator(name="t_p"),
                                   build_scalar_discriminator(name="t_q"), mu_p=1.0, mu_q=-3.0,
                                   contractive_penalty_weight=0.01, encoder_steps=2, seed=0)
    model.compile(generator_optimizer=default_optimizer(2e-3), encoder_optimizer=default_optimizer(2e-3),
                  discriminator_optimizer=default_optimizer(2e-3, clipnorm=1.0), jit_compile=True,
                  steps_per_execution=25)
    before = quality.ring_mode_coverage(model.generate(2500), std=0.05)
    model.fit(data, batch_size=128, epochs=1, verbose=0)
    after = quality.ring_mode_coverage(model.generate(2500), std=0.05)
    print(f"ring of 8 Gaussians: modes covered {before['covered_modes']} -> {after['covered_modes']}, "
          f"samples within 3 std {after['high_quality_fraction']:.3f}, per mode {after['counts']}")
    assert after["covered_modes"] >= 6


# -- export ---------------------------------------------------------------------------------------------

def test_generator_savedmodel_round_trip(tmp_path):
    generator, _ = build_networks("dcgan", (16, 16, 3), z_dim=5, base_filters=4)
    path = export_generator(generator, str(tmp_path / "generator"))
    loaded = load_generator(path)
    z = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    images = loaded(z)
    assert images.dtype == np.uint8 and images.shape == (4, 16, 16, 3)
    expected = np.round(np.clip(generator(z, training=False).numpy(), 0, 1) * 255)
    assert np.max(np.abs(images.astype(np.int32) - expected)) <= 1
    assert loaded.sample(3, seed=0).shape == (3, 16, 16, 3)
    raw = tf.saved_model.load(path).signatures["serving_default"](z=tf.constant(z[:2]))
    assert raw["images"].dtype == tf.uint8
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        loaded(np.zeros((2, 4), np.float32))

    points, _ = build_networks("mlp", (2,), z_dim=2, base_filters=8)
    samples = load_generator(export_generator(points, str(tmp_path / "points")))(z[:, :2])
    np.testing.assert_allclose(samples, points(z[:, :2]).numpy(), atol=1e-5)


# -- the run layer (dim_keras.runs.generate) ---------------------------------------------------------------

# Tiny networks and few steps: the library tests check the plumbing, not the quality.
TINY = dict(dataset="digits", epochs=1, steps_per_epoch=2, batch_size=16, z_dim=8, base_filters=4,
            num_eval_samples=64, verbose=0, jit_compile=False)


def test_image_grid_tiles_with_a_white_border():
    images = np.stack([np.full((3, 2, 1), value, np.uint8) for value in range(4)])
    grid = image_grid(images, side=2, padding=1)
    assert grid.shape == (2 * 4 + 1, 2 * 3 + 1, 1) and grid.dtype == np.uint8
    assert np.all(grid[0] == 255) and np.all(grid[:, 0] == 255)  # border
    assert np.all(grid[1:4, 1:3] == 0) and np.all(grid[1:4, 4:6] == 1) and np.all(grid[5:8, 4:6] == 3)


def test_run_rejects_data_and_feature_encoder_problems_with_usage_errors(tmp_path):
    with pytest.raises(DataError, match="cifar10: no data found"):
        train_generator(GenerateConfig(**dict(TINY, dataset="cifar10"), data_dir=str(tmp_path),
                                       output_dir=str(tmp_path / "out")))
    with pytest.raises(UsageError, match="--batch_size=100000 exceeds the 1"):
        train_generator(GenerateConfig(**dict(TINY, batch_size=100_000), output_dir=str(tmp_path / "out")))
    from PIL import Image

    for index in range(40):  # 64x64 images: too large for the DCGAN networks
        (tmp_path / "large" / f"class_{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (index, 0, 0)).save(tmp_path / "large" / f"class_{index % 2}" / f"{index}.png")
    with pytest.raises(UsageError, match="--architecture=dcgan does not fit folder images"):
        train_generator(GenerateConfig(**dict(TINY, dataset="folder"), data_dir=str(tmp_path / "large"),
                                       output_dir=str(tmp_path / "out")))

    from dim_keras.export import export_encoder

    def exported(side, name):
        images = keras.Input((side, side, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(images)
        encoder = keras.Model(images, {"fc": keras.layers.Dense(4)(pooled), "y": pooled})
        return export_encoder(encoder, str(tmp_path / name))

    for path, name, message in [(exported(8, "small"), "fc", "shape"), (exported(32, "fits"), "conv", "no output")]:
        with pytest.raises(UsageError, match=message) as caught:
            train_generator(GenerateConfig(**TINY, feature_encoder=path, feature_name=name,
                                           output_dir=str(tmp_path / "out")))
        assert str(caught.value).startswith(f"--feature_encoder={path}: ") and "\n" not in str(caught.value)
    assert not (tmp_path / "out" / "generator").exists()


@pytest.mark.slow
def test_train_generator_on_digits_writes_every_output(tmp_path):
    """A short digits run (120 generator updates, no XLA: its compile time would dominate): sample grids,
    histograms, per-epoch distances in metrics.json and TensorBoard, a generator SavedModel.

    Measured here: Fréchet distance 4.66 (untrained G, epoch 0) -> 3.75, 0.93, 0.64; the fall from the untrained
    generator's near-constant grey images is large, so only last < first is asserted (not monotonicity)."""
    output_dir = tmp_path / "run"
    lines = []
    config = GenerateConfig(dataset="digits", model="implicit", architecture="dcgan", epochs=3, steps_per_epoch=40,
                            batch_size=32, z_dim=32, base_filters=16, learning_rate=5e-4, num_eval_samples=300,
                            verbose=0, jit_compile=False, output_dir=str(output_dir))
    history = train_generator(config, log=lines.append)
    assert lines == []  # verbose=0
    for epoch in range(4):
        assert (output_dir / "samples" / f"epoch_{epoch:03d}.png").is_file()
        assert (output_dir / "histograms" / f"epoch_{epoch:03d}.png").is_file()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(history))  # the returned history is metrics.json
    distances = [record["frechet_distance"] for record in metrics["epochs"]]
    kids = [record["kernel_distance"] for record in metrics["epochs"]]
    print(f"digits Frechet distance per epoch {np.round(distances, 4).tolist()}, KID {np.round(kids, 5).tolist()}")
    assert [record["epoch"] for record in metrics["epochs"]] == [0, 1, 2, 3]
    assert all(np.isfinite(distances)) and all(np.isfinite(kids))
    assert distances[-1] < distances[0]
    assert "generator_loss" in metrics["epochs"][-1]
    assert metrics["config"]["model"] == "implicit" and metrics["config"]["steps_per_epoch"] == 40
    loaded = load_generator(str(output_dir / "generator"))
    images = loaded.sample(5, seed=0)
    assert images.dtype == np.uint8 and images.shape == (5, 32, 32, 3)
    assert any((output_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert not [path for path in output_dir.rglob("*") if ".tmp-" in path.name]  # every write was atomic
    assert summary_line(history, config) == (
        f"frechet_distance {distances[0]:.4f} (epoch 0) -> {distances[-1]:.4f} (epoch 3); "
        f"generator exported to {output_dir / 'generator'}")


@pytest.mark.parametrize("model", ["nsgan_cp", "wgan_gp"])
def test_train_generator_runs_the_baselines(tmp_path, model):
    lines = []
    history = train_generator(GenerateConfig(**dict(TINY, model=model, verbose=2), output_dir=str(tmp_path)),
                              log=lines.append)
    assert [record["epoch"] for record in history["epochs"]] == [0, 1]
    assert len(lines) == 1 and lines[0].startswith("epoch 1: frechet_distance=")
    assert (tmp_path / "histograms" / "epoch_001.png").is_file() and (tmp_path / "generator").is_dir()


def test_train_generator_writes_under_saved_models_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = GenerateConfig(**dict(TINY, model="wgan_gp"))
    assert config.output_dir is None
    train_generator(config)
    (run,) = (tmp_path / "saved_models").iterdir()  # next to the training runs, as TrainConfig's default
    assert run.name.startswith("generate-wgan_gp-") and len(run.name) == len("generate-wgan_gp-YYYYmmdd-HHMMSS")
    assert config.output_dir == os.path.join("saved_models", run.name) and (run / "generator").is_dir()


# -- the app --------------------------------------------------------------------------------------------



def _run_app(*arguments, timeout=600, tensorflow=True):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    command = [sys.executable, APP] if tensorflow else [sys.executable, "-c", WITHOUT_TENSORFLOW, APP]
    return subprocess.run(command + list(arguments), capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=REPO)


def _assert_usage_error(result, message):
    assert_usage_error(result, message, app="generate.py")


@pytest.mark.parametrize("arguments, message", [
    (["--epochs=0"], "--epochs"),
    (["--model=vae"], "--model"),
    (["--mu_p=1", "--mu_q=1"], "differ"),
    (["--dataset=no_such_dataset", "--output_dir=unused"], "no_such_dataset"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--feature_name=logits"], "--feature_name"),
    (["--dataset=folder"], "--data_dir"),
    (["--image_size=32"], "--image_size applies to --dataset=folder only; digits"),
    (["--batch_size=four"], "--batch_size"),
    (["surplus"], "unexpected arguments: surplus"),
])
def test_app_rejects_bad_flags_before_tensorflow(arguments, message):
    _assert_usage_error(_run_app(*arguments, tensorflow=False), message)


def test_app_rejects_bad_paths_before_tensorflow(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _assert_usage_error(_run_app(f"--output_dir={blocker}/run", tensorflow=False),
                        f"{blocker} is a file, not a directory")
    _assert_usage_error(_run_app(f"--feature_encoder={tmp_path}/missing", tensorflow=False),
                        f"--feature_encoder={tmp_path}/missing does not exist")
    _assert_usage_error(_run_app(f"--feature_encoder={tmp_path}", tensorflow=False), "not a SavedModel directory")
    _assert_usage_error(_run_app(f"--data_dir={blocker}", tensorflow=False), "is a file, not a directory")


def test_app_reports_missing_data_in_one_line(tmp_path):
    result = _run_app("--dataset=cifar10", f"--data_dir={tmp_path}", f"--output_dir={tmp_path}/out")
    _assert_usage_error(result, "cifar10: no data found")
    assert not (tmp_path / "out").exists()


def test_app_help():
    result = _run_app("--help", tensorflow=False)
    assert "--architecture" in result.stdout and "--feature_encoder" in result.stdout


def test_app_trains_and_prints_one_summary_line(tmp_path):
    result = _run_app("--epochs=1", "--steps_per_epoch=2", "--batch_size=16", "--z_dim=8", "--base_filters=4",
                      "--num_eval_samples=64", "--verbose=0", "--nojit_compile", f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("frechet_distance ")
    assert f"generator exported to {tmp_path / 'generator'}" in result.stdout
    assert (tmp_path / "samples" / "epoch_001.png").is_file() and (tmp_path / "generator").is_dir()
