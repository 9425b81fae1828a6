"""Decoding image files into uint8 arrays (tf.io first, PIL as fallback), with optional center crop and resize.

Unreadable files: by default the first one is a DataError naming it.  With a `SkippedImages` collector they are
skipped instead, counted, and the first few are listed (`--strict` turns the collector back into the error), so
that one bad file in a folder of a million photos never ends a run hours in.
"""

import threading

import numpy as np
import tensorflow as tf

from dim_keras.errors import DataError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Files decoded per tf.data batch; also the granularity at which a decoding failure is re-examined file by file.
_DECODE_BATCH = 256


class SkippedImages:
    """Unreadable image files met while loading or streaming: how many, and the first `MAX_LISTED` paths.

    Shared by the threads of a tf.data pipeline (its fallback decoder runs in them), hence the lock.  With
    ``strict`` the first unreadable file raises its DataError instead (and keeps it in ``error``, since inside
    tf.data the exception reaches the caller as a tf.errors.OpError: see :func:`raising_data_errors`).
    """

    MAX_LISTED = 5

    def __init__(self, strict=False):
        self.strict = bool(strict)
        self.first = []
        self.error = None
        self._seen = set()  # every epoch meets the same bad files again: each is counted once
        self._lock = threading.Lock()

    @property
    def count(self):
        return len(self._seen)

    def add(self, path, error):
        """Records unreadable ``path`` (``error``: its DataError); raises it when strict."""
        with self._lock:
            if self.strict:
                self.error = self.error or error
                raise error
            if str(path) in self._seen:
                return
            self._seen.add(str(path))
            if len(self.first) < self.MAX_LISTED:
                self.first.append(str(path))

    def summary(self, total=None):
        """One line for the end of a run, or None when nothing was skipped."""
        if not self.count:
            return None
        of = f" of {total}" if total is not None else ""
        more = ", ..." if self.count > len(self.first) else ""
        return (f"skipped {self.count} unreadable image file(s){of} (first: {', '.join(self.first)}{more}); "
                f"--strict stops at the first instead")

    def as_dict(self):
        return {"count": self.count, "first": list(self.first)}


class raising_data_errors:
    """Context manager: a tf.errors.OpError caused by a strict `SkippedImages` becomes its one-line DataError."""

    def __init__(self, skipped):
        self.skipped = skipped

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, tf.errors.OpError) and getattr(self.skipped, "error", None):
            raise self.skipped.error from None
        return False


def as_size(size):
    """An int or (height, width) pair -> (height, width) tuple of ints, or None."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise DataError(f"image size must be an int or a (height, width) pair, got {size!r}") from None
    if height <= 0 or width <= 0:
        raise DataError(f"image size must be positive, got {size!r}")
    return height, width


def fit_image(image, size=None, center_crop=None):
    """Center-crop a uint8 [h, w, 3] image to at most `center_crop` and resize it to `size` (both (h, w)).

    Resizing is bilinear with antialiasing (downscaling CelebA 140 -> 64 would alias otherwise); an image that
    already has the target size is passed through untouched so that lossless formats round-trip exactly.
    """
    image = tf.convert_to_tensor(image)
    if center_crop is not None:
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        crop_height = tf.minimum(center_crop[0], height)
        crop_width = tf.minimum(center_crop[1], width)
        top = (height - crop_height) // 2
        left = (width - crop_width) // 2
        image = image[top : top + crop_height, left : left + crop_width]
    if size is None:
        return image

    def resize():
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(size, tf.int32)))
    fitted = tf.cond(same_size, lambda: tf.identity(image), resize)
    fitted.set_shape([size[0], size[1], 3])
    return fitted


def _tf_decode(path):
    # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False gives a GIF/APNG's first frame.
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def decode_one(path, size=None, center_crop=None, what="images"):
    """Decode one file to uint8 [h, w, 3]: tf.io, then PIL for what tf.io can't read (e.g. 32-bit BMP)."""
    try:
        image = _tf_decode(tf.constant(str(path))).numpy()
    except tf.errors.OpError:
        image = _pil_decode(path, what)
    return fit_image(image, size, center_crop).numpy()


