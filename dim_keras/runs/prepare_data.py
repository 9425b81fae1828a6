"""Sharded TFRecords of a dataset, for streaming (``apps/prepare_data.py``; format: `dim_keras.data.tfrecord`).

:func:`prepare_data` writes every requested split of any dataset `dim_keras.data.load_split` reads (a folder
of images included) as ``<split>-<k>-of-<n>.tfrecord`` shards of PNG-encoded images, each with its label and
its position in the source, then ``manifest.json`` with a sha256 per shard.  Then
``apps/train.py --dataset=tfrecord --data_dir=<output>`` streams them.

- Lossless: the images are the exact pixels `load_split` gives (PNG), so reading the shards back gives them
  again (tests/test_prepare_data.py checks the round trip).
- Random shards: with random access to the source (arrays, image files), the examples are assigned to shards
  by a seeded permutation, so every shard is a random sample and a few shards read at a time mix classes; a
  tfds split, read in its own (already shuffled) order, is cut into consecutive shards.
- Resumable: each shard is written to a temporary file and renamed, then its ``.info.json`` (count, bytes,
  sha256, skipped files) is written; a rerun of the same command keeps every shard whose info matches it and
  writes the others.  ``prepare.json`` (written first) holds the settings that define the content, and a
  rerun with other ones is refused.  ``manifest.json`` is written last, atomically: its presence means done.
- Verified: a rerun on a finished directory recomputes every shard's sha256 against the manifest.
- Unreadable image files are skipped (listed per shard and in the manifest), or stop the run with --strict.
"""

import datetime
import json
import os

from dim_keras import io
from dim_keras.config import PrepareDataConfig, to_dict, validate
from dim_keras.errors import DataError, UsageError

# Examples encoded per tf.data batch (and progress-bar step).
_ENCODE_BATCH = 64


def content_settings(config):
    """The settings that define what a preparation holds (``prepare.json``)."""
    values = to_dict(config)
    return {name: values[name] for name in PrepareDataConfig.CONTENT}


def _check_output(output, config):
    """Creates ``output`` or checks that it holds a preparation of the same settings; UsageError otherwise."""
    from dim_keras.data import tfrecord

    settings_path = os.path.join(output, tfrecord.SETTINGS)
    wanted = content_settings(config)
    # The source folder defines the content too; compared as an absolute, normalised path, so that another
    # spelling of the same folder continues the preparation and another folder cannot add its shards to it.
    data_dir = config.data_dir and os.path.abspath(config.data_dir)
    if os.path.exists(settings_path):
        try:
            with open(settings_path) as handle:
                document = json.load(handle)
            saved, saved_data_dir = document["settings"], document["data_dir"]
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"--output={output}: cannot read {settings_path} ({error})") from None
        changed = [f"--{name}={wanted[name]} (it has {saved.get(name)})" for name in wanted
                   if saved.get(name) != wanted[name]]
        if saved_data_dir != data_dir:
            changed.append(f"--data_dir={data_dir} (it has {saved_data_dir})")
        if changed:
            raise UsageError(f"--output={output} holds a preparation with other settings: {', '.join(changed)}; "
                             f"rerun with its settings to continue it, or choose another --output")
        return
    if os.path.isdir(output) and [name for name in os.listdir(output) if not io.is_temporary(name)]:
        raise UsageError(f"--output={output} is not empty and holds no preparation ({tfrecord.SETTINGS}): choose "
                         f"an empty or new directory")
    os.makedirs(output, exist_ok=True)
    io.write_json(settings_path, {"settings": wanted, "data_dir": data_dir,
                                  "started": datetime.datetime.now().isoformat(timespec="seconds")})


def verify(output, manifest=None, log=print):
    """Recomputes every shard's sha256 against ``output``'s manifest; returns the number of shards checked.
    A missing or different shard is a DataError naming it."""
    from dim_keras.data import tfrecord

    manifest = manifest or tfrecord.read_manifest(output)
    checked = 0
    for split, entry in manifest["splits"].items():
        if "same_as" in entry:
            continue
        for shard in entry["shards"]:
            path = os.path.join(output, shard["file"])
            if not os.path.exists(path):
                raise DataError(f"tfrecord: shard {path} of {tfrecord.MANIFEST} is missing; delete "
                                f"{tfrecord.MANIFEST} and rerun apps/prepare_data.py to rewrite it")
            if tfrecord.sha256_file(path) != shard["sha256"]:
                raise DataError(f"tfrecord: shard {path} does not match its sha256 in {tfrecord.MANIFEST}: it is "
                                f"damaged; delete it, its {tfrecord.INFO_SUFFIX} file and {tfrecord.MANIFEST}, "
                                f"then rerun apps/prepare_data.py to rewrite it")
            checked += 1
    return checked


