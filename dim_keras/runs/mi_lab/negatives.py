"""Tschannen et al. (ICLR 2020), Sec. 4, Fig. 4c and App. E: I_NCE and I_NWJ with non-i.i.d. negatives; and
App. C: I_NCE is ``log K`` minus the multi-class K-pair (triplet) loss.

App. E's synthetic pairs: ``(X_i, Y_i) = Z + e_i`` with ``e_i ~ N(0, Sigma_e)`` for every element and
``Z ~ N(0, Sigma_Z)`` drawn once per batch (:func:`dim_keras.simulation.sample_shared_offset_pairs`),
``Sigma_Z = [[1, -0.5], [-0.5, 1]]``, ``Sigma_e = [[1, 0.9], [0.9, 1]]``.  Every pair has the joint
``N(0, Sigma_Z + Sigma_e)``, whose MI is ``-1/2 log(1 - 0.4^2 / 4) = 0.0204`` nats, but the pairs of a batch
are dependent, so the other elements of the batch are not samples of the product of the marginals.  A critic
(an MLP with 5 hidden layers of 10 ReLU units and a linear output on the concatenated ``[x, y]``) is trained to
maximise I_NCE (and I_NWJ) with batches of 128, on i.i.d. batches (``Z`` per element: the baseline) and on
non-i.i.d. ones.  The paper: with i.i.d. batches both estimates stay below the true MI, with non-i.i.d.
batches both exceed it.

As in the authors' notebook (mirl.ipynb) the curve is the training estimate (theirs smoothed by a Gaussian
filter of 100 steps, here the mean over each ``eval_every`` steps).  At the end each critic is also scored
on fresh batches of both kinds: the critic trained on non-i.i.d. batches is a valid (low) bound again on
i.i.d. batches, so the excess comes from the dependent negatives, not from the critic.
"""

import math

import numpy as np

from dim_keras.runs.mi_lab import common

# The notebook trains 20k steps at lr 1e-4 (the --learning_rate default); the gap between i.i.d. and
# non-i.i.d. batches is clear after ~1k steps, so the CPU default is shorter (~4 minutes for 12 runs).
DEFAULT_STEPS = 2500
# Points of the training curve by default (each the mean training estimate over steps / CURVE_POINTS steps).
CURVE_POINTS = 30
# Fresh batches of each kind on which every trained critic is scored at the end.
EVAL_BATCHES = 100
# App. E: "a MLP with 5 hidden layers, each with 10 units and ReLU activations, followed by a linear layer".
CRITIC_HIDDEN_UNITS = (10,) * 5
SAMPLINGS = ("iid", "non_iid")


def build_critic():
    """App. E's critic on the concatenation ``[x, y]``, scoring all ``B x B`` pairs of a batch."""
    from dim_keras.critics import ConcatAndConvolveCritic
    return ConcatAndConvolveCritic(hidden_units=CRITIC_HIDDEN_UNITS, name="critic")


def true_mi(sigma_z=None, sigma_e=None):
    """The MI of one pair, from its joint covariance ``Sigma_Z + Sigma_e`` (App. E)."""
    from dim_keras import simulation
    sigma_z = simulation.APP_E_SIGMA_Z if sigma_z is None else sigma_z
    sigma_e = simulation.APP_E_SIGMA_E if sigma_e is None else sigma_e
    return simulation.gaussian_pair_mi(np.add(sigma_z, sigma_e).tolist())


def fit_critic(estimator, shared, steps, eval_every, batch_size, learning_rate, seed,
               eval_batches=EVAL_BATCHES):
    """Trains App. E's critic to maximise ``estimator`` on batches with a shared ``Z`` (``shared=True``) or
    i.i.d. pairs.  Returns ``(rows, evaluation, critic)``: rows ``{"step", "estimate"}`` (the mean training
    estimate over the previous ``eval_every`` steps), ``{"iid": ..., "non_iid": ...}`` the trained critic's
    estimate averaged over ``eval_batches`` fresh batches of each kind, and the critic.
    """
    import keras
    import tensorflow as tf

    from dim_keras import estimators, simulation

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    seed_generator = keras.random.SeedGenerator(seed)
    critic = build_critic()
    critic.build((None, 1), (None, 1))
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(critic.trainable_variables)
    bound = estimators.get_estimator(estimator)

    # Many steps per call, no XLA: the critic is tiny, and on this CPU XLA made it ~2x slower.
    @tf.function
    def train_steps(count):
        total = tf.constant(0.0)
        for _ in tf.range(count):
            x, y = simulation.sample_shared_offset_pairs(batch_size, seed_generator, shared=shared)
            with tf.GradientTape() as tape:
                value = bound(critic(x, y, training=True))
                loss = -value
            gradients = tape.gradient(loss, critic.trainable_variables)
            optimizer.apply(gradients, critic.trainable_variables)
            total += value
        return total / tf.cast(count, tf.float32)

    @tf.function
    def evaluate(shared_z):
        total = tf.constant(0.0)
        for _ in tf.range(eval_batches):
            x, y = simulation.sample_shared_offset_pairs(batch_size, seed_generator, shared=shared_z)
            total += bound(critic(x, y))
        return total / eval_batches

    rows, done = [], 0
    while done < steps:
        count = min(eval_every, steps - done)
        value = float(train_steps(tf.constant(count)))
        done += count
        rows.append({"step": done, "estimate": value})
    evaluation = {"iid": float(evaluate(False)), "non_iid": float(evaluate(True))}
    return rows, evaluation, critic


