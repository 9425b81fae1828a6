"""Train Deep InfoMax and export the encoder.

    python apps/train.py                       # DIM(L) on scikit-learn's digits
    python apps/train.py --dataset=stl10 --data_dir=/data
    python apps/train.py --flagfile=run.flags

Writes to --output_dir (default saved_models/<dataset>-<objective>-<time>):
checkpoints/ (after every epoch, the newest --keep_checkpoints kept; --resume
continues), logs/ (TensorBoard), metrics.json (one row per epoch; on labelled
datasets every --monitor_every epochs and the last also hold the probe_linear_* and probe_knn_* accuracies of
conv, fc and y), config.json, encoder/
(SavedModel: uint8 images -> features), model.keras (without the optimizer
state unless --keras_optimizer_state), probe.json (labelled datasets).  The flags are the fields of
dim_keras.config.TrainConfig; the run is dim_keras.runs.train.train.

Several machines: one process per worker with TF_CONFIG and --strategy=multi_worker; the chief writes
all of the above, every other worker only checkpoints/ (docs/DISTRIBUTED.md).

KERAS_BACKEND=jax python apps/train.py ... trains on JAX (--strategy=mirrored: keras.distribution.DataParallel
over the local devices) and writes the same outputs; its checkpoints resume on JAX only (README "Backends").
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import TrainConfig  # noqa: E402


def run(config):
    from dim_keras.runs.train import train
    train(config)


if __name__ == "__main__":
    cli.run_app(TrainConfig, run, "train.py")  # the run says on Ctrl-C whether and where it saved
