r"""Tschannen et al., "On Mutual Information Maximization for Representation Learning" (ICLR 2020), one
experiment per sub-command, on two views of handwritten digits (the top and bottom half of each image):

    python apps/mi_lab.py invertible     # Sec. 3.1, Fig. 1a-b: invertible encoders, true MI constant
    python apps/mi_lab.py adversarial    # Sec. 3.1, Fig. 1c, App. B: invertible, linear probe made poor
    python apps/mi_lab.py conditioning   # Sec. 3.1, Fig. 2: the Jacobian's condition number during training
    python apps/mi_lab.py critics        # Sec. 3.2, Fig. 3: bilinear vs separable vs MLP critics
    python apps/mi_lab.py target_mi      # Sec. 3.3: training to a target I_EST = t for several t
    python apps/mi_lab.py encoders       # Sec. 3.3, Fig. 4a-b: MLP vs ConvNet encoders at the same I_EST
    python apps/mi_lab.py negatives      # Sec. 4, Fig. 4c, App. E: non-i.i.d. negatives; I_NCE as a triplet loss

The views are scikit-learn's 8x8 digits (built in) or, with --dataset=mnist --data_dir=D, the official
MNIST idx files in D.  Every experiment writes <output_dir>/<experiment>.json and .png and prints one line
per evaluation; the defaults run on a CPU in minutes (--steps, --seeds for longer runs).  The flags are the
fields of dim_keras.config.MILabConfig; the run is dim_keras.runs.mi_lab.mi_lab.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import MILabConfig  # noqa: E402


def run(config):
    from dim_keras.runs.mi_lab import mi_lab
    from dim_keras.runs.mi_lab.common import output_paths
    result = mi_lab(config)
    for line in result.get("summary_lines", []):
        print(line)
    print("wrote " + " and ".join(output_paths(config)))
    if config.json:
        print(json.dumps({k: v for k, v in result.items() if k != "summary_lines"}))


if __name__ == "__main__":
    cli.run_app(MILabConfig, run, "mi_lab.py")
