"""Loading the prepared tensorflow-datasets versions (tfds.load with download=False by default): as numpy
arrays (`load_tfds_arrays`) or as a stream (`tfds_stream`: ``tfds.load`` as a tf.data.Dataset, read while
training iterates it)."""

import numpy as np
import tensorflow as tf

from dim_keras.errors import DataError, first_line

_BATCH = 512


def load_tfds_arrays(tfds_name, split, data_dir, download, missing_message, convert):
    """Run `convert(example) -> (image uint8 [H, W, 3], label)` over a tfds split into numpy arrays.

    Returns (images [N, H, W, 3], labels [N, ...]). A dataset that is not prepared raises DataError
    with `missing_message` (tfds fails at once with download=False).
    """
    import tensorflow_datasets as tfds

    dataset = _load(tfds_name, split, data_dir, download, missing_message)
    count = int(dataset.cardinality())
    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(_BATCH)
    images = labels = None
    filled = 0
    image_parts, label_parts = [], []  # used only when tfds does not know the split's size
    try:
        for image_batch, label_batch in tfds.as_numpy(dataset):
            if count < 0:
                image_parts.append(image_batch)
                label_parts.append(label_batch)
                filled += len(image_batch)
                continue
            if images is None:
                # Preallocate from the known cardinality: STL-10's unlabelled split alone is 2.7 GB.
                images = np.empty((count, *image_batch.shape[1:]), image_batch.dtype)
                labels = np.empty((count, *label_batch.shape[1:]), label_batch.dtype)
            images[filled : filled + len(image_batch)] = image_batch
            labels[filled : filled + len(label_batch)] = label_batch
            filled += len(image_batch)
    except tf.errors.OpError as error:
        raise DataError(f"{tfds_name}: the prepared tfds data is unreadable ({first_line(error)})") from None
    if not filled:
        raise DataError(f"{tfds_name}: tfds split {split!r} is empty")
    if image_parts:
        return np.concatenate(image_parts), np.concatenate(label_parts)
    return images[:filled], labels[:filled]


def _load(tfds_name, split, data_dir, download, missing_message):
    import tensorflow_datasets as tfds

    try:
        return tfds.load(
            tfds_name, split=split, data_dir=None if data_dir is None else str(data_dir), download=download
        )
    except Exception as error:  # tfds raises AssertionError / DatasetNotFoundError / FileNotFoundError ...
        reason = first_line(error)
        detail = "" if "could not find data" in reason else f" (tfds: {reason})"
        raise DataError(missing_message + detail) from None


def tfds_stream(name, split, tfds_name, tfds_split, data_dir, download, missing_message, convert, label_kind,
                class_names):
    """An `ImageStream` of a prepared tfds split (``convert`` as in `load_tfds_arrays`); None when tfds does not
    know the split's size (it always does for prepared splits), so that it loads into memory instead."""
    from dim_keras.data.streaming import ImageStream, Tfds

    dataset = _load(tfds_name, tfds_split, data_dir, download, missing_message)
    count = int(dataset.cardinality())
    if count <= 0:
        return None
    image_spec = dataset.map(convert).element_spec[0]
    if not image_spec.shape.is_fully_defined():
        return None
    source = Tfds(tfds_name, tfds_split, None if data_dir is None else str(data_dir), download, convert,
                  label_kind is not None)
    return ImageStream(name, split, source, count, tuple(image_spec.shape), label_kind, list(class_names))


def class_example(example):
    return example["image"], example["label"]
