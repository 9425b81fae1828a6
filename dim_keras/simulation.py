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

from dim_keras import choices
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


def _resolve_estimator(estimator, ema_decay):
    """``(bound name, ema decay)`` for a :data:`choices.SIMULATION_ESTIMATORS` name.

    ``dv_ema`` is ``dv`` with MINE's bias-corrected gradient at ``ema_decay``
    (``DEFAULT_EMA_DECAY`` when that is 0); ``ema_decay > 0`` is only
    meaningful for ``dv``.
    """
    if estimator == "dv_ema":
        return "dv", (ema_decay if ema_decay > 0 else DEFAULT_EMA_DECAY)
    if estimator not in choices.SIMULATION_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                         f"{', '.join(choices.SIMULATION_ESTIMATORS)}")
    if ema_decay and estimator != "dv":
        raise ValueError(f"ema_decay applies to the dv estimator only, not {estimator!r}")
    return estimator, ema_decay


DEFAULT_EMA_DECAY = 0.99


def train_critic_estimate(sample, dim_x, dim_z, estimator="dv", ema_decay=0.0, critic="separable",
                          batch_size=512, steps=1000, learning_rate=1e-3, eval_batches=20, seed=0,
                          hidden_units=128, jit_compile=True):
    """Trains a critic ``T(z, x)`` on pairs from ``sample`` and returns the bound.

    ``sample(batch_size, seed_generator) -> (x, z)`` draws joint pairs of
    shapes ``[batch_size, dim_x]``, ``[batch_size, dim_z]``; the other pairs of
    the batch are the product-of-marginals samples.  ``estimator`` is one of
    :data:`dim_keras.choices.SIMULATION_ESTIMATORS`; with ``ema_decay > 0``
    (or ``dv_ema``) the critic follows MINE's bias-corrected DV gradient
    (:func:`dim_keras.estimators.dv_bias_corrected`) while the reported value
    is still the plain DV bound.  Returns ``(estimate, history)``: the bound
    averaged over ``eval_batches`` fresh batches and ``[(step, training
    bound)]`` every 50 steps.
    """
    name, ema_decay = _resolve_estimator(estimator, ema_decay)
    bound = estimators_lib.get_estimator(name)
    keras.utils.set_random_seed(seed)
    seed_gen = keras.random.SeedGenerator(seed)
    net = build_vector_critic(critic, hidden_units=hidden_units)
    net.build((None, dim_z), (None, dim_x))
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(net.trainable_variables)
    ema = estimators_lib.BiasCorrectedDV(ema_decay) if ema_decay > 0 else None

    # The critic scores T(z_i, x_j): "global" z, one-location "local" x.
    def train_step():
        x, z = sample(batch_size, seed_gen)
        with tf.GradientTape() as tape:
            scores = net(z, x, training=True)
            if ema is None:
                value = bound(scores)
                objective = value
            else:
                value, objective = ema(scores)
            loss = -objective
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
            x, z = sample(batch_size, seed_gen)
            total += bound(net(z, x, training=False))
        return total / eval_batches

    history = []
    done = 0
    while done < steps:
        chunk = min(50, steps - done)
        value = train_steps(tf.constant(chunk))
        done += chunk
        history.append((done, float(value)))
    return float(evaluate()), history


def estimate_gaussian_mi(estimator="dv", rho=0.8, dim=2, critic="separable",
                         batch_size=512, steps=1000, learning_rate=1e-3,
                         eval_batches=20, seed=0, hidden_units=128, jit_compile=True,
                         ema_decay=0.0):
    """Trains a critic on correlated Gaussians and returns its MI estimate.

    Returns a dict with ``estimate`` (the bound averaged over ``eval_batches``
    fresh batches, nats), ``true_mi`` (analytic), ``history`` (the training
    bound every 50 steps) and the settings.  ``estimator`` may also be
    ``dv_ema``; ``ema_decay`` > 0 turns on MINE's bias-corrected gradient
    for ``dv`` (see :func:`train_critic_estimate`).
    """
    true_mi = gaussian_mi(rho, dim)

    def sample(n, seed_gen):
        return sample_correlated_gaussians(n, dim, rho, seed_gen)

    estimate, history = train_critic_estimate(
        sample, dim, dim, estimator, ema_decay=ema_decay, critic=critic, batch_size=batch_size,
        steps=steps, learning_rate=learning_rate, eval_batches=eval_batches, seed=seed,
        hidden_units=hidden_units, jit_compile=jit_compile)
    return {
        "estimator": estimator, "critic": critic, "rho": rho, "dim": dim,
        "batch_size": batch_size, "steps": steps, "estimate": estimate,
        "true_mi": true_mi, "log_batch_size": math.log(batch_size),
        "ema_decay": _resolve_estimator(estimator, ema_decay)[1],
        "history": history,
    }


