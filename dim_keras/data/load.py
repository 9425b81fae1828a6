"""`load_split`: one entry point over the datasets of Deep InfoMax's experiments (Hjelm et al., 2019, Sec. 4).

Every dataset loads from its official on-disk files when data_dir holds them, otherwise (cifar10, cifar100,
stl10, celeb_a, mnist) from a prepared tensorflow-datasets copy; `digits` ships with scikit-learn and needs nothing.
(`mnist` is not in DIM's paper: it is the dataset of Tschannen et al., ICLR 2020, `apps/mi_lab.py`.)
`folder` is a directory of the user's images and `tfrecord` the sharded TFRecords `apps/prepare_data.py` writes.

With ``streaming`` "on" (or "auto" and a large split) `load_split` returns an `ImageStream` instead of arrays:
folders, TFRecords and tfds splits are then read from disk while training iterates them
(`dim_keras.data.streaming`).
"""

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from dim_keras.data import celeba, cifar, digits, folder, mnist, stl10, tfrecord, tiny_imagenet
from dim_keras.errors import DataError
from dim_keras.data.images import fit_image
from dim_keras.data.streaming import STREAMING_AUTO_BYTES, file_stream, record_stream
from dim_keras.data.tfds_source import class_example, load_tfds_arrays, tfds_stream

from dim_keras.choices import DATASETS, STREAMING_MODES
SPLITS = ("pretrain", "train", "test")


