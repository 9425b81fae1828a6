"""Encode a data set once and keep the features for every measure (DIM section 4.1).

All measures of section 4.1 (SVM, non-linear probe, MS-SSIM, MINE, NDM, nearest
neighbours) read the features of a *fixed* encoder.  Encoding CIFAR10 with a
conv encoder is the expensive part, so it is done once into a `FeatureSet`
that every measure (and a keras-tuner ablation) reuses.
"""

import dataclasses

import keras
import numpy as np

from dim_keras import io
from dim_keras.runtime import progress_verbosity

# The layers the paper evaluates (Tables 1, 2, 4: "conv", "fc", "Y").
PAPER_LAYERS = ("conv", "fc", "y")


def _as_numpy(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def encode(encoder_fn, images_uint8, batch_size=256, names=None, verbose=0):
    """Encodes ``images_uint8`` batch by batch into flattened float32 features.

    Args:
        encoder_fn: callable mapping a uint8 batch ``[n, H, W, 3]`` to a dict
            ``{name: tensor [n, ...]}`` (e.g. ``dim_keras.export.load_encoder``'s
            result, or ``lambda x: encoder(x / 255)`` for a keras encoder).
        images_uint8: uint8 array ``[N, H, W, 3]``.
        batch_size: images per call (memory bound only; results do not depend
            on it because the encoder runs in inference mode).
        names: feature names to keep (default: every name the encoder returns).
            Dropping the big ``local`` map saves memory: 128x8x8 floats per
            CIFAR image are 1.6 GB for the 50k training images.
        verbose: 1 shows a ``keras.utils.Progbar``.

    Returns:
        dict ``name -> float32 array [N, D]`` (each feature flattened).

    ``images_uint8`` may also be a `dim_keras.data.ImageStream`: its batches are read from disk as they are
    encoded and only the features are kept (`encode_stream`, which also returns the labels).
    """
    if getattr(images_uint8, "streaming", False):
        return encode_stream(encoder_fn, images_uint8, batch_size, names, verbose)[0]
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got shape {images_uint8.shape}")
    if images_uint8.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images_uint8.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    count = len(images_uint8)
    progbar = keras.utils.Progbar(count, unit_name="image", verbose=progress_verbosity(1)) if verbose else None
    chunks = {}
    for start in range(0, count, batch_size):
        _features_of(encoder_fn(images_uint8[start:start + batch_size]), names, chunks)
        if progbar is not None:
            progbar.update(min(start + batch_size, count))
    if count == 0:
        raise ValueError("no images to encode")
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _features_of(outputs, names, chunks):
    if not isinstance(outputs, dict):
        raise ValueError("encoder_fn must return a dict of feature tensors")
    for name in outputs.keys() if names is None else names:
        if name not in outputs:
            raise ValueError(f"the encoder has no feature {name!r}; it returns {', '.join(sorted(outputs))}")
        value = _as_numpy(outputs[name]).astype(np.float32, copy=False)
        chunks.setdefault(name, []).append(value.reshape(len(value), -1))


def encode_stream(encoder_fn, stream, batch_size=256, names=None, verbose=0):
    """`encode` of a `dim_keras.data.ImageStream`: ``(features, labels)`` in the stream's source order.

    The stream is read in order, ``batch_size`` images at a time (the same batches `encode` makes of the
    same images held as an array, so the features are identical), and only the features are kept: memory
    grows with the number of images times the feature width, never with the images.  Unreadable files are
    skipped (the stream's `SkippedImages`), so ``labels`` (None when unlabelled) are those of the encoded
    images.
    """
    from dim_keras.data import raising_data_errors

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    progbar = keras.utils.Progbar(len(stream), unit_name="image", verbose=progress_verbosity(1)) if verbose else None
    chunks, labels, indices, done = {}, [], [], 0
    with raising_data_errors(stream.skipped):
        for image_batch, label_batch, index_batch in stream.batches(batch_size):
            _features_of(encoder_fn(image_batch.numpy()), names, chunks)
            labels.append(label_batch.numpy())
            indices.append(index_batch.numpy())
            done += len(index_batch)
            if progbar is not None:
                progbar.update(done)
    if not done:
        raise ValueError("no images to encode")
    # Records are read a few shards at a time: back to source order (image files already are in it).
    order = np.argsort(np.concatenate(indices), kind="stable")
    features = {name: np.concatenate(parts)[order] for name, parts in chunks.items()}
    return features, None if stream.label_kind is None else np.concatenate(labels)[order]


def keras_encoder_fn(encoder, training=False):
    """Wraps a keras encoder taking float images in [0, 1] as a uint8 ``encoder_fn``."""

    def encoder_fn(images_uint8):
        return encoder(np.asarray(images_uint8, np.float32) / 255.0, training=training)

    return encoder_fn


@dataclasses.dataclass
class FeatureSet:
    """Train/test features of one fixed encoder plus labels (and optionally images).

    Attributes:
        train, test: dict ``layer -> float32 [N, D]`` (see `encode`).
        train_labels, test_labels: int labels ``[N]`` (classes) or ``[N, A]``
            (binary attributes, CelebA), or None when the data set is unlabelled.
        train_images, test_images: optional uint8 ``[N, H, W, 3]``; needed by the
            measures that look at pixels (MINE's I(X; Y), the MS-SSIM decoder,
            the nearest-neighbour figure).
        class_names: optional names of the classes / attributes.
    """

    train: dict
    test: dict
    train_labels: np.ndarray = None
    test_labels: np.ndarray = None
    train_images: np.ndarray = None
    test_images: np.ndarray = None
    class_names: tuple = None

    def __post_init__(self):
        missing = set(self.train) ^ set(self.test)
        if missing:
            raise ValueError(f"train and test features differ in layers {sorted(missing)}")
        for split, features, labels, images in (
            ("train", self.train, self.train_labels, self.train_images),
            ("test", self.test, self.test_labels, self.test_images),
        ):
            counts = {len(v) for v in features.values()}
            if labels is not None:
                counts.add(len(labels))
            if images is not None:
                counts.add(len(images))
            if len(counts) > 1:
                raise ValueError(f"{split} features, labels and images have different lengths {sorted(counts)}")
        if (self.train_labels is None) != (self.test_labels is None):
            raise ValueError("give labels for both splits or for neither")
        for name in self.train:
            if self.train[name].shape[1:] != self.test[name].shape[1:]:
                raise ValueError(f"layer {name!r} has different widths in train and test")

    @property
    def layers(self):
        return tuple(self.train)

    @property
    def has_class_labels(self):
        return self.train_labels is not None and np.ndim(self.train_labels) == 1

    @property
    def has_attribute_labels(self):
        return self.train_labels is not None and np.ndim(self.train_labels) == 2

    @property
    def has_images(self):
        return self.train_images is not None and self.test_images is not None

    @classmethod
    def from_encoder(cls, encoder_fn, train_images, test_images, train_labels=None,
                     test_labels=None, batch_size=256, names=PAPER_LAYERS,
                     keep_images=True, class_names=None, verbose=0):
        """Encodes both splits once (see `encode`).

        A split given as a `dim_keras.data.ImageStream` is encoded as it is read and its labels are those the
        stream gives with the images (unreadable files skipped; ``train_labels`` / ``test_labels`` then only
        say whether to keep labels); its images are not kept.
        """
        splits = []
        for images, labels in ((train_images, train_labels), (test_images, test_labels)):
            if getattr(images, "streaming", False):
                features, streamed = encode_stream(encoder_fn, images, batch_size, names, verbose)
                splits.append((features, None if labels is None else streamed, None))
            else:
                splits.append((encode(encoder_fn, images, batch_size, names, verbose),
                               None if labels is None else np.asarray(labels),
                               np.asarray(images) if keep_images else None))
        (train, train_labels, train_images), (test, test_labels, test_images) = splits
        return cls(
            train=train,
            test=test,
            train_labels=train_labels,
            test_labels=test_labels,
            train_images=train_images,
            test_images=test_images,
            class_names=None if class_names is None else tuple(class_names),
        )

    def save(self, path):
        """Writes an ``.npz`` atomically (`dim_keras.io.atomic_path`)."""
        arrays = {f"train/{k}": v for k, v in self.train.items()}
        arrays.update({f"test/{k}": v for k, v in self.test.items()})
        for key in ("train_labels", "test_labels", "train_images", "test_images"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        if self.class_names is not None:
            arrays["class_names"] = np.asarray(self.class_names, dtype=str)
        # An open file: np.savez would append ".npz" to a path without that extension.
        with io.atomic_path(path) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, **arrays)
        return path

    @classmethod
    def load(cls, path):
        """Reads a `FeatureSet` written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}

        def layers(prefix):
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        class_names = arrays.get("class_names")
        return cls(
            train=layers("train/"),
            test=layers("test/"),
            train_labels=arrays.get("train_labels"),
            test_labels=arrays.get("test_labels"),
            train_images=arrays.get("train_images"),
            test_images=arrays.get("test_images"),
            class_names=None if class_names is None else tuple(str(c) for c in class_names),
        )
