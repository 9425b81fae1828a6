"""Tests of dim_keras.evaluation on generated data with known answers (tiny sizes)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dim_keras import io
from dim_keras.estimators import dv_lower_bound
from dim_keras.evaluation import (
    FeatureSet,
    encode,
    evaluate_representation,
    markdown_table,
    ms_ssim,
    ms_ssim_settings,
)
from dim_keras.evaluation import mine, ndm, neighbours, probes, reconstruction, report, suite
from dim_keras.evaluation.ms_ssim import MsSsimSettings, min_image_side, power_factors
from dim_keras.evaluation.semi_supervised import fine_tune_accuracy


def separable_images(count_per_class, classes=3, side=4, seed=0):
    """uint8 images [N, side, side, 3]: a fixed random pattern per class plus small noise.

    The class patterns are the same for every ``seed``; the noise differs.
    """
    patterns = np.random.default_rng(1234).integers(40, 216, size=(classes, side, side, 3))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), count_per_class)
    noise = rng.integers(-15, 16, size=(len(labels), side, side, 3))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.int64)


def identity_like_encoder(images_uint8):
    """conv: pixels in [0, 1]; fc: an invertible linear map of them; y: the first 16."""
    flat = np.asarray(images_uint8, np.float32).reshape(len(images_uint8), -1) / 255.0
    mixing = np.random.default_rng(42).standard_normal((flat.shape[1], flat.shape[1]))
    return {"conv": flat.reshape(len(flat), 4, 4, 3), "fc": flat @ mixing, "y": flat[:, :16]}


@pytest.fixture(scope="module")
def separable_features():
    train_images, train_labels = separable_images(40, seed=0)
    test_images, test_labels = separable_images(20, seed=1)
    return FeatureSet.from_encoder(identity_like_encoder, train_images, test_images,
                                   train_labels, test_labels, batch_size=7,
                                   class_names=("a", "b", "c"))


# ---------------------------------------------------------------- features

def test_encode_flattens_to_float32_independent_of_batch_size():
    images, _ = separable_images(5, seed=3)
    whole = encode(identity_like_encoder, images, batch_size=len(images))
    batched = encode(identity_like_encoder, images, batch_size=4, names=("conv", "y"))
    assert set(whole) == {"conv", "fc", "y"} and set(batched) == {"conv", "y"}
    assert batched["conv"].shape == (15, 48) and batched["conv"].dtype == np.float32
    np.testing.assert_allclose(batched["conv"], images.reshape(15, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(batched["y"], whole["y"])


def test_encode_rejects_bad_input():
    images, _ = separable_images(2)
    with pytest.raises(ValueError, match="uint8"):
        encode(identity_like_encoder, images.astype(np.float32))
    with pytest.raises(ValueError, match="no feature 'local'"):
        encode(identity_like_encoder, images, names=("local",))


def test_feature_set_save_load_round_trip(tmp_path, separable_features):
    path = tmp_path / "features.npz"
    separable_features.save(path)
    loaded = FeatureSet.load(path)
    assert loaded.layers == separable_features.layers
    assert loaded.class_names == ("a", "b", "c")
    for layer in loaded.layers:
        np.testing.assert_array_equal(loaded.test[layer], separable_features.test[layer])
    np.testing.assert_array_equal(loaded.train_images, separable_features.train_images)
    separable_features.save(tmp_path / "features.bin")  # the name is kept as given: no ".npz" appended
    np.testing.assert_array_equal(FeatureSet.load(tmp_path / "features.bin").test["y"], separable_features.test["y"])
    assert sorted(os.listdir(tmp_path)) == ["features.bin", "features.npz"]  # no temporaries left


# ---------------------------------------------------------------- probes

def test_linear_probes_and_knn_are_perfect_on_separable_data(separable_features):
    results = evaluate_representation(separable_features, metrics=["svm", "logistic", "knn"], runs=2)
    for metric in ("svm", "logistic", "knn"):
        for layer in ("conv", "fc", "y"):
            value = results["measures"][metric][layer]
            accuracy = value["mean"] if isinstance(value, dict) else value
            assert accuracy >= 0.98, (metric, layer, accuracy)
    svm = results["measures"]["svm"]["conv"]
    assert len(svm["values"]) == 2 and svm["std"] >= 0.0


def test_linear_svm_is_at_chance_on_random_labels():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((400, 5)).astype(np.float32)
    labels = rng.integers(0, 2, size=400)
    result = probes.linear_svm_accuracy(features[:200], labels[:200], features[200:], labels[200:], runs=1)
    assert 0.35 <= result["mean"] <= 0.65


def test_cross_validated_probe_picks_the_c_a_hand_written_cross_validation_picks():
    """C="cv" against its definition, written out: stratified 5-fold cross-validation on the training set
    only (each fold standardised on its own training part), the best mean validation accuracy (the smaller C
    on a tie), then a refit on all training examples scored on the test set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=260)
    features = rng.standard_normal((260, 40)).astype(np.float32)
    features[:, :3] += 0.8 * np.eye(3, dtype=np.float32)[labels]  # three weak class directions among noise
    train, test = slice(0, 90), slice(90, None)
    x, y = features[train], labels[train]

    def fit(c, rows):
        scaler = StandardScaler().fit(x[rows])
        return scaler, LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x[rows]), y[rows])

    mean_accuracy = {}
    for c in probes.PROBE_C_GRID:
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)
        mean_accuracy[c] = np.mean([(lambda s, m: m.score(s.transform(x[val]), y[val]))(*fit(c, fit_rows))
                                    for fit_rows, val in folds])
    best = max(sorted(mean_accuracy), key=lambda c: (mean_accuracy[c], -c))
    scaler, model = fit(best, np.arange(len(x)))
    expected = model.score(scaler.transform(features[test]), labels[test])

    result = probes.logistic_regression_probe(x, y, features[test], labels[test], C="cv")
    assert result == {"accuracy": pytest.approx(expected), "C": best}
    assert len(set(np.round(list(mean_accuracy.values()), 6))) > 1  # the grid's Cs are told apart here
    # A fixed C is that C, and the accuracy function is the probe's accuracy.
    assert probes.logistic_regression_probe(x, y, features[test], labels[test], C=best)["accuracy"] == \
        pytest.approx(expected)
    assert probes.logistic_regression_accuracy(x, y, features[test], labels[test], C="cv") == pytest.approx(expected)
    for bad in (0, -1.0, "auto", True):
        with pytest.raises(ValueError, match="positive number or 'cv'"):
            probes.logistic_regression_probe(x, y, features[test], labels[test], C=bad)
    with pytest.raises(ValueError, match="two training examples of every class"):
        probes.logistic_regression_probe(x[:4], np.array([0, 1, 1, 2]), x[:4], np.array([0, 1, 1, 2]), C="cv")


