"""Keras callbacks for long DIM runs: atomic checkpoints, a metrics log and an online probe monitor.

Two checkpoint formats with one interface (``attach``, ``latest``, ``restore``, ``finished_epochs``,
``on_epoch_end``, ``save_interrupted``): :class:`EpochCheckpoint` (``tf.train.Checkpoint``, the TensorFlow
backend's, as every run before the JAX backend wrote) and :class:`ArrayEpochCheckpoint` (numpy arrays, any
backend; ``tf.train.Checkpoint`` cannot hold a JAX-backend Keras variable).  :func:`epoch_checkpoint` picks the
backend's; :func:`checkpoint_backend` tells which backend wrote a checkpoint directory.  TensorFlow is
imported only by the pieces that need it (:class:`EpochCheckpoint`, :class:`AverageReplicaStatistics`).
"""

import json
import math
import os
import re
import time

import keras
import numpy as np

from dim_keras import io
from dim_keras.errors import UsageError
from dim_keras.io import write_json

# The file every checkpoint directory has (TrainConfig.check looks for it): TensorFlow's CheckpointManager
# index (text protobuf, "model_checkpoint_path: ...") or ArrayEpochCheckpoint's (JSON).
CHECKPOINT_INDEX = "checkpoint"


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
        import tensorflow as tf
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
        """Restores the newest checkpoint; returns the epochs already done.  A checkpoint that does not hold
        this model's training state (another model, another version of it, a damaged file) is a one-line
        UsageError, as :meth:`ArrayEpochCheckpoint.restore`'s."""
        import tensorflow as tf
        if self.latest is None:
            return 0
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UsageError(f"{self.latest} does not hold this model's training state ({reason}): resume it with "
                             "the settings that wrote it or start a new --output_dir") from None
        return int(self.epochs_done.numpy())

    def finished_epochs(self):
        """The epochs finished by the state last saved or restored (0 before any)."""
        return int(self.epochs_done.numpy()) if self.epochs_done is not None else 0

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


def training_state(model):
    """The variables of ``model``'s training state, each once: ``model.variables`` (weights, batch-norm
    statistics and the seed generators' states, so a resumed run draws the same prior samples and locations
    as an uninterrupted one) and the optimizers' (on JAX ``model.optimizer`` already holds the prior
    discriminator's beside the representation's; on TensorFlow ``model.discriminator_optimizer`` holds it)."""
    variables, seen = [], set()
    optimizers = [getattr(model, "optimizer", None), getattr(model, "discriminator_optimizer", None)]
    for variable in [*model.variables, *(v for opt in optimizers if opt is not None for v in opt.variables)]:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def checkpoint_backend(directory):
    """The Keras backend that wrote the checkpoints in ``directory`` ("tensorflow", "jax", ...), or None when
    it holds none (TensorFlow-free: reads the ``checkpoint`` index only)."""
    try:
        with open(os.path.join(directory, CHECKPOINT_INDEX)) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text).get("backend")
        except (ValueError, AttributeError):
            return None
    return "tensorflow" if "model_checkpoint_path" in text else None


def check_checkpoint_backend(directory):
    """UsageError (one line) when the checkpoints in ``directory`` were written on another Keras backend than
    this process's: a TensorFlow checkpoint holds tf.Variables, a JAX run's numpy arrays in another format,
    and a run keeps its backend.  Nothing happens for a directory without checkpoints."""
    written, backend = checkpoint_backend(directory), keras.backend.backend()
    if written is not None and written != backend:
        raise UsageError(f"--resume: the checkpoints in {directory} were written on the {written} backend and this "
                         f"process runs {backend}: resume with KERAS_BACKEND={written} (a run keeps its backend)")


def epoch_checkpoint(directory, max_to_keep=2):
    """The epoch checkpoint of this process's Keras backend: :class:`EpochCheckpoint` on TensorFlow (the
    format every earlier run wrote, so they resume), :class:`ArrayEpochCheckpoint` on any other."""
    kind = EpochCheckpoint if keras.backend.backend() == "tensorflow" else ArrayEpochCheckpoint
    return kind(directory, max_to_keep=max_to_keep)


