"""End-to-end DIM training runs: data -> DeepInfoMax -> checkpoints -> export -> probe.

Used by ``apps/train.py`` and by the keras-tuner ablation (``dim_keras.runs.ablation``),
so both share the same data pipeline, checkpointing and export conventions.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from dim_keras import callbacks as callbacks_lib
from dim_keras import encoders as encoders_lib
from dim_keras import io
from dim_keras.config import PROBE_FEATURES, to_dict, validate
from dim_keras.errors import DataError, TrainingDiverged, UsageError
from dim_keras.export import export_encoder, load_encoder
from dim_keras.models import DeepInfoMax, default_optimizer


def _prepare_output_dir(path):
    """Creates ``path`` (TrainConfig.check has already matched --resume with what it holds)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output dir {path}: {err.strerror or err}") from None
    io.remove_temporaries(path)  # left by a process killed while writing an export


def make_strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def set_precision(mixed_precision):
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)


def load_pretraining_data(config):
    """The pretraining images and the encoder input shape; UsageError on bad data."""
    from dim_keras.data import dataset_defaults, load_split
    split = load_split(config.dataset, "pretrain", config.data_dir, download=config.download)
    defaults = dataset_defaults(config.dataset)
    side = defaults["pretrain_crop"] or defaults["image_size"]
    height, width = (side, side) if side else split.images.shape[1:3]
    if len(split) < config.batch_size:
        raise UsageError(f"{config.dataset} has {len(split)} images, fewer than the batch size {config.batch_size}")
    return split, defaults, (int(height), int(width), 3)


def resolved_encoder_name(config, input_shape):
    """The encoder architecture ``config.encoder`` means for images of ``input_shape`` ("auto": by size)."""
    if config.encoder == "auto":
        return encoders_lib.auto_encoder_name(min(input_shape[:2]))
    return config.encoder


def build_model(config, input_shape):
    """The encoder + DeepInfoMax model of ``config`` (call in the strategy scope)."""
    encoder_name = resolved_encoder_name(config, input_shape)
    try:
        encoder = encoders_lib.build_encoder(
            encoder_name, input_shape, y_dim=config.y_dim, synchronized_bn=config.synchronized_bn)
    except ValueError as err:
        raise UsageError(str(err)) from None
    model = DeepInfoMax(
        encoder, alpha=config.alpha, beta=config.beta, gamma=config.gamma,
        estimator=config.estimator, local_critic=config.local_critic,
        embedding_dim=config.embedding_dim, prior=config.prior,
        local_samples=config.local_samples, prior_gradient_penalty=config.prior_gradient_penalty,
        seed=config.seed)
    optimizer = default_optimizer(config.learning_rate)
    d_optimizer = default_optimizer(config.learning_rate)
    # XLA and MirroredStrategy do not mix in Keras 3 ("Trying to access resource
    # ... replica_1"), so replicated runs use plain graphs.
    jit = config.jit_compile and config.strategy == "default"
    model.compile(optimizer=optimizer, discriminator_optimizer=d_optimizer, jit_compile=jit)
    return model


def _save_keras_atomically(model, path):
    with io.atomic_path(path) as tmp:
        model.save(tmp)


# The label-scarce column of the probe table: with all labels, even random conv features of digits are
# ~96 % linearly separable; with few labels per class the gain of a learned representation shows.
SCARCE_LABELS_PER_CLASS = 20


def load_probe_data(config, max_train=10000, log=print):
    """``(train_images, train_labels, test_images, test_labels)`` of the linear probe, center-cropped to
    the encoder's input; ``None`` for unlabelled datasets or when the labelled splits are missing."""
    from dim_keras.data import center_crop, dataset_defaults, load_split, subsample
    try:
        train = load_split(config.dataset, "train", config.data_dir, download=config.download)
        test = load_split(config.dataset, "test", config.data_dir, download=config.download)
    except DataError as err:
        log(f"linear probe skipped: {err}")
        return None
    if train.labels is None or train.label_kind != "class":
        return None
    crop = dataset_defaults(config.dataset)["eval_crop"]
    train_images, train_labels = subsample(train, max_train, config.seed)
    test_images = test.images
    if crop:
        train_images, test_images = center_crop(train_images, crop, crop), center_crop(test_images, crop, crop)
    return train_images, train_labels, test_images, test.labels


