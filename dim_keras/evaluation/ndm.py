"""Neural Dependency Measure (DIM section 4.1, App. A.6, Fig. 12, Table 4).

Section 4.1: "Given a batch of representations, we generate a factor-wise
independent distribution with the same per-factor marginals by randomly
shuffling each factor along the batch dimension.  We can train a discriminator
to estimate the KL-divergence between the original representations (joint
distribution of the factors) and the shuffled representations (product of the
marginals, see Figure 12).  The higher the KL divergence, the more dependent
the factors."

The KL divergence between a distribution and the product of its marginals is
the total correlation; for a Gaussian with correlation matrix R it is
``-1/2 log det R`` (`gaussian_total_correlation`), 0 for independent factors.

Implementation: a discriminator ``T(y)`` (an MLP) is trained to ascend the
Donsker-Varadhan bound ``E_joint[T] - log E_shuffled[e^T]``; every training
and evaluation batch gets a fresh, independent shuffle of every dimension.
The bound is computed by `dim_keras.estimators.dv_lower_bound` on the score
matrix ``scores[i, j] = T(y_i)`` if ``i == j`` else ``T(shuffled_j)``: each
row's negatives are the B shuffled samples less one, so the off-diagonal
log-mean-exp over all rows is exactly the log-mean-exp over the B shuffled
samples.  The reported NDM is that bound averaged over held-out batches.
App. A.5 measured NDM "without the sigmoid function", i.e. on the linear Y.
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


def shuffle_each_dimension(features, seed=None):
    """Permutes every column of ``features [B, D]`` independently along the batch.

    The result has the same per-dimension marginals and independent dimensions
    (the product of marginals of Fig. 12).  Vectorised: one random permutation
    per column from an argsort of uniform noise.
    """
    features = tf.convert_to_tensor(features)
    shape = tf.shape(features)
    if seed is None:
        noise = tf.random.uniform(shape)
    else:
        noise = tf.random.stateless_uniform(shape, seed=seed)
    permutation = tf.argsort(noise, axis=0)  # [B, D]: column d is a permutation of 0..B-1
    # shuffled[b, d] = features[permutation[b, d], d]
    by_column = tf.gather(tf.transpose(features), tf.transpose(permutation), batch_dims=1)
    return tf.transpose(by_column)


def joint_versus_shuffled_scores(joint_scores, shuffled_scores):
    """DV score matrix ``[B, B, 1]``: ``T(y_i)`` on the diagonal, ``T(shuffled_j)`` off it."""
    batch = tf.shape(joint_scores)[0]
    rows = tf.tile(shuffled_scores[None, :], [batch, 1])
    return tf.linalg.set_diag(rows, joint_scores)[:, :, None]


@keras.saving.register_keras_serializable(package="dim_keras")
class NeuralDependencyMeasure(DonskerVaradhanModel):
    """Discriminator between Y and Y with independently shuffled dimensions (Fig. 12).

    Args:
        hidden_units: ReLU widths of the MLP discriminator ``T(y)`` (a linear
            unit follows).
    """

    def __init__(self, hidden_units=(256, 256), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.discriminator = keras.Sequential(
            [keras.layers.Dense(u, activation="relu", name=f"hidden{k + 1}")
             for k, u in enumerate(self.hidden_units)]
            + [keras.layers.Dense(1, name="score")],
            name="discriminator",
        )

    def call(self, features, training=False):
        return self.discriminator(features, training=training)[:, 0]

    def batch_scores(self, data, training=False):
        features = data[0] if isinstance(data, (tuple, list)) else data
        joint = self(features, training=training)
        shuffled = self(shuffle_each_dimension(features), training=training)
        return joint_versus_shuffled_scores(joint, shuffled)

    def get_config(self):
        config = super().get_config()
        config["hidden_units"] = self.hidden_units
        return config


def neural_dependency_measure(features, eval_features=None, epochs=20, batch_size=128,
                              learning_rate=1e-3, final_learning_rate_fraction=0.1,
                              hidden_units=(256, 256), held_out_fraction=0.2, seed=0,
                              return_training_bound=False, verbose=0):
    """NDM of a representation ``[N, D]`` in nats (Table 4, column NDM).

    Args:
        features: the representation (e.g. Y of the training split).
        eval_features: held-out representation for the estimate (e.g. the test
            split); when omitted ``held_out_fraction`` of ``features`` is held out.
        epochs, batch_size, learning_rate, final_learning_rate_fraction: Adam
            with an exponentially decaying learning rate, as for MINE.
        hidden_units: the discriminator's hidden widths.
        seed: seeds Python, NumPy and TF (``keras.utils.set_random_seed``).

    Returns:
        the held-out DV bound on KL(joint || product of marginals), or
        ``(held_out, training)`` with ``return_training_bound``.
    """
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"NDM needs a representation [N, D], got shape {features.shape}")
    if features.shape[1] < 2:
        raise ValueError("NDM needs at least two dimensions to measure their dependence")
    if eval_features is None:
        (features,), (eval_features,) = split_held_out((features,), held_out_fraction, seed)
    features, eval_features = standardize(features, np.asarray(eval_features, np.float32))
    keras.utils.set_random_seed(seed)
    model = NeuralDependencyMeasure(hidden_units, name="ndm")
    held_out, training = fit_and_estimate(model, (features,), (eval_features,), epochs, batch_size,
                                          learning_rate, final_learning_rate_fraction, seed, verbose)
    return (held_out, training) if return_training_bound else held_out


def gaussian_total_correlation(correlation):
    """KL(joint || product of marginals) of a Gaussian with correlation matrix R: ``-1/2 log det R``."""
    sign, log_det = np.linalg.slogdet(np.asarray(correlation, np.float64))
    if sign <= 0:
        raise ValueError("the correlation matrix must be positive definite")
    return -0.5 * float(log_det)
