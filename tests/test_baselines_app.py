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
    assert report  # evaluate ran its classifier on the exported encoder


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
