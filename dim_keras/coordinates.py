"""Coordinate prediction (DIM Sec. 4.3, App. A.7): auxiliary tasks that maximise the MI between
local features and their spatial coordinates given the global feature.

* **Absolute**: predict the coordinates ``(i, j)`` of a local feature ``c(i,j)`` from ``(y, c(i,j))``,
  i.e. maximise ``E[log p((i, j) | y, c(i,j))]`` with ``i`` and ``j`` treated as independent
  categorical variables (a sum of two cross-entropies), marginalised over all local features of the
  image.
* **Relative**: predict ``(i - i', j - j')`` from ``(y, c(i,j), c(i',j'))``; for each global feature
  one source feature ``c(i,j)`` is drawn at random and the objective is marginalised over all
  targets ``c(i',j')``.

``p_theta`` is "an MLP with two hidden layers, each with 512 units, ReLU activations, and batchnorm"
(:class:`CoordinatePredictor`), the same architecture for both tasks.  The functions below build the
inputs and targets of every (feature, coordinate) pair at once and score the predictions; the
training logic (which features, which weight) lives in :class:`dim_keras.models.DeepInfoMax`.
"""

import keras
from keras import layers, ops

from dim_keras.choices import COORDINATE_TASKS  # noqa: F401 (the task names, TF-free)


@keras.saving.register_keras_serializable(package="dim_keras")
class CoordinatePredictor(layers.Layer):
    """``p_theta``: Dense-BN-ReLU x 2 (512 units each, App. A.7), then one logit layer per coordinate.

    ``predictor(inputs)`` with ``inputs [N, D]`` returns ``(row_logits [N, rows], col_logits [N, cols])``.
    """

    def __init__(self, rows, cols, hidden_units=(512, 512), **kwargs):
        super().__init__(**kwargs)
        self.rows = int(rows)
        self.cols = int(cols)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.hidden = []
        for k, units in enumerate(self.hidden_units, start=1):
            self.hidden += [layers.Dense(units, use_bias=False, name=f"hidden{k}"),
                            layers.BatchNormalization(name=f"bn{k}"),
                            layers.ReLU(name=f"relu{k}")]
        self.row_logits = layers.Dense(self.rows, name="row_logits")
        self.col_logits = layers.Dense(self.cols, name="col_logits")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.row_logits.build(shape)
        self.col_logits.build(shape)

    def call(self, inputs, training=False):
        h = inputs
        for layer in self.hidden:
            h = layer(h, training=training) if isinstance(layer, layers.BatchNormalization) else layer(h)
        return self.row_logits(h), self.col_logits(h)

    def get_config(self):
        config = super().get_config()
        config.update({"rows": self.rows, "cols": self.cols, "hidden_units": list(self.hidden_units)})
        return config


def _flat(local):
    """[B, H, W, C] -> [B, H*W, C] (location l = i * W + j)."""
    shape = ops.shape(local)
    return ops.reshape(local, (shape[0], -1, local.shape[-1]))


def absolute_inputs(y, local):
    """Inputs ``[B*H*W, Dy + C]`` = ``(y, c(i,j))`` for every location of every image, and the targets
    ``i`` and ``j`` (``[B*H*W]`` int32)."""
    height, width = local.shape[1], local.shape[2]
    flat = _flat(local)
    batch = ops.shape(flat)[0]
    y = ops.cast(y, flat.dtype)
    tiled_y = ops.broadcast_to(y[:, None, :], (batch, height * width, y.shape[-1]))
    inputs = ops.concatenate([tiled_y, flat], axis=-1)
    locations = ops.arange(height * width, dtype="int32")
    rows = ops.broadcast_to((locations // width)[None, :], (batch, height * width))
    cols = ops.broadcast_to((locations % width)[None, :], (batch, height * width))
    return (ops.reshape(inputs, (-1, inputs.shape[-1])), ops.reshape(rows, (-1,)), ops.reshape(cols, (-1,)))


def relative_inputs(y, local, source):
    """Inputs ``[B*H*W, Dy + 2C]`` = ``(y, c(i,j), c(i',j'))`` with one source location ``source[b]`` per
    image and every location as a target, and the targets ``i - i' + H - 1`` and ``j - j' + W - 1``
    (classes ``0 .. 2H - 2`` and ``0 .. 2W - 2``)."""
    height, width = local.shape[1], local.shape[2]
    flat = _flat(local)
    batch = ops.shape(flat)[0]
    source = ops.cast(source, "int32")
    picked = ops.take_along_axis(flat, source[:, None, None], axis=1)  # [B, 1, C]
    picked = ops.broadcast_to(picked, ops.shape(flat))
    y = ops.cast(y, flat.dtype)
    tiled_y = ops.broadcast_to(y[:, None, :], (batch, height * width, y.shape[-1]))
    inputs = ops.concatenate([tiled_y, picked, flat], axis=-1)
    targets = ops.arange(height * width, dtype="int32")[None, :]
    rows = source[:, None] // width - targets // width + (height - 1)
    cols = source[:, None] % width - targets % width + (width - 1)
    rows = ops.broadcast_to(rows, (batch, height * width))
    cols = ops.broadcast_to(cols, (batch, height * width))
    return (ops.reshape(inputs, (-1, inputs.shape[-1])), ops.reshape(rows, (-1,)), ops.reshape(cols, (-1,)))


def coordinate_loss(row_logits, col_logits, rows, cols):
    """The task's loss, ``mean CE(i) + mean CE(j)`` (independent categoricals, A.7; the negative of the
    log-likelihood the paper maximises), and the accuracy of predicting both coordinates right."""
    row_logits = ops.cast(row_logits, "float32")
    col_logits = ops.cast(col_logits, "float32")
    loss = (ops.mean(ops.sparse_categorical_crossentropy(rows, row_logits, from_logits=True))
            + ops.mean(ops.sparse_categorical_crossentropy(cols, col_logits, from_logits=True)))
    correct = ((ops.cast(ops.argmax(row_logits, axis=-1), "int32") == rows)
               & (ops.cast(ops.argmax(col_logits, axis=-1), "int32") == cols))
    return loss, ops.mean(ops.cast(correct, "float32"))
