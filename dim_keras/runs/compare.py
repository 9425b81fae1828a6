"""Trained runs side by side (``apps/compare.py``): the DIM paper's Table 1 / Table 4 shape.

Every run's exported encoder is measured on the *same* images (loaded once, the evaluation's seeded subsets)
with the measures of ``apps/evaluate.py`` (:func:`dim_keras.evaluation.evaluate_representation`: linear
probe and SVM on conv / fc / Y, MS-SSIM of a decoder from Y, MINE's I(X; Y), NDM), plus the code measures
of MIM's claims (:mod:`dim_keras.evaluation.latents`): active units of Y and, for the methods with a decoder
(``model.reconstruct``), the reconstruction MSE.  Prints one Markdown table (rows: runs), writes every
run's results as JSON and, on request, the 2-D picture of the codes.
"""

import os

import numpy as np

from dim_keras import io
from dim_keras.choices import GAUSSIAN_POSTERIOR_METHODS
from dim_keras.config import validate
from dim_keras.errors import UsageError


def _reconstruction(run_dir, test_images, batch_size):
    """The reconstruction MSE per pixel of the run's ``model.keras`` on ``test_images``, or None when its
    method has no decoder (DIM, CPC, NAT)."""
    from dim_keras.evaluation.latents import reconstruction_error
    from dim_keras.runs.evaluate import load_keras_file

    model = load_keras_file(os.path.join(run_dir, "model.keras"), "--run_dirs")
    if not hasattr(model, "decoder"):
        return None
    return reconstruction_error(lambda images: np.asarray(model.reconstruct(images)), test_images, batch_size)


def compare(config, log=print):
    """Measures every run of ``config`` (a :class:`dim_keras.config.CompareConfig`); returns
    ``{"dataset", "runs": {label: {"run_dir", "method", "measures", ...}}, "table"}``."""
    from dim_keras.data import load_evaluation_data
    from dim_keras.evaluation import FeatureSet, comparison_table, evaluate_representation
    from dim_keras.evaluation.latents import active_units, latent_picture
    from dim_keras.runs.evaluate import open_encoder

    validate(config)
    runs = config.run_settings()
    first = runs[0][2]
    dataset = config.dataset or first.dataset
    data_dir = config.data_dir or (first.data_dir if dataset == first.dataset else None)
    encoders = [(label, run_dir, settings,
                 *open_encoder(os.path.join(run_dir, "encoder"), config.batch_size, flag="--run_dirs"))
                for label, run_dir, settings in runs]
    sizes = {label: size for label, _, _, _, _, size in encoders}
    if len(set(sizes.values())) > 1:
        raise UsageError("--run_dirs take images of different sizes (" + ", ".join(
            f"{label}: {h}x{w}" for label, (h, w) in sizes.items()) + "): compare runs of one input size")
    height, width = next(iter(sizes.values()))
    data = load_evaluation_data(dataset, data_dir, image_size=(height, width) if dataset == "folder" else None,
                                max_train=config.max_train, max_test=config.max_test, seed=config.seed,
                                crop=(height, width), streaming="off")
    options = {"mine": {"epochs": config.estimator_epochs}, "ndm": {"epochs": config.estimator_epochs},
               "ms_ssim": {"epochs": config.decoder_epochs}}
    layers = list(config.layers)
    results, codes = {}, {}
    for label, run_dir, settings, encoder_fn, _, _ in encoders:
        features = FeatureSet.from_encoder(
            encoder_fn, data.train_images, data.test_images, data.train_labels, data.test_labels, config.batch_size,
            names=tuple(dict.fromkeys(layers + ["y"])), class_names=data.class_names, verbose=0)
        result = evaluate_representation(
            features, metrics=list(config.metrics), layers=layers, runs=config.svm_runs, seed=config.seed,
            options={m: o for m, o in options.items() if m in config.metrics}, verbose=0)
        if config.latent_measures:
            count, variances = active_units(features.test["y"])
            if settings.method in GAUSSIAN_POSTERIOR_METHODS:  # elsewhere Y's scale is arbitrary (latents.py)
                result["measures"]["active_units"] = {"y": count}
            result["y_variances"] = [float(v) for v in variances]
            mse = _reconstruction(run_dir, data.test_images, config.batch_size)
            if mse is not None:
                result["measures"]["reconstruction_mse"] = {"y": mse}
            codes[label] = features.test["y"]
        results[label] = {"run_dir": os.path.abspath(run_dir), "method": settings.method, **result}
        if config.verbose:
            log(f"{label}: measured ({run_dir})")
    table = comparison_table({label: result for label, result in results.items()})
    log(table.rstrip("\n"))
    report = {"dataset": dataset, "data_dir": data_dir, "runs": results, "table": table}
    if config.latent_png and data.test_labels is not None:
        latent_picture(codes, data.test_labels, config.latent_png, data.class_names)
        report["latent_png"] = os.path.abspath(config.latent_png)
        log(f"codes drawn in {config.latent_png}")
    elif config.latent_png:
        log(f"--latent_png: {dataset} has no class labels to colour the codes by; no picture written")
    if config.output:
        io.write_json(config.output, report)
        log(f"results written to {config.output}")
    return report
