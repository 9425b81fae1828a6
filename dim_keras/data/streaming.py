"""Streaming sources: splits read from disk while they are iterated, never held whole in memory.

An `ImageStream` is one split of a dataset on disk, in one of three forms:

- image files (``--dataset=folder``): the files are listed once (paths and labels, a few dozen bytes each);
  tf.data reads, decodes and resizes them in parallel, and a file that cannot be read is skipped and counted
  (`dim_keras.data.images.decode_or_fall_back`);
- TFRecord shards written by ``apps/prepare_data.py`` (``--dataset=tfrecord``, `dim_keras.data.tfrecord`);
- a prepared tensorflow-datasets split (``tfds.load`` as a tf.data.Dataset, not converted to numpy).

`ImageStream.elements` gives ``(uint8 image [H, W, 3], label, index)`` elements: ``label`` is an int64 class
id, int64 [40] attributes or -1 (unlabelled), ``index`` the example's position in the split's source order.
Training shuffles them with a seed (`make_dataset`), so the order is the same on every run with that seed,
and, under MultiWorkerMirroredStrategy, keeps only this worker's share of the *files* (`elements`'
``num_shards`` / ``shard_index``): every worker reads only its own files, and the shares of all workers cover
each pass over the files once (a pass is an epoch when the split is a multiple of workers x batch size:
docs/DISTRIBUTED.md).  Evaluation reads them in order, in batches (`ImageStream.batches`),
and keeps only features (`dim_keras.evaluation.encode`).

Whether a split streams is ``--streaming=auto|on|off``: ``auto`` streams when the decoded split is larger
than `STREAMING_AUTO_BYTES`, and holds smaller ones as arrays (`dim_keras.data.load_split`).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

# STREAMING_AUTO_BYTES: the size above which --streaming=auto streams a split (why: in dim_keras.choices).
from dim_keras.choices import STREAMING_AUTO_BYTES  # noqa: F401  (dim_keras.data and load.py import it here)
from dim_keras.data import tfrecord
from dim_keras.data.images import (SkippedImages, decode_image_files_skipping, decode_one, decode_or_fall_back,
                                   raising_data_errors)
from dim_keras.errors import DataError

# Records (TFRecord shards, tfds examples) are shuffled through a buffer of this many encoded examples
# (apps/prepare_data.py already assigns examples to shards at random; the buffer varies the order per epoch).
RECORD_SHUFFLE_BUFFER = 2048
# TFRecord shards read at once (interleaved), a shuffled few at a time.
_RECORD_CYCLE = 8
# Files tried, in order, before a folder whose first files cannot be read is refused as "not images".
_READABLE_PROBE = 16


@dataclasses.dataclass(frozen=True)
class Files:
    """Image files: paths (bytes, os.fsencode), labels int64 [N] or None, resized to ``size``."""
    paths: list
    labels: np.ndarray
    size: tuple
    what: str = "folder"


@dataclasses.dataclass(frozen=True)
class Records:
    """TFRecord shards of apps/prepare_data.py; ``label_width`` as `dim_keras.data.tfrecord.label_width`;
    ``source_count``: the source positions the records' ``index`` ranges over (more than the records where
    unreadable source files were skipped, which leaves gaps)."""
    shards: list
    label_width: int
    source_count: int
    # The sorted "index" of every record, read once where there are gaps (`ImageStream._record_indices`).
    cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Tfds:
    """A prepared tfds split; ``convert(example) -> (uint8 image [H, W, 3], label)``."""
    tfds_name: str
    tfds_split: str
    data_dir: str
    download: bool
    convert: object
    labelled: bool


@dataclasses.dataclass(eq=False)
class ImageStream:
    """One split of a dataset, read from disk as it is iterated (see the module docstring).

    ``count``: examples of the split (image files: unreadable ones included, they are skipped while reading;
    TFRecords: the records written, so that positions, ``len`` and `read_labels` agree);
    ``image_shape``: (H, W, 3) of every element; ``positions``: a subset (`subset`), sorted source positions;
    ``crop``: a center crop (`center_cropped`); ``skipped``: the `SkippedImages` collector of unreadable files
    (None: the first one is a DataError).
    """

    name: str
    split: str
    source: object
    count: int
    image_shape: tuple
    label_kind: str | None
    class_names: list
    positions: np.ndarray | None = None
    crop: tuple | None = None
    skipped: object = None

    streaming = True  # DataSplit.streaming is False

    def __len__(self):
        return self.count if self.positions is None else len(self.positions)

    @property
    def output_shape(self):
        """(H, W, 3) of the elements, after the center crop."""
        return (*self.crop, 3) if self.crop else tuple(self.image_shape)

    @property
    def decoded_bytes(self):
        """Bytes of the stream's elements as one uint8 array."""
        return len(self) * int(np.prod(self.output_shape))

    @property
    def labels(self):
        """The labels when they are known without reading the data (image files), else None."""
        if not isinstance(self.source, Files) or self.source.labels is None:
            return None
        return self.source.labels if self.positions is None else self.source.labels[self.positions]

    def subset(self, positions):
        """The stream of the examples at ``positions`` (of this stream's order), in order."""
        positions = np.unique(np.asarray(positions, np.int64))
        if len(positions) and (positions[0] < 0 or positions[-1] >= len(self)):
            raise DataError(f"positions out of range for {len(self)} examples")
        if self.positions is not None:
            positions = self.positions[positions]
        return dataclasses.replace(self, positions=positions)

    def center_cropped(self, height, width):
        """The stream of the central ``height`` x ``width`` crops (None keeps that side), as `center_crop`."""
        source_h, source_w = self.image_shape[:2]
        height = source_h if height is None else int(height)
        width = source_w if width is None else int(width)
        if (source_h, source_w) == (height, width):
            return dataclasses.replace(self, crop=None)
        if source_h < height or source_w < width:
            raise DataError(f"the images are {source_h}x{source_w}, smaller than the encoder's {height}x{width} "
                            f"input")
        return dataclasses.replace(self, crop=(height, width))

    # ----------------------------------------------------------------------------------------- reading
    def elements(self, *, shuffle_seed=None, num_shards=1, shard_index=0):
        """tf.data.Dataset of ``(uint8 image, label, index)``: in source order, or shuffled by
        ``shuffle_seed`` (a new order every pass, the same sequence of orders for the same seed); with
        ``num_shards`` > 1 only this worker's share of the files (a disjoint share of every pass)."""
        if not 0 <= shard_index < num_shards:
            raise DataError(f"shard_index {shard_index} must be in [0, {num_shards})")
        if isinstance(self.source, Files):
            dataset = self._file_elements(shuffle_seed, num_shards, shard_index)
        elif isinstance(self.source, Records):
            dataset = self._record_elements(shuffle_seed, num_shards, shard_index)
        else:
            dataset = self._tfds_elements(shuffle_seed, num_shards, shard_index)
        if self.crop:
            height, width = self.crop
            full_h, full_w = self.image_shape[:2]
            top, left = (full_h - height) // 2, (full_w - width) // 2
            dataset = dataset.map(lambda image, label, index: (
                image[top:top + height, left:left + width], label, index))
        return dataset

    def _positions(self):
        return np.arange(self.count, dtype=np.int64) if self.positions is None else self.positions

    def _file_elements(self, shuffle_seed, num_shards, shard_index):
        files = self.source
        paths = tf.constant(files.paths)
        labels = tf.constant(files.labels if files.labels is not None else np.full(self.count, -1, np.int64))
        skipped = self.skipped
        positions = self._positions()
        dataset = tf.data.Dataset.from_tensor_slices(positions)
        if shuffle_seed is not None:
            # Positions, not paths: the whole split is shuffled (8 bytes per file in the buffer).
            dataset = dataset.shuffle(len(positions), seed=shuffle_seed, reshuffle_each_iteration=True)
        if num_shards > 1:
            dataset = dataset.shard(num_shards, shard_index)  # after the shuffle: every pass is split anew

        def read(position):
            label = tf.gather(labels, position)
            decoded = decode_or_fall_back(tf.gather(paths, position), files.size, what=files.what, skipped=skipped)
            return decoded.map(lambda image, readable: (image, label, position, readable))

        dataset = dataset.interleave(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.filter(lambda image, label, index, readable: readable).map(
            lambda image, label, index, readable: (image, label, index))

    def _record_elements(self, shuffle_seed, num_shards, shard_index, decode=True):
        records = self.source
        files = tf.data.Dataset.from_tensor_slices(list(records.shards))
        if shuffle_seed is not None:
            files = files.shuffle(len(records.shards), seed=shuffle_seed, reshuffle_each_iteration=True)
        # File-level sharding needs a shard file per worker at least; with fewer every worker reads all of
        # them and keeps every num_shards-th record (tf.data's DATA policy, correct but num_shards x the I/O).
        by_file = len(records.shards) >= num_shards
        if num_shards > 1 and by_file:
            files = files.shard(num_shards, shard_index)
        dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(records.shards), _RECORD_CYCLE),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if num_shards > 1 and not by_file:
            dataset = dataset.shard(num_shards, shard_index)
        width = records.label_width
        dataset = dataset.map(lambda record: tfrecord.parse_fields(record, width),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.positions is not None:
            keep = np.zeros(records.source_count, bool)
            keep[self._record_indices()[self.positions]] = True
            keep = tf.constant(keep)
            dataset = dataset.filter(lambda png, label, index: tf.gather(keep, index))
        if shuffle_seed is not None:  # encoded bytes in the buffer, decoded after it
            dataset = dataset.shuffle(RECORD_SHUFFLE_BUFFER, seed=shuffle_seed + 1, reshuffle_each_iteration=True)
        if not decode:
            return dataset
        shape = list(self.image_shape)
        return dataset.map(lambda png, label, index: (tf.ensure_shape(tf.io.decode_png(png, channels=3), shape),
                                                      label, index),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _record_indices(self):
        """The sorted ``index`` (source position) of every record: a stream's positions count records, and the
        records' indices skip the positions of unreadable source files.  Without gaps they are the positions;
        with gaps they are read once (the index fields only, nothing decoded)."""
        records = self.source
        if records.source_count == self.count:
            return np.arange(self.count, dtype=np.int64)
        if "indices" not in records.cache:
            width = records.label_width
            dataset = tf.data.TFRecordDataset(list(records.shards)).map(
                lambda record: tfrecord.parse_fields(record, width)[2], num_parallel_calls=tf.data.AUTOTUNE)
            indices = np.sort(np.concatenate([np.zeros(0, np.int64)] + [b.numpy() for b in dataset.batch(4096)]))
            if len(indices) != self.count:
                raise DataError(f"tfrecord: the {self.split} shards hold {len(indices)} records, the manifest says "
                                f"{self.count}; rerun apps/prepare_data.py to check them")
            records.cache["indices"] = indices
        return records.cache["indices"]

    def _tfds_elements(self, shuffle_seed, num_shards, shard_index):
        import tensorflow_datasets as tfds

        source = self.source
        shuffled = shuffle_seed is not None

        def load(input_context):
            read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, input_context=input_context)
            return tfds.load(source.tfds_name, split=source.tfds_split, data_dir=source.data_dir,
                             download=source.download, shuffle_files=shuffled, read_config=read_config)

        dataset, by_file = None, False
        if num_shards > 1:
            context = tf.distribute.InputContext(num_input_pipelines=num_shards, input_pipeline_id=shard_index)
            try:
                dataset, by_file = load(context), True
            except (ValueError, AssertionError):
                pass  # fewer tfds files than workers: shard the records below
        if dataset is None:
            dataset = load(None)
        if num_shards > 1 and not by_file:
            dataset = dataset.shard(num_shards, shard_index)
        labelled = source.labelled

        def convert(index, example):
            image, label = source.convert(example)
            label = tf.cast(label, tf.int64)
            if not labelled:
                label = tf.constant(-1, tf.int64)
            return image, label, index

        # enumerate: the source position (meaningful in source order: subsets and evaluation read in order).
        dataset = dataset.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.positions is not None:
            keep = np.zeros(self.count, bool)
            keep[self.positions] = True
            keep = tf.constant(keep)
            dataset = dataset.filter(lambda image, label, index: tf.gather(keep, index))
        if shuffled:
            dataset = dataset.shuffle(RECORD_SHUFFLE_BUFFER, seed=shuffle_seed + 1, reshuffle_each_iteration=True)
        shape = list(self.image_shape)
        return dataset.map(lambda image, label, index: (tf.ensure_shape(image, shape), label, index))

    def batches(self, batch_size):
        """Source-order batches ``(uint8 images [b, H, W, 3], labels [b, ...], indices [b])`` for evaluation."""
        dataset = self.elements().batch(batch_size).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        return dataset.with_options(options)

    def read_labels(self):
        """The labels of the stream's ``len`` examples in source order (image files: unreadable ones included),
        or None when unlabelled: known from the listing for image files, else read (without decoding TFRecord
        images)."""
        if self.label_kind is None:
            return None
        if isinstance(self.source, Files):
            return self.labels
        if isinstance(self.source, Records):
            dataset = self._record_elements(None, 1, 0, decode=False).map(lambda png, label, index: (label, index))
        else:
            dataset = self.elements().map(lambda image, label, index: (label, index))
        labels, indices = [], []
        for label_batch, index_batch in dataset.batch(4096):
            labels.append(label_batch.numpy())
            indices.append(index_batch.numpy())
        if not labels:
            return np.zeros(0, np.int64)
        return np.concatenate(labels)[np.argsort(np.concatenate(indices), kind="stable")]

    def read_all(self, batch_size=256):
        """``(images uint8 [N, H, W, 3], labels or None)`` of the whole stream in source order (unreadable files
        skipped): for splits small enough to hold."""
        if isinstance(self.source, Files) and not self.crop:
            files = self.source
            paths = [os.fsdecode(path) for path in files.paths]
            positions = self._positions()
            images, readable = decode_image_files_skipping([paths[p] for p in positions], files.size,
                                                           what=files.what, skipped=self.skipped)
            labels = self.labels
            return images, None if labels is None else labels[readable]
        images = np.empty((len(self), *self.output_shape), np.uint8)
        labels, indices, filled = [], [], 0
        with raising_data_errors(self.skipped):
            for image_batch, label_batch, index_batch in self.batches(batch_size):
                images[filled:filled + len(image_batch)] = image_batch.numpy()
                labels.append(label_batch.numpy())
                indices.append(index_batch.numpy())
                filled += len(image_batch)
        order = np.argsort(np.concatenate(indices), kind="stable") if indices else np.zeros(0, np.int64)
        images = images[:filled][order]
        if self.label_kind is None:
            return images, None
        return images, np.concatenate(labels)[order]


def file_stream(name, split, paths, labels, class_names, size, skipped=None, what="folder"):
    """An `ImageStream` of image files resized to ``size``; DataError when none of the first files can be
    read (a folder of non-images is refused before training starts, not skipped file by file)."""
    for path in paths[:_READABLE_PROBE]:
        try:
            decode_one(path, size, what=what)
            break
        except DataError as error:
            last = error
    else:
        raise DataError(f"{what}: none of the first {min(len(paths), _READABLE_PROBE)} images of the {split} "
                        f"split can be read ({last})")
    source = Files([os.fsencode(str(path)) for path in paths], labels, tuple(size), what)
    return ImageStream(name, split, source, len(paths), (*size, 3), None if labels is None else "class",
                       list(class_names), skipped=SkippedImages(strict=True) if skipped is None else skipped)


def record_stream(name, split, data_dir, manifest, entry, skipped=None):
    """An `ImageStream` of a prepared TFRecord split (``entry``: its manifest entry)."""
    shards = tfrecord.check_shards(data_dir, entry)
    label_kind = entry.get("label_kind")
    class_names = list(manifest.get("class_names") or [])
    # The stream's positions count the records written; their "index" is the source position, where
    # unreadable source files left gaps (Records.source_count).
    count = int(entry["count"])
    source = Records(shards, tfrecord.label_width(label_kind, class_names), int(entry.get("source_count", count)))
    return ImageStream(name, split, source, count, tuple(manifest["image_shape"]), label_kind, class_names,
                       skipped=skipped)
