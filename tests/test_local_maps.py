"""Fig. 14's local loss maps (apps/local_maps.py): the per-location infoNCE loss and the occlusion cells."""
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from dim_keras import estimators
from dim_keras.config import LocalMapsConfig, TrainConfig
from dim_keras.runs.local_maps import cell_occlusion, local_maps, location_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.backends
def test_per_location_losses_are_the_infonce_bound_taken_apart():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, (5, 5, 4)).astype("float32")
    losses = keras.ops.convert_to_numpy(estimators.infonce_location_losses(scores))
    # By hand: for global i at location l, -log softmax of T(i, i, l) against T(i, j, l'), j != i, all l'.
    for i in range(5):
        negatives = np.concatenate([scores[i, j] for j in range(5) if j != i])
        for l in range(4):
            candidates = np.concatenate([[scores[i, i, l]], negatives])
            expected = np.log(np.exp(candidates).sum()) - scores[i, i, l]
            assert losses[i, l] == pytest.approx(expected, rel=1e-5)
    bound = float(estimators.infonce_lower_bound(scores))
    assert bound == pytest.approx(math.log(1 + 4 * 4) - losses.mean(), rel=1e-6)


def test_cell_occlusion_by_hand():
    masks = np.ones((1, 4, 6, 1), "float32")
    masks[0, :2, :3] = 0.0  # the top-left cell of a 2 x 2 grid, fully occluded
    masks[0, 2, 3] = 0.0  # one of the 6 pixels of the bottom-right cell
    np.testing.assert_allclose(cell_occlusion(masks, 2, 2)[0], [[1.0, 0.0], [0.0, 1 / 6]], rtol=1e-6)


def test_local_maps_of_a_trained_run(tmp_path):
    from dim_keras.runs.train import train

    run_dir = str(tmp_path / "run")
    train(TrainConfig(dataset="digits", epochs=1, steps_per_epoch=2, batch_size=16, embedding_dim=32,
                      estimator="infonce", occlusion=True, gamma=0.0, probe=False, monitor_every=0,
                      output_dir=run_dir, verbose=0), log=lambda *a: None)
    summary = local_maps(LocalMapsConfig(run_dir=run_dir, batch_size=16, images=3), log=lambda *a: None)
    assert os.path.getsize(os.path.join(run_dir, "local_maps.png")) > 0
    with open(os.path.join(run_dir, "local_maps.json")) as handle:
        assert json.load(handle) == summary
    rows, cols = summary["grid"]
    # With Y from the whole images the map is the run's own loss: its mean is log K - the infoNCE bound.
    import dim_keras
    model = dim_keras.load_model(os.path.join(run_dir, "model.keras"))
    from dim_keras.data.load import load_split
    images = load_split("digits", "test").images[:16]
    full = location_losses(model, images)
    assert full.shape == (16, rows, cols)
    features = model.encoder(images.astype("float32") / 255.0, training=False)
    bound = float(estimators.infonce_lower_bound(model.local_scores(features["y"], features["local"])))
    assert summary["mean_loss_full"] == pytest.approx(math.log(1 + 15 * rows * cols) - bound, rel=1e-4)
    assert summary["occluded_cells"] > 0 and summary["visible_cells"] > 0


def test_bad_run_dir_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "local_maps.py"), f"--run_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"local_maps.py: error: --run_dir: no config.json in {tmp_path} (the output_dir of a finished "
        f"apps/train.py run has both)"]