def _summary(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def sweep_gaussian_mi(estimators, dims, rho=0.8, seeds=3, log=print, ema_decay_for_dv_ema=0.0, first_seed=0,
                      **kwargs):
    """MINE Fig. 1 style: every estimator at every dimension over ``seeds`` seeds.

    ``kwargs`` go to :func:`estimate_gaussian_mi` (batch_size, steps, ...);
    ``dv_ema`` runs at ``ema_decay_for_dv_ema`` (``DEFAULT_EMA_DECAY`` when
    0); the seeds are ``first_seed, first_seed + 1, ...``.
    Returns ``{"rho", "dims", "true_mi": [per dim], "estimators": {name:
    {"estimates": [[per seed] per dim], "mean", "std", "bias"}}}`` where
    ``bias = mean - true`` and ``std`` is the sample standard deviation over
    seeds (0 for one seed).
    """
    dims = list(dims)
    true = [gaussian_mi(rho, d) for d in dims]
    table = {}
    for name in estimators:
        decay = ema_decay_for_dv_ema if name == "dv_ema" else 0.0
        runs = [[estimate_gaussian_mi(name, rho=rho, dim=d, seed=s, ema_decay=decay, **kwargs)["estimate"]
                 for s in range(first_seed, first_seed + seeds)] for d in dims]
        stats = [_summary(r) for r in runs]
        table[name] = {"estimates": runs, "mean": [m for m, _ in stats], "std": [sd for _, sd in stats],
                       "bias": [m - t for (m, _), t in zip(stats, true)]}
        log(f"{name}: " + ", ".join(f"d={d}: {m:.3f}+-{sd:.3f} (true {t:.3f})"
                                    for d, (m, sd), t in zip(dims, stats, true)))
    return {"rho": rho, "dims": dims, "true_mi": true, "seeds": seeds, "estimators": table}


# ---- MINE's invariance experiment (Fig. 2): Y = f(X) + sigma * eps ---------

INVARIANCE_FUNCTIONS = {
    "identity": lambda x: x,
    "cube": lambda x: x * x * x,
    "sin": tf.sin,
}


def sample_invariance(batch_size, function, sigma, seed):
    """``x ~ U(-1, 1)`` (scalar), ``y = f(x) + sigma * eps``, ``eps ~ N(0, 1)``."""
    f = INVARIANCE_FUNCTIONS[function]
    x = keras.random.uniform((batch_size, 1), minval=-1.0, maxval=1.0, seed=seed)
    eps = keras.random.normal((batch_size, 1), seed=seed)
    return x, f(x) + sigma * eps


def invariance_true_mi(function, sigma, grid=4001):
    """``I(X; f(X) + sigma eps)`` for ``x ~ U(-1, 1)`` by numerical integration.

    ``I = h(Y) - h(Y | X) = h(Y) - log(sigma sqrt(2 pi e))`` with ``p(y)`` the
    mixture of ``N(f(x), sigma^2)`` over a fine x grid.  Note the MI is only
    *invariant* under bijective ``f`` in the sense ``I(X; Y) = I(f(X); Y)``;
    different ``f`` give different ``f(X)`` distributions and so somewhat
    different MI (reported here so the comparison is honest).
    """
    import numpy as np
    fx = {"identity": lambda v: v, "cube": lambda v: v ** 3, "sin": np.sin}[function]
    xs = np.linspace(-1.0, 1.0, 801)
    means = fx(xs)
    ys = np.linspace(means.min() - 8 * sigma, means.max() + 8 * sigma, grid)
    dens = np.exp(-0.5 * ((ys[:, None] - means[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    p = dens.mean(axis=1)
    dy = ys[1] - ys[0]
    h_y = -np.sum(p * np.log(np.maximum(p, 1e-300))) * dy
    return float(h_y - 0.5 * math.log(2 * math.pi * math.e * sigma * sigma))


def invariance_experiment(functions=("identity", "cube", "sin"), sigmas=(0.1,), estimator="dv",
                          seed=0, log=print, **kwargs):
    """MINE Fig. 2: the estimate of ``I(X; f(X) + sigma eps)`` for each ``f``.

    ``kwargs`` go to :func:`train_critic_estimate` (batch_size, steps,
    ema_decay, ...).  Returns ``{"sigmas", "estimator", "functions": {f:
    {"estimates": [per sigma], "true_mi": [per sigma]}}}``.
    """
    out = {}
    for name in functions:
        estimates, true = [], []
        for sigma in sigmas:
            def sample(n, seed_gen, name=name, sigma=sigma):
                return sample_invariance(n, name, sigma, seed_gen)
            estimate, _ = train_critic_estimate(sample, 1, 1, estimator, seed=seed, **kwargs)
            estimates.append(estimate)
            true.append(invariance_true_mi(name, sigma))
        out[name] = {"estimates": estimates, "true_mi": true}
        log(f"{name}: " + ", ".join(f"sigma={s:g}: {e:.3f} (numerical MI {t:.3f})"
                                    for s, e, t in zip(sigmas, estimates, true)))
    return {"sigmas": list(sigmas), "estimator": estimator, "functions": out}


# ---- Tschannen et al. (ICLR 2020), Sec. 4 and App. E: non-i.i.d. negatives -------------

# App. E: (X, Y) = Z + e with Z ~ N(0, SIGMA_Z) and e ~ N(0, SIGMA_E), both two-dimensional.
APP_E_SIGMA_Z = ((1.0, -0.5), (-0.5, 1.0))
APP_E_SIGMA_E = ((1.0, 0.9), (0.9, 1.0))


def gaussian_pair_mi(covariance):
    """``I(X; Y)`` (nats) of a jointly Gaussian scalar pair with 2x2 ``covariance`` (App. E):
    ``-1/2 log(1 - S12^2 / (S11 S22))``."""
    (s11, s12), (s21, s22) = covariance
    if s11 <= 0 or s22 <= 0 or s12 * s21 >= s11 * s22:
        raise ValueError(f"not a positive definite 2x2 covariance: {covariance}")
    return -0.5 * math.log(1.0 - s12 * s21 / (s11 * s22))


def _cholesky_2x2(covariance):
    (s11, s12), (_, s22) = covariance
    l11 = math.sqrt(s11)
    l21 = s12 / l11
    return tf.constant([[l11, 0.0], [l21, math.sqrt(s22 - l21 * l21)]], tf.float32)


def sample_shared_offset_pairs(batch_size, seed, shared=True, sigma_z=APP_E_SIGMA_Z, sigma_e=APP_E_SIGMA_E):
    """A batch ``(x, y)``, each ``[batch_size, 1]``, of ``(X_i, Y_i) = Z + e_i`` (App. E).

    ``e_i ~ N(0, sigma_e)`` is drawn for every element; ``Z ~ N(0, sigma_z)`` once per batch with
    ``shared=True`` (the non-i.i.d. batches: every pair has the joint ``N(0, sigma_z + sigma_e)`` but the
    pairs of a batch are dependent) or once per element with ``shared=False`` (i.i.d. pairs from the same
    joint, the baseline).  Works inside ``tf.function`` (``seed`` is a ``keras.random.SeedGenerator``).
    """
    z = keras.random.normal((1 if shared else batch_size, 2), seed=seed) @ tf.transpose(_cholesky_2x2(sigma_z))
    e = keras.random.normal((batch_size, 2), seed=seed) @ tf.transpose(_cholesky_2x2(sigma_e))
    xy = z + e
    return xy[:, :1], xy[:, 1:]