def triplet_identity(critic, batch_size, seed):
    """App. C on one fresh non-i.i.d. batch scored by ``critic``: ``(I_NCE, log K - L_K-pair)``."""
    import keras

    from dim_keras import estimators, simulation
    x, y = simulation.sample_shared_offset_pairs(batch_size, keras.random.SeedGenerator(seed), shared=True)
    scores = critic(x, y)
    return (float(estimators.infonce_lower_bound(scores)),
            math.log(batch_size) - float(estimators.kpair_triplet_loss(scores)))


def run(config, log=print):
    """The ``negatives`` experiment; returns the results written to ``<output_dir>/negatives.json``."""
    steps = config.steps or DEFAULT_STEPS
    eval_every = config.eval_every or max(1, steps // CURVE_POINTS)
    mi = true_mi()
    log(f"true MI of each pair (joint covariance Sigma_Z + Sigma_e): {mi:.4f} nats; log batch = "
        f"{math.log(config.batch_size):.2f}")
    runs, evaluations, last_critic = {}, {}, None
    for estimator in config.estimators:
        for sampling in SAMPLINGS:
            label = f"{estimator}, {sampling}"
            runs[label], evaluations[label] = [], []
            for seed in range(config.seed, config.seed + config.seeds):
                rows, evaluation, critic = fit_critic(estimator, sampling == "non_iid", steps, eval_every,
                                                      config.batch_size, config.learning_rate, seed)
                runs[label].append(rows)
                evaluations[label].append(evaluation)
                log(f"{label} seed {seed}: training estimate {rows[-1]['estimate']:.4f}, fresh i.i.d. batches "
                    f"{evaluation['iid']:.4f}, fresh non-i.i.d. batches {evaluation['non_iid']:.4f} nats")
                if estimator == "infonce":
                    last_critic = critic

    final = {label: {"training": common.final(rs, "estimate"),
                     "fresh_iid": _stats([e["iid"] for e in evaluations[label]]),
                     "fresh_non_iid": _stats([e["non_iid"] for e in evaluations[label]])}
             for label, rs in runs.items()}
    identity = None
    if last_critic is not None:
        nce, kpair = triplet_identity(last_critic, config.batch_size, config.seed + 10_000)
        identity = {"infonce": nce, "log_k_minus_kpair_loss": kpair, "difference": abs(nce - kpair)}

    name = {"infonce": "I_NCE", "nwj": "I_NWJ"}
    grid = [[{"groups": {("non-i.i.d." if s == "non_iid" else "i.i.d.") + " batches": runs[f"{e}, {s}"]
                         for s in SAMPLINGS},
              "key": "estimate", "ylabel": f"{name.get(e, e)} (nats, training batches)",
              "hlines": [(mi, "true MI")], "title": f"maximising {name.get(e, e)}"} for e in config.estimators]]
    from dim_keras.runs.mi_lab.critics import plot_grid
    plot_grid(grid, common.output_paths(config)[1],
              f"Tschannen et al. Fig. 4c / App. E: non-i.i.d. negatives ({config.seeds} seeds, batch "
              f"{config.batch_size}, mean +- std)")

    lines = [f"negatives (Sec. 4, App. E): {steps} steps x {config.seeds} seeds, batch {config.batch_size}; "
             f"true MI {mi:.4f} nats; estimates mean+-std over seeds:",
             f"  {'estimator':<11}{'batches':<10}{'training':<18}{'fresh i.i.d.':<18}fresh non-i.i.d."]
    for label, f in final.items():
        estimator, sampling = label.split(", ")
        lines.append(f"  {name.get(estimator, estimator):<11}{sampling:<10}{_fmt(f['training']):<18}"
                     f"{_fmt(f['fresh_iid']):<18}{_fmt(f['fresh_non_iid'])}")
    from dim_keras.runs.mi_lab.critics import verdict
    for estimator in config.estimators:
        iid, non_iid = final[f"{estimator}, iid"]["training"], final[f"{estimator}, non_iid"]["training"]
        label = name.get(estimator, estimator)
        lines.append(f"  claim ({label} above the true MI with non-i.i.d. batches): {non_iid['mean']:.4f} > "
                     f"{mi:.4f}: {verdict(non_iid['mean'] - mi, non_iid['std'])}")
        lines.append(f"  claim ({label} a lower bound with i.i.d. batches): {iid['mean']:.4f} <= {mi:.4f}: "
                     f"{verdict(mi - iid['mean'], iid['std']) if iid['mean'] > mi else 'reproduced'}")
    if identity is not None:
        lines.append(f"  App. C on a batch of the trained I_NCE critic's scores: I_NCE {identity['infonce']:.6f} = "
                     f"log {config.batch_size} - L_K-pair {identity['log_k_minus_kpair_loss']:.6f} "
                     f"(|difference| {identity['difference']:.1e})")
    return common.write_results(config, summary_lines=lines, result={
        "steps": steps, "eval_every": eval_every, "true_mi": mi, "critic_hidden_units": list(CRITIC_HIDDEN_UNITS),
        "final": final, "triplet_identity": identity, "runs": runs})


def _stats(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": [float(v) for v in values]}


def _fmt(stats):
    return f"{stats['mean']:.4f}+-{stats['std']:.4f}"
