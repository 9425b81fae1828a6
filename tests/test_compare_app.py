"""apps/compare.py (issue 15's Table 1 / Table 4-shaped comparison) and the code measures of MIM's claims."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app_testing import assert_usage_error  # noqa: E402
from dim_keras.evaluation.latents import active_units, principal_plane, reconstruction_error  # noqa: E402


# ------------------------------------------------------------------ measures with known answers
def test_active_units_count_the_dimensions_whose_mean_varies_over_the_images():
    rng = np.random.RandomState(0)
    codes = np.stack([rng.normal(0, 1.0, 5000),      # variance ~1: active
                      rng.normal(3, 0.05, 5000),     # variance 0.0025: collapsed (below 0.01)
                      np.full(5000, -2.0),           # constant: collapsed
                      rng.normal(0, 0.2, 5000)], 1)  # variance 0.04: active
    count, variances = active_units(codes)
    assert count == 2
    np.testing.assert_allclose(variances, codes.var(axis=0))
    assert active_units(codes, threshold=0.05)[0] == 1


def test_reconstruction_error_is_the_mean_squared_error_per_pixel():
    images = np.random.RandomState(1).randint(0, 256, (7, 4, 4, 3)).astype("uint8")
    as_floats = images.astype(np.float64) / 255
    assert reconstruction_error(lambda x: x, images, batch_size=3) == 0.0
    half = reconstruction_error(lambda x: np.full_like(x, 0.5), images, batch_size=3)
    assert half == pytest.approx(np.mean((as_floats - 0.5) ** 2), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_error(lambda x: x[:, :2], images)


def test_principal_plane_recovers_the_two_directions_of_largest_variance():
    rng = np.random.RandomState(2)
    plane = rng.normal(0, [5.0, 2.0], (400, 2))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    codes = np.concatenate([plane, rng.normal(0, 0.01, (400, 4))], 1) @ rotation.T
    projected = principal_plane(codes)
    # the projection spans the plane: pairwise distances kept up to the small off-plane noise
    d_in = np.linalg.norm(plane[:50, None] - plane[None, :50], axis=-1)
    d_out = np.linalg.norm(projected[:50, None] - projected[None, :50], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=0.1)
    np.testing.assert_array_equal(principal_plane(plane[:, :1])[:, 1], 0.0)


# ------------------------------------------------------------------ the app
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny digits runs (one epoch of 2 steps): DIM(L) with two seeds and a VAE (a method with a decoder
    and a Gaussian posterior)."""
    from dim_keras.config import TrainConfig
    from dim_keras.runs.train import train

    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for method, seed in (("dim", 0), ("dim", 1), ("vae", 0)):
        out = root / f"{method}{seed}"
        train(TrainConfig(method=method, epochs=1, steps_per_epoch=2, batch_size=32, y_dim=8, seed=seed,
                          probe=False, monitor_every=0, verbose=0, output_dir=str(out)), log=lambda *a: None)
        dirs.append(str(out))
    return dirs


def test_compare_measures_every_run_on_the_same_images_and_writes_a_table_json_and_picture(runs, tmp_path):
    import dim_keras
    from dim_keras.config import CompareConfig, EvaluateConfig
    from dim_keras.data import load_evaluation_data
    from dim_keras.runs.compare import compare
    from dim_keras.runs.evaluate import evaluate, open_encoder

    lines = []
    report = compare(CompareConfig(run_dirs=tuple(runs), metrics=("logistic",), max_train=300, max_test=200,
                                   output=str(tmp_path / "c.json"), latent_png=str(tmp_path / "codes.png")),
                     log=lines.append)
    assert list(report["runs"]) == ["dim-1", "dim-2", "vae"]  # repeated methods are numbered
    table = report["table"]
    assert table.splitlines()[0] == ("| Model | LogReg (conv) | LogReg (fc) | LogReg (Y) | AU (Y) | Rec. MSE (Y) |")
    assert table in "\n".join(lines) + "\n"
    # the same test images apps/evaluate.py draws (the seeded subset, uint8)
    size = open_encoder(os.path.join(runs[0], "encoder"))[2]
    test_images = load_evaluation_data("digits", max_train=300, max_test=200, seed=0, crop=size).test_images
    for label, run_dir in zip(report["runs"], runs):
        measures = report["runs"][label]["measures"]
        # each row equals apps/evaluate.py's own measurement of that run on the same subsets
        alone = evaluate(EvaluateConfig(encoder=os.path.join(run_dir, "encoder"), metrics=("logistic",),
                                        max_train=300, max_test=200), log=lambda *a: None)
        assert measures["logistic"] == alone["measures"]["logistic"]
        # active units from the exported encoder's own Y on those images (Gaussian-posterior methods only)
        y = open_encoder(os.path.join(run_dir, "encoder"))[0](test_images)["y"]
        np.testing.assert_allclose(report["runs"][label]["y_variances"], y.astype(np.float64).var(axis=0),
                                   rtol=1e-4, atol=1e-9)
        if label == "vae":
            assert measures["active_units"]["y"] == int(np.sum(y.astype(np.float64).var(axis=0) > 0.01))
            model = dim_keras.load_model(os.path.join(run_dir, "model.keras"))
            recon = np.asarray(model.reconstruct(test_images))
            expected = np.mean((recon.astype(np.float64) - test_images / 255.0) ** 2)
            assert measures["reconstruction_mse"]["y"] == pytest.approx(expected, rel=1e-5)
        else:  # DIM: no decoder, and Y's scale is arbitrary
            assert "reconstruction_mse" not in measures and "active_units" not in measures
    assert json.loads((tmp_path / "c.json").read_text())["table"] == table
    assert (tmp_path / "codes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    ([], "--run_dirs is required"),
    (["--run_dirs={missing}"], "is not a directory"),
    (["--run_dirs={run0},{run0}"], "--run_dirs lists a run twice"),
    (["--run_dirs={run0},{run1}", "--labels=a"], "--labels gives 1 labels for 2 --run_dirs"),
    (["--run_dirs={empty}"], "--run_dirs: cannot read"),
    (["--run_dirs={run0}", "--metrics=logistic,logistic"], "--metrics lists a value twice"),
    (["--run_dirs={run0}", "--metrics=ms_ssim2"], "--metrics"),
    (["--run_dirs={run0}", "--nolatent_measures", "--latent_png={tmp}/a.png"], "--latent_png draws the code"),
    (["--run_dirs={no_model}"], "has no model.keras"),
])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, args, message):
    import shutil

    (tmp_path / "empty").mkdir()
    shutil.copytree(runs[0], tmp_path / "no_model")
    (tmp_path / "no_model" / "model.keras").unlink()
    values = dict(run0=runs[0], run1=runs[1], missing=str(tmp_path / "nope"), empty=str(tmp_path / "empty"),
                  tmp=str(tmp_path), no_model=str(tmp_path / "no_model"))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "compare.py"),
                             *[a.format(**values) for a in args]], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert_usage_error(result, message, app="compare.py")


def test_the_app_prints_the_table(runs):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "compare.py"), f"--run_dirs={','.join(runs)}",
                          "--labels=first,second,third", "--metrics=logistic", "--layers=y", "--max_train=200",
                          "--max_test=100", "--verbose=0"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| first |" in run.stdout and "| third |" in run.stdout
