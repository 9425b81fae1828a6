"""The TFRecord format of `apps/prepare_data.py` (`--dataset=tfrecord`): sharded `tf.train.Example` records of
PNG-encoded images and a checksum manifest.

A prepared directory T holds, per split, ``<split>-<k>-of-<n>.tfrecord`` shards and beside each shard a
``<shard>.info.json`` (its record count, byte size, sha256 and the source files it skipped), written when the
shard is complete; ``manifest.json`` is written last (atomically), once every shard of every split is, and
lists them all with their checksums.  A directory without a manifest is an unfinished preparation: rerunning
the same command finishes it.

Each record: ``image`` (PNG bytes, lossless, so that reading back gives the exact pixels that were written),
``index`` (the example's position in the source split, e.g. the folder's sorted file order; the manifest's
``source_count`` is the number of positions, unreadable source files leave gaps) and ``label``
(0 values unlabelled, 1 a class id, 40 celeb_a's attributes).  Examples are assigned to shards by a seeded
permutation (a shard is a random sample of the split, so reading a few shards at a time still mixes classes),
and within a shard they are in source order.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from dim_keras.errors import DataError, first_line

MANIFEST = "manifest.json"
SETTINGS = "prepare.json"
FORMAT = "dim_keras-tfrecord"
VERSION = 1
INFO_SUFFIX = ".info.json"

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.VarLenFeature(tf.int64),
}


def shard_name(split, index, total):
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def example_bytes(png, index, label):
    """A serialized `tf.train.Example` of one image (``label``: None, an int or a sequence of ints)."""
    labels = [] if label is None else np.atleast_1d(np.asarray(label, np.int64)).tolist()
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index)])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_fields(record, label_width):
    """In-graph: ``(png bytes, label, index)`` of a serialized record (the image is decoded later, so that a
    shuffle buffer holds encoded bytes); ``label`` is int64 ``[]`` (``label_width`` 1), ``[label_width]``, or
    -1 for unlabelled (``label_width`` 0)."""
    parsed = tf.io.parse_single_example(record, _FEATURES)
    labels = tf.sparse.to_dense(parsed["label"])
    if label_width == 0:
        label = tf.constant(-1, tf.int64)
    elif label_width == 1:
        label = tf.reshape(labels, [])
    else:
        label = tf.ensure_shape(labels, [label_width])
    return parsed["image"], label, parsed["index"]


def sha256_file(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise DataError(f"tfrecord: cannot read {what} {path} ({first_line(error)})") from None


def read_manifest(data_dir):
    """The manifest of a prepared directory; DataError (one line) when it is missing or unfinished."""
    if data_dir is None:
        raise DataError("tfrecord: no data found; pass --data_dir=DIR, a directory written by "
                        "apps/prepare_data.py --output=DIR")
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(data_dir, SETTINGS)):
            raise DataError(f"tfrecord: {data_dir} holds an unfinished preparation (no {MANIFEST} yet); rerun its "
                            f"apps/prepare_data.py command to finish it")
        raise DataError(f"tfrecord: no {MANIFEST} in --data_dir={data_dir}; write it with apps/prepare_data.py "
                        f"--output={data_dir}")
    manifest = _read_json(path, "the manifest")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"tfrecord: {path} is not a {FORMAT} manifest of version {VERSION}")
    return manifest


def split_entry(manifest, split, data_dir):
    """The manifest's entry of ``split`` (following "same_as"); DataError when it was not prepared."""
    entry = manifest["splits"].get(split)
    if isinstance(entry, dict) and "same_as" in entry:
        entry = manifest["splits"].get(entry["same_as"])
    if not entry:
        prepared = ", ".join(sorted(manifest["splits"])) or "none"
        raise DataError(f"tfrecord: {data_dir} has no {split} split (prepared: {prepared}); rerun "
                        f"apps/prepare_data.py with --splits including {split}")
    return entry


def check_shards(data_dir, entry):
    """The shard paths of a split entry; DataError when one is missing or has another size than the manifest
    says (a cheap check at every start: the full sha256 check is a rerun of apps/prepare_data.py)."""
    paths = []
    for shard in entry["shards"]:
        path = os.path.join(data_dir, shard["file"])
        try:
            size = os.path.getsize(path)
        except OSError:
            raise DataError(f"tfrecord: shard {path} listed in {MANIFEST} is missing") from None
        if size != shard["bytes"]:
            raise DataError(f"tfrecord: shard {path} has {size} bytes, {MANIFEST} says {shard['bytes']}: it is "
                            f"damaged; rerun apps/prepare_data.py to check and rewrite it")
        paths.append(path)
    return paths


def label_width(label_kind, class_names):
    """Values per record label: 0 unlabelled, 1 a class, len(class_names) attributes."""
    if label_kind is None:
        return 0
    return 1 if label_kind == "class" else len(class_names)
