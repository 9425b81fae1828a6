"""apps/prepare_data.py (dim_keras.runs.prepare_data): sharded TFRecords that read back to exactly the pixels
and labels they were written from, resume after an interruption, are verified by their manifest, and train."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import official_formats as formats
from dim_keras.config import PrepareDataConfig, TrainConfig
from dim_keras.data import DataError, SkippedImages, dataset_defaults, load_split
from dim_keras.data import tfrecord
from dim_keras.errors import UsageError
from dim_keras.runs.prepare_data import prepare_data
from dim_keras.runs.train import monitor_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def shard_files(output):
    return sorted(name for name in os.listdir(output) if name.endswith(".tfrecord"))


def test_a_prepared_folder_reads_back_the_exact_pixels_labels_and_checksums(tmp_path, rng):
    data, output = tmp_path / "images", tmp_path / "records"
    formats.write_folder(data, rng, ("cat", "dog", "eel"), n_per_class=12, size=(10, 14))
    (data / "dog" / "img_zzz.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = prepare_data(PrepareDataConfig(dataset="folder", data_dir=str(data), output=str(output),
                                              shard_size=5, verbose=0), log=lambda line: None)
    assert manifest["splits"]["pretrain"] == {"same_as": "train"}  # the folder's pretraining split is its train
    assert manifest["image_shape"] == [10, 14, 3] and manifest["class_names"] == ["cat", "dog", "eel"]
    for split in ("train", "test", "pretrain"):
        skipped = SkippedImages()
        source = load_split("folder", split, data, skipped=skipped)
        for streaming in ("off", "on"):
            written = load_split("tfrecord", split, output, streaming=streaming)
            images, labels = (written.images, written.labels) if streaming == "off" else written.read_all()
            np.testing.assert_array_equal(images, source.images)  # lossless, in source order
            np.testing.assert_array_equal(labels, source.labels)
    train = manifest["splits"]["train"]
    assert train["count"] == 29 and train["source_count"] == 30  # the truncated file was in train, skipped
    # A stream counts the records written (the skipped file left a gap in their source positions), so its
    # len, labels and positions agree: the training monitor's class-balanced picks are the images it picked.
    stream = load_split("tfrecord", "train", output, streaming="on")
    labels = stream.read_labels()
    assert len(stream) == len(labels) == 29
    source = load_split("folder", "train", data, skipped=SkippedImages())
    picked = np.sort(np.concatenate([np.flatnonzero(source.labels == c)[:9] for c in range(3)]))
    images, picked_labels, _, _ = monitor_data((stream, labels, stream, labels), examples=27)
    np.testing.assert_array_equal(images, source.images[picked])
    np.testing.assert_array_equal(picked_labels, np.repeat([0, 1, 2], 9))
    assert train["skipped"]["count"] == 1 and train["skipped"]["first"][0].endswith("img_zzz.png")
    assert [shard["file"] for shard in train["shards"]] == [f"train-0000{k}-of-00006.tfrecord" for k in range(6)]
    for shard in train["shards"] + manifest["splits"]["test"]["shards"]:
        path = output / shard["file"]
        assert tfrecord.sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
    # Shards are random samples of the split (seeded), each in source order.
    import tensorflow as tf
    first = [tf.train.Example.FromString(record.numpy()).features.feature["index"].int64_list.value[0]
             for record in tf.data.TFRecordDataset(str(output / train["shards"][0]["file"]))]
    assert first == sorted(first) and first != list(range(first[0], first[0] + len(first)))
    assert dataset_defaults("tfrecord", output) == {**dataset_defaults("folder"), "image_size": None,
                                                     "loaded_size": None, "num_classes": 3}


def test_prepare_resumes_keeps_finished_shards_and_verifies(tmp_path, rng):
    data, output = tmp_path / "images", tmp_path / "records"
    formats.write_folder(data, rng, ("a", "b"), n_per_class=10, size=(8, 8))
    config = PrepareDataConfig(dataset="folder", data_dir=str(data), output=str(output), shard_size=4, verbose=0)
    quiet = lambda line: None  # noqa: E731
    first = prepare_data(config, log=quiet)
    before = {name: (output / name).stat().st_mtime_ns for name in shard_files(output)}
    # An interruption: the manifest was not written yet and one shard never finished.
    (output / tfrecord.MANIFEST).unlink()
    lost = first["splits"]["train"]["shards"][2]["file"]
    (output / lost).unlink()
    (output / (lost + tfrecord.INFO_SUFFIX)).unlink()
    with pytest.raises(DataError, match="unfinished preparation.*rerun"):
        load_split("tfrecord", "train", output)
    second = prepare_data(config, log=quiet)
    after = {name: (output / name).stat().st_mtime_ns for name in shard_files(output)}
    assert [name for name in before if after[name] != before[name]] == [lost]  # only the lost shard rewritten
    assert second["splits"] == first["splits"]  # the same bytes again: the same checksums
    lines = []
    assert prepare_data(config, log=lines.append)["verified_shards"] == len(before)
    assert "complete" in lines[0]
    damaged = output / first["splits"]["test"]["shards"][0]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataError, match=f"{damaged.name} does not match its sha256"):
        prepare_data(config, log=quiet)
    with pytest.raises(UsageError, match=r"other settings: --shard_size=5 \(it has 4\)"):
        prepare_data(PrepareDataConfig(dataset="folder", data_dir=str(data), output=str(output), shard_size=5,
                                       verbose=0), log=quiet)
    with pytest.raises(UsageError, match="not empty and holds no preparation"):
        prepare_data(PrepareDataConfig(dataset="digits", output=str(data), verbose=0), log=quiet)


def test_a_rerun_from_another_folder_is_refused_and_writes_nothing(tmp_path, rng, monkeypatch):
    first, second, output = tmp_path / "first", tmp_path / "second", tmp_path / "records"
    formats.write_folder(first, rng, ("a", "b"), n_per_class=4, size=(8, 8))
    formats.write_folder(second, rng, ("a", "b"), n_per_class=4, size=(8, 8))
    quiet = lambda line: None  # noqa: E731

    def config(data_dir):
        return PrepareDataConfig(dataset="folder", data_dir=str(data_dir), output=str(output), shard_size=4,
                                 verbose=0)

    written = prepare_data(config(first), log=quiet)
    (output / tfrecord.MANIFEST).unlink()  # interrupted before the manifest
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in output.iterdir()}
    with pytest.raises(UsageError, match=re.escape(f"other settings: --data_dir={second} (it has {first})")):
        prepare_data(config(second), log=quiet)
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in output.iterdir()} == before
    # Another spelling of the same folder (relative, with "./" and a trailing slash) continues it.
    monkeypatch.chdir(tmp_path)
    assert prepare_data(config("./first/"), log=quiet)["splits"] == written["splits"]


def test_prepared_digits_and_tfds_read_back_and_train(tmp_path):
    import tensorflow_datasets as tfds

    from dim_keras.runs.train import train
    output = tmp_path / "digits"
    manifest = prepare_data(PrepareDataConfig(dataset="digits", output=str(output), shard_size=500, verbose=0),
                            log=lambda line: None)
    assert [len(entry.get("shards", [])) for entry in manifest["splits"].values()] == [3, 1, 0]
    for split in ("train", "test"):
        written, source = load_split("tfrecord", split, output), load_split("digits", split)
        np.testing.assert_array_equal(written.images, source.images)
        np.testing.assert_array_equal(written.labels, source.labels)
    result = train(TrainConfig(dataset="tfrecord", data_dir=str(output), streaming="on", epochs=1,
                               steps_per_epoch=2, batch_size=32, embedding_dim=16, y_dim=8, jit_compile=False,
                               probe_max_train=200, monitor_every=0, verbose=0, output_dir=str(tmp_path / "run")),
                   log=lambda line: None)
    assert set(result["probe"]["trained"]) == {"y", "fc", "conv"} and result["skipped_images"]["count"] == 0

    # A tfds split (no random access: cut into consecutive shards of its own order).
    with tfds.testing.mock_data(num_examples=10):
        prepare_data(PrepareDataConfig(dataset="cifar10", output=str(tmp_path / "cifar"), splits=("test",),
                                       shard_size=4, verbose=0), log=lambda line: None)
        source = load_split("cifar10", "test")
    written = load_split("tfrecord", "test", tmp_path / "cifar")
    np.testing.assert_array_equal(written.images, source.images)
    np.testing.assert_array_equal(written.labels, source.labels)
    with pytest.raises(DataError, match="has no train split"):
        load_split("tfrecord", "train", tmp_path / "cifar")


def test_the_apps_prepare_a_folder_and_train_on_its_tfrecords(tmp_path, rng):
    data, output = tmp_path / "images", tmp_path / "records"
    formats.write_folder(data, rng, ("a", "b"), n_per_class=20, size=(16, 16))
    prepare = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "prepare_data.py"), "--dataset=folder",
                              f"--data_dir={data}", f"--output={output}", "--shard_size=8"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    assert "train: 32 images in 4 shard(s)" in prepare.stdout
    trained = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "train.py"), "--dataset=tfrecord",
                              f"--data_dir={output}", "--streaming=on", "--epochs=1", "--batch_size=16",
                              "--embedding_dim=16", "--y_dim=8", "--nojit_compile", "--verbose=2",
                              "--probe_max_train=32", f"--output_dir={tmp_path / 'run'}"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "streaming 32 images from disk" in trained.stdout and "| y |" in trained.stdout
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == "tfrecord"
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "train.py"), "--dataset=tfrecord",
                              f"--data_dir={data}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"train.py: error: tfrecord: no manifest.json in --data_dir={data}; write it with apps/prepare_data.py "
        f"--output={data}"]
