"""End-to-end DIM training runs: data -> DeepInfoMax -> checkpoints -> export -> probe.

Used by ``apps/train.py`` and by the keras-tuner ablation (``dim_keras.runs.ablation``),
so both share the same data pipeline, checkpointing and export conventions.

On the TensorFlow backend (the default) a run uses tf.distribute; on JAX (``KERAS_BACKEND=jax``) the same
run uses a ``keras.distribution`` (:class:`KerasDistribution`), :class:`dim_keras.callbacks.ArrayEpochCheckpoint`
and an export written by a TensorFlow process (:func:`dim_keras.export.export_encoder`); the input pipeline
is tf.data on both.
"""

import collections
import contextlib
import hashlib
import json
import os
import re
import socket

import keras
import numpy as np
import tensorflow as tf

from dim_keras import callbacks as callbacks_lib
from dim_keras import io
from dim_keras.config import PROBE_FEATURES, to_dict, two_views_without_augmentation, validate
from dim_keras.errors import DataError, TrainingDiverged, UsageError, WorkerLost, first_line, one_line
from dim_keras.export import export_encoder, load_encoder
# The model, its optimizer and precision are built TensorFlow-free (the benchmark builds the same model on JAX
# machines without TensorFlow); they stay importable from here for the run layer's other users.
from dim_keras.runs.model_setup import (build_model, jit_compile, learning_rate,  # noqa: F401
                                        resolved_encoder_name, set_precision)


