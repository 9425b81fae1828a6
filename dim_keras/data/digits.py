"""scikit-learn's 8x8 handwritten digits (ships with sklearn, so it works offline): the default dataset.

Pixel values 0..16 are scaled to 0..255, upsampled to 32x32 (bilinear, tf.image.resize) so that the CIFAR
encoder of the paper's Table 1 applies unchanged, and replicated to 3 channels.
"""

import numpy as np
import tensorflow as tf

DIGITS_SIZE = (32, 32)
DIGITS_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def load_native_digits(split):
    """The native 8x8 images of ``split`` as float32 [N, 8, 8] in [0, 1] (pixel / 16) and labels int64 [N].

    The same fixed ~80/20 train/test split as :func:`load_digits_split` ("pretrain" is the train split).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.target))
    test_count = int(round(len(order) * DIGITS_TEST_FRACTION))
    chosen = order[:test_count] if split == "test" else order[test_count:]
    return digits.images[chosen].astype(np.float32) / 16.0, digits.target[chosen].astype(np.int64)


def load_digits_split(split):
    """Images uint8 [N, 32, 32, 3], labels int64 [N] and class names "0".."9"; fixed ~80/20 train/test split."""
    native, labels = load_native_digits(split)
    small = native * 255.0
    large = tf.image.resize(small[..., np.newaxis], DIGITS_SIZE, method="bilinear")
    images = tf.cast(tf.clip_by_value(tf.round(large), 0.0, 255.0), tf.uint8).numpy()
    return np.repeat(images, 3, axis=-1), labels, [str(d) for d in range(10)]
