"""Multiple globals (DIM Sec. 4.2, Table 3 "DIM(L) multiple globals"): less-global features from random
3 x 3 blocks of the local feature grid.

    "We can add similar behavior to DIM by computing less global features which condition on 3 x 3 blocks
    of local features sampled at random from the full 7 x 7 sets of local features. We then maximize mutual
    information between these less global features and the full sets of local features. We share a single
    MI estimator across all possible 3 x 3 blocks of local features when using this version of DIM."

:func:`sample_block_corners` draws the blocks (one per image and less-global feature, uniform over the
grid's ``(H - 2) x (W - 2)`` positions), :func:`cut_blocks` gathers them exactly, and
:class:`LessGlobalNetwork` is the one network shared by every block (the paper does not describe it: here
the encoder's Table 1-like head, flatten -> dense + BN + ReLU -> linear, to a vector of Y's size so that the
one local critic scores it).  :class:`dim_keras.models.DeepInfoMax` (``num_globals``) puts them together.
All ``keras.ops``: the same code runs in the TensorFlow and the JAX training step.
"""

import keras
from keras import layers
from keras import ops

# The block side of Sec. 4.2 ("3 x 3 blocks of local features").
BLOCK = 3


def check_grid(rows, cols):
    """Raises ValueError (one line) when a ``rows x cols`` local grid has no 3 x 3 block."""
    if rows is None or cols is None or rows < BLOCK or cols < BLOCK:
        raise ValueError(f"multiple globals need a local feature grid of at least {BLOCK}x{BLOCK} (the "
                         f"paper's 7x7 of the folded encoder), got {rows}x{cols}")


def sample_block_corners(batch, count, rows, cols, seed):
    """``[batch, count, 2]`` int32 top-left corners ``(i, j)`` of ``count`` 3 x 3 blocks per image, each
    uniform over the ``(rows - 2) x (cols - 2)`` block positions of a ``rows x cols`` grid, independently
    (positions may repeat).  ``seed``: a ``keras.random.SeedGenerator`` (the model's) or an int."""
    positions = (rows - BLOCK + 1) * (cols - BLOCK + 1)
    index = keras.random.randint((batch, count), 0, positions, dtype="int32", seed=seed)
    per_row = cols - BLOCK + 1
    return ops.stack([index // per_row, index % per_row], axis=-1)


def cut_blocks(local, corners):
    """The 3 x 3 blocks of ``local`` ([B, H, W, C]) whose top-left corners are ``corners`` ([B, K, 2]):
    ``[B, K, 3, 3, C]`` with ``out[b, k] = local[b, i:i+3, j:j+3]`` for ``(i, j) = corners[b, k]``.

    Every block position is cut by plain slicing and the wanted ones are gathered by index (``ops.take``),
    so the values are exact copies and the gradient reaches exactly those local features."""
    rows, cols, channels = local.shape[1], local.shape[2], local.shape[3]
    per_row = cols - BLOCK + 1
    positions = (rows - BLOCK + 1) * per_row
    every = ops.stack([local[:, i:i + BLOCK, j:j + BLOCK, :]
                       for i in range(rows - BLOCK + 1) for j in range(per_row)], axis=1)  # [B, P, 3, 3, C]
    batch = ops.shape(local)[0]
    count = corners.shape[1]
    index = ops.cast(corners[..., 0] * per_row + corners[..., 1], "int32")  # [B, K]
    flat_index = ops.reshape(index + ops.expand_dims(ops.arange(batch, dtype="int32") * positions, 1), (-1,))
    blocks = ops.take(ops.reshape(every, (-1, BLOCK, BLOCK, channels)), flat_index, axis=0)
    return ops.reshape(blocks, (-1, count, BLOCK, BLOCK, channels))


@keras.saving.register_keras_serializable(package="dim_keras")
class LessGlobalNetwork(layers.Layer):
    """The network shared by every 3 x 3 block: ``[N, 3, 3, C]`` -> ``[N, y_dim]``.

    Flatten -> dense (``units``, no bias) + BN + ReLU -> linear ``y_dim``: the shape of the encoder's own
    fc -> Y head (Table 1), so a less-global feature is a "Y" computed from 9 local features."""

    def __init__(self, units, y_dim, **kwargs):
        super().__init__(**kwargs)
        self.units, self.y_dim = int(units), int(y_dim)
        self.flatten = layers.Flatten()
        self.hidden = layers.Dense(self.units, use_bias=False, name="hidden_dense")
        self.norm = layers.BatchNormalization(name="hidden_bn")
        self.out = layers.Dense(self.y_dim, name="y")

    def build(self, input_shape):
        flat = (input_shape[0], input_shape[1] * input_shape[2] * input_shape[3])
        self.hidden.build(flat)
        self.norm.build((input_shape[0], self.units))
        self.out.build((input_shape[0], self.units))
        self.built = True

    def call(self, blocks, training=None):
        h = self.hidden(self.flatten(blocks))
        h = ops.relu(self.norm(h, training=training))
        return self.out(h)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.y_dim)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, y_dim=self.y_dim)
        return config


def less_global_features(network, local, corners, training=False):
    """``[B, K, y_dim]``: ``network`` applied to the blocks of ``local`` at ``corners`` ([B, K, 2])."""
    blocks = cut_blocks(local, corners)
    count = corners.shape[1]
    flat = ops.reshape(blocks, (-1, BLOCK, BLOCK, local.shape[3]))
    return ops.reshape(network(flat, training=training), (-1, count, network.y_dim))
