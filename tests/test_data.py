"""Tests of dim_keras.data: exact round-trips of every official on-disk format, tfds loaders on mock data,
refusal of crafted pickles, one-line errors, and determinism of the tf.data pipelines."""

import collections
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import official_formats as formats
from dim_keras.data import DATASETS, DataError, dataset_defaults, load_split, make_dataset
from dim_keras.data import pipeline
from dim_keras.data.celeba import CELEBA_ATTRIBUTES
from dim_keras.data.cifar import CIFAR100_CLASS_NAMES, CIFAR10_CLASS_NAMES


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_one_line(error_info):
    message = str(error_info.value)
    assert "\n" not in message and message.strip() == message and message


# --------------------------------------------------------------------------------------------- names, errors


def test_unknown_dataset_and_split_are_data_errors():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; choose one of: digits, cifar10") as info:
        load_split("imagenet", "train")
    assert_one_line(info)
    with pytest.raises(DataError, match="unknown split 'valid'") as info:
        load_split("digits", "valid")
    assert_one_line(info)
    with pytest.raises(DataError, match="unknown dataset"):
        dataset_defaults("imagenet")
    assert issubclass(DataError, ValueError)


def test_missing_data_dir_names_the_files(tmp_path):
    with pytest.raises(DataError) as info:
        load_split("cifar10", "train", data_dir=tmp_path)
    assert_one_line(info)
    message = str(info.value)
    expected = "cifar10: no data found; put cifar-10-batches-py/ or cifar-10-python.tar.gz in --data_dir="
    assert message.startswith(f"{expected}{tmp_path}")
    assert "prepare the tfds 'cifar10' dataset" in message

    with pytest.raises(DataError, match="does not exist") as info:
        load_split("stl10", "test", data_dir=tmp_path / "nowhere")
    assert_one_line(info)
    with pytest.raises(DataError, match=r"tiny-imagenet-200/ \(wnids.txt") as info:
        load_split("tiny_imagenet", "train", data_dir=tmp_path)
    assert_one_line(info)
    with pytest.raises(DataError, match="img_align_celeba/ and list_attr_celeba.txt") as info:
        load_split("celeb_a", "train", data_dir=tmp_path)
    assert_one_line(info)
    with pytest.raises(DataError, match="stl10_binary/") as info:
        load_split("stl10", "pretrain", data_dir=tmp_path)
    assert_one_line(info)
    with pytest.raises(DataError, match="--data_dir=DIR") as info:
        load_split("folder", "train")
    assert_one_line(info)
    with pytest.raises(DataError, match="no images found") as info:
        load_split("folder", "train", data_dir=tmp_path)
    assert_one_line(info)


def test_dataset_defaults_follow_the_paper():
    stl = dataset_defaults("stl10")
    assert (stl["image_size"], stl["loaded_size"], stl["pretrain_crop"], stl["pretrain_flip"], stl["eval_crop"]) == (
        64, 96, 64, True, 64)  # fmt: skip
    assert dataset_defaults("cifar10")["image_size"] == 32 and dataset_defaults("cifar10")["pretrain_crop"] is None
    assert dataset_defaults("cifar100")["num_classes"] == 100
    assert dataset_defaults("tiny_imagenet")["num_classes"] == 200
    assert dataset_defaults("celeb_a")["label_kind"] == "attributes"
    assert dataset_defaults("folder")["image_size"] is None
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "stl10", "tiny_imagenet", "celeb_a", "folder", "mnist",
                             "tfrecord"}
    assert all(dataset_defaults(name)["pretrain_flip"] is False for name in DATASETS if name != "stl10")


def test_class_name_tables():
    assert len(CIFAR10_CLASS_NAMES) == 10
    # The official fine label names of CIFAR-100 are the 100 names in alphabetical order.
    assert len(set(CIFAR100_CLASS_NAMES)) == 100 and list(CIFAR100_CLASS_NAMES) == sorted(CIFAR100_CLASS_NAMES)
    assert list(CELEBA_ATTRIBUTES) == formats.CELEBA_ATTRIBUTE_NAMES


# ----------------------------------------------------------------------------------------------------- digits


def test_digits_are_the_upsampled_sklearn_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    scaled = digits.images.astype(np.float32)[..., None] * (255.0 / 16.0)
    expected = tf.cast(tf.round(tf.image.resize(scaled, (32, 32), method="bilinear")), tf.uint8).numpy()
    expected_pairs = collections.Counter(
        (image[..., 0].tobytes(), int(label)) for image, label in zip(expected, digits.target)
    )
    # Half-pixel bilinear upsampling by 4 copies the source corner into the 2x2 corner block: analytic check.
    corner = np.round(digits.images[:, 0, 0] * 255.0 / 16.0)
    np.testing.assert_array_equal(expected[:, :2, :2, 0], np.broadcast_to(corner[:, None, None], (len(corner), 2, 2)))

    train, test = load_split("digits", "train"), load_split("digits", "test")
    pretrain = load_split("digits", "pretrain")
    assert train.images.shape == (1438, 32, 32, 3) and test.images.shape == (359, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(pretrain.images, train.images)
    np.testing.assert_array_equal(load_split("digits", "test").images, test.images)  # deterministic
    assert train.class_names == [str(d) for d in range(10)] and train.label_kind == "class"
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])  # gray replicated to RGB
    # train + test is exactly the whole sklearn set (a partition), each image with its own label.
    loaded_pairs = collections.Counter(
        (image[..., 0].tobytes(), int(label))
        for split in (train, test)
        for image, label in zip(split.images, split.labels)
    )
    assert loaded_pairs == expected_pairs
    assert train.images.max() == 255


