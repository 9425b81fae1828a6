"""apps/estimate_mi.py: JSON output and bad input."""
import json
import math
import os
import subprocess
import sys

import pytest

APP = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "apps", "estimate_mi.py")]


def test_json_last_line_has_estimate_and_true_mi():
    result = subprocess.run(APP + ["--estimator=nwj", "--rho=0.6", "--dim=2", "--steps=300",
                                   "--batch_size=256", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["true_mi"] == pytest.approx(-math.log(1 - 0.36))
    assert abs(payload["estimate"] - payload["true_mi"]) < 0.25 * payload["true_mi"]


@pytest.mark.parametrize("args", [["--estimator=kl"], ["--rho=1.0"], ["--plot=/nonexistent/x.png"]])
def test_bad_input(args):
    result = subprocess.run(APP + args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("estimate_mi.py: error:")