def test_mlp_probe_reaches_full_accuracy_and_averages_last_epochs(separable_features):
    result = probes.mlp_probe_accuracy(
        separable_features.train["y"], separable_features.train_labels,
        separable_features.test["y"], separable_features.test_labels,
        epochs=8, last_epochs=3, batch_size=16, learning_rate=1e-2)
    assert len(result["values"]) == 3
    assert result["mean"] >= 0.95


def test_mlp_probe_solves_xor_that_no_linear_probe_can():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, size=(1200, 2)).astype(np.float32)
    points = points[np.min(np.abs(points), axis=1) > 0.1]  # a margin around the axes
    labels = (points[:, 0] * points[:, 1] > 0).astype(np.int64)
    train, test = slice(0, 700), slice(700, None)
    linear = probes.logistic_regression_accuracy(points[train], labels[train], points[test], labels[test])
    nonlinear = probes.mlp_probe_accuracy(points[train], labels[train], points[test], labels[test],
                                          epochs=10, last_epochs=3, batch_size=32, learning_rate=1e-2)
    assert linear < 0.7
    assert nonlinear["mean"] >= 0.9


def test_attribute_accuracies_give_mean_min_max():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 6)).astype(np.float32)
    weights = rng.standard_normal((6, 3))
    attributes = np.concatenate([(features @ weights > 0), np.ones((300, 1), bool)], axis=1).astype(np.int64)
    result = probes.attribute_accuracies(features[:200], attributes[:200], features[200:], attributes[200:],
                                         class_names=["p", "q", "r", "constant"])
    per_attribute = result["per_attribute"]
    assert per_attribute["constant"] == 1.0
    assert all(per_attribute[name] >= 0.9 for name in "pqr")
    assert result["min"] == min(per_attribute.values()) and result["max"] == 1.0
    assert result["mean"] == pytest.approx(np.mean(list(per_attribute.values())))


# ---------------------------------------------------------------- MS-SSIM