class ArrayEpochCheckpoint(keras.callbacks.Callback):
    """:class:`EpochCheckpoint`'s contract in a backend-free format: numpy arrays of the training state.

    ``tf.train.Checkpoint`` tracks TensorFlow objects and cannot hold a JAX-backend Keras variable, so on
    JAX the state is read with ``keras.ops.convert_to_numpy`` and written as ``ckpt-<epoch>.npz`` (every
    variable of :func:`training_state` once, in order, with a manifest of their paths, shapes and dtypes,
    and the number of finished epochs).  Each file is written to a temporary and renamed
    (:func:`dim_keras.io.atomic_path`), then the JSON index ``checkpoint`` (which names the kept files, the
    newest last, and the backend) is replaced the same way: a run killed mid-save resumes from the
    previous epoch, so at most one epoch is lost.  An epoch whose metrics are NaN/Inf is never saved.
    Restoring assigns every array back to its variable (under ``keras.distribution.DataParallel`` Keras
    lays the value out across the devices again).
    """

    FORMAT = "dim_keras.arrays/1"
    _FILE = re.compile(r"^ckpt-(\d+)\.npz$")

    def __init__(self, directory, max_to_keep=2):
        super().__init__()
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.epochs_done = 0
        self._state = None

    def attach(self, model):
        """Lists ``model``'s training state (build the model and compile it first); call before ``restore``."""
        self._state = training_state(model)
        io.remove_temporaries(self.directory)  # a save killed midway
        return self

    def _index(self):
        try:
            with open(os.path.join(self.directory, CHECKPOINT_INDEX)) as handle:
                index = json.load(handle)
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) and index.get("format") == self.FORMAT else {}

    @property
    def latest(self):
        """The path of the newest checkpoint file, or None."""
        kept = self._index().get("checkpoints") or []
        return os.path.join(self.directory, kept[-1]) if kept else None

    def finished_epochs(self):
        """The epochs finished by the state last saved or restored (0 before any)."""
        return self.epochs_done

    def restore(self):
        """Restores the newest checkpoint; returns the epochs already done.  A checkpoint of another model (its
        variables differ in number or shapes) is a one-line UsageError, and nothing is assigned."""
        path = self.latest
        if path is None:
            return 0
        with np.load(path, allow_pickle=False) as saved:
            manifest = json.loads(saved["manifest"].tobytes().decode("utf-8"))
            found = [(v.path, list(v.shape)) for v in self._state]
            wanted = [(entry["path"], entry["shape"]) for entry in manifest["variables"]]
            if [shape for _, shape in found] != [shape for _, shape in wanted]:
                mismatch = next((f"{a[0]} {a[1]} vs saved {b[0]} {b[1]}" for a, b in zip(found, wanted)
                                 if a[1] != b[1]), f"{len(found)} variables vs {len(wanted)} saved")
                raise UsageError(f"{path} does not hold this model's training state ({mismatch}): resume it with "
                                 "the settings that wrote it or start a new --output_dir")
            for position, variable in enumerate(self._state):
                variable.assign(saved[str(position)])
            self.epochs_done = int(manifest["epochs_done"])
        return self.epochs_done

    def _arrays(self):
        """The state as numpy arrays; RuntimeError when Keras's JAX trainer holds it outside the variables
        (mid-epoch it purges their values; an interrupt inside a step can leave its donated buffers deleted)."""
        arrays, jax = {}, keras.backend.backend() == "jax"
        for position, variable in enumerate(self._state):
            if jax:  # a purged variable's .value would be its initializer's placeholder: read what it holds
                value = getattr(variable, "_value", None)
                if value is None or value.is_deleted():
                    raise RuntimeError(f"the value of {variable.path} is not available")
                arrays[str(position)] = keras.ops.convert_to_numpy(value)
            else:
                arrays[str(position)] = np.asarray(variable.numpy())
        return arrays

    def _save(self, number):
        arrays = self._arrays()
        manifest = {"format": self.FORMAT, "backend": keras.backend.backend(), "epochs_done": self.epochs_done,
                    "variables": [{"path": v.path, "shape": list(v.shape), "dtype": str(arrays[str(i)].dtype)}
                                  for i, v in enumerate(self._state)]}
        arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode("utf-8"), np.uint8)
        name = f"ckpt-{number}.npz"
        os.makedirs(self.directory, exist_ok=True)
        with io.atomic_path(os.path.join(self.directory, name)) as tmp:
            np.savez(tmp, **arrays)  # the temporary keeps the .npz extension: numpy writes that very path
        kept = [n for n in self._index().get("checkpoints", []) if n != name] + [name]
        kept = kept[-self.max_to_keep:]
        write_json(os.path.join(self.directory, CHECKPOINT_INDEX),
                   {"format": self.FORMAT, "backend": keras.backend.backend(), "checkpoints": kept})
        for old in os.listdir(self.directory):  # after the index: it never names a removed file
            if self._FILE.match(old) and old not in kept:
                io.remove(os.path.join(self.directory, old))
        return os.path.join(self.directory, name)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite(logs):
            return
        self.epochs_done = epoch + 1
        self._save(epoch + 1)

    def save_interrupted(self):
        """:meth:`EpochCheckpoint.save_interrupted`: the state reached mid-epoch, saved under the last
        finished epoch's number; returns its path, or None when the state cannot be read (JAX: an interrupt
        inside a step can leave the trainer's last state deleted), so the last epoch checkpoint stands."""
        try:
            return self._save(self.epochs_done)
        except RuntimeError:
            return None


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
        import tensorflow as tf  # tf.distribute only: JAX's DataParallel computes BN over the global batch
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