# ------------------------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("style", ["py2", 2, 4, 5])
def test_cifar10_folder_round_trip(tmp_path, rng, style):
    images, labels = formats.write_cifar10(tmp_path, 3, rng, style=style)
    for split in ("train", "test"):
        loaded = load_split("cifar10", split, data_dir=tmp_path)
        np.testing.assert_array_equal(loaded.images, images[split])
        np.testing.assert_array_equal(loaded.labels, labels[split])
        assert loaded.labels.dtype == np.int64 and loaded.images.flags.c_contiguous
    assert loaded.class_names == list(CIFAR10_CLASS_NAMES)
    pretrain = load_split("cifar10", "pretrain", data_dir=tmp_path)
    assert len(pretrain) == 15
    np.testing.assert_array_equal(pretrain.images, images["train"])
    # data_dir may also be the extracted folder itself
    direct = load_split("cifar10", "test", data_dir=tmp_path / "cifar-10-batches-py")
    np.testing.assert_array_equal(direct.images, images["test"])


def test_cifar10_tar_gz_round_trip(tmp_path, rng):
    images, labels = formats.write_cifar10_tar_gz(tmp_path, 2, rng)
    for split in ("train", "test"):
        loaded = load_split("cifar10", split, data_dir=tmp_path)
        np.testing.assert_array_equal(loaded.images, images[split])
        np.testing.assert_array_equal(loaded.labels, labels[split])
    assert not (tmp_path / "cifar-10-batches-py").exists()  # read in place, nothing extracted


def test_cifar100_round_trips_fine_labels(tmp_path, rng):
    folder_dir, archive_dir = tmp_path / "folder", tmp_path / "archive"
    folder_dir.mkdir(), archive_dir.mkdir()
    for writer, directory in ((formats.write_cifar100, folder_dir), (formats.write_cifar100_tar_gz, archive_dir)):
        images, labels = writer(directory, 4, rng)
        for split in ("train", "test"):
            loaded = load_split("cifar100", split, data_dir=directory)
            np.testing.assert_array_equal(loaded.images, images[split])
            np.testing.assert_array_equal(loaded.labels, labels[split])
            assert loaded.class_names == list(CIFAR100_CLASS_NAMES)


class _OpenFilePayload:
    """Unpickling this calls builtins.open(path, "w"), creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class _ShellPayload:
    """Unpickling this would run a shell command that creates the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("payload_class", [_OpenFilePayload, _ShellPayload])