def test_ms_ssim_settings_fit_the_image_size():
    assert ms_ssim_settings(161) == MsSsimSettings(5, 11)
    for side in (8, 28, 32, 64, 96, 161):
        settings = ms_ssim_settings(side)
        assert min_image_side(settings.scales, settings.filter_size) <= side
        assert settings.filter_size % 2 == 1
    assert (ms_ssim_settings(32).scales, ms_ssim_settings(32).filter_size) == (3, 7)
    assert (ms_ssim_settings(64).scales, ms_ssim_settings(64).filter_size) == (4, 7)
    assert min_image_side(5, 11) == 161
    for scales in range(1, 6):
        assert sum(power_factors(scales)) == pytest.approx(1.0)
    assert power_factors(5) == pytest.approx((0.0448, 0.2856, 0.3001, 0.2363, 0.1333), rel=1e-3)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    # Smooth images (low-pass noise) so that structure exists at every scale.
    base = tf.image.resize(rng.uniform(size=(4, 8, 8, 3)), (32, 32)).numpy().astype(np.float32)
    np.testing.assert_allclose(ms_ssim(base, base, max_val=1.0), 1.0, atol=1e-5)
    previous = 1.0
    for sigma in (0.02, 0.1, 0.3):
        noisy = np.clip(base + rng.normal(0, sigma, base.shape), 0, 1).astype(np.float32)
        value = float(np.mean(ms_ssim(base, noisy, max_val=1.0)))
        assert 0.0 <= value < previous
        previous = value
    unrelated = rng.uniform(size=base.shape).astype(np.float32)
    assert float(np.mean(ms_ssim(base, unrelated, max_val=1.0))) < 0.2
    as_uint8 = np.round(base * 255).astype(np.uint8)
    np.testing.assert_allclose(ms_ssim(as_uint8, as_uint8, max_val=255), 1.0, atol=1e-5)


def test_ms_ssim_rejects_images_too_small_for_the_scales():
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"too small .* 5 scales .*need sides >= 161"):
        ms_ssim(images, images, 1.0, scales=5, filter_size=11)
    with pytest.raises(ValueError, match="too small"):
        ms_ssim_settings(2)


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 3), (96, 96, 3), (8, 8, 3), (64, 48, 3)])
def test_dcgan_decoder_outputs_the_image_shape(shape):
    decoder = reconstruction.build_dcgan_decoder(16, shape, base_filters=4)
    output = decoder(np.zeros((2, 16), np.float32))
    assert tuple(output.shape) == (2, *shape)


def test_decoder_reconstruction_ms_ssim_is_high_from_an_informative_y_and_low_from_a_constant_one():
    rng = np.random.default_rng(0)
    # Smooth 16x16 images upsampled from 4x4 noise: their 4x4 subsample (the "Y" below) determines them.
    images = (tf.image.resize(rng.uniform(size=(640, 4, 4, 3)), (16, 16)).numpy() * 255).astype(np.uint8)
    unit = images.astype(np.float32) / 255.0
    assert np.all(np.asarray(ms_ssim(unit, unit, max_val=1.0)) == 1.0)  # a perfect reconstruction scores 1 exactly
    informative = images[:, ::4, ::4, :].reshape(len(images), -1).astype(np.float32) / 255.0
    settings = dict(epochs=5, batch_size=16, learning_rate=1e-2, base_filters=4)

    def score(representation):
        return reconstruction.reconstruction_ms_ssim(representation[:512], images[:512], representation[512:],
                                                     images[512:], **settings)

    from_y = score(informative)
    from_constant = score(np.zeros_like(informative))  # the best decoder can do is the mean image
    assert from_y > 0.5 and from_constant < 0.1, (from_y, from_constant)


# ---------------------------------------------------------------- MINE

def correlated_gaussians(count, dims, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, dims))
    z = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal((count, dims))
    return x.astype(np.float32), z.astype(np.float32)


def test_pairwise_statistics_network_scores_every_pair_like_a_dense_on_concat():
    network = mine.PairwiseStatisticsNetwork(hidden_units=(5,))
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    scores = keras.ops.convert_to_numpy(network(x, y))
    assert scores.shape == (4, 3, 1)
    kernel = np.concatenate([network.y_projection.kernel.numpy(), network.x_projection.kernel.numpy()])
    bias = network.y_projection.bias.numpy()
    for i in range(4):
        for j in range(3):
            hidden = np.maximum(np.concatenate([y[i], x[j]]) @ kernel + bias, 0)
            expected = hidden @ network.score_layer.kernel.numpy() + network.score_layer.bias.numpy()
            np.testing.assert_allclose(scores[i, j], expected, rtol=1e-5, atol=1e-5)


