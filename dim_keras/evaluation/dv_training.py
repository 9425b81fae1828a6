"""Training a statistics network on the Donsker-Varadhan bound (MINE and NDM).

Both neural estimators of Table 4 -- MINE's I(X; Y) and the neural dependency
measure -- train a network T to maximise the DV lower bound on a KL divergence
(eq. 2 of the paper),

    KL(P || Q) >= E_P[T] - log E_Q[e^T],

and report the bound after training.  This module holds what they share: the
keras-io style model whose ``train_step`` ascends the bound
(`dim_keras.estimators.dv_lower_bound`), the decaying learning rate (Table 4:
"For MINE, we used a decaying learning rate schedule, which helped reduce
variance in estimates and provided faster convergence"), and the estimate
itself -- the bound averaged over held-out batches, which unlike the training
bound cannot be inflated by a network that memorised the training samples.
"""

import keras
import numpy as np
import tensorflow as tf

from dim_keras.estimators import dv_lower_bound


class DonskerVaradhanModel(keras.Model):
    """Base model: subclasses return DV scores ``[B, B, L]`` from `batch_scores`.

    The scores follow `dim_keras.estimators`: positives (samples of P) on the
    diagonal, samples of Q off the diagonal.  The tracked metric ``"bound"`` is
    the DV bound in nats, averaged over the batches of an epoch (or of an
    ``evaluate`` call).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bound_tracker = keras.metrics.Mean(name="bound")

    def batch_scores(self, data, training=False):
        raise NotImplementedError

    @property
    def metrics(self):
        # Listing the tracker keeps Keras from logging its own unused "loss".
        return [self.bound_tracker]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            bound = dv_lower_bound(self.batch_scores(data, training=True))
            loss = -bound
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.bound_tracker.update_state(bound)
        return {"bound": self.bound_tracker.result()}

    def test_step(self, data):
        self.bound_tracker.update_state(dv_lower_bound(self.batch_scores(data, training=False)))
        return {"bound": self.bound_tracker.result()}


def decaying_adam(learning_rate, total_steps, final_fraction=0.1):
    """Adam whose learning rate decays exponentially to ``final_fraction`` of its start."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=max(1, total_steps), decay_rate=final_fraction
    )
    return keras.optimizers.Adam(schedule)


def batched_dataset(arrays, batch_size, shuffle, seed):
    """tf.data batches of ``arrays`` (a tuple); the last partial batch is dropped.

    DV negatives come from the batch, so a tiny last batch would give a
    high-variance bound; batches are capped at the data size instead.
    """
    count = len(arrays[0])
    batch_size = min(batch_size, count)
    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=True), count // batch_size


def standardize(train, test):
    """Per-dimension standardisation with training statistics.

    MI and total correlation are invariant to per-dimension affine maps, so
    this changes nothing being measured, but it lets one learning rate work
    for features of any scale.
    """
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def fit_and_estimate(model, train_arrays, eval_arrays, epochs, batch_size, learning_rate,
                     final_fraction=0.1, seed=0, verbose=0, jit_compile="auto"):
    """Trains ``model`` on ``train_arrays`` and returns the DV bound on ``eval_arrays``.

    Returns:
        ``(held_out_bound, last_epoch_training_bound)`` in nats.
    """
    train_data, steps_per_epoch = batched_dataset(train_arrays, batch_size, True, seed)
    eval_data, _ = batched_dataset(eval_arrays, batch_size, False, seed)
    # XLA: Keras' "auto" turns it off on CPU, where it speeds these small MLPs up.
    model.compile(optimizer=decaying_adam(learning_rate, epochs * steps_per_epoch, final_fraction),
                  jit_compile=jit_compile)
    history = model.fit(train_data, epochs=epochs, shuffle=False, verbose=verbose)
    return held_out_bound(model, eval_data), float(history.history["bound"][-1])


def held_out_bound(model, eval_data):
    """The DV bound of ``model`` averaged over the batches of ``eval_data`` (nats), by plain calls.

    ``model.evaluate`` would trace one more ``tf.function`` per estimator for a single pass; MINE and
    NDM each build a new model, so an evaluation traced two such functions on top of every model's
    training function, and TensorFlow's retracing detector (which counts the traces of all Keras
    models' step functions together) warned about "retracing" twice in every short evaluation.
    """
    bounds = [dv_lower_bound(model.batch_scores(batch, training=False)) for batch in eval_data]
    return float(np.mean([float(bound) for bound in bounds]))


def split_held_out(arrays, held_out_fraction, seed):
    """Random split of aligned arrays into (train, held-out) tuples."""
    count = len(arrays[0])
    held_out = max(2, int(round(count * held_out_fraction)))
    if count - held_out < 2:
        raise ValueError(f"need more samples to hold out {held_out_fraction:.0%} for the estimate")
    order = np.random.default_rng(seed).permutation(count)
    evaluation, training = order[:held_out], order[held_out:]
    return tuple(a[training] for a in arrays), tuple(a[evaluation] for a in arrays)