@pytest.mark.parametrize("container", ["folder", "archive"])
def test_crafted_cifar_pickle_is_refused(tmp_path, rng, payload_class, container):
    victim = tmp_path / "pwned.txt"
    crafted = pickle.dumps({b"data": payload_class(victim), b"labels": []}, protocol=2)
    if payload_class is _OpenFilePayload:  # the payload is live: plain pickle would create the file
        pickle.loads(crafted)[b"data"].close()
        assert victim.exists()
        victim.unlink()
    if container == "folder":
        formats.write_cifar10(tmp_path, 2, rng)
        (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(crafted)
    else:
        formats.write_cifar10_tar_gz(tmp_path, 2, rng, replace={"data_batch_1": crafted})
    refused = r"refused to unpickle (io\.open|builtins\.open|posix\.system|os\.system) "
    with pytest.raises(DataError, match=refused) as info:
        load_split("cifar10", "train", data_dir=tmp_path)
    assert_one_line(info)
    assert not victim.exists()


def test_corrupt_cifar_files_are_data_errors(tmp_path, rng):
    formats.write_cifar10(tmp_path, 3, rng)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated pickle") as info:
        load_split("cifar10", "test", data_dir=tmp_path)
    assert_one_line(info)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3") as info:
        load_split("cifar10", "train", data_dir=tmp_path)
    assert_one_line(info)
    # A well-formed pickle of the wrong shape is refused too.
    batch.write_bytes(formats.pickle_bytes({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"uint8 \[N, 3072\]"):
        load_split("cifar10", "test", data_dir=tmp_path)


def test_truncated_cifar_archive_is_a_data_error(tmp_path, rng):
    formats.write_cifar10_tar_gz(tmp_path, 3, rng)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_split("cifar10", "train", data_dir=tmp_path)
    assert_one_line(info)


# ----------------------------------------------------------------------------------------------------- STL-10


def test_stl10_binary_round_trip(tmp_path, rng):
    images, labels = formats.write_stl10(tmp_path, rng, n_train=4, n_test=3, n_unlabelled=5)
    for split in ("train", "test"):
        loaded = load_split("stl10", split, data_dir=tmp_path)
        np.testing.assert_array_equal(loaded.images, images[split])
        np.testing.assert_array_equal(loaded.labels, labels[split])
        assert loaded.class_names[0] == "airplane" and loaded.class_names[-1] == "truck"
    pretrain = load_split("stl10", "pretrain", data_dir=tmp_path)
    assert pretrain.labels is None and pretrain.label_kind is None
    np.testing.assert_array_equal(pretrain.images, np.concatenate([images["unlabelled"], images["train"]]))


def test_stl10_truncated_and_missing_files(tmp_path, rng):
    formats.write_stl10(tmp_path, rng)
    folder = tmp_path / "stl10_binary"
    test_x = folder / "test_X.bin"
    test_x.write_bytes(test_x.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        load_split("stl10", "test", data_dir=tmp_path)
    assert_one_line(info)
    train_y = folder / "train_y.bin"
    train_y.write_bytes(train_y.read_bytes()[:-1])
    with pytest.raises(DataError, match="3 labels for 4 images"):
        load_split("stl10", "train", data_dir=tmp_path)
    (folder / "unlabeled_X.bin").unlink()
    with pytest.raises(DataError, match="missing .*unlabeled_X.bin") as info:
        load_split("stl10", "pretrain", data_dir=tmp_path)
    assert_one_line(info)


# --------------------------------------------------------------------------------------------- Tiny ImageNet


def test_tiny_imagenet_round_trip(tmp_path, rng):
    images, labels, wnids = formats.write_tiny_imagenet(tmp_path, rng, n_classes=3, n_train_per_class=2, n_val=4)
    for split in ("train", "test"):
        loaded = load_split("tiny_imagenet", split, data_dir=tmp_path)
        np.testing.assert_array_equal(loaded.images, images[split])
        np.testing.assert_array_equal(loaded.labels, labels[split])
    assert loaded.class_names == ["thing 0", "thing 1", "thing 2"]
    np.testing.assert_array_equal(load_split("tiny_imagenet", "pretrain", data_dir=tmp_path).images, images["train"])


def test_tiny_imagenet_corrupt_image(tmp_path, rng):
    _, _, wnids = formats.write_tiny_imagenet(tmp_path, rng, n_classes=2, n_train_per_class=2, n_val=2)
    bad = tmp_path / "tiny-imagenet-200" / "train" / wnids[1] / "images" / f"{wnids[1]}_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=f"cannot decode image .*{bad.name}") as info:
        load_split("tiny_imagenet", "train", data_dir=tmp_path)
    assert_one_line(info)


# ---------------------------------------------------------------------------------------------------- CelebA


def _assert_celeba_faces(images, quadrant_colors):
    """Center crop 140 + resize to 64: each 32x32 quadrant is its constant color away from the seams, and the
    white border (outside the crop) leaks into no pixel, not even the corners."""
    assert images.shape[1:] == (64, 64, 3)
    safe = (slice(0, 30), slice(34, 64))
    for image, colors in zip(images, quadrant_colors):
        for index, (rows, columns) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            region = image[safe[rows], safe[columns]]
            np.testing.assert_array_equal(region, np.broadcast_to(colors[index], region.shape))
        assert image.max() < 200


def test_celeba_round_trip_with_official_partition(tmp_path, rng):
    written = formats.write_celeba(tmp_path, rng, n=8, partition=True)
    for split, wanted in (("train", [0, 1]), ("test", [2]), ("pretrain", [0, 1])):
        mask = np.isin(written["partition"], wanted)
        loaded = load_split("celeb_a", split, data_dir=tmp_path)
        np.testing.assert_array_equal(loaded.labels, written["attributes"][mask])
        assert loaded.labels.dtype == np.int64 and loaded.label_kind == "attributes"
        _assert_celeba_faces(loaded.images, written["quadrant_colors"][mask])
    assert loaded.class_names == formats.CELEBA_ATTRIBUTE_NAMES


def test_celeba_archive_layout_without_partition_uses_last_tenth(tmp_path, rng):
    written = formats.write_celeba(tmp_path, rng, n=10, partition=False, layout="archive")
    test = load_split("celeb_a", "test", data_dir=tmp_path)
    train = load_split("celeb_a", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(test.labels, written["attributes"][9:])
    np.testing.assert_array_equal(train.labels, written["attributes"][:9])
    _assert_celeba_faces(test.images, written["quadrant_colors"][9:])


def test_celeba_truncated_attribute_list(tmp_path, rng):
    formats.write_celeba(tmp_path, rng, n=4)
    attributes = tmp_path / "list_attr_celeba.txt"
    attributes.write_text("\n".join(attributes.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match="announces 4 images but lists 3") as info:
        load_split("celeb_a", "train", data_dir=tmp_path)
    assert_one_line(info)


# ---------------------------------------------------------------------------------------------------- folder


def test_folder_round_trip_and_deterministic_split(tmp_path, rng):
    paths, images, labels = formats.write_folder(tmp_path, rng, ("dog", "cat", "eel"), n_per_class=5, size=(20, 24))
    train, test = load_split("folder", "train", data_dir=tmp_path), load_split("folder", "test", data_dir=tmp_path)
    assert train.class_names == ["cat", "dog", "eel"]  # sorted names -> labels
    assert len(train) == 12 and len(test) == 3 and np.bincount(test.labels).tolist() == [1, 1, 1]
    written_names = ["dog", "cat", "eel"]
    written = {image.tobytes(): written_names[label] for image, label in zip(images, labels)}
    seen = [image.tobytes() for split in (train, test) for image in split.images]
    assert sorted(seen) == sorted(written)  # a partition of the written images, pixel-exact
    for split in (train, test):
        assert [written[image.tobytes()] for image in split.images] == [train.class_names[k] for k in split.labels]
    again = load_split("folder", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(again.images, test.images)


def test_folder_resizes_converts_and_reads_bmp(tmp_path, rng):
    gray = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(10, 12, 4), dtype=np.uint8)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    Image.fromarray(gray).save(tmp_path / "a" / "0_gray.png")
    Image.fromarray(rgba).save(tmp_path / "a" / "1_rgba.png")
    rgb = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b" / "0.bmp")
    Image.fromarray(rng.integers(0, 256, size=(30, 8, 3), dtype=np.uint8)).save(tmp_path / "b" / "1.JPG")
    with pytest.raises(DataError, match=r"differ in size \(10x12: a/0_gray.png, 30x8: b/1.JPG\); pass --image_size"):
        load_split("folder", "train", data_dir=tmp_path)  # mixed sizes: no silent pick of the first one's
    everything = np.concatenate([load_split("folder", s, data_dir=tmp_path, image_size=(10, 12)).images
                                 for s in ("train", "test")])
    assert everything.shape == (4, 10, 12, 3)
    rows = {image.tobytes() for image in everything}
    assert np.repeat(gray[..., None], 3, axis=-1).tobytes() in rows
    assert rgba[..., :3].copy().tobytes() in rows
    assert rgb.tobytes() in rows
    sized = load_split("folder", "train", data_dir=tmp_path, image_size=(16, 20))
    assert sized.images.shape[1:] == (16, 20, 3)


def test_train_run_loads_a_folder_at_its_image_size(tmp_path, rng):
    from dim_keras.config import TrainConfig
    from dim_keras.runs.train import load_pretraining_data, load_probe_data

    formats.write_folder(tmp_path, rng, ("a", "b"), n_per_class=5, size=(20, 24))
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path), image_size=16, batch_size=2)
    split, _, input_shape = load_pretraining_data(config)
    assert split.images.shape == (8, 16, 16, 3) and input_shape == (16, 16, 3)
    train_images, _, test_images, _ = load_probe_data(config)  # the probe sees what the encoder takes
    assert train_images.shape[1:] == test_images.shape[1:] == (16, 16, 3)


def test_folder_without_classes_is_unlabelled(tmp_path, rng):
    for k in range(5):
        formats.save_png(tmp_path / f"{k}.png", rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    split = load_split("folder", "pretrain", data_dir=tmp_path)
    assert split.labels is None and len(split) == 4 and split.class_names == []


def test_folder_corrupt_image_names_the_file(tmp_path, rng):
    formats.write_folder(tmp_path, rng, ("a",), n_per_class=4, size=(8, 8))
    (tmp_path / "a" / "img_000.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match="cannot decode image") as info:
        for split in ("train", "test"):  # the broken file is in one of them
            load_split("folder", split, data_dir=tmp_path, image_size=8)
    assert_one_line(info)
    assert "img_000.png" in str(info.value)


# -------------------------------------------------------------------------------------------------- tfds mock


def test_tfds_cifar10_and_cifar100_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        for name, classes in (("cifar10", 10), ("cifar100", 100)):
            split = load_split(name, "test", data_dir=tmp_path)
            assert split.images.shape == (6, 32, 32, 3) and split.images.dtype == np.uint8
            assert split.labels.dtype == np.int64 and split.labels.shape == (6,)
            assert 0 <= split.labels.min() and split.labels.max() < classes
            raw = list(tfds.load(name, split="test", download=False).as_numpy_iterator())
            np.testing.assert_array_equal(split.images, np.stack([r["image"] for r in raw]))
            np.testing.assert_array_equal(split.labels, [r["label"] for r in raw])


def test_tfds_stl10_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        train = load_split("stl10", "train")
        pretrain = load_split("stl10", "pretrain")  # unlabelled + train
        raw = list(tfds.load("stl10", split="unlabelled+train", download=False).as_numpy_iterator())
    assert train.images.shape == (4, 96, 96, 3) and train.labels.dtype == np.int64
    assert pretrain.labels is None and pretrain.images.shape[1:] == (96, 96, 3)
    np.testing.assert_array_equal(pretrain.images, np.stack([r["image"] for r in raw]))


def test_tfds_celeb_a_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        split = load_split("celeb_a", "test")
        raw = list(tfds.load("celeb_a", split="test", download=False).as_numpy_iterator())
    assert split.images.shape == (3, 64, 64, 3) and split.labels.shape == (3, 40)
    assert split.labels.dtype == np.int64 and set(np.unique(split.labels)) <= {0, 1}
    male = CELEBA_ATTRIBUTES.index("Male")
    np.testing.assert_array_equal(split.labels[:, male], [int(r["attributes"]["Male"]) for r in raw])
    # Same center crop + resize as the on-disk loader.
    crop = raw[0]["image"][39:179, 19:159]
    expected = tf.cast(tf.round(tf.image.resize(crop, (64, 64), antialias=True)), tf.uint8).numpy()
    np.testing.assert_array_equal(split.images[0], expected)


# ------------------------------------------------------------------------------------------------ make_dataset


def _epoch(dataset):
    return [tuple(part.numpy() for part in batch) for batch in dataset]


def _source_index_images(rng, count=12, height=10, width=9):
    images = rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)
    return images, np.arange(count, dtype=np.int64)


def test_make_dataset_is_deterministic_per_seed(rng):
    images, indices = _source_index_images(rng)
    kwargs = dict(batch_size=4, training=True, crop_size=(6, 5), flip=True)
    first = make_dataset(images, indices, seed=7, **kwargs)
    twin = make_dataset(images, indices, seed=7, **kwargs)
    other = make_dataset(images, indices, seed=8, **kwargs)
    epochs_first = [_epoch(first), _epoch(first)]
    epochs_twin = [_epoch(twin), _epoch(twin)]
    for batches_a, batches_b in zip(epochs_first, epochs_twin):
        for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # Each epoch reshuffles, and another seed gives another order.
    order = lambda epoch: np.concatenate([y for _, y in epoch]).tolist()  # noqa: E731
    assert order(epochs_first[0]) != order(epochs_first[1])
    assert order(_epoch(other)) != order(epochs_first[0])


def test_training_crops_are_exact_windows_and_flips(rng):
    images, indices = _source_index_images(rng, count=12, height=10, width=9)
    dataset = make_dataset(images, indices, batch_size=5, training=True, seed=3, crop_size=(6, 5), flip=True)
    batches = _epoch(dataset) + _epoch(dataset)
    assert len(batches) == 4  # drop_remainder defaults to True in training: 12 // 5 = 2 per epoch
    offsets, flips = set(), 0
    for x, y in batches:
        assert x.shape == (5, 6, 5, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        for crop, index in zip(x, y):
            pixels = np.round(crop * 255.0).astype(np.uint8)
            np.testing.assert_allclose(crop * 255.0, pixels, atol=1e-3)  # exactly k / 255
            windows = [
                (top, left, flipped, images[index, top : top + 6, left : left + 5])
                for top in range(5)
                for left in range(5)
                for flipped in (False, True)
            ]
            matches = [
                (top, left, flipped)
                for top, left, flipped, window in windows
                if np.array_equal(pixels, window[:, ::-1] if flipped else window)
            ]
            assert matches, "a training crop must be a (possibly flipped) window of its source image"
            offsets.add(matches[0][:2])
            flips += matches[0][2]
    assert len(offsets) > 3 and 0 < flips < 20  # crops move and flips happen, but not always


def test_evaluation_center_crop_order_and_remainder(rng):
    images, indices = _source_index_images(rng, count=7, height=10, width=9)
    dataset = make_dataset(images, indices, batch_size=3, training=False, crop_size=4)
    batches = _epoch(dataset)
    assert [len(y) for _, y in batches] == [3, 3, 1]  # no drop, dataset order
    x = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), indices)
    np.testing.assert_allclose(x, images[:, 3:7, 2:6].astype(np.float32) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(_epoch(dataset)[2][0], batches[2][0])  # cached second pass is the same
    unlabelled = make_dataset(images, batch_size=7, training=False)
    (only,) = list(unlabelled)
    assert only.shape == (7, 10, 9, 3)
    np.testing.assert_allclose(only.numpy(), images / 255.0, atol=1e-7)


def test_big_arrays_are_fed_from_numpy_with_identical_results(rng, monkeypatch):
    images, indices = _source_index_images(rng, count=12, height=40, width=40)
    kwargs = dict(batch_size=4, training=True, seed=11, crop_size=32, flip=True)
    in_graph_dataset = make_dataset(images, indices, **kwargs)
    assert len(in_graph_dataset._as_serialized_graph().numpy()) > images.nbytes  # small arrays: in-graph
    in_graph = _epoch(in_graph_dataset)
    monkeypatch.setattr(pipeline, "_MAX_IN_GRAPH_BYTES", 0)
    from_numpy_dataset = make_dataset(images, indices, **kwargs)
    graph_def = from_numpy_dataset._as_serialized_graph().numpy()
    assert len(graph_def) < images.nbytes  # the pixels are not constants of the tf.data graph
    for (xa, ya), (xb, yb) in zip(in_graph, _epoch(from_numpy_dataset)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_make_dataset_rejects_bad_arguments(rng):
    images, _ = _source_index_images(rng, count=4)
    with pytest.raises(DataError, match="larger than"):
        make_dataset(images, batch_size=2, training=True, crop_size=11)
    with pytest.raises(DataError, match="only 4 images for a batch of 8"):
        make_dataset(images, batch_size=8, training=True)
    with pytest.raises(DataError, match="uint8"):
        make_dataset(images.astype(np.float32), batch_size=2, training=False)
    with pytest.raises(DataError, match="3 labels for 4 images"):
        make_dataset(images, np.zeros(3), batch_size=2, training=False)


def test_load_evaluation_data_subsamples_and_crops_like_its_parts():
    from dim_keras.data import load_evaluation_data, subsample
    data = load_evaluation_data("digits", max_train=10, max_test=5, seed=3, crop=28)
    train, test = load_split("digits", "train"), load_split("digits", "test")
    expected_train, expected_labels = subsample(train, 10, 3)
    expected_test, expected_test_labels = subsample(test, 5, 4)
    np.testing.assert_array_equal(data.train_images, expected_train[:, 2:30, 2:30])
    np.testing.assert_array_equal(data.test_images, expected_test[:, 2:30, 2:30])
    np.testing.assert_array_equal(data.train_labels, expected_labels)
    np.testing.assert_array_equal(data.test_labels, expected_test_labels)
    assert data.label_kind == "class" and data.class_names == [str(d) for d in range(10)]
    whole = load_evaluation_data("digits")
    assert len(whole.train_images) == len(train) and whole.train_images.shape[1:] == (32, 32, 3)


# ------------------------------------------------------------------------------------------------- streaming


def _numbered_folder(directory, count, side=8):
    """count images whose every pixel value encodes the image number k: red = k, green = 255 - k."""
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = np.zeros((side, side, 3), np.uint8)
        image[..., 0], image[..., 1] = k, 255 - k
        Image.fromarray(image).save(directory / f"{k:03d}.png")
    return directory


def _numbers(batch):
    return np.round(np.asarray(batch)[:, 0, 0, 0] * 255).astype(int).tolist()


def test_streamed_folder_gives_the_loaded_pixels_and_labels(tmp_path, rng):
    formats.write_folder(tmp_path, rng, ("dog", "cat", "eel"), n_per_class=5, size=(20, 24))
    # A TIFF named .png: tf.io cannot decode it, PIL can (the fallback decoder of both paths).
    tiff = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(tiff).save(tmp_path / "cat" / "img_zzz.png", format="TIFF")
    for split in ("train", "test"):
        loaded = load_split("folder", split, data_dir=tmp_path)
        stream = load_split("folder", split, data_dir=tmp_path, streaming="on")
        assert type(stream).__name__ == "ImageStream" and len(stream) == len(loaded)
        assert stream.output_shape == loaded.image_shape == (20, 24, 3) and stream.class_names == loaded.class_names
        images, labels = stream.read_all()
        np.testing.assert_array_equal(images, loaded.images)
        np.testing.assert_array_equal(labels, loaded.labels)
        np.testing.assert_array_equal(stream.read_labels(), loaded.labels)
        batches = list(make_dataset(stream, True, batch_size=4, training=False))  # evaluation order
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), loaded.labels)
        np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), loaded.images / 255.0, atol=1e-7)
        assert stream.skipped.count == 0
    assert any(np.array_equal(image, tiff) for image in load_split("folder", "train", tmp_path, streaming="on")
               .read_all()[0]) or any(np.array_equal(image, tiff) for image in load_split("folder", "test", tmp_path)
                                       .images)
    resized = load_split("folder", "train", data_dir=tmp_path, image_size=12, streaming="on")
    np.testing.assert_array_equal(resized.read_all()[0], load_split("folder", "train", tmp_path, image_size=12).images)


def test_unreadable_files_are_skipped_counted_and_named_or_stop_with_strict(tmp_path):
    from dim_keras.data import SkippedImages, raising_data_errors
    folder = _numbered_folder(tmp_path / "images", 20)
    (folder / "003.png").write_bytes(b"not an image at all")
    (folder / "011.png").write_bytes((folder / "012.png").read_bytes()[:40])  # truncated
    skipped = SkippedImages()
    stream = load_split("folder", "train", folder, streaming="on", skipped=skipped)
    (folder / "007.png").unlink()  # vanishes after the listing (a network share, a cleanup job)
    dataset = make_dataset(stream, batch_size=1, training=True, seed=0)
    seen = [_numbers(batch)[0] for batch in dataset.take(2 * 16)]  # enough for two passes over the train split
    bad = {3, 7, 11}
    listed = [int(os.path.basename(p)[:3]) for p in (os.fsdecode(p) for p in stream.source.paths)]
    expected = sorted(set(listed) - bad)
    assert sorted(set(seen)) == expected and not bad & set(seen)
    first_pass = len(expected)
    assert sorted(seen[:first_pass]) == expected  # a pass is every readable file once
    in_train = sorted(bad & set(listed))
    assert skipped.count == len(in_train)  # each bad file counted once, however many passes met it
    assert sorted(int(os.path.basename(p)[:3]) for p in skipped.first) == in_train
    assert f"skipped {len(in_train)} unreadable image file(s)" in skipped.summary()

    strict = SkippedImages(strict=True)
    with pytest.raises(DataError, match=r"cannot decode image .*/0(03|11)\.png") as info:
        with raising_data_errors(strict):
            for split in ("train", "test"):  # the two bad files left are in one of them
                for _ in make_dataset(load_split("folder", split, folder, streaming="on", skipped=strict),
                                      batch_size=2, training=False):
                    pass
    assert_one_line(info)
    # Arrays (--streaming=off) skip into the same collector instead of stopping the load.
    arrays = SkippedImages()
    split = load_split("folder", "train", folder, skipped=arrays)
    listed = [int(os.path.basename(os.fsdecode(p))[:3])
              for p in load_split("folder", "train", folder, streaming="on").source.paths]
    assert len(split) == len(set(listed) - bad) and arrays.count == len(bad & set(listed))
    assert sorted(_numbers(split.images / 255.0)) == sorted(set(listed) - bad)


def test_a_folder_of_non_images_is_refused_at_once(tmp_path):
    for k in range(20):
        (tmp_path / f"{k:02d}.png").write_bytes(b"<html>not a picture</html>")
    with pytest.raises(DataError, match="none of the first 16 images of the train split can be read") as info:
        load_split("folder", "train", tmp_path, image_size=8, streaming="on")
    assert_one_line(info)
    with pytest.raises(DataError, match="no images found"):
        load_split("folder", "train", tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None,
                   streaming="on")


def test_streamed_training_order_is_seeded_per_epoch_and_sharded_by_files(tmp_path):
    folder = _numbered_folder(tmp_path / "images", 30)  # train split: 24 files
    stream = load_split("folder", "train", folder, streaming="on")
    names = sorted(int(os.path.basename(os.fsdecode(p))[:3]) for p in stream.source.paths)

    def epochs(seed, count=2, **shard):
        dataset = make_dataset(stream, batch_size=4, training=True, seed=seed, **shard)
        per_epoch = len(stream) // 4 // shard.get("num_shards", 1)
        batches = [_numbers(batch) for batch in dataset.repeat().take(count * per_epoch)]
        return [sum(batches[e * per_epoch:(e + 1) * per_epoch], []) for e in range(count)]

    first, twin, other = epochs(3), epochs(3), epochs(4)
    assert first == twin  # the same seed: the same order in every epoch
    assert sorted(first[0]) == sorted(first[1]) == names  # each epoch is every file once
    assert first[0] != first[1] and first[0] != other[0]  # reshuffled per epoch, and per seed
    shards = [epochs(3, num_shards=3, shard_index=index) for index in range(3)]
    for epoch in range(2):
        parts = [set(shard[epoch]) for shard in shards]
        assert sum(len(part) for part in parts) == len(names) and set.union(*parts) == set(names)
    assert shards[0] == epochs(3, num_shards=3, shard_index=0)  # deterministic per seed and shard
    with pytest.raises(DataError, match="num_shards applies to streams"):
        make_dataset(np.zeros((4, 8, 8, 3), np.uint8), batch_size=2, training=True, num_shards=2)


def test_augmentation_of_streamed_batches_takes_exact_windows_of_the_padded_images(tmp_path, rng):
    for k in range(12):  # one image per class: the label says which image a crop came from
        (tmp_path / f"c{k:02d}").mkdir()
        Image.fromarray(rng.integers(0, 256, size=(10, 9, 3), dtype=np.uint8)).save(tmp_path / f"c{k:02d}" / "a.png")
    stream = load_split("folder", "train", tmp_path, streaming="on")
    loaded = load_split("folder", "train", tmp_path)
    source = {int(label): image for image, label in zip(loaded.images, loaded.labels)}
    dataset = make_dataset(stream, True, batch_size=5, training=True, seed=3, crop_size=(8, 7), flip=True, pad=2)
    offsets, flips = set(), 0
    for x, y in list(dataset) + list(dataset):
        assert x.shape == (5, 8, 7, 3) and x.dtype == np.float32
        for crop, label in zip(x.numpy(), y.numpy()):
            pixels = np.round(crop * 255.0).astype(np.uint8)
            padded = np.pad(source[int(label)], [(2, 2), (2, 2), (0, 0)], mode="reflect")
            matches = [(top, left, flipped) for top in range(7) for left in range(7) for flipped in (False, True)
                       if np.array_equal(pixels, (padded[top:top + 8, left:left + 7])[:, ::-1 if flipped else 1])]
            assert matches, "a streamed training crop must be a (flipped) window of its padded source image"
            offsets.add(matches[0][:2])
            flips += matches[0][2]
    assert len(offsets) > 3 and 0 < flips < 20


def test_streaming_auto_follows_the_decoded_size_and_on_needs_a_streamable_source(tmp_path, monkeypatch):
    from dim_keras.data import load
    folder = _numbered_folder(tmp_path / "images", 10)
    assert not load_split("folder", "train", folder, streaming="auto").streaming  # 8 x 8x8x3 bytes: in memory
    monkeypatch.setattr(load, "STREAMING_AUTO_BYTES", 8 * 8 * 8 * 3 - 1)
    stream = load_split("folder", "train", folder, streaming="auto")
    assert stream.streaming and stream.decoded_bytes == 8 * 8 * 8 * 3
    with pytest.raises(DataError, match="digits: it can only be loaded into memory.*apps/prepare_data.py") as info:
        load_split("digits", "train", streaming="on")
    assert_one_line(info)
    with pytest.raises(DataError, match="unknown streaming mode"):
        load_split("digits", "train", streaming="sometimes")


def test_tfds_streams_give_the_tfds_arrays(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        loaded = load_split("cifar10", "test", data_dir=tmp_path)
        stream = load_split("cifar10", "test", data_dir=tmp_path, streaming="on")
        images, labels = stream.read_all()
        assert stream.output_shape == (32, 32, 3) and stream.label_kind == "class"
        batches = list(make_dataset(stream, True, batch_size=4, training=True, seed=0, pad=4, flip=True))
        pretrain = load_split("stl10", "pretrain", streaming="on")
        assert pretrain.label_kind is None and pretrain.read_labels() is None
    np.testing.assert_array_equal(images, loaded.images)
    np.testing.assert_array_equal(labels, loaded.labels)
    assert len(batches) == 1 and batches[0][0].shape == (4, 32, 32, 3)


def test_streamed_evaluation_data_and_probe_give_the_in_memory_numbers(tmp_path, rng):
    from dim_keras.config import TrainConfig
    from dim_keras.data import load_evaluation_data
    from dim_keras.evaluation import encode
    from dim_keras.runs.train import linear_probe, load_probe_data

    formats.write_folder(tmp_path, rng, ("a", "b", "c"), n_per_class=30, size=(12, 12))
    kwargs = dict(max_train=40, max_test=10, seed=5, crop=10)
    arrays = load_evaluation_data("folder", tmp_path, **kwargs)
    streams = load_evaluation_data("folder", tmp_path, streaming="on", **kwargs)
    assert streams.streaming and not arrays.streaming
    projection = rng.normal(size=(10 * 10 * 3, 6)).astype(np.float32)

    def encoder_fn(images):  # a fixed linear "encoder" of the pixels
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return {"y": flat @ projection, "fc": flat[:, :20], "conv": flat}

    for images, stream_images, labels, stream_labels in ((arrays.train_images, streams.train_images,
                                                         arrays.train_labels, streams.train_labels),
                                                        (arrays.test_images, streams.test_images,
                                                         arrays.test_labels, streams.test_labels)):
        np.testing.assert_array_equal(stream_labels, labels)
        features = encode(encoder_fn, images, batch_size=7)
        streamed = encode(encoder_fn, stream_images, batch_size=7)
        for name in features:
            np.testing.assert_array_equal(streamed[name], features[name])
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path), seed=5, streaming="off")
    in_memory = load_probe_data(config, max_train=60)
    auto = load_probe_data(TrainConfig(dataset="folder", data_dir=str(tmp_path), seed=5), max_train=60)
    for part, expected in zip(auto, in_memory):  # small: the subset is read into memory, the same arrays
        np.testing.assert_array_equal(part, expected)
    streamed = load_probe_data(TrainConfig(dataset="folder", data_dir=str(tmp_path), seed=5, streaming="on"),
                               max_train=60)
    assert getattr(streamed[0], "streaming", False) and not getattr(in_memory[0], "streaming", False)
    encoder_12 = lambda images: encoder_fn(images[:, 1:11, 1:11])  # noqa: E731
    assert linear_probe(encoder_12, streamed) == linear_probe(encoder_12, in_memory)