def test_mine_is_within_15_percent_of_analytic_gaussian_mi():
    dims, rho = 3, 0.8
    analytic = mine.gaussian_mutual_information(rho, dims)  # 1.53 nats
    x, z = correlated_gaussians(1536, dims, rho, seed=0)
    eval_x, eval_z = correlated_gaussians(1024, dims, rho, seed=1)
    estimate = mine.mine_estimate(x, z, eval_x, eval_z, epochs=12, batch_size=64,
                                  learning_rate=3e-3, hidden_units=(64, 64))
    assert analytic == pytest.approx(-1.5 * np.log(0.36))
    assert abs(estimate - analytic) <= 0.15 * analytic, (estimate, analytic)


def test_mine_on_images_separates_dependent_from_independent_codes():
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0, 1, size=(640, 1)).astype(np.float32)
    noise = rng.normal(0, 10, size=(640, 8, 8, 3))
    images = np.clip(brightness[:, :, None, None] * 255 + noise, 0, 255).astype(np.uint8)
    independent = rng.standard_normal((640, 1)).astype(np.float32)
    settings = dict(epochs=12, batch_size=64, learning_rate=1e-2, hidden_units=(32,),
                    image_filters=(8, 16), image_embedding=32)
    high = mine.mine_estimate(images, brightness, **settings)  # the conv branch of T
    low = mine.mine_estimate(images, independent, **settings)
    assert abs(low) < 0.05
    assert high > 0.8


# ---------------------------------------------------------------- NDM

def test_shuffle_each_dimension_keeps_marginals_and_breaks_dependence():
    x, _ = correlated_gaussians(2000, 1, 0.0, seed=0)
    features = np.concatenate([x, x], axis=1)  # two identical columns
    shuffled = ndm.shuffle_each_dimension(features, seed=(1, 2)).numpy()
    np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(features, axis=0))
    assert abs(np.corrcoef(shuffled.T)[0, 1]) < 0.1


def test_ndm_scores_reproduce_the_dv_bound_of_two_samples():
    joint = tf.constant([0.5, 1.0, -0.2, 2.0])
    shuffled = tf.constant([0.1, -1.0, 0.3, 0.0])
    bound = dv_lower_bound(ndm.joint_versus_shuffled_scores(joint, shuffled))
    expected = np.mean(joint) - np.log(np.mean(np.exp(shuffled)))
    assert float(bound) == pytest.approx(expected, rel=1e-5)


def test_ndm_is_zero_for_independent_factors_and_near_total_correlation_otherwise():
    rng = np.random.default_rng(0)
    dims, rho = 3, 0.8
    correlation = np.full((dims, dims), rho) + (1 - rho) * np.eye(dims)
    analytic = ndm.gaussian_total_correlation(correlation)  # 1.13 nats
    settings = dict(epochs=10, batch_size=128, learning_rate=3e-3, hidden_units=(64, 64))
    independent = rng.standard_normal((4096, dims)).astype(np.float32)
    correlated = rng.multivariate_normal(np.zeros(dims), correlation, size=4096).astype(np.float32)
    low = ndm.neural_dependency_measure(independent[:2048], independent[2048:], **settings)
    high = ndm.neural_dependency_measure(correlated[:2048], correlated[2048:], **settings)
    assert ndm.gaussian_total_correlation(np.eye(dims)) == 0.0
    assert abs(low) < 0.05
    assert abs(high - analytic) <= 0.2 * analytic, (high, analytic)


# ---------------------------------------------------------------- neighbours

def test_nearest_neighbours_use_l1_and_are_sorted():
    gallery = np.array([[0, 0], [3, 0], [1.5, 1.4], [10, 10]], np.float32)
    # L1: (1.5, 1.4) is 2.9 from the origin, (3, 0) is 3; L2 would order them the other way round.
    indices, distances = neighbours.nearest_neighbours(np.array([[0.0, 0.0]]), gallery, k=3)
    assert indices.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(distances, [[0.0, 2.9, 3.0]], rtol=1e-6)


def test_neighbour_figure_writes_a_png_with_one_query_per_class(tmp_path, separable_features):
    path = tmp_path / "figures" / "neighbours.png"
    result = neighbours.neighbour_figure(
        path, separable_features.train["y"], separable_features.train_images,
        separable_features.test["y"], separable_features.test_images,
        separable_features.train_labels, separable_features.class_names, k=4)
    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    queries = np.array(result["queries"])
    assert sorted(separable_features.train_labels[queries].tolist()) == [0, 1, 2]
    # Separable classes: every neighbour of a query has the query's class.
    neighbour_labels = separable_features.test_labels[np.array(result["neighbours"])]
    assert (neighbour_labels == separable_features.train_labels[queries][:, None]).all()
    assert os.listdir(path.parent) == ["neighbours.png"]


# ---------------------------------------------------------------- semi-supervised

