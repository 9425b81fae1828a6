"""apps/estimate_mi.py and dim_keras.runs.estimate_mi: JSON output, the plot, and bad input."""
import json
import math
import os
import subprocess
import sys

import pytest

from official_formats import WITHOUT_TENSORFLOW

from dim_keras import choices
from dim_keras.config import EstimateMIConfig
from dim_keras.runs.estimate_mi import estimate_mi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "estimate_mi.py")


def test_json_last_line_has_estimate_and_true_mi():
    result = subprocess.run([sys.executable, APP, "--estimator=nwj", "--rho=0.6", "--dim=2", "--steps=300",
                             "--batch_size=256", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["true_mi"] == pytest.approx(-math.log(1 - 0.36))
    assert abs(payload["estimate"] - payload["true_mi"]) < 0.25 * payload["true_mi"]
    assert "history" not in payload


def test_plot_has_every_estimator_and_is_written_atomically(tmp_path):
    path = tmp_path / "plots" / "mi_vs_rho.png"
    lines = []
    result = estimate_mi(EstimateMIConfig(rhos=(0.0, 0.5), steps=1, batch_size=16, hidden_units=8,
                                          plot=str(path)), log=lines.append)
    assert set(result["plot"]["estimates"]) == set(choices.ESTIMATORS)
    assert all(len(values) == 2 for values in result["plot"]["estimates"].values())
    assert result["true_mi"] == pytest.approx(-math.log(1 - 0.64))  # the default rho=0.8, d=2
    assert len(lines) == len(choices.ESTIMATORS) + 1 and lines[-1] == f"wrote {path}"
    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(path.parent) == ["mi_vs_rho.png"]  # no temporaries left


@pytest.mark.parametrize("args, message", [
    (["--estimator=kl"], "--estimator: unknown value 'kl'"),
    (["--critic=mlp"], "--critic: unknown value 'mlp'"),
    (["--rho=1.0"], "--rho must be < 1.0"),
    (["--rho=nan"], "--rho must be a finite number"),
    (["--steps=0"], "--steps must be >= 1"),
    (["--batch_size=1"], "--batch_size must be >= 2"),
    (["--rhos=0.1,x"], "--rhos must be a comma-separated list of numbers"),
    (["--rhos=0.5,-1"], "--rhos must be > -1.0"),
    (["--plot={tmp}/file/x.png"], "/file is a file, not a directory"),
    (["--plot={tmp}"], "is a directory, not a file"),
    (["positional"], "unexpected arguments"),
    (["--estimator=nwj", "--ema_decay=0.5"], "--ema_decay applies to --estimator=dv (or dv_ema), not nwj"),
    (["--ema_decay=1"], "--ema_decay must be < 1.0"),
    (["--experiment=fig1"], "--experiment: unknown value 'fig1'"),
    (["--sweep_estimators=dv,kl"], "--sweep_estimators: unknown value 'kl'"),
    (["--output_json={tmp}/o.json"], "--output_json needs --experiment=sweep or invariance"),
])
def test_bad_input_is_one_line_before_tensorflow(tmp_path, args, message):
    (tmp_path / "file").write_text("a regular file")
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("estimate_mi.py: error: ") and message in lines[0], lines[0]