def _first_per_class(labels, count):
    """Indices of the first ``count`` examples of every class (all of a class with fewer)."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:count] for c in np.unique(labels)]))


def linear_probe(encoder_fn, probe_data):
    """Logistic-regression test accuracy of ``y``, ``fc`` and ``conv`` of ``encoder_fn`` (uint8 images ->
    features), trained on all the probe's labels and on ``SCARCE_LABELS_PER_CLASS`` per class:
    ``{feature: {"all_labels": acc, "20_labels_per_class": acc}}``."""
    from dim_keras.evaluation import encode
    from dim_keras.evaluation.probes import logistic_regression_accuracy
    train_images, train_labels, test_images, test_labels = probe_data
    train_features, test_features = (encode(encoder_fn, np.ascontiguousarray(images), names=PROBE_FEATURES)
                                     for images in (train_images, test_images))
    scarce = _first_per_class(train_labels, SCARCE_LABELS_PER_CLASS)
    return {name: {"all_labels": logistic_regression_accuracy(train_features[name], train_labels,
                                                              test_features[name], test_labels),
                   f"{SCARCE_LABELS_PER_CLASS}_labels_per_class": logistic_regression_accuracy(
                       train_features[name][scarce], train_labels[scarce], test_features[name], test_labels)}
            for name in PROBE_FEATURES}


def probe_table(probe):
    """Markdown table of ``{"random_init": linear_probe(...), "trained": linear_probe(...)}``."""
    scarce = f"{SCARCE_LABELS_PER_CLASS}_labels_per_class"
    lines = ["| features | random init | DIM | random init, "
             f"{SCARCE_LABELS_PER_CLASS} labels/class | DIM, {SCARCE_LABELS_PER_CLASS} labels/class |",
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

    Raises UsageError for user mistakes and TrainingDiverged on NaN/Inf loss.
    """
    from dim_keras.data import make_dataset
    from dim_keras.runtime import device_summary
    from dim_keras.config import RUN_CONFIG, check_resumable, load_run_config
    validate(config)
    config.output_dir = config.output_dir or config.default_output_dir()
    if config.resume and os.path.exists(os.path.join(config.output_dir, RUN_CONFIG)):
        check_resumable(load_run_config(config.output_dir)[0], config)  # before any work
    split, defaults, input_shape = load_pretraining_data(config)
    _prepare_output_dir(config.output_dir)
    epochs = config.resolved_epochs()
    if config.verbose:
        log(device_summary())
        log(f"output directory: {config.output_dir}")

    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        model = build_model(config, input_shape)
    # The probe's baseline: the same encoder at its (seeded) random initialisation, before any restore.
    probe_data = load_probe_data(config, config.probe_max_train, log=log) if config.probe else None
    random_init_probe = None
    if probe_data is not None:
        from dim_keras.evaluation import keras_encoder_fn
        random_init_probe = linear_probe(keras_encoder_fn(model.encoder), probe_data)
    checkpoint = callbacks_lib.EpochCheckpoint(os.path.join(config.output_dir, "checkpoints"))
    checkpoint.attach(model)
    initial_epoch = checkpoint.restore() if config.resume else 0
    if config.resume:
        log(f"resuming {config.output_dir} after epoch {initial_epoch}")

    steps = len(split) // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    # Seeded per resumed epoch so a resumed run does not replay epoch 1's order.
    data = make_dataset(split.images, batch_size=config.batch_size, training=True,
                        seed=config.seed + initial_epoch, crop_size=defaults["pretrain_crop"],
                        flip=defaults["pretrain_flip"]).repeat()
    write_run_config(config, {"encoder": resolved_encoder_name(config, input_shape), "epochs": epochs,
                              "input_shape": list(input_shape), "initial_epoch": initial_epoch})

    stop_on_nan = callbacks_lib.StopOnNonFinite()
    callbacks = [
        stop_on_nan,
        # metrics.json before the checkpoint: an interrupt between the two leaves the checkpoint behind the
        # log, and the resumed epoch then replaces the logged one (never a checkpointed epoch without a row).
        callbacks_lib.MetricsJsonLogger(os.path.join(config.output_dir, "metrics.json")),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(config.output_dir, "logs"), update_freq="epoch"),
        *extra_callbacks,
    ]
    history = None
    if initial_epoch < epochs:
        try:
            history = model.fit(data, epochs=epochs, initial_epoch=initial_epoch,
                                steps_per_epoch=steps, callbacks=callbacks, verbose=config.verbose,
                                shuffle=False)  # make_dataset shuffles
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep the steps of the unfinished epoch too
            if stop_on_nan.bad_epoch is None:
                path = checkpoint.save_interrupted()
                log(f"\ninterrupted: training state saved to {path}; --resume continues with epoch "
                    f"{int(checkpoint.epochs_done.numpy()) + 1}")
            raise
    if stop_on_nan.bad_epoch is not None:
        raise TrainingDiverged(
            f"the loss became NaN/Inf in epoch {stop_on_nan.bad_epoch}; the last good "
            f"checkpoint is {checkpoint.latest or 'none (no epoch finished)'}; lower "
            f"--learning_rate and continue with --resume")

    encoder_path = export_encoder(model.encoder, os.path.join(config.output_dir, "encoder"))
    _save_keras_atomically(model, os.path.join(config.output_dir, "model.keras"))
    result = {"output_dir": config.output_dir, "encoder": encoder_path,
              "model": os.path.join(config.output_dir, "model.keras"),
              "epochs": epochs, "history": history.history if history else {}}
    if probe_data is not None:
        probe = {"random_init": random_init_probe, "trained": linear_probe(load_encoder(encoder_path), probe_data)}
        log(probe_table(probe))
        io.write_json(os.path.join(config.output_dir, "probe.json"), probe)
        result["probe"] = probe
    if config.verbose:
        log(f"done: encoder exported to {encoder_path}; everything is in {config.output_dir}")
    return result

