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


def build_model(config, input_shape):
    """The encoder + DeepInfoMax model of ``config`` (call in the strategy scope)."""
    encoder_name = config.encoder
    if encoder_name == "auto":
        encoder_name = encoders_lib.auto_encoder_name(min(input_shape[:2]))
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


def linear_probe(encoder_fn, config, max_train=10000, log=print):
    """Logistic-regression accuracy of ``y``, ``fc`` and ``conv`` on the labelled splits.

    Returns ``None`` for unlabelled datasets.
    """
    from dim_keras.data import center_crop, dataset_defaults, load_split, subsample
    from dim_keras.evaluation.probes import logistic_regression_accuracy
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

    def features(images):
        if crop:
            images = center_crop(images, crop, crop)
        feats = encoder_fn(np.ascontiguousarray(images))
        return {k: feats[k].reshape(len(images), -1) for k in PROBE_FEATURES}

    train_features = features(train_images)
    test_features = features(test.images)
    return {name: logistic_regression_accuracy(train_features[name], train_labels,
                                               test_features[name], test.labels)
            for name in PROBE_FEATURES}


def probe_table(results):
    lines = ["| features | linear probe accuracy |", "|---|---|"]
    lines += [f"| {name} | {100 * acc:.2f} % |" for name, acc in results.items()]
    return "\n".join(lines)


def train(config, extra_callbacks=(), log=print):
    """Runs one DIM training job; returns a dict with the output paths and results.

    Raises UsageError for user mistakes and TrainingDiverged on NaN/Inf loss.
    """
    from dim_keras.data import make_dataset
    from dim_keras.runtime import device_summary
    validate(config)
    config.output_dir = config.output_dir or config.default_output_dir()
    split, defaults, input_shape = load_pretraining_data(config)
    _prepare_output_dir(config.output_dir)
    epochs = config.resolved_epochs()
    if config.verbose:
        log(device_summary())

    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        model = build_model(config, input_shape)
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
    io.write_json(os.path.join(config.output_dir, "config.json"), to_dict(config))

    stop_on_nan = callbacks_lib.StopOnNonFinite()
    callbacks = [
        stop_on_nan,
        checkpoint,
        callbacks_lib.MetricsJsonLogger(os.path.join(config.output_dir, "metrics.json")),
        keras.callbacks.TensorBoard(os.path.join(config.output_dir, "logs"), update_freq="epoch"),
        *extra_callbacks,
    ]
    history = None
    if initial_epoch < epochs:
        history = model.fit(data, epochs=epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps, callbacks=callbacks, verbose=config.verbose,
                            shuffle=False)  # make_dataset shuffles
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
    if config.probe:
        probe = linear_probe(load_encoder(encoder_path), config, config.probe_max_train, log=log)
        if probe is not None:
            log(probe_table(probe))
            io.write_json(os.path.join(config.output_dir, "probe.json"), probe)
            result["probe"] = probe
    return result

