"""Keras callbacks for long DIM runs: atomic checkpoints and a metrics log."""

import json
import math
import os

import keras
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
