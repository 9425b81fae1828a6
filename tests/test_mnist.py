"""MNIST (dim_keras.data.mnist): exact round-trips of the official idx files, plain and gzipped, through
``load_split`` and the two views of ``dim_keras.multiview.load_views``; tfds on mock data; one-line errors for
truncated, corrupt and missing files."""

import gzip

import numpy as np
import pytest

import official_formats as formats
from dim_keras.data import DATASETS, DataError, dataset_defaults, load_split
from dim_keras.multiview import load_views


@pytest.fixture
def rng():
    return np.random.default_rng(2020)


def assert_one_line(error_info):
    message = str(error_info.value)
    assert message and "\n" not in message and message.strip() == message
    return message


def test_mnist_is_registered_with_its_size():
    assert "mnist" in DATASETS
    defaults = dataset_defaults("mnist")
    assert (defaults["image_size"], defaults["loaded_size"], defaults["num_classes"], defaults["label_kind"]) == (
        28, 28, 10, "class")


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_files_round_trip(tmp_path, rng, gzipped):
    images, labels = formats.write_mnist(tmp_path, rng, n_train=5, n_test=3, gzipped=gzipped)
    for split, source in (("train", "train"), ("pretrain", "train"), ("test", "test")):
        data = load_split("mnist", split, tmp_path)
        assert data.images.dtype == np.uint8 and data.images.shape == (len(images[source]), 28, 28, 3)
        for channel in range(3):  # the gray level replicated
            np.testing.assert_array_equal(data.images[..., channel], images[source])
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.labels, labels[source])
        assert data.class_names == [str(d) for d in range(10)]


def test_torchvision_layout_is_found(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = formats.write_mnist(raw, rng, n_train=2, n_test=2)
    np.testing.assert_array_equal(load_split("mnist", "test", tmp_path).labels, labels["test"])


def test_two_views_are_the_top_and_bottom_halves(tmp_path, rng):
    images, labels = formats.write_mnist(tmp_path, rng, n_train=4, n_test=3, gzipped=True)
    views = load_views("mnist", "test", tmp_path)
    assert views.half_shape == (14, 28) and views.top.shape == (3, 392) and views.bottom.shape == (3, 392)
    assert views.top.dtype == np.float32
    np.testing.assert_array_equal(views.top, images["test"][:, :14].reshape(3, 392).astype(np.float32) / 255)
    np.testing.assert_array_equal(views.bottom, images["test"][:, 14:].reshape(3, 392).astype(np.float32) / 255)
    # A pixel checked by hand: row 20, column 5 of image 1 is bottom row 6.
    assert views.bottom[1, 6 * 28 + 5] == np.float32(images["test"][1, 20, 5]) / np.float32(255)
    np.testing.assert_array_equal(views.labels, labels["test"])


def test_truncated_and_corrupt_files_are_one_line_data_errors(tmp_path, rng):
    formats.write_mnist(tmp_path, rng, n_train=3, n_test=2)
    images_path = tmp_path / "train-images-idx3-ubyte"
    whole = images_path.read_bytes()
    images_path.write_bytes(whole[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated") as info:
        load_split("mnist", "train", tmp_path)
    assert_one_line(info)

    images_path.write_bytes(whole[:10])  # not even a whole header
    with pytest.raises(DataError, match="truncated") as info:
        load_split("mnist", "train", tmp_path)
    assert_one_line(info)

    images_path.write_bytes(b"\x00\x00\x0d\x03" + whole[4:])  # float elements: not MNIST's bytes
    with pytest.raises(DataError, match="magic number 0x00000d03, expected 0x00000803") as info:
        load_split("mnist", "train", tmp_path)
    assert_one_line(info)

    images_path.write_bytes(whole)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(formats.idx_bytes(np.array([1, 2], np.uint8)))
    with pytest.raises(DataError, match="holds 2 labels for the 3 images") as info:
        load_split("mnist", "train", tmp_path)
    assert_one_line(info)

    (tmp_path / "train-labels-idx1-ubyte").write_bytes(formats.idx_bytes(np.array([1, 2, 10], np.uint8)))
    with pytest.raises(DataError, match="labels outside 0..9") as info:
        load_split("mnist", "train", tmp_path)
    assert_one_line(info)

    # A .gz that is not gzip, and a gzip stream cut short.
    test_images = tmp_path / "t10k-images-idx3-ubyte"
    test_images.rename(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not a readable idx file") as info:
        load_split("mnist", "test", tmp_path)
    assert_one_line(info)
    packed = gzip.compress(formats.idx_bytes(rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="not a readable idx file") as info:
        load_split("mnist", "test", tmp_path)
    assert_one_line(info)


def test_missing_files_are_named(tmp_path, rng):
    formats.write_mnist(tmp_path, rng, n_train=2, n_test=2)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    np.testing.assert_array_equal(load_split("mnist", "train", tmp_path).images.shape, (2, 28, 28, 3))
    with pytest.raises(DataError) as info:
        load_split("mnist", "test", tmp_path)
    message = assert_one_line(info)
    assert "t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte" in message and "test split" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:  # no idx files: tfds is tried, and it has nothing prepared there
        load_split("mnist", "train", empty)
    message = assert_one_line(info)
    assert message.startswith(f"mnist: no data found; put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                              f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or .gz) in "
                              f"--data_dir={empty}")
    assert "prepare the tfds 'mnist' dataset" in message


def test_tfds_mnist_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        split = load_split("mnist", "test")
        raw = list(tfds.load("mnist", split="test", download=False).as_numpy_iterator())
    assert split.images.shape == (4, 28, 28, 3) and split.images.dtype == np.uint8
    expected = np.stack([r["image"] for r in raw])  # [4, 28, 28, 1]
    np.testing.assert_array_equal(split.images, np.repeat(expected, 3, axis=-1))
    np.testing.assert_array_equal(split.labels, [r["label"] for r in raw])
