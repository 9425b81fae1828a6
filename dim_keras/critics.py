"""Critics (statistics networks T_omega) that score every pair of a batch.

Every critic is a Keras layer called as ``critic(global_features, local_features)``
with ``global_features`` of shape ``[B, D]`` and ``local_features`` either a
vector ``[B, D']`` (one location) or a feature map ``[B, H, W, C]``
(``L = H * W`` locations).  It returns the score tensor ``[B, B, L]`` read by
:mod:`dim_keras.estimators`: ``scores[i, j, l] = T(global_i, local_{j, l})``,
positives on the diagonal.  No critic loops over images or locations in
Python: dot-product critics issue one matmul for all pairs, and the
concatenation critics split their first (linear) layer into a local and a
global half so that all ``B x B x L`` concatenations are formed by
broadcasting a sum.
"""

import keras
from keras import layers, ops

from dim_keras.choices import CRITICS  # noqa: F401


def _flatten_locations(local_features):
    """[B, H, W, C] -> [B, H*W, C]; [B, C] -> [B, 1, C]."""
    rank = len(local_features.shape)
    if rank == 2:
        return ops.expand_dims(local_features, 1)
    if rank == 4:
        shape = ops.shape(local_features)
        return ops.reshape(local_features, (shape[0], -1, shape[3]))
    if rank == 3:
        return local_features
    raise ValueError(f"local features must have rank 2, 3 or 4, got {rank}")


def pairwise_dot_scores(global_embedding, local_embedding):
    """All pair scores ``[B, B, L]`` from one matmul.

    ``global_embedding`` is ``[B, D]``, ``local_embedding`` is ``[B, L, D]``;
    the ``[B, D] x [D, B*L]`` product scores every global vector against every
    location of every image at once.
    """
    shape = ops.shape(local_embedding)
    flat_local = ops.reshape(local_embedding, (-1, shape[2]))  # [B*L, D]
    scores = ops.matmul(global_embedding, ops.transpose(flat_local))
    return ops.reshape(scores, (ops.shape(global_embedding)[0], shape[0], shape[1]))


class _ShortcutInitializer(keras.initializers.Initializer):
    """Uniform(-0.01, 0.01) with ones on the diagonal: a noisy identity.

    The authors initialise the linear shortcut of the encode-and-dot critic
    "to be like identity (if possible)", so the embedding starts as a copy of
    its input.
    """

    def __call__(self, shape, dtype=None):
        noise = keras.random.uniform(shape, -0.01, 0.01, dtype=dtype)
        eye = ops.eye(shape[0], shape[1], dtype=dtype)
        return ops.where(eye > 0, ops.ones_like(noise), noise)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="dim_keras")
