"""DIM's number-of-negatives experiment (App. A.3, Fig. 9): linear-probe accuracy of Y and conv against log2 K.

    python apps/negatives_sweep.py --data_dir=../shared/data/cifar10-dev
    python apps/negatives_sweep.py --dataset=digits --epochs=1 --steps_per_epoch=5 --negatives=1,4 --estimators=jsd,dv

For every estimator of --estimators (default jsd, infonce, dv) and every K of --negatives (default 1, 2, 4, ...,
--batch_size - 1, i.e. log2 K = 0 .. floor(log2(B - 1)) and all B - 1) trains one DIM run with apps/train.py's
training and --negatives=K (each global feature against the local features of K random other images of its
batch) into <output_dir>/<estimator>-k<K>, then probes its Y, fc and conv features (probe.json).  Prints a
markdown table and writes <output_dir>/negatives.json (every point) and <output_dir>/negatives.png (Fig. 9:
accuracy against log2 K, one line per estimator, Y and conv panels); --json adds the JSON object as the last
line.  Rerunning with the same --output_dir skips the finished points.  The flags are the fields of
dim_keras.config.NegativesSweepConfig; the run is dim_keras.runs.negatives_sweep.sweep.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import NegativesSweepConfig  # noqa: E402


def run(config):
    from dim_keras.runs.negatives_sweep import summary_lines, sweep
    result = sweep(config)
    print("\n".join(summary_lines(result)), flush=True)
    if config.json:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(NegativesSweepConfig, run, "negatives_sweep.py",
                interrupt_hint="; finished points are kept: rerun with the same --output_dir to resume")
