"""Write a dataset (or a folder of images) as sharded TFRecords, to stream with --dataset=tfrecord.

    python apps/prepare_data.py --dataset=folder --data_dir=photos/ --image_size=64 --output=data/photos
    python apps/train.py --dataset=tfrecord --data_dir=data/photos
    python apps/prepare_data.py --dataset=cifar10 --data_dir=/data --output=data/cifar10

Writes <split>-<k>-of-<n>.tfrecord shards of PNG-encoded images (lossless: the exact pixels apps/train.py
would load) with their labels, a <shard>.info.json beside each finished shard, and manifest.json (a sha256
per shard) last.  Rerunning the same command continues an interrupted preparation (finished shards are
kept) or, once finished, verifies every shard against the manifest.  The flags are the fields of
dim_keras.config.PrepareDataConfig; the run is dim_keras.runs.prepare_data.prepare_data.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import PrepareDataConfig  # noqa: E402


def run(config):
    from dim_keras.runs.prepare_data import prepare_data, summary
    print(summary(prepare_data(config)), flush=True)


if __name__ == "__main__":
    cli.run_app(PrepareDataConfig, run, "prepare_data.py")
