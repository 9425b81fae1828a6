"""Fig. 14 of the DIM paper for a finished training run: the infoNCE loss of Y against the local feature at
every location, with Y computed from the whole image and from an occluded copy (App. A.7's masks).

    python apps/train.py --dataset=cifar10 --data_dir=../shared/data/cifar10-dev --estimator=infonce \\
        --occlusion --output_dir=saved_models/occlude
    python apps/local_maps.py --run_dir=saved_models/occlude            # -> saved_models/occlude/local_maps.png

The flags are the fields of dim_keras.config.LocalMapsConfig; the run is dim_keras.runs.local_maps.local_maps.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import LocalMapsConfig  # noqa: E402


def run(config):
    from dim_keras.runs.local_maps import local_maps, summary_line
    summary = local_maps(config)
    print(summary_line(summary))
    if config.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    cli.run_app(LocalMapsConfig, run, "local_maps.py")
