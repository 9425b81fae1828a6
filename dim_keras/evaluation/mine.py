"""Mutual Information Neural Estimation of I(X; Y) (Belghazi et al. 2018; DIM Table 4).

Section 4.1: "Mutual information neural estimate (MINE), I_rho(X, E_psi(x)),
between the input, X, and the output representation, E_psi(x), by training a
discriminator with parameters rho to maximize the DV estimator of the
KL-divergence", with "a decaying learning rate schedule" (Table 4).

Statistics network and negatives (the design choice documented here):
``T(x, y) = MLP([f(x), y])`` where ``f`` is a small conv net for images and the
identity for vectors.  It is evaluated for **all B x B pairs** of a batch, so
every ``y_i`` is contrasted with the ``B - 1`` inputs of the other samples
(the product of marginals) -- MINE's "shuffle y across the batch", using every
shuffle at once.  The conv net runs once per image (B times); only the MLP
runs B^2 times, and its first layer is split as ``W_y y_i + W_x f(x_j)`` so the
``[B, B, D]`` concatenation is never built.  The scores follow
`dim_keras.estimators`: ``scores[i, j, 0] = T(x_j, y_i)``, positives on the
diagonal, and the bound is `dim_keras.estimators.dv_lower_bound`.

The reported estimate is the DV bound averaged over held-out batches after
training (the test split, or a held-out fraction of the data).
"""

import keras
import numpy as np
import tensorflow as tf

from dim_keras.evaluation.dv_training import (
    DonskerVaradhanModel,
    fit_and_estimate,
    split_held_out,
    standardize,
)


