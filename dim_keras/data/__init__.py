"""Data layer of dim_keras: the datasets of Deep InfoMax (Hjelm et al., ICLR 2019, Sec. 4) as numpy arrays,
and tf.data pipelines over them.

    split = load_split("stl10", "pretrain", data_dir="/data")    # DataSplit(images uint8 [N,H,W,3], labels, ...)
    defaults = dataset_defaults("stl10")                          # paper settings: 64x64 random crops + flips
    dataset = make_dataset(split.images, batch_size=64, training=True, seed=0,
                           crop_size=defaults["pretrain_crop"], flip=defaults["pretrain_flip"])

Every user mistake raises `DataError` (a ValueError) with a one-line message.
"""

from dim_keras.errors import DataError
from dim_keras.data.load import (DATASETS, SPLITS, DataSplit, EvaluationData, center_crop, dataset_defaults,
                                  load_evaluation_data, load_split, subsample)
from dim_keras.data.pipeline import make_dataset

__all__ = ["DATASETS", "SPLITS", "DataError", "DataSplit", "EvaluationData", "center_crop", "dataset_defaults",
           "load_evaluation_data", "load_split", "make_dataset", "subsample"]
