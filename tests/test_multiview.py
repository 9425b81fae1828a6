"""The two-view testbed of Tschannen et al. (dim_keras.multiview) and apps/mi_lab.py's command line."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import dim_keras
from dim_keras import critics, multiview
from dim_keras.data.digits import load_native_digits
from official_formats import WITHOUT_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "mi_lab.py")


def test_split_views_cuts_rows_in_half_and_scales_uint8():
    images = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    views = multiview.split_views(images, [7, 8])
    np.testing.assert_array_equal(views.top[1], np.float32([12, 13, 14, 15, 16, 17]) / np.float32(255))
    np.testing.assert_array_equal(views.bottom[0] * 255, np.float32([6, 7, 8, 9, 10, 11]))
    assert views.half_shape == (2, 3) and views.labels.dtype == np.int64 and len(views) == 2
    with pytest.raises(ValueError, match="even H"):
        multiview.split_views(np.zeros((1, 5, 4)), [0])


def test_digit_views_reassemble_the_native_images():
    images, labels = load_native_digits("test")
    views = multiview.load_views("digits", "test")
    assert views.top.shape == (len(images), 32) and views.half_shape == (4, 8)
    np.testing.assert_array_equal(np.concatenate([views.top, views.bottom], axis=1).reshape(-1, 8, 8), images)
    np.testing.assert_array_equal(views.labels, labels)


def _model(kind="mlp", estimator="infonce", target_mi=None, dim=32):
    keras.utils.set_random_seed(0)
    model = multiview.TwoViewInfoMax(multiview.build_view_encoder(kind, dim, (4, 8), seed=0),
                                     multiview.build_view_encoder(kind, dim, (4, 8), seed=1),
                                     critics.BilinearCritic(), estimator, target_mi=target_mi)
    model.build(((None, dim), (None, dim)))
    return model


def test_target_loss_is_the_distance_to_the_target():
    views = multiview.load_views("digits", "test")
    top, bottom = views.top[:16], views.bottom[:16]
    free = _model()
    loss, estimate = free.objective(top, bottom)
    assert float(loss) == pytest.approx(-float(estimate))
    for target in (float(estimate) + 1.5, float(estimate) - 0.5):
        aimed = _model(target_mi=target)
        aimed_loss, aimed_estimate = aimed.objective(top, bottom)
        assert float(aimed_estimate) == pytest.approx(float(estimate), abs=1e-6)  # same seed, same weights
        assert float(aimed_loss) == pytest.approx(abs(float(estimate) - target), abs=1e-5)


def test_identical_views_drive_infonce_towards_log_batch():
    # With X2 = X1 the positive pair is the only exact match in the batch: the critic can make I_NCE
    # approach its ceiling log B, which an untrained model is far from.
    views = multiview.load_views("digits", "train")
    same = multiview.Views(views.top, views.top, views.labels, views.half_shape)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    history = model.fit(multiview.view_dataset(same, 32, seed=0), steps_per_epoch=150, epochs=1,
                        shuffle=False, verbose=0)
    assert history.history["mi_estimate"][-1] > 0.8 * math.log(32)
    _, before = _model().objective(same.top[:32], same.bottom[:32])
    assert float(before) < 0.3 * math.log(32)


def test_saved_model_round_trips(tmp_path):
    views = multiview.load_views("digits", "test")
    model = _model(kind="conv", estimator="nwj", target_mi=2.0)
    path = str(tmp_path / "two_views.keras")
    model.save(path)
    loaded = dim_keras.load_model(path)
    assert (loaded.estimator, loaded.target_mi) == ("nwj", 2.0)
    np.testing.assert_allclose(loaded(views.top[:8]), model(views.top[:8]), atol=1e-6)
    np.testing.assert_allclose(loaded.objective(views.top[:8], views.bottom[:8])[1],
                               model.objective(views.top[:8], views.bottom[:8])[1], atol=1e-5)


@pytest.mark.parametrize("args, message", [
    ([], "name an experiment: one of invertible"),
    (["fig3"], "unknown experiment 'fig3'; choose one of invertible"),
    (["critics", "extra"], "unexpected arguments: extra"),
    (["critics", "--dataset=cifar10"], "--dataset: unknown value 'cifar10'"),
    (["critics", "--steps=10", "--eval_every=20"], "--eval_every=20 is more than --steps=10"),
    (["critics", "--steps=10", "--eval_every=3"], "--eval_every=3 must divide --steps=10"),
    (["critics", "--estimators=nwj,nwj"], "--estimators lists a value twice"),
    (["critics", "--data_dir={tmp}"], "--data_dir applies to --dataset=mnist"),
    (["negatives", "--dataset=mnist"], "negatives runs on synthetic Gaussians"),
    (["target_mi", "--estimators=jsd", "--targets=1,2"], "--targets=2 is out of reach of the JSD bound"),
    (["critics", "--data_dir={tmp}/missing"], "--data_dir"),
])
def test_bad_input_is_one_line_before_tensorflow(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("mi_lab.py: error: ") and message in lines[0], lines[0]


def test_help_lists_the_experiments():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, "--help"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for experiment in ("invertible", "adversarial", "conditioning", "critics", "target_mi", "encoders", "negatives"):
        assert f"mi_lab.py {experiment}" in result.stdout
    assert "--probe_examples" in result.stdout
