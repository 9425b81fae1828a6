"""apps/evaluate.py as a user runs it: flags, one-line errors (exit 2), and end-to-end runs on digits."""

import json
import os
import subprocess
import sys

import keras
import pytest
from PIL import Image

import dim_keras as dk
from dim_keras.export import export_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "evaluate.py")


def run_app(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, APP, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


TRAIN_APP = os.path.join(ROOT, "apps", "train.py")


@pytest.fixture(scope="module")
def tiny_encoder_paths(tmp_path_factory):
    """(SavedModel dir, .keras file) of a tiny encoder for 32x32 digits.

    When apps/train.py exists, it trains DIM(L) for a few steps and its
    exports are used (encoder/ and model.keras, the whole DeepInfoMax model):
    the train -> evaluate pipeline end to end.  Otherwise a random-init encoder
    is exported with dim_keras.export.
    """
    directory = tmp_path_factory.mktemp("encoder")
    if os.path.exists(TRAIN_APP):
        run_dir = directory / "run"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
        result = subprocess.run(
            [sys.executable, TRAIN_APP, "--dataset=digits", "--epochs=1", "--steps_per_epoch=3",
             "--embedding_dim=32", "--y_dim=16", "--probe=false", "--verbose=0",
             f"--output_dir={run_dir}"],
            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return str(run_dir / "encoder"), str(run_dir / "model.keras")
    keras.utils.set_random_seed(0)
    encoder = dk.build_encoder("dcgan", (32, 32, 3), widths=(8, 16, 32), fc_units=32, y_dim=8)
    saved_model = export_encoder(encoder, str(directory / "saved_model"))
    keras_file = str(directory / "encoder.keras")
    encoder.save(keras_file)
    return saved_model, keras_file


def test_help_documents_the_flags():
    result = run_app("--help")
    assert result.returncode in (0, 1)  # absl's --help exits with 1 after printing
    for flag in ("--encoder", "--dataset", "--data_dir", "--metrics", "--output", "--neighbours_png",
                 "--runs", "--seed", "--max_train", "--max_test"):
        assert flag in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--encoder=/no/such/encoder"], "--encoder=/no/such/encoder does not exist"),
    (["--metrics=svm,svn"], "unknown metric 'svn'"),
    (["--dataset=no_such_dataset"], "unknown dataset 'no_such_dataset'"),
    (["--max_train=1"], "--max_train must be >= 10"),
    (["--bogus_flag=1"], "bogus_flag"),
])
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(tiny_encoder_paths, args, message):
    if not any(a.startswith("--encoder") for a in args):
        args = [f"--encoder={tiny_encoder_paths[0]}", *args]
    result = run_app(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("evaluate.py: error:") and message in last_line, last_line


def test_end_to_end_on_digits_with_a_saved_model(tmp_path, tiny_encoder_paths):
    output = tmp_path / "results.json"
    png = tmp_path / "neighbours.png"
    result = run_app(f"--encoder={tiny_encoder_paths[0]}", "--dataset=digits", "--max_train=200",
                     "--max_test=60", "--metrics=svm,knn,ndm,neighbours", "--runs=2",
                     "--estimator_epochs=1", f"--output={output}", f"--neighbours_png={png}",
                     "--verbose=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| SVM accuracy (%) |" in result.stdout and "| NDM (nats) |" in result.stdout
    with open(output) as stream:
        results = json.load(stream)
    assert results["dataset"] == "digits" and results["train_size"] == 200 and results["test_size"] == 60
    assert set(results["measures"]) == {"svm", "knn", "ndm", "neighbours"}
    assert set(results["measures"]["svm"]) == {"conv", "fc", "y"}
    assert len(results["measures"]["svm"]["conv"]["values"]) == 2
    # Even random (or barely trained) conv features separate the ten digits far above chance (10 %).
    assert results["measures"]["svm"]["conv"]["mean"] > 0.5
    assert len(results["measures"]["neighbours"]["y"]["queries"]) == 10  # one query per digit
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_semi_supervised_with_a_keras_model(tmp_path, tiny_encoder_paths):
    output = tmp_path / "results.json"
    result = run_app(f"--encoder={tiny_encoder_paths[1]}", "--dataset=digits", "--max_train=100",
                     "--max_test=30", "--metrics=semi_supervised", "--finetune_epochs=2",
                     "--mlp_last_epochs=2", f"--output={output}", "--verbose=0")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output) as stream:
        value = json.load(stream)["measures"]["semi_supervised"]["conv"]
    assert len(value["values"]) == 2 and all(0.0 <= v <= 1.0 for v in value["values"])
