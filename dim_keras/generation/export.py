"""Exporting a trained generator as a TensorFlow SavedModel, and loading it back.

The ``serving_default`` signature takes ``z`` float32 ``[N, z_dim]`` (any N) and returns ``{"images": uint8
[N, H, W, C]}`` for an image generator (``round(255 * G(z))``, batch norm in inference mode) or ``{"samples":
float32 [N, D]}`` for a point generator (the 2-D toy data). It loads with ``tf.saved_model.load`` without
dim_keras installed.
"""

import os

import numpy as np
import tensorflow as tf

from dim_keras.export import SIGNATURE, write_saved_model


def _serving_fn(generator):
    image_generator = len(generator.output_shape) == 4

    def serve(z):
        outputs = generator(z, training=False)
        if image_generator:
            pixels = tf.round(tf.clip_by_value(outputs, 0.0, 1.0) * 255.0)
            return {"images": tf.cast(pixels, tf.uint8)}
        return {"samples": tf.cast(outputs, tf.float32)}

    return serve


def export_generator(generator, path):
    """Writes ``generator`` (a Keras model z -> images in [0, 1] or points) as a SavedModel at ``path``.

    Written to a temporary sibling directory and renamed into place, so a crash never leaves a half-written
    export; an existing export at ``path`` is replaced. Returns the absolute path.
    """
    z_dim = int(generator.input_shape[-1])
    spec = tf.TensorSpec([None, z_dim], tf.float32, name="z")
    return write_saved_model(generator, _serving_fn(generator), [spec], path)


class LoadedGenerator:
    """A reloaded generator SavedModel: ``generator(z)`` returns uint8 images (or float32 points) as numpy."""

    def __init__(self, path):
        if not os.path.isdir(path) or not tf.saved_model.contains_saved_model(path):
            raise ValueError(f"no SavedModel generator at {path}")
        self.path = path
        self._module = tf.saved_model.load(path)
        self._serve = self._module.signatures[SIGNATURE]
        self.z_dim = int(self._serve.structured_input_signature[1]["z"].shape[-1])

    def __call__(self, z):
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"the generator takes z of shape [N, {self.z_dim}], got {list(z.shape)}")
        (output,) = self._serve(z=tf.constant(z)).values()
        return output.numpy()

    def sample(self, num_samples, seed=None):
        """Draws z ~ N(0, I) and returns ``self(z)``."""
        z = np.random.default_rng(seed).standard_normal((num_samples, self.z_dim)).astype(np.float32)
        return self(z)


def load_generator(path):
    """Loads a generator exported by :func:`export_generator`."""
    return LoadedGenerator(path)
