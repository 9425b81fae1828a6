"""The online probe monitor (dim_keras.callbacks.ProbeMonitor, --monitor_every): known answers, agreement with
an offline probe of the exported encoder, and the setting's defaults and errors."""
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import threadpoolctl
from absl import flags

from official_formats import WITHOUT_TENSORFLOW

from dim_keras import cli
from dim_keras.callbacks import MONITOR_BLAS_THREADS, MONITOR_KNN_K, ProbeMonitor
from dim_keras.config import DEFAULT_MONITOR_EVERY, WITHOUT_CLASS_LABELS, TrainConfig, validate
from dim_keras.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The names other tools read from metrics.json (written out, not derived from the code under test).
KEYS = {"probe_linear_conv", "probe_linear_fc", "probe_linear_y", "probe_knn_conv", "probe_knn_fc", "probe_knn_y"}

CLASSES = 4
TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 100


def coded_images(per_class, seed):
    """8x8 images whose red channel is 40 * class + 20 everywhere and whose green and blue channels are uniform
    noise, drawn independently of the class; returns (uint8 images, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (len(labels), 8, 8, 3)).astype(np.uint8)
    images[..., 0] = (40 * labels + 20)[:, None, None]
    return images, labels


def coded_encoder():
    """A functional encoder (float images in [0, 1]): ``y`` is the one-hot of the class the red channel codes
    (linearly separable, at L1 distance 0 within a class and 2 between classes); ``fc`` (green and blue) and
    ``conv`` (green) see only the noise, so they hold no information on the class.  ``y`` goes through a
    Dropout(0.9), the identity in inference mode only: in training mode it would zero most codes."""
    inputs = keras.Input((8, 8, 3))
    code = keras.ops.mean(inputs[..., 0], axis=(1, 2)) * 255.0
    y = keras.ops.one_hot(keras.ops.cast(keras.ops.round((code - 20.0) / 40.0), "int32"), CLASSES)
    y = keras.layers.Dropout(0.9, seed=0)(y)
    fc = keras.layers.Flatten()(inputs[..., 1:])
    conv = inputs[..., 1:2]
    return keras.Model(inputs, {"conv": conv, "fc": fc, "y": y})


def coded_monitor(every=1):
    train_images, train_labels = coded_images(TRAIN_PER_CLASS, seed=0)
    test_images, test_labels = coded_images(TEST_PER_CLASS, seed=1)
    return ProbeMonitor(train_images, train_labels, test_images, test_labels, every, encoder=coded_encoder())


def test_known_answers_separable_features_score_one_and_label_free_features_chance():
    accuracies = coded_monitor().measure()
    assert set(accuracies) == KEYS
    assert accuracies["probe_linear_y"] == 1.0 and accuracies["probe_knn_y"] == 1.0
    # Features independent of the labels: each test prediction is right with probability 1/4 whatever the
    # classifier learned, so the accuracy over 400 test images has mean 0.25 and std sqrt(.25 * .75 / 400) =
    # 0.022; 0.1 is 4.6 std (a chance failure probability below 1e-5, and the data are seeded).
    for key in ("probe_linear_fc", "probe_knn_fc", "probe_linear_conv", "probe_knn_conv"):
        assert abs(accuracies[key] - 1 / CLASSES) < 0.1, (key, accuracies[key])


def test_logs_every_n_epochs_and_the_last_and_never_a_diverged_epoch():
    monitor = coded_monitor(every=3)
    monitor.set_params({"epochs": 7})
    measured = []
    for epoch in range(7):
        logs = {"loss": 1.0}
        monitor.on_epoch_end(epoch, logs)
        if set(logs) != {"loss"}:
            assert set(logs) == KEYS | {"loss"} and logs["probe_linear_y"] == 1.0
            measured.append(epoch + 1)
    assert measured == [3, 6, 7]  # every 3rd epoch and the run's last one
    nan_logs = {"loss": float("nan")}
    monitor.on_epoch_end(5, nan_logs)
    assert set(nan_logs) == {"loss"}
    assert len(monitor.seconds) == 3


def test_the_logged_numbers_are_an_offline_probe_of_the_exported_encoder(tmp_path):
    from dim_keras.evaluation import encode
    from dim_keras.evaluation.probes import knn_accuracy, logistic_regression_accuracy
    from dim_keras.export import load_encoder
    from dim_keras.runs.train import load_probe_data, monitor_data, train
    config = TrainConfig(dataset="digits", epochs=2, monitor_every=1, monitor_examples=200,
                         output_dir=str(tmp_path / "run"), embedding_dim=32, y_dim=16, batch_size=16,
                         steps_per_epoch=2, jit_compile=False, probe=False, verbose=0)
    result = train(dataclasses.replace(config))
    records = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2] and all(KEYS <= set(r) for r in records)
    assert all(len(result["history"][key]) == 2 for key in KEYS)  # the History after the monitor saw them too
    with open(tmp_path / "run" / "config.json") as handle:
        assert json.load(handle)["resolved"]["monitor_every"] == 1

    # Offline: the exported encoder, the same subsample of the probe's data, the same protocol.
    train_images, train_labels, test_images, test_labels = monitor_data(
        load_probe_data(config, config.probe_max_train), config.monitor_examples)
    assert len(train_images) == 200  # 20 of each digit
    encoder = load_encoder(result["encoder"])
    train_features, test_features = (encode(encoder, images, names=("conv", "fc", "y"))
                                     for images in (train_images, test_images))
    for name in ("conv", "fc", "y"):
        with threadpoolctl.threadpool_limits(MONITOR_BLAS_THREADS, user_api="blas"):  # the same float rounding
            offline_linear = logistic_regression_accuracy(train_features[name], train_labels,
                                                          test_features[name], test_labels)
            offline_knn = knn_accuracy(train_features[name], train_labels, test_features[name], test_labels,
                                       k=MONITOR_KNN_K)
        assert abs(records[-1][f"probe_linear_{name}"] - offline_linear) <= 1e-6, name
        assert abs(records[-1][f"probe_knn_{name}"] - offline_knn) <= 1e-6, name


def test_monitor_every_defaults_to_on_for_class_labels_and_is_an_error_without_them():
    values = flags.FlagValues()
    cli.define_flags(TrainConfig, flag_values=values)
    values(["train.py", "--monitor_every=3", "--monitor_examples=500"])
    parsed = cli.config_from_flags(TrainConfig, flag_values=values)
    assert (parsed.monitor_every, parsed.monitor_examples) == (3, 500)
    assert TrainConfig().resolved_monitor_every() == DEFAULT_MONITOR_EVERY  # digits: class labels
    assert TrainConfig(dataset="cifar10").resolved_monitor_every() == DEFAULT_MONITOR_EVERY
    assert TrainConfig(dataset="celeb_a").resolved_monitor_every() == 0  # 40 attributes, no classes
    validate(TrainConfig(dataset="celeb_a"))
    validate(TrainConfig(dataset="celeb_a", monitor_every=0))
    assert TrainConfig(monitor_every=0).resolved_monitor_every() == 0
    with pytest.raises(UsageError, match="--monitor_every needs class labels and celeb_a has none"):
        validate(TrainConfig(dataset="celeb_a", monitor_every=2))
    with pytest.raises(UsageError, match="--monitor_every must be >= 0"):
        validate(TrainConfig(monitor_every=-1))
    assert {"monitor_every", "monitor_examples"} <= set(TrainConfig.RESUMABLE)
    help_text = next(f for f in dataclasses.fields(TrainConfig) if f.name == "monitor_every").metadata["help"]
    assert f"k={MONITOR_KNN_K}, L1" in help_text and f"Default: {DEFAULT_MONITOR_EVERY} " in help_text


def test_the_datasets_without_class_labels_are_those_the_loaders_give_no_classes():
    from dim_keras.data import dataset_defaults
    from dim_keras.choices import DATASETS
    assert set(WITHOUT_CLASS_LABELS) == {name for name in DATASETS
                                         if dataset_defaults(name)["label_kind"] != "class"}


def test_the_app_rejects_monitoring_an_unlabelled_dataset_in_one_line_before_tensorflow():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, os.path.join(ROOT, "apps", "train.py"),
                             "--dataset=celeb_a", "--monitor_every=2"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: --monitor_every needs class labels"), lines


def test_asking_for_the_monitor_on_an_unlabelled_folder_is_a_usage_error(tmp_path):
    from dim_keras.runs.train import probe_monitor
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path), monitor_every=2)
    with pytest.raises(UsageError, match="--monitor_every needs class labels"):
        probe_monitor(config, None)  # load_probe_data found no labelled splits
    assert probe_monitor(dataclasses.replace(config, monitor_every=None), None) is None  # auto: off
