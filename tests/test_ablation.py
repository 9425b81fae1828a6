"""tuning/ablation.py: keras-tuner grid over (alpha, beta), results files, resume."""
import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tuning import ablation  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_config(search_dir, **kwargs):
    settings = dict(search_dir=str(search_dir), alphas=(0.0, 1.0), betas=(0.0, 1.0), gammas=(0.1,),
                    embedding_dim=32, y_dim=16, batch_size=32, steps_per_epoch=3, epochs=1,
                    jit_compile=False, eval_max_train=400)
    settings.update(kwargs)
    return ablation.AblationConfig(**settings)


def test_grid_search_resumes_without_redoing_finished_trials(tmp_path):
    # An interrupted search: only the first 2 of the 4 grid points ran.
    rows, tuner = ablation.run_search(tiny_config(tmp_path, max_trials=2))
    assert len(rows) == 2
    # Grid order: (alpha, beta) = (0, 0) first, which has no MI term -> failed, not trained.
    assert (rows[0]["alpha"], rows[0]["beta"], rows[0]["status"]) == (0.0, 0.0, "FAILED")
    assert tuner.trainings_run == 1
    finished = [r["trial_id"] for r in rows if r["status"] == "COMPLETED"]
    assert len(finished) == 1
    marker = os.path.join(tmp_path, "trials", finished[0], "measures.json")
    stamp = os.stat(marker).st_mtime_ns

    # Rerun with the same directory: the oracle reloads, the 2 new grid points run.
    rows, tuner = ablation.run_search(tiny_config(tmp_path))
    assert tuner.trainings_run == 2
    assert os.stat(marker).st_mtime_ns == stamp
    assert sorted((r["alpha"], r["beta"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["status"] for r in rows].count("COMPLETED") == 3

    with open(tmp_path / "results.json") as handle:
        summary = json.load(handle)
    assert len(summary["trials"]) == 4
    completed = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    for trial in completed:
        # Digits: 10 classes, so chance is 0.1; the objective is the probe's accuracy.
        assert 0.0 <= trial["probe_accuracy"] <= 1.0
        assert trial["objective"] == trial["probe_accuracy"]
    assert summary["best"]["objective"] == max(t["objective"] for t in completed)

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
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_heatmap_cells_are_the_trials_values(tmp_path):
    rows = [
        {"trial_id": "0", "status": "COMPLETED", "alpha": 0.0, "beta": 1.0, "gamma": 0.5, "ndm": 0.25},
        {"trial_id": "1", "status": "FAILED", "alpha": 0.0, "beta": 0.0, "gamma": 0.5},
        {"trial_id": "2", "status": "COMPLETED", "alpha": 1.0, "beta": 0.0, "gamma": 1.0, "ndm": 0.5},
    ]
    paths = ablation.plot_heatmaps(rows, ["ndm"], str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["heatmap_ndm_gamma0.5.png", "heatmap_ndm_gamma1.png"]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_SIGNATURE


@pytest.mark.parametrize("flag, message", [
    ("--alphas=0,x", "--alphas must be a comma-separated list of numbers"),
    ("--objective=accuracy", "unknown measure 'accuracy'"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, flag, message):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tuning", "ablation.py"), flag,
                           f"--search_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ablation.py: error: ") and message in lines[-1]
    assert "Traceback" not in proc.stderr


def test_bad_values_are_one_line_usage_errors():
    with pytest.raises(ablation.UsageError, match="--betas values must be finite and >= 0"):
        ablation.parse_floats("-1", "betas")
    with pytest.raises(ablation.UsageError, match="lists a value twice"):
        ablation.parse_floats("0,0.0", "alphas")
    with pytest.raises(ablation.UsageError, match="unknown mode 'random'"):
        ablation.validate(ablation.AblationConfig(mode="random"))
    with pytest.raises(ablation.UsageError, match="alpha_range must be low,high with low < high"):
        ablation.validate(ablation.AblationConfig(alpha_range=(1.0, 0.0)))
    assert ablation.parse_floats("0, 0.5,1", "alphas") == (0.0, 0.5, 1.0)


def test_bad_config_is_rejected_before_any_trial(tmp_path):
    with pytest.raises(ablation.UsageError, match="bayesian needs --max_trials"):
        ablation.run_search(tiny_config(tmp_path, mode="bayesian"))
    assert not os.path.exists(tmp_path / "trials")
