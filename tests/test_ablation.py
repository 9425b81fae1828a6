"""dim_keras.runs.ablation (keras-tuner grid over alpha, beta; results files; resume) and tuning/ablation.py."""
import csv
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dim_keras import io
from dim_keras.config import AblationConfig, TrainConfig, validate
from dim_keras.data import load_split, subsample
from dim_keras.errors import UsageError
from dim_keras.export import load_encoder
from dim_keras.runs import ablation
from official_formats import WITHOUT_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tuning", "ablation.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(search_dir, **kwargs):
    train = TrainConfig(embedding_dim=32, y_dim=16, batch_size=32, steps_per_epoch=2, epochs=1,
                        jit_compile=False, probe=False, verbose=0)
    settings = dict(search_dir=str(search_dir), alphas=(0.0, 1.0), betas=(0.0, 1.0), gammas=(0.1,),
                    eval_max_train=400, train=train)
    settings.update(kwargs)
    return AblationConfig(**settings)


def probe_accuracy_of(encoder_dir, max_train, seed):
    """Logistic-regression test accuracy on Y of the saved encoder, computed here with scikit-learn
    on the digits subset the measures use (at most ``max_train`` training images)."""
    encoder = load_encoder(encoder_dir)
    train, test = load_split("digits", "train"), load_split("digits", "test")
    train_images, train_labels = subsample(train, max_train, seed)
    assert len(train_images) == max_train
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    classifier.fit(encoder(train_images)["y"], train_labels)
    return classifier.score(encoder(test.images)["y"], test.labels)


def test_grid_search_resumes_without_redoing_finished_trials(tmp_path):
    # An interrupted search: only the first 2 of the 4 grid points ran.
    result = ablation.search(tiny_config(tmp_path, max_trials=2))
    rows = result["rows"]
    assert len(rows) == 2
    # Grid order: (alpha, beta) = (0, 0) first, which has no MI term -> failed, not trained.
    assert (rows[0]["alpha"], rows[0]["beta"], rows[0]["status"]) == (0.0, 0.0, "FAILED")
    assert result["trainings_run"] == 1
    finished = [r["trial_id"] for r in rows if r["status"] == "COMPLETED"]
    assert len(finished) == 1
    marker = os.path.join(tmp_path, "trials", finished[0], "measures.json")
    stamp = os.stat(marker).st_mtime_ns

    # Rerun with the same directory: the oracle reloads, the 2 new grid points run.
    result = ablation.search(tiny_config(tmp_path))
    rows = result["rows"]
    assert result["trainings_run"] == 2
    assert os.stat(marker).st_mtime_ns == stamp
    assert sorted((r["alpha"], r["beta"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["status"] for r in rows].count("COMPLETED") == 3

    with open(tmp_path / "results.json") as handle:
        summary = json.load(handle)
    assert len(summary["trials"]) == 4
    completed = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    for trial in completed:
        # The objective is the linear probe of this trial's own encoder: recompute it independently
        # from the exported SavedModel.  Digits has 10 classes, so chance is about 0.1.
        expected = probe_accuracy_of(tmp_path / "trials" / trial["trial_id"] / "encoder", 400, seed=0)
        assert trial["objective"] == pytest.approx(expected, abs=1e-9)
        assert trial["probe_accuracy"] == trial["objective"]
        assert 0.2 < trial["objective"] <= 1.0
    assert summary["best"]["objective"] == max(t["objective"] for t in completed)
    assert result["best"] == summary["best"]

    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4
    assert {"alpha", "beta", "gamma", "objective", "probe_accuracy"} <= set(table[0])
    assert {(float(r["alpha"]), float(r["beta"])) for r in table} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    failed = [r for r in table if r["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["objective"] == ""

    png = tmp_path / "heatmap_probe_accuracy_gamma0.1.png"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert not [name for name in os.listdir(tmp_path) if io.is_temporary(name)]


ROWS = [
    {"trial_id": "0", "status": "COMPLETED", "alpha": 0.0, "beta": 1.0, "gamma": 0.5, "ndm": 0.25},
    {"trial_id": "1", "status": "FAILED", "alpha": 0.0, "beta": 0.0, "gamma": 0.5},
    {"trial_id": "2", "status": "COMPLETED", "alpha": 1.0, "beta": 0.0, "gamma": 1.0, "ndm": 0.5},
    {"trial_id": "3", "status": "COMPLETED", "alpha": 1.0, "beta": 1.0, "gamma": 0.5, "ndm": 0.125},
]


def cells(figure):
    """The heatmap's image array (rows: beta, columns: alpha; NaN where masked) and ``{(column, row): text}``."""
    axes = figure.axes[0]
    image = np.ma.filled(np.ma.masked_invalid(axes.images[0].get_array()).astype(float), np.nan)
    texts = {tuple(int(round(v)) for v in text.get_position()): text.get_text() for text in axes.texts}
    ticks = ([t.get_text() for t in axes.get_xticklabels()], [t.get_text() for t in axes.get_yticklabels()])
    return image, texts, ticks


def test_heatmap_cells_are_the_trials_values(tmp_path):
    nan = np.nan
    # gamma = 0.5: (alpha, beta) = (0, 1) -> 0.25, (1, 1) -> 0.125; (0, 0) failed, (1, 0) is another gamma's.
    image, texts, ticks = cells(ablation.heatmap_figure(ROWS, "ndm", 0.5))
    np.testing.assert_array_equal(image, [[nan, nan], [0.25, 0.125]])
    assert texts == {(0, 1): "0.25", (1, 1): "0.125"}
    assert ticks == (["0", "1"], ["0", "1"])
    # gamma = 1: only (alpha, beta) = (1, 0) ran.
    image, texts, _ = cells(ablation.heatmap_figure(ROWS, "ndm", 1.0))
    np.testing.assert_array_equal(image, [[nan, 0.5], [nan, nan]])
    assert texts == {(1, 0): "0.5"}

    paths = ablation.plot_heatmaps(ROWS, ["ndm"], str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["heatmap_ndm_gamma0.5.png", "heatmap_ndm_gamma1.png"]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_SIGNATURE


def test_bayesian_scatter_shows_the_completed_trials(tmp_path):
    figure = ablation.scatter_figure(ROWS, "ndm")
    axes = figure.axes[0]
    points = axes.collections[0]
    np.testing.assert_array_equal(points.get_offsets(), [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(points.get_array(), [0.25, 0.5, 0.125])
    assert [text.get_text() for text in axes.texts] == ["0.25 (g=0.5)", "0.5 (g=1)", "0.125 (g=0.5)"]
    paths = ablation.plot_heatmaps(ROWS, ["ndm"], str(tmp_path), mode="bayesian")
    assert [os.path.basename(p) for p in paths] == ["scatter_ndm.png"]


@pytest.mark.parametrize("settings, message", [
    (dict(betas=(-1.0,)), "--betas must be >= 0.0, got -1.0"),
    (dict(alphas=(0.0, 0.0)), "--alphas lists a value twice: 0.0,0.0"),
    (dict(alphas=()), "--alphas needs at least 1 value(s)"),
    (dict(mode="random"), "--mode: unknown value 'random'; choose one of grid, bayesian"),
    (dict(objective="accuracy"), "--objective: unknown value 'accuracy'"),
    (dict(measures=("ndm", "acc")), "--measures: unknown value 'acc'"),
    (dict(alpha_range=(1.0, 0.0)), "--alpha_range must be low,high with low < high"),
    (dict(gamma_range=(0.5,)), "--gamma_range must be low,high with low < high"),
    (dict(mode="bayesian"), "--mode=bayesian needs --max_trials"),
    (dict(alphas=(0.0,), betas=(0.0,)), "--alphas and --betas are all 0"),
    (dict(max_trials=0), "--max_trials must be >= 1"),
    (dict(train=TrainConfig(dataset="nosuch")), "--dataset: unknown value 'nosuch'"),
    (dict(train=TrainConfig(epochs=0)), "--epochs must be >= 1"),
])
def test_bad_values_are_one_line_usage_errors(settings, message):
    with pytest.raises(UsageError) as error:
        validate(AblationConfig(**settings))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_config_is_rejected_before_any_trial(tmp_path):
    with pytest.raises(UsageError, match="bayesian needs --max_trials"):
        ablation.search(tiny_config(tmp_path, mode="bayesian"))
    assert not os.path.exists(tmp_path / "trials")


@pytest.mark.parametrize("args, message", [
    (["--search_dir={blocker}/search"], "--search_dir={blocker}/search: {blocker} is a file, not a directory"),
    (["--alphas=a,b"], "--alphas must be a comma-separated list of numbers, got a,b"),
    (["--alphas=0,x"], "--alphas must be a comma-separated list of numbers"),
    (["--mode=random"], "--mode: unknown value 'random'"),
    (["--dataset=nosuch"], "--dataset: unknown value 'nosuch'"),
    (["--objective=accuracy"], "--objective: unknown value 'accuracy'"),
    (["--mode=bayesian"], "--mode=bayesian needs --max_trials"),
    (["--alpha=1"], "Unknown command line flag 'alpha'"),  # the trials' weights come from the search
    (["positional"], "unexpected arguments: positional"),
])
def test_bad_flags_exit_2_with_one_line_before_tensorflow(tmp_path, args, message):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    args = [arg.format(blocker=blocker) for arg in args]
    if not any(arg.startswith("--search_dir") for arg in args):
        args.append(f"--search_dir={tmp_path}/search")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("ablation.py: error: ") and message.format(blocker=blocker) in lines[0], lines[0]
    assert not (tmp_path / "search").exists()


def test_app_is_importable_without_defining_flags():
    from absl import flags
    namespace = runpy.run_path(APP)
    assert callable(namespace["run"])
    assert "search_dir" not in flags.FLAGS and "alphas" not in flags.FLAGS


def test_corrupt_data_stops_the_search_with_one_usage_error_and_the_search_resumes(tmp_path):
    from official_formats import write_cifar10
    write_cifar10(str(tmp_path / "data"), n_per_batch=16, rng=np.random.default_rng(0))
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    good = batch.read_bytes()
    batch.write_bytes(good[:100])  # truncated
    train = TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "data"), embedding_dim=32, y_dim=16,
                        batch_size=16, steps_per_epoch=2, epochs=1, jit_compile=False, probe=False, verbose=0)
    config = tiny_config(tmp_path / "search", alphas=(1.0,), betas=(1.0,), eval_max_train=60, train=train)
    with pytest.raises(UsageError, match="truncated"):  # not a failed trial per grid point
        ablation.search(config)
    batch.write_bytes(good)
    rows = ablation.search(config)["rows"]
    assert [(r["alpha"], r["beta"], r["status"]) for r in rows] == [(1.0, 1.0, "COMPLETED")]


def test_a_corrupt_test_split_stops_the_search_at_the_measures(tmp_path):
    from official_formats import write_cifar10
    write_cifar10(str(tmp_path / "data"), n_per_batch=16, rng=np.random.default_rng(0))
    test_batch = tmp_path / "data" / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])  # training reads data_batch_*, the measures test_batch
    train = TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "data"), embedding_dim=32, y_dim=16,
                        batch_size=16, steps_per_epoch=2, epochs=1, jit_compile=False, probe=False, verbose=0)
    config = tiny_config(tmp_path / "search", alphas=(1.0,), betas=(0.5, 1.0), eval_max_train=60, train=train)
    with pytest.raises(UsageError, match="test_batch"):
        ablation.search(config)
    trials = sorted(os.listdir(tmp_path / "search" / "trials"))
    assert trials == ["0"]  # stopped at the first trial, not every grid point trained and failed