class ResidualEmbedding(layers.Layer):
    """Encode-and-dot embedding network (Tables 8 and 9, Fig. 6).

    ``Linear -> BN -> ReLU -> Linear`` plus a linear shortcut initialised near
    identity, optionally followed by layer norm over channels.  Applied to
    the last axis, so the same layer acts as the MLP of Table 8 on vectors and
    as the 1x1 convolutions of Table 9 on ``[B, L, C]`` maps.  Batch norm in
    the block follows the authors' code (the tables do not list it).
    """

    def __init__(self, units=2048, layer_norm=False, batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.layer_norm = layer_norm
        self.batch_norm = batch_norm
        self.hidden = layers.Dense(units, use_bias=not batch_norm, name="hidden")
        self.norm = layers.BatchNormalization(name="bn") if batch_norm else None
        self.out = layers.Dense(units, name="out")
        self.shortcut = layers.Dense(
            units, use_bias=False, kernel_initializer=_ShortcutInitializer(),
            name="shortcut",
        )
        self.ln = layers.LayerNormalization(name="ln") if layer_norm else None

    def build(self, input_shape):
        self.hidden.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (self.units,)
        if self.norm is not None:
            self.norm.build(hidden_shape)
        self.out.build(hidden_shape)
        self.shortcut.build(input_shape)
        if self.ln is not None:
            self.ln.build(hidden_shape)

    def call(self, inputs, training=None):
        h = self.hidden(inputs)
        if self.norm is not None:
            h = self.norm(h, training=training)
        h = self.out(ops.relu(h)) + self.shortcut(inputs)
        if self.ln is not None:
            h = self.ln(h)
        return h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, layer_norm=self.layer_norm, batch_norm=self.batch_norm
        )
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class EncodeAndDotCritic(layers.Layer):
    """Encode-and-dot-product critic (Tables 8-9, Fig. 6).

    The global feature goes through a one-hidden-layer MLP with a linear
    shortcut (Table 8); each local feature through the same architecture as
    1x1 convolutions, followed by "block layer norm" (Table 9).  Both embed to
    ``embedding_dim`` units (2048 in the paper) and all pair scores come from
    one matmul of the two embeddings.

    ``global_layer_norm``: layer norm on the global embedding too.  Table 8
    lists none, but the authors' local DIM embeds Y with the same
    ``MI1x1ConvNet`` as the local features (Y as a 1x1 map), layer norm
    included (rdevon/DIM, ``cortex_DIM/models/dim.py``, ``LocalDIM.build``).  On real CIFAR-10 images it
    adds ~4 points to Y's linear probe at 10 epochs, so ``apps/train.py``'s recipes turn it on
    (docs/RESULTS.md, "Parity"); the class default stays Table 8's.  Keras's layer-norm epsilon (1e-3,
    torch's 1e-5) changes the embeddings' scale by at most 0.3 % (pre-LN variances >= 0.16 measured).
    """

    def __init__(self, embedding_dim=2048, batch_norm=True, global_layer_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.batch_norm = batch_norm
        self.global_layer_norm = global_layer_norm
        self.global_embedding = ResidualEmbedding(
            embedding_dim, layer_norm=global_layer_norm, batch_norm=batch_norm,
            name="global_embedding",
        )
        self.local_embedding = ResidualEmbedding(
            embedding_dim, layer_norm=True, batch_norm=batch_norm,
            name="local_embedding",
        )

    def build(self, global_features_shape, local_features_shape):
        self.global_embedding.build(global_features_shape)
        self.local_embedding.build((None, None, local_features_shape[-1]))

    def call(self, global_features, local_features, training=None):
        local_features = _flatten_locations(local_features)
        g = self.global_embedding(global_features, training=training)
        c = self.local_embedding(local_features, training=training)
        return pairwise_dot_scores(g, c)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, batch_norm=self.batch_norm,
                      global_layer_norm=self.global_layer_norm)
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class BilinearCritic(layers.Layer):
    """Bilinear critic ``T(x, y) = x^T W y`` (Tschannen et al. 2020, section 3).

    ``global @ W`` is computed once per global vector; the pair scores then
    come from one matmul with the local features.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.projection = layers.Dense(use_bias=False, units=1, name="w")

    def build(self, global_features_shape, local_features_shape):
        self.projection.units = int(local_features_shape[-1])
        self.projection.build(global_features_shape)

    def call(self, global_features, local_features, training=None):
        local_features = _flatten_locations(local_features)
        return pairwise_dot_scores(self.projection(global_features), local_features)


@keras.saving.register_keras_serializable(package="dim_keras")
class SeparableCritic(layers.Layer):
    """Separable critic ``T(x, y) = phi_1(x)^T phi_2(y)`` (Tschannen et al. 2020).

    ``phi_1`` and ``phi_2`` are MLPs (``hidden_units`` wide, ReLU) that map to
    ``embedding_dim``; applied per location to feature maps.
    """

    def __init__(self, embedding_dim=256, hidden_units=(512,), **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.hidden_units = tuple(hidden_units)
        self.global_mlp = self._mlp("phi_global")
        self.local_mlp = self._mlp("phi_local")

    def _mlp(self, name):
        stack = [layers.Dense(u, activation="relu") for u in self.hidden_units]
        stack.append(layers.Dense(self.embedding_dim))
        return keras.Sequential(stack, name=name)

    def build(self, global_features_shape, local_features_shape):
        self.global_mlp.build(global_features_shape)
        self.local_mlp.build((None, None, local_features_shape[-1]))

    def call(self, global_features, local_features, training=None):
        local_features = _flatten_locations(local_features)
        return pairwise_dot_scores(
            self.global_mlp(global_features), self.local_mlp(local_features)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim, hidden_units=list(self.hidden_units)
        )
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class ConcatAndConvolveCritic(layers.Layer):
    """Concat-and-convolve critic (Table 7, Fig. 5, eqs. 11-12).

    Scores ``D([C^(l)(x_j), E(x_i)])`` with a 1x1 convnet of two 512-unit
    ReLU layers and a linear output.  The first layer is linear in the
    concatenation, ``W [c; y] = W_c c + W_y y``, so both halves are computed
    once per local feature and once per global feature and summed by
    broadcasting into ``[B, B, L, units]``: every real and fake pair of eq. 11
    and eq. 12 without materialising the concatenated inputs.  The same layer
    with flattened-map "locals" is the global critic of Table 6.
    """

    def __init__(self, hidden_units=(512, 512), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        first = self.hidden_units[0]
        self.local_projection = layers.Dense(first, name="first_local")
        self.global_projection = layers.Dense(first, use_bias=False, name="first_global")
        self.hidden = [
            layers.Dense(u, activation="relu", name=f"hidden_{k}")
            for k, u in enumerate(self.hidden_units[1:], start=1)
        ]
        self.score = layers.Dense(1, name="score")

    def build(self, global_features_shape, local_features_shape):
        self.local_projection.build((None, None, local_features_shape[-1]))
        self.global_projection.build(global_features_shape)
        width = self.hidden_units[0]
        for layer, units in zip(self.hidden, self.hidden_units[1:]):
            layer.build((None, None, None, width))
            width = units
        self.score.build((None, None, None, width))

    def call(self, global_features, local_features, training=None):
        local_features = _flatten_locations(local_features)
        c = self.local_projection(local_features)  # [B, L, H]
        g = self.global_projection(global_features)  # [B, H]
        h = ops.relu(g[:, None, None, :] + c[None, :, :, :])  # [B, B, L, H]
        for layer in self.hidden:
            h = layer(h)
        return ops.squeeze(self.score(h), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=list(self.hidden_units))
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class GlobalCritic(ConcatAndConvolveCritic):
    """Global DIM critic (Table 6): flattened last conv map ``C(x)`` concatenated
    with ``Y = E(x)``, two 512-unit ReLU layers, linear output.

    Called as ``critic(y, conv_map)``; the conv map is flattened to one
    location so the scores have shape ``[B, B, 1]``.
    """

    def build(self, global_features_shape, local_features_shape):
        flat = 1
        for dim in local_features_shape[1:]:
            flat *= int(dim)
        super().build(global_features_shape, (None, flat))

    def call(self, global_features, local_features, training=None):
        flat = ops.reshape(local_features, (ops.shape(local_features)[0], -1))
        return super().call(global_features, flat, training=training)


def build_critic(name, embedding_dim=2048, global_layer_norm=False):
    """Local critic by name: ``dot`` (encode-and-dot, the paper's main one),
    ``concat`` (concat-and-convolve), ``bilinear`` or ``separable``;
    ``global_layer_norm`` applies to ``dot`` only (:class:`EncodeAndDotCritic`)."""
    if name == "dot":
        return EncodeAndDotCritic(embedding_dim, global_layer_norm=global_layer_norm, name="local_critic")
    if name == "concat":
        return ConcatAndConvolveCritic(name="local_critic")
    if name == "bilinear":
        return BilinearCritic(name="local_critic")
    if name == "separable":
        return SeparableCritic(embedding_dim=min(embedding_dim, 512), name="local_critic")
    raise ValueError(f"unknown critic {name!r}; choose one of {', '.join(CRITICS)}")