def _prepare_output_dir(path):
    """Creates ``path`` (TrainConfig.check has already matched --resume with what it holds)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output dir {path}: {err.strerror or err}") from None
    io.remove_temporaries(path)  # left by a process killed while writing an export


# ------------------------------------------------------------- strategies and multi-worker runs
# How long a worker of --strategy=multi_worker waits in one collective of training (a step's all-reduce, the
# metric reduction of a checkpoint) for the others.  A worker that dies is noticed sooner, by the heartbeats
# of TensorFlow's coordination service (about 10 s); this bounds the wait for one that hangs while alive.
COLLECTIVE_TIMEOUT_S = 300

# Settings that may differ between the workers of one multi-worker run; every other one must be the same.
PER_WORKER_SETTINGS = ("output_dir", "data_dir", "download", "verbose", "probe", "probe_max_train", "monitor_every",
                       "monitor_examples")  # the chief alone probes and monitors


class KerasDistribution:
    """What :func:`make_strategy` gives on a backend other than TensorFlow: the run's devices under a
    ``keras.distribution`` (set globally, so every variable built afterwards is laid out by it), with the
    part of a tf.distribute strategy's interface the run uses (a no-op ``scope()``, ``num_replicas_in_sync``,
    no cluster).  ``distribution`` is None for one device."""

    cluster_resolver = None

    def __init__(self, devices, distribution=None):
        self.devices = list(devices)
        self.distribution = distribution

    @property
    def num_replicas_in_sync(self):
        return len(self.devices)

    def scope(self):
        return contextlib.nullcontext()

    def layout(self, variables):
        """One line saying on how many devices each of ``variables`` lies (a JAX array's
        ``sharding.device_set``): the fewest and the most.  DataParallel replicates every variable on
        each device, so both are the device count; a variable left on one device would show as 1."""
        counts = [len(variable.value.sharding.device_set) for variable in variables]
        spread = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"
        return f"the training state's {len(counts)} variables each lie on {spread} of the {len(self.devices)} devices"

    def __str__(self):
        if self.distribution is None:
            return f"{keras.backend.backend()} backend on one device ({self.devices[0]})"
        return (f"{keras.backend.backend()} backend, keras.distribution.DataParallel over {len(self.devices)} "
                f"devices ({', '.join(self.devices)})")


def _keras_distribution(name):
    """:func:`make_strategy` on the JAX backend (and any other but TensorFlow's): ``default`` is one device,
    ``mirrored`` is ``keras.distribution.DataParallel`` over every local device (the global batch split
    over them, the weights replicated, one SPMD program: docs/DISTRIBUTED.md), and ``multi_worker``,
    which is tf.distribute's ``TF_CONFIG`` cluster, a UsageError."""
    backend = keras.backend.backend()
    if name == "multi_worker":
        raise UsageError(f"--strategy=multi_worker is TensorFlow's (tf.distribute, TF_CONFIG) and this run uses the "
                         f"{backend} backend: train on one machine's devices with --strategy=mirrored, or across "
                         f"machines with KERAS_BACKEND=tensorflow")
    devices = keras.distribution.list_devices()
    if name == "mirrored":
        if backend != "jax":
            raise UsageError(f"--strategy=mirrored needs the tensorflow or jax backend (keras.distribution has no "
                             f"data parallelism on {backend})")
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        return KerasDistribution(devices, distribution)
    keras.distribution.set_distribution(None)  # one device, even after a mirrored run in this process
    return KerasDistribution(devices[:1])


def _keep_tensorflow_off_the_gpus():
    """On another backend TensorFlow only runs the tf.data input pipeline (and the probe's SavedModel, on
    CPU): hide the GPUs from it before its runtime starts, or it would reserve most of each GPU's memory
    for itself (TensorFlow's default allocator) beside the backend that trains on them."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's runtime already started in this process: its devices are fixed now
        pass


def make_strategy(name, collective_timeout=COLLECTIVE_TIMEOUT_S):
    """The tf.distribute strategy ``name``: create it before anything else initialises TensorFlow.

    ``multi_worker`` reads the cluster and this worker's task from ``TF_CONFIG`` and blocks until every
    worker of the cluster has started; a worker that cannot start is a UsageError.  On the JAX backend it
    is a :class:`KerasDistribution` instead (:func:`_keras_distribution`).
    """
    if keras.backend.backend() != "tensorflow":
        _keep_tensorflow_off_the_gpus()
        return _keras_distribution(name)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            if "program startup" in str(error):
                raise UsageError("--strategy=multi_worker must come before anything else this process does with "
                                 "TensorFlow: train in a fresh process (apps/train.py)") from None
            raise UsageError(f"--strategy=multi_worker cannot start this worker (TF_CONFIG="
                             f"{os.environ.get('TF_CONFIG', '')}): {first_line(error)}") from None
    return tf.distribute.get_strategy()


class WorkerRole(collections.namedtuple("WorkerRole", "task_type task_id num_workers chief")):
    """This process's task in a multi-worker cluster and whether it is the chief (see :func:`worker_role`)."""

    @property
    def multi_worker(self):
        return self.num_workers > 1

    def __str__(self):
        if not self.multi_worker:
            return "the only worker"
        return f"{self.task_type} {self.task_id} of {self.num_workers} workers" + (" (the chief)" if self.chief else "")


def worker_role(strategy):
    """This process's :class:`WorkerRole` in ``strategy``'s cluster (its cluster resolver's task).

    The chief is task ``chief``, or worker 0 of a cluster without one (as in TensorFlow's multi-worker
    Keras tutorial); it alone writes the run's outputs.  Without a cluster, the one worker is the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not jobs or resolver.task_type is None:
        return WorkerRole(None, None, 1, True)
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    workers = len(jobs.get("chief", ())) + len(jobs.get("worker", ()))
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
    return WorkerRole(task_type, task_id, workers, chief)


def _gather_from_workers(strategy, row):
    """Every replica's ``row`` (integers) as the rows of a numpy array: a collective, every worker calls it.

    It waits as long as the slowest worker takes (e.g. the chief's probe): a worker that dies meanwhile
    is noticed by the heartbeats.
    """
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=0)  # 0: no timeout

    @tf.function
    def gather(value):  # tf.identity places the row on the replica's device
        return strategy.run(lambda v: tf.distribute.get_replica_context().all_gather(
            tf.identity(v), axis=0, options=options), args=(value,))

    return strategy.experimental_local_results(gather(tf.constant([row], tf.int64)))[0].numpy()


def _hash63(text):
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def _saved_epochs(directory):
    """The epochs whose checkpoints ``directory``'s ``checkpoint`` index lists, oldest first."""
    state = tf.train.get_checkpoint_state(directory)
    numbers = [path.rsplit("-", 1)[-1] for path in (state.all_model_checkpoint_paths if state else ())]
    return sorted(int(n) for n in numbers if n.isdigit())


def agree_with_workers(strategy, role, config):
    """Checks that the workers of a multi-worker run can train together; returns the epoch they resume after.

    One collective exchanges every worker's settings, output directory and saved epochs, so all workers
    reach the same verdict: a mismatch is the same UsageError on each (no worker is left waiting).  With
    ``--resume`` the group continues after the newest epoch that every worker has saved (their newest
    checkpoints differ by at most one epoch when a worker died between two saves); 0 for a new run.
    """
    values = to_dict(config)
    names = sorted(name for name in values if name not in PER_WORKER_SETTINGS)
    epochs = _saved_epochs(os.path.join(config.output_dir, "checkpoints")) if config.resume else []
    latest = oldest = epochs[-1] if epochs else 0
    while oldest - 1 in epochs:
        oldest -= 1
    rows = _gather_from_workers(strategy, [
        int(role.task_type == "worker"), role.task_id,
        _hash63(f"{socket.gethostname()}:{os.path.realpath(config.output_dir)}"), latest, oldest,
        *(_hash63(json.dumps(values[name], sort_keys=True)) for name in names)])
    workers = {(int(r[0]), int(r[1])): r for r in rows}  # a worker with several devices gives several rows
    rows = [workers[key] for key in sorted(workers)]

    def name(key):
        return f"{'worker' if key[0] else 'chief'} {key[1]}"

    for column, setting in enumerate(names, start=5):
        if len({int(r[column]) for r in rows}) > 1:
            raise UsageError(f"--{setting} differs between the workers: give every worker the same flags, with "
                             f"--resume too (only the chief keeps config.json; "
                             f"{', '.join('--' + n for n in PER_WORKER_SETTINGS)} may differ)")
    if len({int(r[2]) for r in rows}) < len(rows):
        raise UsageError("two workers were given the same --output_dir on one machine: give each worker its own "
                         "(the chief writes the run's outputs there, every other worker its checkpoints)")
    if not config.resume:
        return 0
    agreed = min(int(r[3]) for r in rows)
    missing = [name(key) for key, r in sorted(workers.items()) if not int(r[4]) <= agreed <= int(r[3])]
    if missing:
        raise UsageError(f"--resume: the workers' newest checkpoints are of epochs "
                         f"{', '.join(str(int(r[3])) for r in rows)} and {', '.join(missing)} no longer "
                         f"holds epoch {agreed}'s: start the run over in new --output_dirs")
    return agreed


def _restore_epoch(checkpoint, epoch):
    """Restores ``checkpoint``'s save of ``epoch`` (the multi-worker group's common epoch); returns it."""
    if epoch:
        checkpoint.checkpoint.restore(
            os.path.join(checkpoint.directory, f"ckpt-{epoch}")).assert_existing_objects_matched()
    return epoch


# A lost peer surfaces as one of these errors of a collective (or as another one naming the cluster).
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError)
_PEER_WORDS = re.compile(r"heartbeat|collective|coordination|barrier|/job:", re.IGNORECASE)


def lost_worker(error, role):
    """The one-line :class:`WorkerLost` for ``error`` when it says a peer of this multi-worker run failed,
    else None."""
    if not role.multi_worker or not isinstance(error, tf.errors.OpError):
        return None
    text = one_line(getattr(error, "message", None) or str(error))
    if not isinstance(error, _PEER_ERRORS) and not _PEER_WORDS.search(text):
        return None
    tasks = {(job, int(task)) for job, task in re.findall(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", text)}
    peers = sorted(tasks - {(role.task_type, role.task_id)})
    who = " and ".join(f"{job} {task}" for job, task in peers) or "another worker"
    if isinstance(error, tf.errors.DeadlineExceededError):
        why = f"it did not join a collective within {COLLECTIVE_TIMEOUT_S} s: it hangs or lags far behind"
    elif re.search(r"heartbeat", text, re.IGNORECASE):
        why = "it stopped sending heartbeats: it died or hangs"
    elif re.search(r"connection reset|connection refused|failed to connect|socket closed|failed to send rpc",
                   text, re.IGNORECASE):
        why = "its connection dropped: it died or the network failed"
    else:
        reason = re.split(r"aborted by:\s*|failed because:\s*", text)[-1]
        why = re.split(r"\s*The error could be from a previous operation|\s*\[Op:", reason)[0][:200]
    return WorkerLost(f"lost {who} of the multi-worker run ({why}); this {role.task_type} stops too: "
                      f"start every worker again with --resume (they continue after the newest epoch all of "
                      f"them saved)")


def check_checkpoint_backend(config):
    """With ``--resume``, UsageError unless this process runs the Keras backend that wrote the run's
    checkpoints (:func:`dim_keras.callbacks.check_checkpoint_backend`).  Reads only the checkpoint index:
    call before anything starts."""
    if config.resume and config.output_dir:
        callbacks_lib.check_checkpoint_backend(os.path.join(config.output_dir, "checkpoints"))


def check_batch_split(config, strategy):
    """UsageError unless ``--batch_size`` splits evenly over the devices of a ``keras.distribution``
    (DataParallel shards the global batch along its first axis, one equal slice per device)."""
    devices = strategy.num_replicas_in_sync
    if isinstance(strategy, KerasDistribution) and devices > 1 and config.batch_size % devices:
        raise UsageError(f"--batch_size={config.batch_size} does not split evenly over the {devices} devices of "
                         f"--strategy=mirrored on {keras.backend.backend()}: give a multiple of {devices}")


def load_pretraining_data(config, skipped=None):
    """The pretraining images (a DataSplit, or an ImageStream read from disk while training: ``--streaming``),
    the dataset's defaults and the encoder input shape; UsageError on bad data.  ``skipped``: the
    :class:`dim_keras.data.SkippedImages` collecting unreadable image files (None: the first is an error)."""
    from dim_keras.data import dataset_defaults, load_split
    split = load_split(config.dataset, "pretrain", config.data_dir, download=config.download,
                       image_size=config.image_size, streaming=config.streaming, skipped=skipped)
    defaults = dataset_defaults(config.dataset, config.data_dir)
    side = defaults["pretrain_crop"] or defaults["image_size"]
    height, width = (side, side) if side else split.image_shape[:2]
    if len(split) < config.batch_size:
        raise UsageError(f"{config.dataset} has {len(split)} images, fewer than the batch size {config.batch_size}")
    return split, defaults, (int(height), int(width), 3)


def augmentation(config, defaults, input_shape):
    """``make_dataset`` keyword arguments of the training augmentation: the dataset's own (the paper's
    STL-10 crops and flips) or, where it has none, the recipe's pad-crop-flip (pad 1/8 of the side: 4 px
    on CIFAR, the usual CIFAR augmentation), with the recipe's colour distortion and number of views.
    UsageError for two views without augmentation (they would be the same image)."""
    recipe = config.recipe_settings()
    if defaults["pretrain_crop"] or defaults["pretrain_flip"]:
        geometry = {"crop_size": defaults["pretrain_crop"], "flip": defaults["pretrain_flip"]}
    elif recipe["pad_crop_flip"]:
        geometry = {"pad": max(1, min(input_shape[:2]) // 8), "flip": True}
    else:
        geometry = {}
    if recipe["views"] == 2 and config.method == "dim" and not geometry:
        raise two_views_without_augmentation(config.dataset)
    colour = {"colour": True} if recipe["colour_jitter"] else {}
    # Two views are DIM's (DeepInfoMax reads Y from the second); the other methods train on one.
    views = {"views": 2} if recipe["views"] == 2 and config.method == "dim" else {}
    return {**geometry, **colour, **views}


def input_shard(strategy, role):
    """``(num_shards, shard_index)`` of this worker's share of a streamed input: its id in the cluster as
    tf.distribute numbers the input pipelines (the chief 0, then the workers); ``(1, 0)`` on one worker."""
    if not role.multi_worker:
        return 1, 0
    chiefs = len(strategy.cluster_resolver.cluster_spec().as_dict().get("chief", ()))
    return role.num_workers, role.task_id + (chiefs if role.task_type == "worker" else 0)


def pretraining_dataset(config, split, defaults, input_shape, seed, num_shards=1, shard_index=0):
    """The repeated training pipeline of ``split`` (arrays or a stream) with the run's augmentation, seeded by
    ``seed``.  A stream is sharded here by files, ``num_shards`` / ``shard_index`` (:func:`input_shard`):
    every worker of a multi-worker run reads only its own files, and in each pass over them no file twice
    (together every file once per epoch when the file count is a multiple of workers x batch size);
    arrays are sharded by tf.distribute (docs/DISTRIBUTED.md)."""
    from dim_keras.data import make_dataset
    shards = dict(num_shards=num_shards, shard_index=shard_index) if split.streaming else {}
    # NAT keeps one noise target per training image: its batches carry each image's index (dim_keras.baselines.nat).
    indices = dict(labels=np.arange(len(split), dtype=np.int64)) if config.method == "nat" else {}
    return make_dataset(split if split.streaming else split.images, batch_size=config.batch_size, training=True,
                        seed=seed, **augmentation(config, defaults, input_shape), **shards, **indices).repeat()


def training_steps_per_epoch(config, split):
    """Training steps per epoch: full batches of ``split``, capped by ``--steps_per_epoch``."""
    steps = len(split) // config.batch_size
    return min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps


def _save_keras_atomically(model, path, optimizer_state=False):
    """Writes ``model`` (the whole DeepInfoMax) to the ``.keras`` file ``path`` atomically.

    Without ``optimizer_state`` the file holds an uncompiled copy with the same weights: Adam's two
    slots per weight would make it three times larger, and the checkpoints already keep them for
    ``--resume``.  It loads with :func:`dim_keras.load_model` (call ``compile`` to train it further).
    """
    if not optimizer_state:
        copy = model.__class__.from_config(model.get_config())
        copy.set_weights(model.get_weights())
        model = copy
    with io.atomic_path(path) as tmp:
        model.save(tmp)


# The label-scarce column of the probe table: with all labels, even random conv features of digits are
# ~96 % linearly separable; with few labels per class the gain of a learned representation shows.
SCARCE_LABELS_PER_CLASS = 20


def load_probe_data(config, max_train=10000, log=print, skipped=None):
    """``(train_images, train_labels, test_images, test_labels)`` of the linear probe, center-cropped to
    the encoder's input; ``None`` for unlabelled datasets or when the labelled splits are missing.  With
    ``--streaming`` on (or auto), folder, tfrecord and tfds splits come as ImageStreams (labels as arrays, in
    source order): the probe then encodes them as it reads them and keeps only features."""
    from dim_keras.data import dataset_defaults, load_evaluation_data
    try:
        data = load_evaluation_data(config.dataset, config.data_dir, download=config.download,
                                    image_size=config.image_size, max_train=max_train, seed=config.seed,
                                    crop=dataset_defaults(config.dataset, config.data_dir)["eval_crop"],
                                    streaming=config.streaming, skipped=skipped, label_kind="class")
    except DataError as err:
        log(f"linear probe skipped: {err}")
        return None
    if data.train_labels is None or data.label_kind != "class":
        return None
    return data.train_images, data.train_labels, data.test_images, data.test_labels


def _first_per_class(labels, count):
    """Indices of the first ``count`` examples of every class (all of a class with fewer)."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:count] for c in np.unique(labels)]))


def linear_probe(encoder_fn, probe_data, C=1.0):
    """Logistic-regression test accuracy of ``y``, ``fc`` and ``conv`` of ``encoder_fn`` (uint8 images ->
    features), trained on all the probe's labels and on ``SCARCE_LABELS_PER_CLASS`` per class:
    ``{feature: {"all_labels": acc, "20_labels_per_class": acc}}``.  ``C``: the inverse L2 strength, or
    ``"cv"`` (:func:`~dim_keras.evaluation.probes.logistic_regression_probe`), which adds each column's
    chosen C as ``{feature: {..., "chosen_C": {"all_labels": C, "20_labels_per_class": C}}}``."""
    from dim_keras.evaluation.probes import logistic_regression_probe
    train_images, train_labels, test_images, test_labels = probe_data
    train_features, train_labels = _probe_features(encoder_fn, train_images, train_labels)
    test_features, test_labels = _probe_features(encoder_fn, test_images, test_labels)
    columns = {"all_labels": slice(None),
               f"{SCARCE_LABELS_PER_CLASS}_labels_per_class": _first_per_class(train_labels, SCARCE_LABELS_PER_CLASS)}
    result = {}
    for name in PROBE_FEATURES:
        probes = {column: logistic_regression_probe(train_features[name][rows], train_labels[rows],
                                                    test_features[name], test_labels, C=C)
                  for column, rows in columns.items()}
        result[name] = {column: probe["accuracy"] for column, probe in probes.items()}
        if C == "cv":
            result[name]["chosen_C"] = {column: probe["C"] for column, probe in probes.items()}
    return result


def _probe_features(encoder_fn, images, labels):
    """``(features, labels)`` of a probe split: arrays are encoded as they are; a stream is encoded as it is
    read (only features kept) and gives the labels of the images it could read."""
    from dim_keras.evaluation import encode, encode_stream
    if getattr(images, "streaming", False):
        return encode_stream(encoder_fn, images, names=PROBE_FEATURES)
    return encode(encoder_fn, np.ascontiguousarray(images), names=PROBE_FEATURES), labels


def _take(images, labels, index):
    """``images[index], labels[index]``; a stream's subset is read into memory (unreadable files skipped)."""
    if getattr(images, "streaming", False):
        return images.subset(index).read_all()
    return images[index], labels[index]


def monitor_data(probe_data, examples):
    """The online monitor's ``(train_images, train_labels, test_images, test_labels)``: of each split of
    ``probe_data`` (:func:`load_probe_data`), the first ``examples // classes`` images of every class, so
    the subsample is class-balanced and the same in every run of the same data and seed."""
    train_images, train_labels, test_images, test_labels = probe_data
    per_class = max(1, examples // len(np.unique(train_labels)))
    train, test = _first_per_class(train_labels, per_class), _first_per_class(test_labels, per_class)
    return (*_take(train_images, train_labels, train), *_take(test_images, test_labels, test))


def probe_monitor(config, probe_data):
    """The :class:`~dim_keras.callbacks.ProbeMonitor` of ``config`` on ``probe_data``, or None when
    ``--monitor_every`` resolves to off or (by default) the data has no two classes to tell apart; asking for
    it on such data is a UsageError."""
    every = config.resolved_monitor_every()
    if not every:
        return None
    if probe_data is None or len(np.unique(probe_data[1])) < 2 or not len(probe_data[3]):
        if config.monitor_every:
            raise UsageError(f"--monitor_every needs class labels and {config.dataset}"
                             f"{' in ' + config.data_dir if config.data_dir else ''} has no labelled train and "
                             "test splits with two classes or more: drop --monitor_every or pass --monitor_every=0")
        return None
    return callbacks_lib.ProbeMonitor(*monitor_data(probe_data, config.monitor_examples), every)


def probe_table(probe, method="dim"):
    """Markdown table of ``{"random_init": linear_probe(...), "trained": linear_probe(...)}``; the trained
    columns are labelled by ``method`` (``--method``: DIM or CPC)."""
    scarce = f"{SCARCE_LABELS_PER_CLASS}_labels_per_class"
    trained = method.upper()
    lines = [f"| features | random init | {trained} | random init, "
             f"{SCARCE_LABELS_PER_CLASS} labels/class | {trained}, {SCARCE_LABELS_PER_CLASS} labels/class |",
             "|---|---|---|---|---|"]
    for name in probe["trained"]:
        cells = [probe[which][name][column] for column in ("all_labels", scarce)
                 for which in ("random_init", "trained")]
        lines.append(f"| {name} | " + " | ".join(f"{100 * acc:.2f} %" for acc in cells) + " |")
    return "\n".join(lines)


def write_run_config(config, resolved):
    """Writes ``config.json``: the settings, what "auto" settings resolved to, and one history entry per
    start (with the settings a resume changed)."""
    import datetime
    from dim_keras.config import RUN_CONFIG, changed_settings, load_run_config
    history, changed = [], {}
    path = os.path.join(config.output_dir, RUN_CONFIG)
    if config.resume and os.path.exists(path):
        saved, record = load_run_config(config.output_dir)
        history = record.get("history", [])
        changed = {k: {"from": old, "to": new} for k, (old, new) in changed_settings(saved, config).items()
                   if k != "resume"}
    history.append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                    "after_epoch": resolved["initial_epoch"], "changed": changed})
    io.write_json(path, {**to_dict(config), "resolved": {k: v for k, v in resolved.items() if k != "initial_epoch"},
                         "history": history})


def train(config, extra_callbacks=(), log=print):
    """Runs one DIM training job; returns a dict with the output paths and results.

    Raises UsageError for user mistakes, TrainingDiverged on NaN/Inf loss and WorkerLost when a peer of a
    multi-worker run fails.  The tf.distribute strategy comes first: MultiWorkerMirroredStrategy must
    configure TensorFlow's collectives before anything else initialises TensorFlow.  Under
    ``--strategy=multi_worker`` only the chief writes the run's outputs, every other worker only its
    checkpoints, and all of them return after the chief's export and probe (docs/DISTRIBUTED.md).  On the
    JAX backend the "strategy" is a :class:`KerasDistribution` (no multi-worker runs), and a ``--resume`` of
    checkpoints from the other backend is refused first.
    """
    validate(config)
    check_checkpoint_backend(config)
    strategy = make_strategy(config.strategy)
    role = worker_role(strategy)
    if not role.multi_worker:
        return _train(config, strategy, role, None, extra_callbacks, log)
    config.output_dir = config.output_dir or config.default_output_dir()
    try:
        if config.verbose:
            log(f"this is {role}" + ("" if role.chief else "; it writes only its checkpoints"))
        resume_after = agree_with_workers(strategy, role, config)
        result = _train(config, strategy, role, resume_after, extra_callbacks, log)
        _gather_from_workers(strategy, [0])  # the group ends together, after the chief's export and probe
        return result
    except tf.errors.OpError as error:
        lost = lost_worker(error, role)
        if lost is None:
            raise
        raise lost from None


def _train(config, strategy, role, resume_after, extra_callbacks=(), log=print):
    """:func:`train` under ``strategy``; ``resume_after``: the epoch a multi-worker group agreed on (or None)."""
    from dim_keras.data import SkippedImages, raising_data_errors
    from dim_keras.runtime import device_summary, progress_verbosity
    from dim_keras.config import RUN_CONFIG, check_resumable, load_run_config
    validate(config)
    config.output_dir = config.output_dir or config.default_output_dir()
    if config.resume and os.path.exists(os.path.join(config.output_dir, RUN_CONFIG)):
        check_resumable(load_run_config(config.output_dir)[0], config)  # before any work
    check_batch_split(config, strategy)
    skipped = SkippedImages(strict=config.strict)  # unreadable image files of this run, reported at its end
    split, defaults, input_shape = load_pretraining_data(config, skipped)
    if config.method == "nat" and split.streaming:
        raise UsageError(f"--method=nat keeps one noise target per training image and indexes them in memory, and "
                         f"this split of {len(split)} images streams from disk: pass --streaming=off")
    _prepare_output_dir(config.output_dir)
    epochs = config.resolved_epochs()
    if config.verbose:
        log(device_summary())
        if isinstance(strategy, KerasDistribution):
            log(f"training on the {strategy}")
        log(f"output directory: {config.output_dir}")

    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    steps = training_steps_per_epoch(config, split)
    with strategy.scope():
        model = build_model(config, input_shape, steps, num_examples=len(split))
    # The probe's baseline: the same encoder at its (seeded) random initialisation, before any restore.
    probe_data = None
    if role.chief and (config.probe or config.resolved_monitor_every()):
        probe_data = load_probe_data(config, config.probe_max_train, log=log, skipped=skipped)
    monitor = probe_monitor(config, probe_data) if role.chief else None
    random_init_probe = None
    if config.probe and probe_data is not None:
        from dim_keras.evaluation import keras_encoder_fn
        random_init_probe = linear_probe(keras_encoder_fn(model.encoder), probe_data, config.resolved_probe_c())
    # A multi-worker group keeps two epochs, so its workers always share one (a worker may die between saves).
    checkpoint = callbacks_lib.epoch_checkpoint(  # TensorFlow's format on TF (earlier runs resume), else arrays
        os.path.join(config.output_dir, "checkpoints"),
        max_to_keep=max(config.keep_checkpoints, 2) if role.multi_worker else config.keep_checkpoints)
    checkpoint.attach(model)
    if resume_after is None:
        initial_epoch = checkpoint.restore() if config.resume else 0
    else:
        initial_epoch = _restore_epoch(checkpoint, resume_after)
    if config.resume:
        log(f"resuming {config.output_dir} after epoch {initial_epoch}")
    if config.verbose and isinstance(strategy, KerasDistribution) and strategy.distribution is not None:
        log(strategy.layout(callbacks_lib.training_state(model)))  # where the distribution put the state

    # Seeded per resumed epoch so a resumed run does not replay epoch 1's order.
    data = pretraining_dataset(config, split, defaults, input_shape, config.seed + initial_epoch,
                               *input_shard(strategy, role))
    if config.verbose and split.streaming:
        log(f"streaming {len(split)} images from disk ({split.decoded_bytes / 2**30:.2f} GiB decoded)")
    if role.chief:
        write_run_config(config, {"encoder": resolved_encoder_name(config, input_shape), "epochs": epochs,
                                  "input_shape": list(input_shape), "initial_epoch": initial_epoch,
                                  "monitor_every": monitor.every if monitor else 0,
                                  "backend": keras.backend.backend(), "devices": strategy.num_replicas_in_sync,
                                  "jit_compile": jit_compile(config)})

    stop_on_nan = callbacks_lib.StopOnNonFinite()
    callbacks = [
        stop_on_nan,
        # The monitor adds its probe_* keys to the epoch's logs before the callbacks that record them (keras
        # appends its History and progress bar after these).
        *([monitor] if monitor else []),
        # metrics.json before the checkpoint: an interrupt between the two leaves the checkpoint behind the
        # log, and the resumed epoch then replaces the logged one (never a checkpointed epoch without a row).
        callbacks_lib.MetricsJsonLogger(os.path.join(config.output_dir, "metrics.json")),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(config.output_dir, "logs"), update_freq="epoch"),
        *extra_callbacks,
    ]
    if not role.chief:  # another worker of a multi-worker run: only its checkpoints (every worker must save)
        callbacks = [stop_on_nan, checkpoint, *extra_callbacks]
    # tf.distribute only, before the checkpoint: the same BN statistics on every replica.  (JAX's DataParallel is
    # one SPMD program over the global batch: one copy of the statistics, computed over all devices' images.)
    if strategy.num_replicas_in_sync > 1 and not isinstance(strategy, KerasDistribution):
        callbacks.insert(1, callbacks_lib.AverageReplicaStatistics(strategy))
    history = None
    if initial_epoch < epochs:
        try:
            with raising_data_errors(skipped):  # --strict: an unreadable image file is a one-line DataError
                history = model.fit(data, epochs=epochs, initial_epoch=initial_epoch,
                                    steps_per_epoch=steps, callbacks=callbacks,
                                    verbose=progress_verbosity(config.verbose),
                                    shuffle=False)  # make_dataset shuffles
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: keep the steps of the unfinished epoch too
            # (Not in a multi-worker run: the workers would save different mid-epoch states.)
            path = None
            if stop_on_nan.bad_epoch is None and not role.multi_worker:
                path = checkpoint.save_interrupted()  # None: the state was unreadable (JAX, mid-step)
            if path is not None:
                log(f"\ninterrupted: training state saved to {path}; --resume continues with epoch "
                    f"{checkpoint.finished_epochs() + 1}")
                saved = "the training state is saved"
            elif checkpoint.latest:
                saved = f"the last checkpoint is {checkpoint.latest}"
            else:
                raise  # nothing to resume from: the plain interrupt line says it all
            # The one line the app prints (dim_keras.cli.run_app), true to what was saved.
            raise type(interrupt)(f"; {saved}: rerun with --resume to continue") from None
    if stop_on_nan.bad_epoch is not None:
        raise TrainingDiverged(
            f"the loss became NaN/Inf in epoch {stop_on_nan.bad_epoch}; the last good "
            f"checkpoint is {checkpoint.latest or 'none (no epoch finished)'}; lower "
            f"--learning_rate and continue with --resume")
    if not role.chief:
        if skipped.count:
            log(skipped.summary())
        return {"output_dir": config.output_dir, "encoder": None, "model": None, "epochs": epochs,
                "history": history.history if history else {}, "skipped_images": skipped.as_dict()}

    encoder_path = export_encoder(model.encoder, os.path.join(config.output_dir, "encoder"))
    _save_keras_atomically(model, os.path.join(config.output_dir, "model.keras"),
                           optimizer_state=config.keras_optimizer_state)
    result = {"output_dir": config.output_dir, "encoder": encoder_path,
              "model": os.path.join(config.output_dir, "model.keras"),
              "epochs": epochs, "history": history.history if history else {},
              "skipped_images": skipped.as_dict()}
    if config.probe and probe_data is not None:
        probe = {"random_init": random_init_probe, "trained": linear_probe(load_encoder(encoder_path), probe_data,
                                                                            config.resolved_probe_c())}
        log(probe_table(probe, config.method))
        io.write_json(os.path.join(config.output_dir, "probe.json"), probe)
        result["probe"] = probe
    if skipped.count:  # at the end: training and the probe have read every split they use
        log(skipped.summary())
    if config.verbose:
        log(f"done: encoder exported to {encoder_path}; everything is in {config.output_dir}")
    return result

