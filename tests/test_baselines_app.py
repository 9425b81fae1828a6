"""Every comparison model of issue 15 trains through the training app's run layer on digits, checkpoints,
and exports an encoder that apps/evaluate.py accepts (the issue's "each method trains one epoch on digits and
exports an encoder that apps/evaluate.py accepts"; one epoch capped at 3 steps to stay cheap)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app_testing import assert_usage_error  # noqa: E402
from dim_keras.choices import BASELINE_METHODS  # noqa: E402
from dim_keras.config import EvaluateConfig, TrainConfig  # noqa: E402


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_each_method_trains_on_digits_and_exports_an_encoder_evaluate_accepts(tmp_path, method):
    import keras
    from dim_keras.runs.evaluate import evaluate, open_encoder
    from dim_keras.runs.train import train

    out = tmp_path / method
    result = train(TrainConfig(method=method, epochs=1, steps_per_epoch=3, batch_size=32, y_dim=8,
                               probe=False, monitor_every=0, verbose=0, output_dir=str(out)), log=lambda *a: None)
    rows = json.loads((out / "metrics.json").read_text())  # one dict per epoch
    assert len(rows) == 1 and math.isfinite(rows[0]["loss"]), rows
    assert (out / "checkpoints" / "checkpoint").exists()
    encoder_fn, _, (height, width) = open_encoder(result["encoder"])  # what apps/evaluate.py opens
    images = np.random.RandomState(0).randint(0, 256, (4, height, width, 3)).astype("uint8")
    features = encoder_fn(images)
    assert {"conv", "fc", "y"} <= set(features) and features["y"].shape == (4, 8)
    # model.keras reloads as the method's class, and its encoder is the exported one
    reloaded = keras.saving.load_model(result["model"], compile=False)
    assert reloaded.get_config()["name"] and "encoder" in reloaded.get_config()
    y = keras.ops.convert_to_numpy(reloaded.encoder(images.astype("float32") / 255, training=False)["y"])
    np.testing.assert_allclose(y, features["y"], atol=1e-4)
    report = evaluate(EvaluateConfig(encoder=result["encoder"], metrics=("logistic",), layers=("y",),
                                     max_train=200, max_test=100), log=lambda *a: None)
    assert list(report["measures"]) == ["logistic"] and list(report["measures"]["logistic"]) == ["y"]


def test_the_train_app_trains_a_vae_and_evaluate_app_reads_its_encoder(tmp_path):
    out = tmp_path / "vae"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "train.py"), "--method=vae", "--epochs=1",
                          "--steps_per_epoch=2", "--batch_size=32", "--y_dim=8", "--noprobe", "--monitor_every=0",
                          "--verbose=2", f"--output_dir={out}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "reconstruction" in run.stdout and "kl" in run.stdout, run.stdout[-2000:]
    run = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "evaluate.py"), f"--encoder={out / 'encoder'}",
                          "--metrics=logistic", "--layers=y", "--max_train=200", "--max_test=100"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("args, fragment", [
    (["--method=vae", "--alpha=1"], "--alpha is a setting of DIM's objective and --method=vae has no use for it"),
    (["--method=mim", "--estimator=infonce"], "--estimator=infonce is a setting of DIM's objective"),
    (["--method=aae", "--embedding_dim=64"], "--embedding_dim is a setting of DIM's and CPC's critics"),
    (["--method=bigan", "--score_scale=0.5"], "--score_scale is a setting of DIM's and CPC's critics"),
    (["--method=vae", "--vae_beta=2"], "--vae_beta is a setting of --method=beta_vae and --method=vae"),
    (["--vae_beta=2"], "--vae_beta is a setting of --method=beta_vae and --method=dim"),
    (["--method=ae", "--nat_reassign_every=2"], "--nat_reassign_every is a setting of --method=nat"),
    (["--method=nat", "--streaming=on"], "--method=nat keeps one noise target per training image"),
    (["--method=nat", "--strategy=mirrored"], "--strategy=mirrored: --method=nat"),
    (["--method=beta_vae", "--vae_beta=0"], "--vae_beta"),
    (["--method=gan"], "--method"),
])
def test_bad_method_flags_are_one_line_and_exit_2_before_tensorflow(args, fragment):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "train.py"), *args], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert_usage_error(result, fragment)


def test_nat_batches_carry_each_images_own_index():
    """The training pipeline of --method=nat yields (images, indices) with images == split.images[indices]
    (shuffled together), what NAT's per-image targets rely on."""
    from dim_keras.runs.train import load_pretraining_data, pretraining_dataset

    config = TrainConfig(method="nat", batch_size=16)
    split, defaults, input_shape = load_pretraining_data(config)
    batches = list(pretraining_dataset(config, split, defaults, input_shape, seed=3).take(3).as_numpy_iterator())
    seen = np.concatenate([indices for _, indices in batches])
    assert len(set(seen)) == len(seen) == 48 and not np.array_equal(seen, np.arange(48))  # shuffled, no repeats
    for images, indices in batches:
        np.testing.assert_allclose(images, split.images[indices].astype(np.float32) / 255, atol=1e-6)