def _pil_decode(path, what):
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            return np.asarray(opened.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{what}: image file {path} is missing") from None
    except Exception as error:
        raise DataError(f"{what}: cannot decode image {path} ({first_line(error)})") from None


def decode_image_files(paths, size, center_crop=None, what="images"):
    """Decode many image files into one uint8 [N, size[0], size[1], 3] array (parallel tf.data decoding).

    A failing batch is re-decoded file by file so that the error names the culprit (or PIL rescues it).
    """
    images, _ = decode_image_files_skipping(paths, size, center_crop, what)
    return images


def decode_image_files_skipping(paths, size, center_crop=None, what="images", skipped=None):
    """`decode_image_files` that skips unreadable files when ``skipped`` (a `SkippedImages`) is given:
    ``(images of the readable files, in order; boolean mask [len(paths)] of which were read)``.
    Without ``skipped`` the first unreadable file is a DataError."""
    paths = [str(path) for path in paths]
    size = as_size(size)
    images = np.empty((len(paths), size[0], size[1], 3), np.uint8)
    readable = np.ones(len(paths), bool)

    def decode(path):
        return fit_image(_tf_decode(path), size, center_crop)

    start = 0
    while start < len(paths):
        dataset = (
            tf.data.Dataset.from_tensor_slices(paths[start:])
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(_DECODE_BATCH)
        )
        try:
            for batch in dataset:
                images[start : start + len(batch)] = batch.numpy()
                start += len(batch)
        except tf.errors.OpError:
            # The failing batch is the one starting at `start`; a fresh pipeline resumes after it.
            stop = min(start + _DECODE_BATCH, len(paths))
            for index in range(start, stop):
                try:
                    images[index] = decode_one(paths[index], size, center_crop, what)
                except DataError as error:
                    if skipped is None:
                        raise
                    skipped.add(paths[index], error)
                    readable[index] = False
            start = stop
    if not readable.all():
        images = images[readable]
    return images, readable


def decode_or_fall_back(path, size, center_crop=None, what="images", skipped=None):
    """In-graph: ``(uint8 image [size[0], size[1], 3], readable bool)`` of the file at ``path`` (a string tensor).

    tf.io decodes it; a file tf.io cannot read (corrupt, missing, a 32-bit BMP) goes to PIL in Python, as in
    `decode_one`, so streamed pixels equal loaded ones.  A file neither can read is recorded in ``skipped``
    (raising its DataError when ``skipped`` is None or strict) and comes back as zeros with readable False.
    The error is caught without Python on the common path: the tf.io decode runs in a one-element dataset
    whose errors are ignored, and the PIL fallback, concatenated behind it, is pulled only when it came back
    empty.  Use it inside ``Dataset.interleave``, which flattens the one-element datasets this returns.
    """
    size = as_size(size)

    def fallback(path_bytes):
        path_text = path_bytes.decode("utf-8", "surrogateescape")
        try:
            return _pil_decode(path_text, what), True
        except DataError as error:
            if skipped is None:
                raise
            skipped.add(path_text, error)
            return np.zeros((1, 1, 3), np.uint8), False

    def from_tf(path):
        return fit_image(_tf_decode(path), size, center_crop), tf.constant(True)

    def from_pil(path):
        image, readable = tf.numpy_function(fallback, [path], [tf.uint8, tf.bool], stateful=True)
        image = tf.ensure_shape(image, [None, None, 3])
        return fit_image(image, size, center_crop), tf.ensure_shape(readable, [])

    one = tf.data.Dataset.from_tensors(path)
    return one.map(from_tf).ignore_errors().concatenate(one.map(from_pil)).take(1)


def list_image_files(directory, recursive=False):
    """Image files (by extension, case-insensitive, hidden files skipped) in `directory`, sorted by path."""
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )
