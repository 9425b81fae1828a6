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

On the JAX backend the same SavedModel is written by a TensorFlow process
(:func:`export_encoder`): the encoder's weights go through a ``.keras`` file
to ``KERAS_BACKEND=tensorflow``, which rebuilds it and exports it exactly as a
TensorFlow-trained encoder, so every export is the same graph of TensorFlow
ops whichever backend trained it.
"""

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
import keras

from dim_keras.errors import first_line
from dim_keras.io import atomic_path
from dim_keras.models import as_unit_floats

SIGNATURE = "serving_default"

# How closely a JAX-backend export must serve the JAX encoder's own features: the largest absolute difference
# over CHECK_IMAGES seeded images, relative to the features' largest magnitude (at least 1).  float32 compute:
# the two backends' kernels differ in rounding only (measured ~1e-6 on digits); 16-bit compute (mixed
# precision) rounds every activation to 8 (bfloat16) or 11 (float16) significant bits.
EXPORT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
CHECK_IMAGES = 8


def _serving_fn(encoder):
    def serve(images):
        x = as_unit_floats(images)  # x / 255, exactly as DeepInfoMax trains on uint8 images
        features = encoder(x, training=False)
        return {name: keras.ops.cast(value, "float32") for name, value in features.items()}
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

    TensorFlow backend only: on JAX ``ExportArchive`` converts the function with jax2tf into one
    ``XlaCallModule`` lowered for this machine's platform (TF 2.21 / JAX 0.10, measured: it rejects a batch
    of 0 images and a CPU export does not run on a GPU), not this graph of TensorFlow ops; export
    encoders with :func:`export_encoder`, which uses a TensorFlow process there.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"write_saved_model traces TensorFlow graphs and Keras runs on "
                         f"{keras.backend.backend()}: export in a process with KERAS_BACKEND=tensorflow "
                         "(dim_keras.export.export_encoder does so for encoders)")
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
    """Writes ``encoder`` as a SavedModel at ``path`` atomically (uint8 in); returns ``path``.

    On the TensorFlow backend the export traces ``encoder`` itself.  On any other backend (JAX) it is
    written by a TensorFlow process from the encoder's weights (:func:`_export_in_tensorflow_process`) and
    checked there to serve the encoder's own features to :data:`EXPORT_TOLERANCE`.
    """
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow_process(encoder, path)
    height, width, channels = encoder.input_shape[1:]
    spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")
    return write_saved_model(encoder, _serving_fn(encoder), [spec], path)


def check_images(input_shape, count=CHECK_IMAGES, seed=0):
    """``count`` seeded uint8 images of ``input_shape`` (H, W, C): the export's feature check."""
    return np.random.default_rng(seed).integers(0, 256, (count, *input_shape), dtype=np.uint8)


def encoder_features(encoder, images):
    """``encoder``'s float32 numpy features of uint8 ``images`` in inference mode, scaled as the export
    scales them (:func:`dim_keras.models.as_unit_floats`)."""
    features = encoder(as_unit_floats(keras.ops.convert_to_tensor(images)), training=False)
    return {name: keras.ops.convert_to_numpy(keras.ops.cast(value, "float32")) for name, value in features.items()}


def export_tolerance(encoder):
    """The :data:`EXPORT_TOLERANCE` of ``encoder``'s compute dtype (the lowest precision of its layers)."""
    dtypes = {getattr(layer, "compute_dtype", None) or "float32" for layer in [encoder, *encoder.layers]}
    return max(EXPORT_TOLERANCE.get(dtype, EXPORT_TOLERANCE["float32"]) for dtype in dtypes)


def feature_difference(expected, served):
    """The largest ``|served - expected|`` over every feature, relative to ``max(1, max |expected|)``."""
    scale = max([1.0] + [float(np.abs(v).max()) for v in expected.values() if v.size])
    worst = max(float(np.abs(np.asarray(served[name], np.float64) - value).max()) if value.size else 0.0
                for name, value in expected.items())
    return worst / scale


def _full_float32_matmuls():
    """A context in which this backend's matmuls and convolutions compute in full float32.

    On NVIDIA GPUs JAX's default precision rounds the inputs of float32 matmuls and convolutions to
    TF32 (10-bit mantissa: errors near 1e-3, jax.default_matmul_precision), while the export's
    TensorFlow child runs on CPU in float32: features compared at 1e-4 must then both be float32's.
    Free on CPU, where JAX always computes in float32."""
    if keras.backend.backend() == "jax":
        import jax
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def _export_in_tensorflow_process(encoder, path):
    """:func:`export_encoder` from a non-TensorFlow backend: the same SavedModel, written by TensorFlow.

    A process fixes its Keras backend at import, and on JAX ``keras.export`` can only wrap the encoder in
    one jax2tf ``XlaCallModule`` for this machine's platform (see :func:`write_saved_model`).  So the
    encoder is saved as a ``.keras`` file (architecture, weights, batch-norm statistics, dtype policies)
    and a child Python with ``KERAS_BACKEND=tensorflow`` rebuilds it, exports it with the TensorFlow path
    of :func:`export_encoder` and serves :func:`check_images` through the reloaded ``serving_default``;
    the features must equal this backend's own to :func:`export_tolerance` (:func:`feature_difference`),
    else RuntimeError and nothing is written.  The child sees no GPU: exporting needs none, and this
    process may hold the accelerator's memory.  Atomic like every export.
    """
    images = check_images(tuple(encoder.input_shape[1:]))
    with _full_float32_matmuls():  # the child computes in full float32, on CPU
        expected = encoder_features(encoder, images)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this dim_keras, not another install
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with tempfile.TemporaryDirectory(prefix="dim_keras_export_") as work, atomic_path(path) as tmp:
        model_path, check_path, served_path = (os.path.join(work, name) for name in
                                               ("encoder.keras", "check.npz", "served.npz"))
        encoder.save(model_path)
        np.savez(check_path, images=images)
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from dim_keras.export import _tensorflow_child; "
             "_tensorflow_child(*sys.argv[1:])", model_path, tmp, check_path, served_path],
            env=env, capture_output=True, text=True)
        if child.returncode != 0 or not os.path.exists(served_path):
            lines = [line for line in child.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"exporting the encoder with KERAS_BACKEND=tensorflow failed (exit "
                               f"{child.returncode}): {first_line(lines[-1]) if lines else 'no error message'}")
        with np.load(served_path) as served:
            difference = feature_difference(expected, dict(served))
        tolerance = export_tolerance(encoder)
        if not difference <= tolerance:
            raise RuntimeError(f"the TensorFlow export serves features {difference:.2g} (relative) away from the "
                               f"{keras.backend.backend()} encoder's, more than {tolerance:g}: not exported")
    return path


def _tensorflow_child(model_path, path, check_path, served_path):
    """The child of :func:`_export_in_tensorflow_process`: exports the ``.keras`` encoder to ``path`` and
    writes the reloaded export's features of the check images to ``served_path``."""
    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"the export child runs on {keras.backend.backend()}, not tensorflow")
    from dim_keras import load_model
    export_encoder(load_model(model_path, compile=False), path)
    with np.load(check_path) as check:
        served = LoadedEncoder(path)(check["images"])
    np.savez(served_path, **served)


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
        if not chunks:  # the graph's batch norm cannot broadcast a batch of 0: the empty shapes it would give
            return {k: np.zeros((0, *spec.shape[1:]), np.float32) for k, spec in self._serve.structured_outputs.items()}
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def load_encoder(path, batch_size=256):
    """Loads an encoder exported by :func:`export_encoder`."""
    return LoadedEncoder(path, batch_size=batch_size)
