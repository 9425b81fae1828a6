"""Keras callbacks for long DIM runs: atomic checkpoints, a metrics log and an online probe monitor."""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from dim_keras.io import write_json


def _finite(logs):
    return all(math.isfinite(float(v)) for v in (logs or {}).values())


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the full training state after every epoch with a finite loss.

    The state is a ``tf.train.Checkpoint`` of the model (encoder, critics,
    prior discriminator, seed generator), every optimizer (the prior
    discriminator's has its own) and the number of finished epochs.  TF
    writes the checkpoint files first and the ``checkpoint`` index last, so a
    run killed mid-save resumes from the previous epoch: at most one epoch is
    lost.  An epoch whose metrics are NaN/Inf is never saved, so the last good
    state stays the newest.
    """

    def __init__(self, directory, max_to_keep=2):
        super().__init__()
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.epochs_done = None
        self.checkpoint = None
        self.manager = None

    def attach(self, model):
        """Creates the checkpoint for ``model``; call before ``restore``."""
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        objects = {"model": model, "optimizer": model.optimizer, "epochs_done": self.epochs_done}
        d_opt = getattr(model, "discriminator_optimizer", None)
        if d_opt is not None:
            objects["discriminator_optimizer"] = d_opt
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=self.max_to_keep)
        return self

    @property
    def latest(self):
        return self.manager.latest_checkpoint if self.manager else None

    def restore(self):
        """Restores the newest checkpoint; returns the epochs already done."""
        if self.latest is None:
            return 0
        self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        return int(self.epochs_done.numpy())

    def on_epoch_end(self, epoch, logs=None):
        if not _finite(logs):
            return
        self.epochs_done.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)

    def save_interrupted(self):
        """Saves the current state after an interrupt (Ctrl-C, SIGTERM) mid-epoch; returns its path.

        ``epochs_done`` stays at the last finished epoch, so a resumed run
        repeats that epoch's number but starts from the weights, optimizer and
        seed state reached so far: no finished step is lost.  (Call it only
        when the state is finite.)
        """
        return self.manager.save(checkpoint_number=int(self.epochs_done.numpy()))


class MetricsJsonLogger(keras.callbacks.Callback):
    """Appends each epoch's metrics to ``metrics.json`` (a list of dicts).

    Epochs already in the file (from before a resume) are kept.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.records = []
        if os.path.exists(path):
            try:
                with open(path) as handle:
                    self.records = json.load(handle)
            except (OSError, ValueError):
                self.records = []

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.records = [r for r in self.records if r.get("epoch", 0) < epoch + 1]
        self.records.append(record)
        write_json(self.path, self.records)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.bad_epoch = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_epoch = self._epoch
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1


class AverageReplicaStatistics(keras.callbacks.Callback):
    """At every epoch end, sets each replica's batch-norm moving statistics to their mean over all replicas.

    Keras updates a BatchNormalization layer's moving mean and variance (variables with aggregation
    "none") on every replica from that replica's own sub-batch, so under tf.distribute the copies drift
    apart, across the devices of a worker and across workers (unless ``--synchronized_bn``).  Averaging
    them before the epoch's checkpoint (put this callback before :class:`EpochCheckpoint`) keeps the
    checkpoints of all workers identical and gives the export the statistics of the whole global batch,
    not of the chief's share.  A collective: every worker runs it.  Nothing to do with one replica.
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy
        self._average = None

    def on_epoch_end(self, epoch, logs=None):
        if self.strategy.num_replicas_in_sync < 2:
            return
        if self._average is None:
            variables = [v for v in self.model.non_trainable_variables
                         if v.aggregation == "none" and "float" in str(v.dtype)]

            def replica_step():
                means = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
                for variable, mean in zip(variables, means):
                    variable.assign(mean)  # aggregation "none": each replica assigns its own copy

            self._average = tf.function(lambda: self.strategy.run(replica_step))
        self._average()


# The encoder outputs ProbeMonitor measures, and the keys it adds to an epoch's logs: probe_linear_<feature> and
# probe_knn_<feature>.  Other tools read these names from metrics.json (accuracy against epochs): keep them.
MONITOR_FEATURES = ("conv", "fc", "y")
MONITOR_KNN_K = 20
MONITOR_MAX_ITER = 1000
# BLAS threads of the monitor's probes.  One: on ~1000 x 4096 features a second thread does not pay, and on a
# busy 2-core machine OpenBLAS's waiting threads made each logistic regression 10-50x slower (1.0-1.2 s vs
# 0.03-0.15 s).  The thread count changes the float rounding of the solver's path, which can flip a test
# example on the decision boundary (seen: 1 of 980 on fc): an offline probe matches the monitor to the
# example under the same limit (threadpoolctl.threadpool_limits(MONITOR_BLAS_THREADS, user_api="blas")).
MONITOR_BLAS_THREADS = 1


class ProbeMonitor(keras.callbacks.Callback):
    """Online monitoring: k-NN and linear-probe test accuracy of the encoder's ``conv``, ``fc`` and ``y``,
    every ``every`` epochs and after the last one, added to the epoch's ``logs``.

    The online evaluation that solo-learn (its k-NN and online linear classifiers) and lightly (its k-NN
    benchmark callback) give self-supervised runs, measured with this project's offline protocols, so an
    offline probe of the exported encoder on the same images gives the same numbers: features of the encoder
    in inference mode (``training=False``: batch-norm moving statistics, as the export), then
    :func:`~dim_keras.evaluation.probes.logistic_regression_accuracy` (standardised features, multinomial
    logistic regression: the linear probe of ``probe.json``) and
    :func:`~dim_keras.evaluation.probes.knn_accuracy` (L1 distance, as DIM's App. A.4), each trained on the
    train images and scored on the test images.

    Keras hands one ``logs`` dict to the callbacks in list order and appends its ``History`` and progress bar
    after the user's callbacks (``keras.callbacks.CallbackList._add_default_callbacks``), so put this callback
    before :class:`MetricsJsonLogger` and ``keras.callbacks.TensorBoard`` and all of them see the keys.  An
    epoch with a NaN/Inf metric is not measured, nor a feature with a NaN/Inf value (the probes cannot fit it).

    Args:
        train_images, test_images: uint8 ``[N, H, W, 3]`` held-out labelled images (not the pretraining
            augmentation: the encoder's input as the export sees it).
        train_labels, test_labels: int class labels ``[N]``.
        every: measure after epochs ``every``, ``2 * every``, ... and after the run's last epoch
            (``params["epochs"]``), so a run's final numbers always exist.
        encoder: the keras encoder (float images in [0, 1] -> dict of features); default ``model.encoder``.
        k, max_iter: the k of the k-NN and the logistic regression's iteration cap.
    """

    def __init__(self, train_images, train_labels, test_images, test_labels, every, *, encoder=None,
                 features=MONITOR_FEATURES, k=MONITOR_KNN_K, max_iter=MONITOR_MAX_ITER, batch_size=256):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.train_images, self.test_images = np.asarray(train_images), np.asarray(test_images)
        self.train_labels, self.test_labels = np.asarray(train_labels), np.asarray(test_labels)
        self.every = int(every)
        self.encoder = encoder
        self.features = tuple(features)
        self.k = min(int(k), len(self.train_images))  # k-NN needs k <= the training examples
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.seconds = []  # the cost of each measurement (wall time)

    def due(self, epoch):
        """Whether the 0-based ``epoch`` is measured."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == (self.params or {}).get("epochs")

    def measure(self, encoder=None):
        """``{probe_linear_<feature>: accuracy, probe_knn_<feature>: accuracy}`` of ``encoder`` (default
        ``self.encoder``, else the model's)."""
        import threadpoolctl  # scikit-learn's own dependency

        from dim_keras.evaluation.features import encode, keras_encoder_fn
        from dim_keras.evaluation.probes import knn_accuracy, logistic_regression_accuracy
        encoder = encoder or self.encoder or self.model.encoder
        encoder_fn = keras_encoder_fn(encoder, training=False)
        train, test = (encode(encoder_fn, np.ascontiguousarray(images), self.batch_size, names=self.features)
                       for images in (self.train_images, self.test_images))
        results = {}
        with threadpoolctl.threadpool_limits(MONITOR_BLAS_THREADS, user_api="blas"):
            for name in self.features:
                if not (np.isfinite(train[name]).all() and np.isfinite(test[name]).all()):
                    continue
                results[f"probe_linear_{name}"] = logistic_regression_accuracy(
                    train[name], self.train_labels, test[name], self.test_labels, max_iter=self.max_iter)
                results[f"probe_knn_{name}"] = knn_accuracy(
                    train[name], self.train_labels, test[name], self.test_labels, k=self.k)
        return results

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.due(epoch) or not _finite(logs):
            return
        start = time.perf_counter()
        logs.update(self.measure())
        self.seconds.append(time.perf_counter() - start)