@keras.saving.register_keras_serializable(package="dim_keras")
class PairwiseStatisticsNetwork(keras.layers.Layer):
    """``T(x, y)`` for every pair of a batch: ``scores[i, j, 0] = T(x_j, y_i)``.

    Args:
        hidden_units: widths of the MLP on ``[f(x), y]`` (ReLU); a linear unit follows.
        image_filters: widths of the 4x4 stride-2 ReLU convs of ``f`` for image ``x``.
        image_embedding: width of ``f(x)`` for images (a ReLU dense layer after the convs).
    """

    def __init__(self, hidden_units=(256, 256), image_filters=(32, 64, 128),
                 image_embedding=256, **kwargs):
        super().__init__(**kwargs)
        if not hidden_units:
            raise ValueError("the statistics network needs at least one hidden layer")
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.image_filters = tuple(int(f) for f in image_filters)
        self.image_embedding = int(image_embedding)
        self.y_projection = keras.layers.Dense(self.hidden_units[0], name="y_projection")
        self.x_projection = keras.layers.Dense(self.hidden_units[0], use_bias=False, name="x_projection")
        self.hidden_layers = [keras.layers.Dense(u, activation="relu", name=f"hidden{k + 2}")
                              for k, u in enumerate(self.hidden_units[1:])]
        self.score_layer = keras.layers.Dense(1, name="score")
        self.image_network = None

    def build(self, x_shape, y_shape):
        if len(x_shape) == 4:
            self.image_network = keras.Sequential(
                [keras.layers.Conv2D(f, 4, strides=2, padding="same", activation="relu",
                                     name=f"conv{k + 1}")
                 for k, f in enumerate(self.image_filters)]
                + [keras.layers.Flatten(name="flatten"),
                   keras.layers.Dense(self.image_embedding, activation="relu", name="embedding")],
                name="image_network",
            )
            self.image_network.build(x_shape)
            x_width = self.image_embedding
        elif len(x_shape) == 2:
            x_width = x_shape[-1]
        else:
            raise ValueError(f"x must be images [B, H, W, C] or vectors [B, D], got rank {len(x_shape)}")
        if len(y_shape) != 2:
            raise ValueError(f"y must be vectors [B, D], got rank {len(y_shape)}")
        self.x_projection.build((None, x_width))
        self.y_projection.build((None, y_shape[-1]))
        width = self.hidden_units[0]
        for layer in self.hidden_layers:
            layer.build((None, None, width))
            width = layer.units
        self.score_layer.build((None, None, width))

    def call(self, x, y):
        features = self.image_network(x) if self.image_network is not None else x
        # Dense([y_i, f(x_j)]) == W_y y_i + W_x f(x_j) + b, broadcast to [B_y, B_x, H].
        hidden = self.y_projection(y)[:, None, :] + self.x_projection(features)[None, :, :]
        hidden = tf.nn.relu(hidden)
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return self.score_layer(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, image_filters=self.image_filters,
                      image_embedding=self.image_embedding)
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class MutualInformationNeuralEstimator(DonskerVaradhanModel):
    """MINE: ascends the DV bound on I(X; Y) over batches ``(x, y)`` of the joint."""

    def __init__(self, statistics_network=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(statistics_network, dict):
            statistics_network = keras.saving.deserialize_keras_object(statistics_network)
        self.statistics_network = statistics_network or PairwiseStatisticsNetwork()

    def call(self, inputs, training=False):
        x, y = inputs
        return self.statistics_network(x, y, training=training)

    def batch_scores(self, data, training=False):
        return self(data, training=training)

    def get_config(self):
        config = super().get_config()
        config["statistics_network"] = keras.saving.serialize_keras_object(self.statistics_network)
        return config


def _prepare_x(train_x, eval_x):
    train_x, eval_x = np.asarray(train_x), np.asarray(eval_x)
    if train_x.ndim == 4:
        # Pixels in [0, 1]: the scale the conv net expects.
        scale = 255.0 if train_x.dtype == np.uint8 else 1.0
        return (train_x.astype(np.float32) / scale), (eval_x.astype(np.float32) / scale)
    if train_x.ndim == 2:
        return standardize(train_x.astype(np.float32), eval_x.astype(np.float32))
    raise ValueError(f"x must be images [N, H, W, C] or vectors [N, D], got shape {train_x.shape}")


def mine_estimate(x, y, eval_x=None, eval_y=None, epochs=20, batch_size=128,
                  learning_rate=1e-3, final_learning_rate_fraction=0.1,
                  hidden_units=(256, 256), image_filters=(32, 64, 128), image_embedding=256,
                  held_out_fraction=0.2, seed=0, return_training_bound=False, verbose=0):
    """MINE estimate of I(X; Y) in nats (Table 4, column I_rho(x, y)).

    Args:
        x: images ``[N, H, W, C]`` (uint8, or floats in [0, 1]) or vectors ``[N, Dx]``.
        y: vectors ``[N, Dy]`` paired with ``x`` (e.g. the representation Y).
        eval_x, eval_y: held-out pairs for the estimate (e.g. the test split).
            When omitted, ``held_out_fraction`` of ``(x, y)`` is held out.
        epochs, batch_size: training length; each batch gives B positives and
            B (B - 1) negative pairs.
        learning_rate, final_learning_rate_fraction: Adam with an exponentially
            decaying learning rate, from ``learning_rate`` to this fraction of it.
        hidden_units, image_filters, image_embedding: `PairwiseStatisticsNetwork`.
        seed: seeds Python, NumPy and TF (``keras.utils.set_random_seed``).
        return_training_bound: also return the last epoch's training bound.

    Returns:
        the held-out DV bound (float), or ``(held_out, training)`` bounds.
    """
    y = np.asarray(y, np.float32)
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError("y must be [N, D] and paired with x")
    if (eval_x is None) != (eval_y is None):
        raise ValueError("give both eval_x and eval_y, or neither")
    if eval_x is None:
        (x, y), (eval_x, eval_y) = split_held_out((np.asarray(x), y), held_out_fraction, seed)
    eval_y = np.asarray(eval_y, np.float32)
    x, eval_x = _prepare_x(x, eval_x)
    y, eval_y = standardize(y, eval_y)
    keras.utils.set_random_seed(seed)
    network = PairwiseStatisticsNetwork(hidden_units, image_filters, image_embedding,
                                        name="statistics_network")
    model = MutualInformationNeuralEstimator(network, name="mine")
    held_out, training = fit_and_estimate(model, (x, y), (eval_x, eval_y), epochs, batch_size,
                                          learning_rate, final_learning_rate_fraction, seed, verbose)
    return (held_out, training) if return_training_bound else held_out


def gaussian_mutual_information(rho, dims):
    """Analytic I(X; Z) for ``dims`` independent pairs with correlation ``rho``: ``-d/2 log(1 - rho^2)``."""
    return -0.5 * dims * float(np.log1p(-rho ** 2))
