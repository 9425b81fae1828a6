"""Data layer of dim_keras: the datasets of Deep InfoMax (Hjelm et al., ICLR 2019, Sec. 4) as numpy arrays,
and tf.data pipelines over them.

    split = load_split("stl10", "pretrain", data_dir="/data")    # DataSplit(images uint8 [N,H,W,3], labels, ...)
    defaults = dataset_defaults("stl10")                          # paper settings: 64x64 random crops + flips
    dataset = make_dataset(split.images, batch_size=64, training=True, seed=0,
                           crop_size=defaults["pretrain_crop"], flip=defaults["pretrain_flip"])

Splits larger than memory stream from disk instead (`load_split(..., streaming="auto")` returns an
`ImageStream` for a folder, TFRecords of apps/prepare_data.py or a tfds split above `STREAMING_AUTO_BYTES`);
`make_dataset` takes either.

Every user mistake raises `DataError` (a ValueError) with a one-line message.
"""

from dim_keras.errors import DataError
from dim_keras.data.images import SkippedImages, raising_data_errors
from dim_keras.data.load import (DATASETS, PRETRAIN_IS_TRAIN, SPLITS, DataSplit, EvaluationData, center_crop,
                                  dataset_defaults, load_evaluation_data, load_split, open_stream, subsample)
from dim_keras.data.pipeline import make_dataset
from dim_keras.data.streaming import STREAMING_AUTO_BYTES, ImageStream

__all__ = ["DATASETS", "PRETRAIN_IS_TRAIN", "SPLITS", "STREAMING_AUTO_BYTES", "DataError", "DataSplit",
           "EvaluationData", "ImageStream", "SkippedImages", "center_crop", "dataset_defaults",
           "load_evaluation_data", "load_split", "make_dataset", "open_stream", "raising_data_errors", "subsample"]