def _splits_to_write(config):
    """``{split: the split it is stored as}``: "pretrain" is stored as "train" where they are the same data."""
    from dim_keras.data import PRETRAIN_IS_TRAIN

    stored = {}
    for split in ("pretrain", "train", "test"):
        if split in config.splits:
            stored[split] = split
    if "pretrain" in stored and config.dataset in PRETRAIN_IS_TRAIN:
        stored["pretrain"] = "train"
    return stored


def _open_source(config, split, skipped):
    """``(kind, source)``: ("stream", an ImageStream) for image files and tfds, else ("arrays", a DataSplit)."""
    from dim_keras.data import load_split, open_stream

    stream = open_stream(config.dataset, split, config.data_dir, download=config.download,
                         image_size=config.image_size, skipped=skipped)
    if stream is not None:
        return "stream", stream
    return "arrays", load_split(config.dataset, split, config.data_dir, download=config.download,
                                image_size=config.image_size, skipped=skipped)


def _shard_positions(count, shard_size, seed, random_access):
    """Source positions of every shard: sorted slices of a seeded permutation, or consecutive slices."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(count) if random_access else np.arange(count)
    return [np.sort(order[start:start + shard_size]) for start in range(0, count, shard_size)]


def _examples(kind, source, positions):
    """tf.data.Dataset of ``(png bytes, index, label)`` of the examples at ``positions`` (label -1 where
    unlabelled)."""
    import numpy as np
    import tensorflow as tf

    if kind == "arrays":
        labels = (source.labels[positions] if source.labels is not None
                  else np.full(len(positions), -1, np.int64))
        dataset = tf.data.Dataset.from_tensor_slices((source.images[positions], positions.astype(np.int64),
                                                      labels.astype(np.int64)))
        return dataset.map(lambda image, index, label: (tf.io.encode_png(image), index, label),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return source.subset(positions).elements().map(
        lambda image, label, index: (tf.io.encode_png(image), index, label),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _sequential_examples(source):
    """The whole stream in its order, as `_examples`' triples (for sources without random access: tfds)."""
    import tensorflow as tf

    return source.elements().map(lambda image, label, index: (tf.io.encode_png(image), index, label),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _finished_info(output, name):
    """The info of a finished shard, or None (no info yet, or a shard of another size: written again)."""
    from dim_keras.data import tfrecord

    info_path = os.path.join(output, name + tfrecord.INFO_SUFFIX)
    try:
        with open(info_path) as handle:
            info = json.load(handle)
        if os.path.getsize(os.path.join(output, name)) == info["bytes"]:
            return info
    except (OSError, ValueError, KeyError):
        pass
    return None


def _write_shard(output, name, batches, skipped, labelled, progress):
    """Writes one shard from ``batches`` of (png, index, label) arrays; returns its info."""
    import tensorflow as tf

    from dim_keras.data import raising_data_errors, tfrecord

    count = 0
    path = os.path.join(output, name)
    with io.atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer, raising_data_errors(skipped):
            for pngs, indices, labels in batches:
                for png, index, label in zip(pngs.numpy(), indices.numpy(), labels.numpy()):
                    writer.write(tfrecord.example_bytes(png, index, label if labelled else None))
                count += len(pngs)
                progress(len(pngs))
    info = {"file": name, "count": count, "bytes": os.path.getsize(path), "sha256": tfrecord.sha256_file(path),
            "skipped": list(skipped.first), "skipped_count": skipped.count}
    io.write_json(path + tfrecord.INFO_SUFFIX, info)
    return info


def prepare_data(config, log=print):
    """Writes the TFRecords ``config`` (a :class:`PrepareDataConfig`) asks for; returns the manifest (plus
    ``"output"`` and ``"verified_shards"`` on a rerun of a finished preparation).  UsageError / DataError
    (one line) for user mistakes."""
    import keras

    from dim_keras.data import SkippedImages, tfrecord
    from dim_keras.data.streaming import Files
    from dim_keras.runtime import progress_verbosity

    validate(config)
    output = config.resolved_output()
    _check_output(output, config)
    io.remove_temporaries(output)
    if os.path.exists(os.path.join(output, tfrecord.MANIFEST)):
        manifest = tfrecord.read_manifest(output)
        checked = verify(output, manifest, log)
        log(f"{output} is complete: {checked} shards match their sha256 in {tfrecord.MANIFEST}")
        return {**manifest, "output": output, "verified_shards": checked}

    stored = _splits_to_write(config)
    sources = {}
    for split in dict.fromkeys(stored.values()):
        sources[split] = _open_source(config, split, SkippedImages(strict=config.strict))
    total = sum(len(source) for _, source in sources.values())
    bar = keras.utils.Progbar(total, unit_name="image", verbose=progress_verbosity(1) if config.verbose else 0)
    done = [0]

    def progress(count):
        done[0] += count
        bar.update(done[0])

    splits, class_names, image_shape = {}, None, None
    for split, (kind, source) in sources.items():
        random_access = kind == "arrays" or isinstance(source.source, Files)
        positions = _shard_positions(len(source), config.shard_size, config.seed, random_access)
        labelled = source.label_kind is not None
        sequential = None if random_access else _Chunks(_sequential_examples(source).batch(_ENCODE_BATCH))
        shards, skipped_first, skipped_count = [], [], 0
        for number, shard_positions in enumerate(positions):
            name = tfrecord.shard_name(split, number, len(positions))
            info = _finished_info(output, name)
            shard_skipped = SkippedImages(strict=config.strict)
            if random_access:
                shard_source = source if kind == "arrays" else _with_skipped(source, shard_skipped)
                batches = _examples(kind, shard_source, shard_positions).batch(_ENCODE_BATCH)
            else:
                batches = sequential.take(len(shard_positions))
            if info is not None:
                if not random_access:
                    for _ in batches:  # read past it: the next shard starts after it
                        pass
                progress(len(shard_positions))
            else:
                info = _write_shard(output, name, batches, shard_skipped, labelled, progress)
            shards.append(info)
            skipped_count += info["skipped_count"]
            skipped_first += info["skipped"][:SkippedImages.MAX_LISTED - len(skipped_first)]
        # source_count: the positions the records' "index" ranges over (skipped files leave gaps).
        splits[split] = {"count": sum(shard["count"] for shard in shards), "source_count": len(source),
                         "label_kind": source.label_kind,
                         "shards": [{k: shard[k] for k in ("file", "count", "bytes", "sha256")} for shard in shards],
                         "skipped": {"count": skipped_count, "first": skipped_first}}
        class_names = class_names or list(source.class_names)
        image_shape = list(source.image_shape)
    for split, target in stored.items():
        if split != target:
            splits[split] = {"same_as": target}
    manifest = {
        "format": tfrecord.FORMAT, "version": tfrecord.VERSION, "encoding": "png",
        "source": {"dataset": config.dataset, "data_dir": config.data_dir and os.path.abspath(config.data_dir),
                   "image_size": config.image_size},
        "image_shape": image_shape, "class_names": class_names or [], "splits": splits,
        "settings": content_settings(config),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    io.write_json(os.path.join(output, tfrecord.MANIFEST), manifest)  # last: its presence means complete
    return {**manifest, "output": output}


def _with_skipped(stream, skipped):
    import dataclasses
    return dataclasses.replace(stream, skipped=skipped)


class _Chunks:
    """Consecutive runs of examples from one pass over a batched dataset: ``take(count)`` yields batches of
    the next ``count`` examples (splitting a batch that straddles two shards)."""

    def __init__(self, dataset):
        self.iterator = iter(dataset)
        self.pending = None

    def take(self, count):
        remaining = count
        while remaining > 0:
            if self.pending is None:
                try:
                    self.pending = next(self.iterator)
                except StopIteration:
                    return
            size = len(self.pending[0])
            if size <= remaining:
                batch, self.pending = self.pending, None
            else:
                batch = tuple(part[:remaining] for part in self.pending)
                self.pending = tuple(part[remaining:] for part in self.pending)
                size = remaining
            remaining -= size
            yield batch


def summary(result):
    """What the app prints: one line per split and where the manifest is."""
    from dim_keras.data import tfrecord

    lines = []
    for split, entry in result["splits"].items():
        if "same_as" in entry:
            lines.append(f"{split}: the {entry['same_as']} shards")
            continue
        skipped = entry["skipped"]["count"]
        lines.append(f"{split}: {entry['count']} images in {len(entry['shards'])} shard(s)"
                     + (f", {skipped} unreadable file(s) skipped (first: {', '.join(entry['skipped']['first'])})"
                        if skipped else ""))
    lines.append(f"{os.path.join(result['output'], tfrecord.MANIFEST)}: sha256 of every shard; train with "
                 f"apps/train.py --dataset=tfrecord --data_dir={result['output']}")
    return "\n".join(lines)