def tiny_encoder(side=4):
    inputs = keras.Input((side, side, 3))
    conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    flat = keras.layers.Flatten()(conv)
    fc = keras.layers.Dense(16, activation="relu", name="fc")(flat)
    y = keras.layers.Dense(4, name="y")(fc)
    return keras.Model(inputs, {"conv": conv, "fc": fc, "y": y})


def test_fine_tuning_learns_the_classes_and_leaves_the_encoder_untouched(separable_features):
    keras.utils.set_random_seed(0)
    encoder = tiny_encoder()
    before = [w.copy() for w in encoder.get_weights()]
    result = fine_tune_accuracy(
        encoder, separable_features.train_images, separable_features.train_labels,
        separable_features.test_images, separable_features.test_labels,
        epochs=10, last_epochs=2, batch_size=8, learning_rate=1e-2)
    assert len(result["values"]) == 2 and result["mean"] >= 0.9
    for old, new in zip(before, encoder.get_weights()):
        np.testing.assert_array_equal(old, new)


# ---------------------------------------------------------------- suite and report

def test_suite_rejects_unknown_and_inapplicable_metrics(separable_features):
    with pytest.raises(ValueError, match="unknown metric 'svn'"):
        suite.parse_metrics("svm,svn")
    with pytest.raises(ValueError, match="'attributes' needs attribute labels"):
        evaluate_representation(separable_features, metrics=["attributes"])
    with pytest.raises(ValueError, match="'neighbours' needs an output path"):
        evaluate_representation(separable_features, metrics=["neighbours"])
    with pytest.raises(ValueError, match="no layer 'local'"):
        evaluate_representation(separable_features, metrics=["svm"], layers=["local"])
    applicable = suite.applicable_metrics(separable_features)
    assert "attributes" not in applicable and "semi_supervised" not in applicable
    assert {"svm", "mlp", "ms_ssim", "mine", "ndm"} <= set(applicable)


def test_markdown_table_and_json_report(tmp_path, separable_features):
    results = evaluate_representation(
        separable_features, metrics=["svm", "ndm"], runs=2,
        options={"ndm": {"epochs": 1, "batch_size": 32, "hidden_units": (8,)}})
    table = markdown_table(results)
    lines = table.strip().splitlines()
    assert lines[0] == "| Measure | conv | fc | Y |"
    svm_row = next(line for line in lines if line.startswith("| SVM accuracy (%)"))
    assert svm_row.count("±") == 3
    ndm_row = next(line for line in lines if line.startswith("| NDM (nats)"))
    assert ndm_row.split("|")[2].strip() == "-" and ndm_row.split("|")[4].strip() != "-"
    comparison = report.comparison_table({"DIM(L)": results})
    assert comparison.splitlines()[0].startswith("| Model | SVM (conv) | SVM (fc) | SVM (Y) | NDM (Y)")
    path = tmp_path / "out" / "results.json"
    io.write_json(path, results)
    assert report.read_json(path) == json.loads(json.dumps(results))
    assert os.listdir(path.parent) == ["results.json"]


def test_format_value_matches_the_paper_style():
    assert report.format_value("svm", {"mean": 0.6325, "std": 0.0086, "values": [1, 2]}) == "63.25 ± 0.86"
    assert report.format_value("ms_ssim", 0.534) == "0.53"
    assert report.format_value("attributes", {"mean": 0.8, "min": 0.5, "max": 0.99}) == "80.00 (50.00-99.00)"


def test_short_measures_in_a_row_do_not_warn_of_retracing(monkeypatch):
    # TF warns when 5 traces of one step function fall within 10 calls.  Every new Keras model traces its
    # fit's step once; the held-out passes (NDM/MINE bound, probe accuracy) are plain calls and trace
    # nothing, so five rounds of short measures stay below it (with model.evaluate / model.predict: 2 warnings).
    import logging
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    monkeypatch.setattr(polymorphic_function, "_frequent_tracing_detector_manager",
                        polymorphic_function._FrequentTracingDetectorManager())  # this process's count so far
    messages, logger = [], tf.get_logger()
    handler, level = logging.Handler(logging.WARNING), logger.level
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        rng = np.random.default_rng(0)
        features, labels = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
        for seed in range(5):
            ndm.neural_dependency_measure(features[:48], features[48:], epochs=1, batch_size=16, seed=seed)
            probes.mlp_probe_accuracy(features[:48], labels[:48], features[48:], labels[48:], epochs=1,
                                      last_epochs=1, batch_size=12, seed=seed)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [message for message in messages if "retracing" in message]
