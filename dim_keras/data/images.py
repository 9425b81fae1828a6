"""Decoding image files into uint8 arrays (tf.io first, PIL as fallback), with optional center crop and resize."""

import numpy as np
import tensorflow as tf

from dim_keras.errors import DataError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Files decoded per tf.data batch; also the granularity at which a decoding failure is re-examined file by file.
_DECODE_BATCH = 256


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
    paths = [str(path) for path in paths]
    size = as_size(size)
    images = np.empty((len(paths), size[0], size[1], 3), np.uint8)

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
                images[index] = decode_one(paths[index], size, center_crop, what)
            start = stop
    return images


def list_image_files(directory, recursive=False):
    """Image files (by extension, case-insensitive, hidden files skipped) in `directory`, sorted by path."""
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )
