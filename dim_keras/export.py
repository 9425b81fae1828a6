"""Exporting a trained encoder as a TensorFlow SavedModel, and loading it back.

The exported ``serving_default`` signature takes ``uint8`` images
``[N, H, W, 3]`` (any N; the scaling to [0, 1] happens inside, bit for bit as
:class:`dim_keras.DeepInfoMax` scales uint8 images) and returns a dict of
float32 features ``local``, ``conv``, ``fc`` and ``y`` with batch norm in
inference mode.  It can be served by TF Serving or loaded with
``tf.saved_model.load`` without dim_keras installed.

The raw signature checks little of that contract itself (TF 2.21, measured):
a numpy array of another dtype is cast to uint8 without a word, so floats in
[0, 1] become 0 and 1 and give wrong features; a tensor of another dtype is
an ``InvalidArgumentError`` ("expected to be a uint8 tensor"); a numpy array
of another shape is a ``TypeError`` ("Binding inputs to tf.function failed
... Can not cast TensorSpec"); a tensor of another height or width may run
and return meaningless features, and one without the batch axis can abort
the process.  Feed it ``uint8`` tensors of exactly ``[N, H, W, 3]``, or use
:func:`load_encoder`, whose :class:`LoadedEncoder` checks dtype and shape and
says what it needs in a ``ValueError``.
"""

import os

import numpy as np
import tensorflow as tf
import keras

from dim_keras.io import atomic_path
from dim_keras.models import as_unit_floats

SIGNATURE = "serving_default"


def _serving_fn(encoder):
    def serve(images):
        x = as_unit_floats(images)  # x / 255, exactly as DeepInfoMax trains on uint8 images
        features = encoder(x, training=False)
        return {name: tf.cast(value, tf.float32) for name, value in features.items()}
    return serve


def write_saved_model(model, serve_fn, input_signature, path):
    """Writes ``model`` as a SavedModel whose ``serving_default`` is ``serve_fn``.

    Every variable is stored once.  ``ExportArchive.track(model)`` lists the
    model's Keras variables (wrappers) as the archive's ``variables``, while
    the traced endpoint captures the ``tf.Variable`` inside each (under a
    ``MirroredStrategy``: its primary component); ``tf.saved_model.save``
    deduplicates by Python object, not by the resource underneath, so each
    weight was written twice (``variables/N`` and ``_all_variables/N``).  The
    archive's ``variables`` / ``trainable_variables`` /
    ``non_trainable_variables`` (also on the object ``tf.saved_model.load``
    revives) are therefore the variables the endpoint captures: what
    serving needs, each saved once.

    The SavedModel is written to a temporary sibling directory and renamed
    into place (:func:`dim_keras.io.atomic_path`), so a crash never leaves a
    half-written export at ``path``; it is readable by other users.  An
    existing export at ``path`` is replaced.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)  # finds lookup tables and other non-variable resources
    endpoint = archive.add_endpoint(name=SIGNATURE, fn=serve_fn, input_signature=input_signature)
    captured = endpoint.get_concrete_function()
    trainable = list(captured.trainable_variables)
    trainable_ids = {id(v) for v in trainable}
    archive.add_variable_collection("variables", list(captured.variables))
    archive.add_variable_collection("trainable_variables", trainable)
    archive.add_variable_collection(
        "non_trainable_variables", [v for v in captured.variables if id(v) not in trainable_ids])
    with atomic_path(path) as tmp:
        archive.write_out(tmp, verbose=False)
    return path


def export_encoder(encoder, path):
    """Writes ``encoder`` as a SavedModel at ``path`` atomically (uint8 in)."""
    height, width, channels = encoder.input_shape[1:]
    spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")
    return write_saved_model(encoder, _serving_fn(encoder), [spec], path)


class LoadedEncoder:
    """A reloaded encoder SavedModel: call it on uint8 images, get features.

    ``encoder(images)`` returns a dict of float32 numpy arrays; large inputs are
    fed in batches of ``batch_size``.
    """

    def __init__(self, path, batch_size=256):
        if not os.path.isdir(path) or not tf.saved_model.contains_saved_model(path):
            raise ValueError(f"no SavedModel encoder at {path}")
        self.path = path
        self.batch_size = batch_size
        self._module = tf.saved_model.load(path)
        self._serve = self._module.signatures[SIGNATURE]
        spec = self._serve.structured_input_signature[1]["images"]
        self.input_shape = tuple(spec.shape[1:])

    def __call__(self, images):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            hint = (" (floats in [0, 1]: pass np.round(images * 255).astype(np.uint8))"
                    if images.dtype.kind == "f" else "")
            raise ValueError(f"the encoder takes uint8 images (0-255; it scales them to [0, 1] itself), "
                             f"got {images.dtype}{hint}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            hint = " (one image: pass images[None])" if tuple(images.shape) == self.input_shape else ""
            raise ValueError(
                f"the encoder takes uint8 images of shape [N, {', '.join(map(str, self.input_shape))}], "
                f"got {list(images.shape)}{hint}")
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = tf.constant(images[start:start + self.batch_size])
            chunks.append({k: v.numpy() for k, v in self._serve(images=batch).items()})
        if not chunks:
            chunks.append({k: v.numpy() for k, v in self._serve(
                images=tf.zeros((0,) + self.input_shape, tf.uint8)).items()})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def load_encoder(path, batch_size=256):
    """Loads an encoder exported by :func:`export_encoder`."""
    return LoadedEncoder(path, batch_size=batch_size)
