"""MINE's Gaussian simulation: estimating the MI of correlated Gaussians.

``x ~ N(0, I_d)`` and ``z = rho * x + sqrt(1 - rho^2) * eps`` with
``eps ~ N(0, I_d)``: each of the ``d`` coordinate pairs has correlation
``rho``, and the analytic mutual information is

    I(X; Z) = -d / 2 * log(1 - rho^2)   (nats)

(MINE, Belghazi et al. 2018; ``papers/mine-slides.txt``).  A critic is trained
to maximise one of the bounds of :mod:`dim_keras.estimators` on batches of
pairs, and the bound is then averaged over fresh evaluation batches.
"""

import math

import keras
import tensorflow as tf

from dim_keras import critics as critics_lib
from dim_keras import estimators as estimators_lib


def gaussian_mi(rho, dim):
    """Analytic MI (nats) of ``dim`` independent pairs with correlation ``rho``."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1), got {rho}")
    return -0.5 * dim * math.log(1.0 - rho * rho)


def rho_for_mi(mi, dim):
    """The correlation that gives ``mi`` nats over ``dim`` dimensions."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def sample_correlated_gaussians(batch_size, dim, rho, seed):
    """A ``[batch_size, dim]`` pair ``(x, z)`` with per-dimension correlation rho."""
    x = keras.random.normal((batch_size, dim), seed=seed)
    eps = keras.random.normal((batch_size, dim), seed=seed)
    z = rho * x + math.sqrt(1.0 - rho * rho) * eps
    return x, z


def build_vector_critic(name, hidden_units=256, embedding_dim=64):
    """A critic for vector pairs: ``separable`` (default), ``concat``,
    ``bilinear`` or ``dot`` (encode-and-dot)."""
    if name == "separable":
        return critics_lib.SeparableCritic(embedding_dim, hidden_units=(hidden_units, hidden_units))
    if name == "concat":
        return critics_lib.ConcatAndConvolveCritic(hidden_units=(hidden_units, hidden_units))
    if name == "bilinear":
        return critics_lib.BilinearCritic()
    if name == "dot":
        return critics_lib.EncodeAndDotCritic(embedding_dim, batch_norm=False)
    raise ValueError(f"unknown critic {name!r}; choose one of {', '.join(critics_lib.CRITICS)}")


def estimate_gaussian_mi(estimator="dv", rho=0.8, dim=2, critic="separable",
                         batch_size=512, steps=1000, learning_rate=1e-3,
                         eval_batches=20, seed=0, hidden_units=128, jit_compile=True):
    """Trains a critic on correlated Gaussians and returns its MI estimate.

    Returns a dict with ``estimate`` (the bound averaged over ``eval_batches``
    fresh batches, nats), ``true_mi`` (analytic), ``history`` (the training
    bound every 50 steps) and the settings.
    """
    bound = estimators_lib.get_estimator(estimator)
    true_mi = gaussian_mi(rho, dim)
    keras.utils.set_random_seed(seed)
    seed_gen = keras.random.SeedGenerator(seed)
    net = build_vector_critic(critic, hidden_units=hidden_units)
    net.build((None, dim), (None, dim))
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(net.trainable_variables)

    # The critic scores T(z_i, x_j): "global" z, one-location "local" x.
    def train_step():
        x, z = sample_correlated_gaussians(batch_size, dim, rho, seed_gen)
        with tf.GradientTape() as tape:
            value = bound(net(z, x, training=True))
            loss = -value
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply(grads, net.trainable_variables)
        return value

    # Many steps per call: the critic is tiny, so per-call dispatch would
    # otherwise dominate the run time.
    @tf.function(jit_compile=jit_compile)
    def train_steps(n):
        value = tf.constant(0.0)
        for _ in tf.range(n):
            value = train_step()
        return value

    @tf.function(jit_compile=jit_compile)
    def evaluate():
        total = tf.constant(0.0)
        for _ in tf.range(eval_batches):
            x, z = sample_correlated_gaussians(batch_size, dim, rho, seed_gen)
            total += bound(net(z, x, training=False))
        return total / eval_batches

    history = []
    done = 0
    while done < steps:
        chunk = min(50, steps - done)
        value = train_steps(tf.constant(chunk))
        done += chunk
        history.append((done, float(value)))
    estimate = float(evaluate())
    return {
        "estimator": estimator, "critic": critic, "rho": rho, "dim": dim,
        "batch_size": batch_size, "steps": steps, "estimate": estimate,
        "true_mi": true_mi, "log_batch_size": math.log(batch_size),
        "history": history,
    }
