"""The Sec. 4.1 evaluation of a trained encoder (``apps/evaluate.py``; Tables 1, 2, 4).

Load the encoder, encode the train and test splits once into a
:class:`dim_keras.evaluation.FeatureSet`, run the chosen measures on it
(:func:`dim_keras.evaluation.evaluate_representation`), print the Markdown
table and write the results as JSON.
"""

import os

from dim_keras import io
from dim_keras.choices import STREAMING_AUTO_BYTES
from dim_keras.config import validate
from dim_keras.errors import UsageError, first_line

# The measures that look at the images themselves, not only at their features (they need them in memory).
PIXEL_METRICS = ("semi_supervised", "ms_ssim", "mine", "neighbours")


def load_keras_file(path, flag="--encoder"):
    """``dim_keras.load_model(path)``; a file that does not load is a one-line :class:`UsageError` naming
    ``flag``."""
    import dim_keras

    try:
        return dim_keras.load_model(path)
    except Exception as error:  # a corrupt or foreign file is a user mistake here
        raise UsageError(f"{flag}={path}: cannot load the keras model ({type(error).__name__})") from None


def open_encoder(path, batch_size=256, flag="--encoder"):
    """``(encoder_fn, encoder_model, (height, width))`` of an exported encoder.

    ``path`` is a SavedModel directory of :func:`dim_keras.export.export_encoder`
    or a ``.keras`` file of an encoder or of a whole ``DeepInfoMax`` model (its
    ``.encoder`` is used).  ``encoder_fn`` maps uint8 images to a dict of
    features; ``encoder_model`` is the trainable keras encoder (``.keras``
    only: semi-supervised fine-tuning needs it) or None.  A file that does not
    load is a :class:`UsageError` naming ``flag``.
    """
    if path.endswith(".keras"):
        from dim_keras.evaluation import keras_encoder_fn

        model = load_keras_file(path, flag)
        encoder = getattr(model, "encoder", None)
        if encoder is not None:
            model = encoder
        return keras_encoder_fn(model), model, tuple(model.input_shape[1:3])
    from dim_keras.export import load_encoder

    try:
        encoder = load_encoder(path, batch_size=batch_size)
    except (ValueError, KeyError, OSError) as error:
        raise UsageError(f"{flag}={path}: {first_line(error)}") from None
    return encoder, None, tuple(encoder.input_shape[:2])


def _options(config):
    """The per-measure settings of ``config`` for ``evaluate_representation``."""
    return {
        "mlp": {"epochs": config.mlp_epochs, "last_epochs": min(config.mlp_last_epochs, config.mlp_epochs)},
        "mine": {"epochs": config.estimator_epochs},
        "ndm": {"epochs": config.estimator_epochs},
        "ms_ssim": {"epochs": config.decoder_epochs},
        "semi_supervised": {"epochs": config.finetune_epochs,
                            "last_epochs": min(config.mlp_last_epochs, config.finetune_epochs)},
    }


def _metrics_and_data(config, data, encoder_model, log):
    """The measures to run.  Streamed data (``--streaming=on``, or auto and more than ``STREAMING_AUTO_BYTES``
    decoded) is encoded as it is read, keeping only features; the measures that look at pixels (MS-SSIM, MINE,
    neighbours, fine-tuning) need the images in memory, so they are then left out (by default) or refused
    (asked for by --metrics)."""
    from dim_keras.evaluation import resolve_metrics

    try:
        metrics = resolve_metrics(list(config.metrics) or None, label_kind=data.label_kind, has_images=True,
                                  has_encoder_model=encoder_model is not None,
                                  has_neighbours_png=config.neighbours_png is not None)
    except ValueError as error:
        raise UsageError(f"--metrics: {error}") from None
    pixel_metrics = [m for m in metrics if m in PIXEL_METRICS]
    if not data.streaming or not pixel_metrics:
        return metrics
    why = ("--streaming=on keeps the images on disk" if config.streaming == "on" else
           f"the images stream from disk (more than {STREAMING_AUTO_BYTES / 2**30:g} GiB decoded)")
    if config.metrics:
        raise UsageError(f"--metrics={','.join(pixel_metrics)} needs the images in memory and {why}: pass "
                         f"--max_train/--max_test to measure on a subset, or leave them out of --metrics")
    log(f"{', '.join(pixel_metrics)} left out: they need the images in memory and {why}")
    return [m for m in metrics if m not in pixel_metrics]


def evaluate(config, log=print):
    """Runs the measures of ``config`` (an :class:`dim_keras.config.EvaluateConfig`) on its encoder.

    Logs the Markdown table (rows: measures, columns: layers) and writes the
    results to ``config.output`` when set (atomically).  Returns the results:
    ``dataset``, ``encoder`` (absolute path) and what
    :func:`dim_keras.evaluation.evaluate_representation` returns.  User
    mistakes found late (missing data, an encoder that does not load or does
    not fit the images) raise :class:`UsageError`.
    """
    from dim_keras.data import SkippedImages, load_evaluation_data
    from dim_keras.evaluation import FeatureSet, evaluate_representation, markdown_table

    validate(config)
    encoder_fn, encoder_model, (height, width) = open_encoder(config.encoder, config.batch_size)
    # A folder is resized to the encoder's input, as training resized it (--image_size); the other datasets
    # come at their fixed sizes, and larger ones (STL-10's 96x96) are center-cropped to it (64x64).
    size = (height, width) if config.dataset == "folder" else None
    skipped = SkippedImages()
    data = load_evaluation_data(config.dataset, config.data_dir, image_size=size, max_train=config.max_train,
                                max_test=config.max_test, seed=config.seed, crop=(height, width),
                                streaming=config.streaming, skipped=skipped)
    metrics = _metrics_and_data(config, data, encoder_model, log)
    layers = list(config.layers)
    try:
        feature_set = FeatureSet.from_encoder(
            encoder_fn, data.train_images, data.test_images, data.train_labels, data.test_labels, config.batch_size,
            names=tuple(dict.fromkeys(layers + ["y"])), class_names=data.class_names, verbose=config.verbose)
    except ValueError as error:
        raise UsageError(f"--encoder={config.encoder}: {first_line(error)}") from None
    results = evaluate_representation(
        feature_set, metrics=metrics, layers=layers, runs=config.runs, seed=config.seed,
        encoder_model=encoder_model, neighbours_png=config.neighbours_png,
        options={m: o for m, o in _options(config).items() if m in metrics}, verbose=config.verbose)
    results = {"dataset": config.dataset, "encoder": os.path.abspath(config.encoder), **results}
    if skipped.count:
        results["skipped_images"] = skipped.as_dict()
        log(skipped.summary())
    log(markdown_table(results).rstrip("\n"))
    if config.output:
        io.write_json(config.output, results)
        log(f"results written to {config.output}")
    return results
