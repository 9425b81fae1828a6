"""Log-densities and samplers of the comparison models' distributions, in ``keras.ops`` (issue 15).

Pure tensor functions (as :mod:`dim_keras.estimators`): the models of :mod:`dim_keras.baselines` build
their ELBO, A-MIM and reconstruction terms from these.  All log-densities are in nats, summed over the
event axes (every axis after the batch axis) and returned per example, ``[B]``.
"""

import math

from keras import ops
import keras

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(values):
    """Sums every axis after the first: ``[B, ...] -> [B]``."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


def gaussian_log_density(x, mean, log_variance):
    """``log N(x; mean, diag(exp(log_variance)))`` per example: ``-1/2 sum [log 2 pi + log var + (x-mean)^2/var]``."""
    return -0.5 * _sum_event(LOG_2PI + log_variance + ops.square(x - mean) * ops.exp(-log_variance))


def gaussian_kl_to_standard_normal(mean, log_variance):
    """``KL(N(mean, diag(exp(log_variance))) || N(0, I))`` per example, in closed form (Kingma & Welling
    2014, App. B): ``1/2 sum [mean^2 + var - 1 - log var]``."""
    return 0.5 * _sum_event(ops.square(mean) + ops.exp(log_variance) - 1.0 - log_variance)


def sample_gaussian(mean, log_variance, seed):
    """A reparameterised sample ``mean + exp(log_variance / 2) * eps``, ``eps ~ N(0, I)`` from ``seed`` (a
    ``keras.random.SeedGenerator``): differentiable in ``mean`` and ``log_variance``."""
    noise = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=seed)
    return mean + ops.exp(0.5 * log_variance) * noise


def bernoulli_log_likelihood(logits, x):
    """``sum x log sigmoid(l) + (1 - x) log sigmoid(-l)`` per example, stable for any logits; ``x`` in
    [0, 1] (pixel intensities used as Bernoulli means, as Kingma & Welling's MNIST VAE)."""
    # log sigmoid(l) = -softplus(-l), log sigmoid(-l) = -softplus(l)
    return -_sum_event(x * ops.softplus(-logits) + (1.0 - x) * ops.softplus(logits))