@dataclasses.dataclass
class DataSplit:
    """One split of a dataset, held as numpy arrays.

    images: uint8 [N, H, W, 3]. labels: int64 [N] class ids, int64 [N, 40] 0/1 attributes (celeb_a), or None
    (unlabelled, e.g. STL-10 "pretrain"). class_names: names of the classes (or attributes), indexed by label.
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list
    name: str
    split: str = ""

    streaming = False  # ImageStream.streaming is True

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self):
        """(H, W, 3) of every image."""
        return tuple(self.images.shape[1:])

    output_shape = image_shape

    @property
    def label_kind(self):
        """"class", "attributes" (multi-label 0/1) or None when unlabelled."""
        if self.labels is None:
            return None
        return "attributes" if self.labels.ndim == 2 else "class"


_DEFAULTS = {
    # image_size: side fed to the encoder; loaded_size: side of load_split's images; crops are square sides.
    "digits": dict(image_size=32, loaded_size=32, num_classes=10, label_kind="class"),
    "cifar10": dict(image_size=32, loaded_size=32, num_classes=10, label_kind="class"),
    "cifar100": dict(image_size=32, loaded_size=32, num_classes=100, label_kind="class"),
    # Sec. 4: "taking random 64 x 64 crops and flipping horizontally during unsupervised learning" (STL-10);
    # evaluation sees the central 64 x 64 crop so that the encoder's input size does not change.
    "stl10": dict(
        image_size=64, loaded_size=96, pretrain_crop=64, pretrain_flip=True, eval_crop=64,
        num_classes=10, label_kind="class",
    ),  # fmt: skip
    "tiny_imagenet": dict(image_size=64, loaded_size=64, num_classes=200, label_kind="class"),
    "celeb_a": dict(image_size=64, loaded_size=64, num_classes=40, label_kind="attributes"),
    "folder": dict(image_size=None, loaded_size=None, num_classes=None, label_kind="class"),
    "mnist": dict(image_size=28, loaded_size=28, num_classes=10, label_kind="class"),
    # TFRecords of apps/prepare_data.py: with their data_dir, the settings of the dataset they were written from.
    "tfrecord": dict(image_size=None, loaded_size=None, num_classes=None, label_kind="class"),
}
# "pretrain" is the "train" split for every dataset but STL-10 (whose pretraining adds the 100k unlabelled images).
PRETRAIN_IS_TRAIN = tuple(name for name in DATASETS if name != "stl10")


def dataset_defaults(name, data_dir=None):
    """The paper's per-dataset settings, as a new dict.

    For "tfrecord" with its ``data_dir``: the settings of the dataset the TFRecords were written from (its
    manifest's), with the image size and classes they hold (STL-10's TFRecords keep STL-10's 64x64 crops).

    Keys: image_size (side the encoder sees; None for "folder": as loaded), loaded_size (side of load_split's
    images), pretrain_crop (random square crop for DIM pretraining, or None), pretrain_flip (random horizontal
    flips in pretraining), eval_crop (center crop for evaluation, or None), num_classes (classes, or 40
    attributes for celeb_a; None for "folder": len(class_names)), label_kind ("class" or "attributes").
    """
    _check_name(name)
    defaults = dict(pretrain_crop=None, pretrain_flip=False, eval_crop=None)
    defaults.update(_DEFAULTS[name])
    if name == "tfrecord" and data_dir is not None:
        manifest = tfrecord.read_manifest(data_dir)
        defaults = dataset_defaults(manifest["source"]["dataset"])
        side = manifest["image_shape"][0] if manifest["image_shape"][0] == manifest["image_shape"][1] else None
        defaults.update(loaded_size=side, image_size=defaults["image_size"] or defaults["pretrain_crop"] or side)
        names = manifest.get("class_names") or []
        defaults["num_classes"] = len(names) or defaults["num_classes"]
    return defaults


def _check_name(name):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def _where(data_dir):
    return f"--data_dir={data_dir}" if data_dir is not None else "a directory passed as --data_dir"


def _missing(name, files, data_dir, tfds_name=None):
    message = f"{name}: no data found; put {files} in {_where(data_dir)}"
    if tfds_name is not None:
        message += f", or prepare the tfds '{tfds_name}' dataset"
        if data_dir is None:
            message += " (in ~/tensorflow_datasets or $TFDS_DATA_DIR)"
    return message


def load_split(name, split, data_dir=None, *, download=False, image_size=None, streaming="off", skipped=None):
    """Load split "pretrain", "train" or "test" of dataset `name` (one of DATASETS) as a `DataSplit`.

    "pretrain" is what DIM trains on: for stl10 the 100k unlabelled images plus the labelled train set (labels
    None), for the others the train split (with its labels). "test" of tiny_imagenet is its labelled val set.
    `download` is passed to tfds.load (offline it must stay False: tfds then fails at once when data is
    missing). `image_size` (int or (h, w)) resizes every "folder" image to it (default: their own size, which must
    then be the same for all: a DataError names two that differ); the other datasets have fixed sizes and refuse it.
    `streaming`: "off" loads arrays; "on" returns an `ImageStream` (folder, tfrecord and tfds splits; the
    official files of the other datasets load into memory only, a DataError); "auto" streams when the decoded
    split exceeds `STREAMING_AUTO_BYTES` and the source can stream.  `skipped`: a
    `dim_keras.data.images.SkippedImages` that collects unreadable image files instead of failing at the first.
    Raises DataError (one line) for unknown names/splits and missing or corrupt data.
    """
    data_dir = _checked(name, split, data_dir, image_size)
    if streaming not in STREAMING_MODES:
        raise DataError(f"unknown streaming mode {streaming!r}; choose one of: {', '.join(STREAMING_MODES)}")
    stream = None
    if streaming != "off" or name == "tfrecord":
        stream = _open(name, split, data_dir, download, image_size, skipped)
        if stream is None and streaming == "on":
            raise _not_streamable(name, data_dir)
        if stream is not None and (streaming == "on" or (streaming == "auto"
                                                         and stream.decoded_bytes > STREAMING_AUTO_BYTES)):
            return stream
    if name in ("folder", "tfrecord"):
        if stream is None:
            stream = _STREAMS[name](split, data_dir, download, image_size, skipped)
        images, labels = stream.read_all()  # the files are listed once, whichever way they are read
        if not len(images):
            raise DataError(f"{name}: none of the {len(stream)} {split} images in {data_dir} can be read")
        class_names = stream.class_names
    else:
        images, labels, class_names = _LOADERS[name](split, data_dir, download, image_size)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise AssertionError(f"loader for {name} returned {images.dtype} {images.shape}")  # a bug, not user data
    return DataSplit(images, labels, list(class_names), name, split)


def open_stream(name, split, data_dir=None, *, download=False, image_size=None, skipped=None):
    """An `ImageStream` of the split when its source can stream (folder, tfrecord, tfds), else None (arrays
    only: digits and the official files of the other datasets).  Arguments and DataErrors as :func:`load_split`."""
    return _open(name, split, _checked(name, split, data_dir, image_size), download, image_size, skipped)


def _not_streamable(name, data_dir):
    return DataError(f"{name}: {'its files' if data_dir else 'it'} can only be loaded into memory, not streamed "
                     f"(--streaming=on); write TFRecords with apps/prepare_data.py --dataset={name} and stream them "
                     f"with --dataset=tfrecord")


def _checked(name, split, data_dir, image_size):
    """``data_dir`` as a Path (or None) once the arguments of a load are checked; DataError otherwise."""
    _check_name(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; choose one of: {', '.join(SPLITS)}")
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"{name}: --data_dir={data_dir} does not exist or is not a directory")
    if image_size is not None and name != "folder":
        raise DataError(f"{name}: image_size applies only to the 'folder' dataset")
    return data_dir


def _open(name, split, data_dir, download, image_size, skipped):
    opener = _STREAMS.get(name)
    return opener(split, data_dir, download, image_size, skipped) if opener else None


def _load_digits(split, data_dir, download, image_size):
    return digits.load_digits_split(split)


def _cifar_loader(name):
    def load(split, data_dir, download, image_size):
        source = cifar.find_cifar_source(name, data_dir)
        tfds_split = "test" if split == "test" else "train"
        if source is not None:
            return cifar.load_cifar(name, tfds_split, source)
        layout = cifar.CIFAR_LAYOUTS[name]
        files = f"{layout['folder']}/ or {layout['archive']}"
        images, labels = load_tfds_arrays(
            name, tfds_split, data_dir, download, _missing(name, files, data_dir, name), class_example
        )
        return images, labels.astype(np.int64), list(layout["class_names"])

    return load


def _load_stl10(split, data_dir, download, image_size):
    folder_path = stl10.find_stl10_folder(data_dir)
    if folder_path is not None:
        return stl10.load_stl10(split, folder_path)
    files = "stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin)"
    tfds_split = {"pretrain": "unlabelled+train", "train": "train", "test": "test"}[split]
    images, labels = load_tfds_arrays(
        "stl10", tfds_split, data_dir, download, _missing("stl10", files, data_dir, "stl10"), class_example
    )
    labels = None if split == "pretrain" else labels.astype(np.int64)
    return images, labels, list(stl10.STL10_CLASS_NAMES)


def _load_tiny_imagenet(split, data_dir, download, image_size):
    folder_path = tiny_imagenet.find_tiny_imagenet_folder(data_dir)
    if folder_path is None:
        files = "tiny-imagenet-200/ (wnids.txt, train/, val/; unzip tiny-imagenet-200.zip)"
        raise DataError(_missing("tiny_imagenet", files, data_dir) + " (tfds has no tiny_imagenet builder)")
    return tiny_imagenet.load_tiny_imagenet("test" if split == "test" else "train", folder_path)


def _celeba_example(example):
    image = fit_image(example["image"], celeba.CELEBA_SIZE, center_crop=celeba.CELEBA_CROP)
    attributes = tf.stack([tf.cast(example["attributes"][key], tf.int64) for key in celeba.CELEBA_ATTRIBUTES])
    return image, attributes


def _load_celeba(split, data_dir, download, image_size):
    found = celeba.find_celeba_files(data_dir)
    if found is not None:
        return celeba.load_celeba(split, found)
    files = "img_align_celeba/ and list_attr_celeba.txt (optionally list_eval_partition.txt)"
    tfds_split = "test" if split == "test" else "train+validation"
    images, attributes = load_tfds_arrays(
        "celeb_a", tfds_split, data_dir, download, _missing("celeb_a", files, data_dir, "celeb_a"), _celeba_example
    )
    return images, attributes, list(celeba.CELEBA_ATTRIBUTES)


def _folder_stream(split, data_dir, download, image_size, skipped):
    if data_dir is None:
        raise DataError(
            "folder: no data found; pass --data_dir=DIR where DIR/<class>/ holds .png/.jpg/.jpeg/.bmp images"
        )
    paths, labels, class_names, size = folder.folder_listing(split, data_dir, image_size)
    return file_stream("folder", split, paths, labels, class_names, size, skipped)


def _tfrecord_stream(split, data_dir, download, image_size, skipped):
    manifest = tfrecord.read_manifest(data_dir)
    return record_stream("tfrecord", split, data_dir, manifest, tfrecord.split_entry(manifest, split, data_dir),
                         skipped)


def _mnist_example(example):
    return tf.image.grayscale_to_rgb(example["image"]), example["label"]


def _load_mnist(split, data_dir, download, image_size):
    folder_path = mnist.find_mnist_folder(data_dir)
    if folder_path is not None:
        return mnist.load_mnist(split, folder_path)
    files = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
             "(each plain or .gz)")
    tfds_split = "test" if split == "test" else "train"
    images, labels = load_tfds_arrays(
        "mnist", tfds_split, data_dir, download, _missing("mnist", files, data_dir, "mnist"), _mnist_example
    )
    return images, labels.astype(np.int64), list(mnist.MNIST_CLASS_NAMES)


_LOADERS = {
    "digits": _load_digits,
    "cifar10": _cifar_loader("cifar10"),
    "cifar100": _cifar_loader("cifar100"),
    "stl10": _load_stl10,
    "tiny_imagenet": _load_tiny_imagenet,
    "celeb_a": _load_celeba,
    "mnist": _load_mnist,
}


# Stream openers: an ImageStream of the split, or None where the data found loads into memory only (official
# files that are not images in a folder: CIFAR's pickles, STL-10's binaries, MNIST's idx files, ...).
def _cifar_stream(name):
    def open_stream(split, data_dir, download, image_size, skipped):
        if cifar.find_cifar_source(name, data_dir) is not None:
            return None
        layout = cifar.CIFAR_LAYOUTS[name]
        files = f"{layout['folder']}/ or {layout['archive']}"
        return tfds_stream(name, split, name, "test" if split == "test" else "train", data_dir, download,
                           _missing(name, files, data_dir, name), class_example, "class", layout["class_names"])

    return open_stream


def _stl10_stream(split, data_dir, download, image_size, skipped):
    if stl10.find_stl10_folder(data_dir) is not None:
        return None
    files = "stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin)"
    tfds_split = {"pretrain": "unlabelled+train", "train": "train", "test": "test"}[split]
    return tfds_stream("stl10", split, "stl10", tfds_split, data_dir, download,
                       _missing("stl10", files, data_dir, "stl10"), class_example,
                       None if split == "pretrain" else "class", stl10.STL10_CLASS_NAMES)


def _celeba_stream(split, data_dir, download, image_size, skipped):
    if celeba.find_celeba_files(data_dir) is not None:
        return None
    files = "img_align_celeba/ and list_attr_celeba.txt (optionally list_eval_partition.txt)"
    return tfds_stream("celeb_a", split, "celeb_a", "test" if split == "test" else "train+validation", data_dir,
                       download, _missing("celeb_a", files, data_dir, "celeb_a"), _celeba_example, "attributes",
                       celeba.CELEBA_ATTRIBUTES)


def _mnist_stream(split, data_dir, download, image_size, skipped):
    if mnist.find_mnist_folder(data_dir) is not None:
        return None
    files = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
             "(each plain or .gz)")
    return tfds_stream("mnist", split, "mnist", "test" if split == "test" else "train", data_dir, download,
                       _missing("mnist", files, data_dir, "mnist"), _mnist_example, "class", mnist.MNIST_CLASS_NAMES)


_STREAMS = {
    "cifar10": _cifar_stream("cifar10"),
    "cifar100": _cifar_stream("cifar100"),
    "stl10": _stl10_stream,
    "celeb_a": _celeba_stream,
    "folder": _folder_stream,
    "mnist": _mnist_stream,
    "tfrecord": _tfrecord_stream,
}


def subsample(split, limit, seed):
    """``(images, labels)`` of at most ``limit`` examples of ``split``, a seeded random subset in the original
    order (all of it when ``limit`` is None or not smaller)."""
    if limit is None or limit >= len(split):
        return split.images, split.labels
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
    return split.images[keep], None if split.labels is None else split.labels[keep]


@dataclasses.dataclass
class EvaluationData:
    """The labelled train/test data an evaluation measures on (see :func:`load_evaluation_data`): arrays, or
    `ImageStream`s (with ``streaming``) whose labels are given in source order, unreadable files included."""

    train_images: object
    train_labels: np.ndarray | None
    test_images: object
    test_labels: np.ndarray | None
    label_kind: str | None
    class_names: list

    @property
    def streaming(self):
        return bool(getattr(self.train_images, "streaming", False) or getattr(self.test_images, "streaming", False))


def load_evaluation_data(name, data_dir=None, *, download=False, image_size=None, max_train=None, max_test=None,
                         seed=0, crop=None, streaming="off", skipped=None, label_kind=None):
    """The "train" and "test" splits of ``name`` as an evaluation sees them: at most ``max_train`` /
    ``max_test`` examples (:func:`subsample`, seeded by ``seed`` and ``seed + 1``), center-cropped to
    ``crop`` (``(height, width)``, an int for a square, or None: as loaded).  The one place the train app's
    probe, the ablation's measures and ``apps/evaluate.py`` load their evaluation data; DataError as
    :func:`load_split`.

    ``streaming`` "on": splits that can stream (folder, tfrecord, tfds) come as `ImageStream`s of the same
    subset (the same seeded positions) and crop, so nothing is decoded here and an evaluation keeps only
    features (`dim_keras.evaluation.encode`); the others are refused.  "auto": the same, but a subset of at
    most `STREAMING_AUTO_BYTES` decoded is read into an array (only the subset is decoded: the same pixels as
    "off", which decodes the whole split first), and splits that cannot stream load as arrays.
    ``label_kind`` ("class" or "attributes"): the data is only wanted with such labels; streams without them
    are returned unread (nothing decoded, labels None) for the caller to drop.
    """
    height_width = None
    if crop:
        height_width = (crop, crop) if isinstance(crop, int) else crop
    parts, kinds = [], []
    for split, limit, split_seed in (("train", max_train, seed), ("test", max_test, seed + 1)):
        stream = None
        if streaming != "off":
            stream = open_stream(name, split, data_dir, download=download, image_size=image_size, skipped=skipped)
            if stream is None and streaming == "on":
                raise _not_streamable(name, data_dir)
        if stream is not None:
            if limit is not None and limit < len(stream):
                stream = stream.subset(np.sort(np.random.default_rng(split_seed).permutation(len(stream))[:limit]))
            if height_width:
                stream = stream.center_cropped(*height_width)
            kinds.append((stream.label_kind, stream.class_names))
            if label_kind is not None and kinds[0][0] != label_kind:
                parts += [stream, None]  # not wanted: read nothing
            elif streaming == "auto" and stream.decoded_bytes <= STREAMING_AUTO_BYTES:
                parts += list(stream.read_all())
            else:
                parts += [stream, stream.read_labels()]
            continue
        loaded = load_split(name, split, data_dir, download=download, image_size=image_size, skipped=skipped)
        images, labels = subsample(loaded, limit, split_seed)
        if height_width:
            images = center_crop(images, *height_width)
        parts += [images, labels]
        kinds.append((loaded.label_kind, loaded.class_names))
    (kind, class_names), _ = kinds
    return EvaluationData(*parts, kind, class_names)


def center_crop(images, height, width):
    """Center-crops a batch ``[N, H, W, C]`` to ``height`` x ``width`` (None keeps that side).

    Raises DataError when the images are smaller than the crop."""
    source_h, source_w = images.shape[1:3]
    height = source_h if height is None else int(height)
    width = source_w if width is None else int(width)
    if (source_h, source_w) == (height, width):
        return images
    if source_h < height or source_w < width:
        raise DataError(f"the images are {source_h}x{source_w}, smaller than the encoder's {height}x{width} input")
    top, left = (source_h - height) // 2, (source_w - width) // 2
    return np.ascontiguousarray(images[:, top:top + height, left:left + width])
