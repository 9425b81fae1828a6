"""Run the section 4.1 measures on one representation (Tables 1, 2, 4; App. A.4-A.6).

`evaluate_representation` runs the chosen measures on a `FeatureSet` (features
encoded once): the classifiers on every layer (conv, fc, Y: "we built separate
classifiers on the high-level vector representation (Y), the output of the
previous fully-connected layer (fc) and the last convolutional layer (conv)"),
and MS-SSIM, MINE, NDM and the nearest-neighbour figure on Y (Table 4).

Measures (``METRICS``) and what they need:

==================  =========================================  ==================
name                measure                                    needs
==================  =========================================  ==================
svm                 linear SVM, hinge loss, ``runs`` seeds      class labels
logistic            logistic regression                         class labels
mlp                 200-unit classifier, last-epochs average    class labels
knn                 k-NN (L1)                                   class labels
attributes          per-attribute accuracy, mean/min/max        attribute labels
semi_supervised     fine-tuning encoder + head (Table 2, SS)    class labels, encoder_model, images
ms_ssim             MS-SSIM of a decoder from Y                 images
mine                MINE I(X; Y)                                images
ndm                 neural dependency measure of Y              -
neighbours          App. A.4 figure (PNG)                       images, neighbours_png
==================  =========================================  ==================
"""

import keras

from dim_keras.evaluation import mine as mine_module
from dim_keras.evaluation import ndm as ndm_module
from dim_keras.evaluation import neighbours as neighbours_module
from dim_keras.evaluation import probes, reconstruction, semi_supervised
from dim_keras.evaluation.features import PAPER_LAYERS, FeatureSet
from dim_keras.runtime import progress_verbosity

# Classifier measures run on every evaluated layer; the others on Y only.
from dim_keras.choices import LAYER_METRICS, METRICS, REPRESENTATION_METRICS  # noqa: E402 (one list, TF-free)
_REQUIREMENTS = {
    "svm": ("class_labels",),
    "logistic": ("class_labels",),
    "mlp": ("class_labels",),
    "knn": ("class_labels",),
    "attributes": ("attribute_labels",),
    "semi_supervised": ("class_labels", "images", "encoder_model"),
    "ms_ssim": ("images",),
    "mine": ("images",),
    "ndm": (),
    "neighbours": ("images", "neighbours_png"),
}
_REQUIREMENT_TEXT = {
    "class_labels": "class labels [N]",
    "attribute_labels": "attribute labels [N, A]",
    "images": "the images",
    "encoder_model": "a trainable keras encoder (encoder_model)",
    "neighbours_png": "an output path (neighbours_png)",
}


def parse_metrics(text):
    """``"svm,mine"`` -> ``["svm", "mine"]``; ValueError (one line) on unknown names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if not names:
        raise ValueError("no metric given")
    return names


def _available(label_kind, has_images, has_encoder_model, has_neighbours_png):
    return {
        "class_labels": label_kind == "class",
        "attribute_labels": label_kind == "attributes",
        "images": bool(has_images),
        "encoder_model": bool(has_encoder_model),
        "neighbours_png": bool(has_neighbours_png),
    }


def _label_kind(feature_set):
    if feature_set.has_class_labels:
        return "class"
    return "attributes" if feature_set.has_attribute_labels else None


def resolve_metrics(metrics=None, *, label_kind=None, has_images=False, has_encoder_model=False,
                    has_neighbours_png=False):
    """The metrics to run: ``metrics`` checked, or every metric that applies when None.

    Needs only what the data offers, so an app can check its flags before
    encoding anything.

    Args:
        metrics: None, a comma-separated string, or a list of names.
        label_kind: "class" (labels [N]), "attributes" (labels [N, A]) or None.

    Raises:
        ValueError (one line): an unknown metric, or one whose needs are not met.
    """
    available = _available(label_kind, has_images, has_encoder_model, has_neighbours_png)
    if metrics is None:
        return [m for m in METRICS if all(available[r] for r in _REQUIREMENTS[m])]
    if isinstance(metrics, str):
        metrics = parse_metrics(metrics)
    metrics = list(metrics)
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        for requirement in _REQUIREMENTS[metric]:
            if not available[requirement]:
                raise ValueError(f"metric {metric!r} needs {_REQUIREMENT_TEXT[requirement]}")
    if len(set(metrics)) != len(metrics):
        raise ValueError("a metric is listed twice")
    return metrics


def applicable_metrics(feature_set, encoder_model=None, neighbours_png=None):
    """The metrics whose requirements the data meets, in ``METRICS`` order."""
    return resolve_metrics(None, label_kind=_label_kind(feature_set), has_images=feature_set.has_images,
                           has_encoder_model=encoder_model is not None,
                           has_neighbours_png=neighbours_png is not None)


def _check_layers(metrics, feature_set, layers, estimator_layer):
    for layer in layers:
        if layer not in feature_set.train:
            raise ValueError(f"no layer {layer!r} in the features; they hold {', '.join(feature_set.layers)}")
    if any(m in REPRESENTATION_METRICS for m in metrics) and estimator_layer not in feature_set.train:
        raise ValueError(f"no layer {estimator_layer!r} in the features for MS-SSIM/MINE/NDM")


def _run_layer_metric(metric, feature_set, layer, runs, seed, options, verbose):
    args = (feature_set.train[layer], feature_set.train_labels,
            feature_set.test[layer], feature_set.test_labels)
    if metric == "svm":
        return probes.linear_svm_accuracy(*args, runs=runs, seed=seed, verbose=verbose, **options)
    if metric == "logistic":
        return probes.logistic_regression_accuracy(*args, **options)
    if metric == "mlp":
        return probes.mlp_probe_accuracy(*args, seed=seed, verbose=verbose, **options)
    if metric == "knn":
        return probes.knn_accuracy(*args, **options)
    if metric == "attributes":
        return probes.attribute_accuracies(*args, class_names=feature_set.class_names, **options)
    raise AssertionError(metric)


def _run_representation_metric(metric, feature_set, layer, seed, options, neighbours_png, verbose):
    train, test = feature_set.train[layer], feature_set.test[layer]
    if metric == "ms_ssim":
        return reconstruction.reconstruction_ms_ssim(
            train, feature_set.train_images, test, feature_set.test_images,
            seed=seed, verbose=verbose, **options)
    if metric == "mine":
        return mine_module.mine_estimate(
            feature_set.train_images, train, feature_set.test_images, test,
            seed=seed, verbose=verbose, **options)
    if metric == "ndm":
        return ndm_module.neural_dependency_measure(train, test, seed=seed, verbose=verbose, **options)
    if metric == "neighbours":
        class_names = feature_set.class_names if feature_set.has_class_labels else None
        return neighbours_module.neighbour_figure(
            neighbours_png, train, feature_set.train_images, test, feature_set.test_images,
            feature_set.train_labels, class_names, seed=seed, **options)
    raise AssertionError(metric)


def evaluate_representation(feature_set, metrics=None, layers=None, estimator_layer="y",
                            runs=5, seed=0, encoder_model=None, neighbours_png=None,
                            options=None, verbose=0):
    """Runs the section 4.1 measures on precomputed features.

    Args:
        feature_set: a `FeatureSet` (train/test features, labels, images).
        metrics: names from ``METRICS``; default: every metric that applies
            (`applicable_metrics`).  A requested metric that does not apply
            raises ValueError with one line.
        layers: layers for the classifiers (default: conv, fc, y where present).
        estimator_layer: the representation for MS-SSIM, MINE, NDM, neighbours.
        runs: SVM runs (Table 4: five).
        seed: base seed of every measure.
        encoder_model: keras encoder (float images in [0, 1] -> feature dict)
            for ``semi_supervised``; it is copied, never modified.
        neighbours_png: output path of the nearest-neighbour figure.
        options: ``{metric: {keyword: value}}`` passed to each measure's
            function (e.g. ``{"mlp": {"epochs": 10}, "mine": {"epochs": 5}}``).
        verbose: 1 shows a progress bar over the measures (and inner ones).

    Returns:
        ``{"measures": {metric: {layer: value}}, "layers": [...], "metrics":
        [...], "estimator_layer": ..., "runs": ..., "seed": ...}`` (JSON-ready;
        see `dim_keras.evaluation.report`).
    """
    if not isinstance(feature_set, FeatureSet):
        raise ValueError("feature_set must be a dim_keras.evaluation.FeatureSet")
    if layers is None:
        layers = [layer for layer in PAPER_LAYERS if layer in feature_set.train] or list(feature_set.layers)
    layers = list(layers)
    metrics = resolve_metrics(metrics, label_kind=_label_kind(feature_set),
                              has_images=feature_set.has_images,
                              has_encoder_model=encoder_model is not None,
                              has_neighbours_png=neighbours_png is not None)
    options = dict(options or {})
    unknown_options = set(options) - set(METRICS)
    if unknown_options:
        raise ValueError(f"options for unknown metric {sorted(unknown_options)[0]!r}")
    _check_layers(metrics, feature_set, layers, estimator_layer)

    tasks = []
    for metric in metrics:
        if metric in LAYER_METRICS:
            tasks += [(metric, layer) for layer in layers]
        elif metric == "semi_supervised":
            tasks.append((metric, options.get(metric, {}).get("feature", "conv")))
        else:
            tasks.append((metric, estimator_layer))
    # Off a terminal the bars print one line each when done (dim_keras.runtime.progress_verbosity).
    bar = progress_verbosity(1)
    progbar = keras.utils.Progbar(len(tasks), unit_name="measure", verbose=bar) if verbose else None
    inner_verbose = 0 if verbose < 2 else bar
    measures = {}
    for done, (metric, layer) in enumerate(tasks, start=1):
        metric_options = dict(options.get(metric, {}))
        if metric in LAYER_METRICS:
            value = _run_layer_metric(metric, feature_set, layer, runs, seed, metric_options, inner_verbose)
        elif metric == "semi_supervised":
            value = semi_supervised.fine_tune_accuracy(
                encoder_model, feature_set.train_images, feature_set.train_labels,
                feature_set.test_images, feature_set.test_labels, seed=seed,
                verbose=inner_verbose, **metric_options)
        else:
            value = _run_representation_metric(metric, feature_set, layer, seed, metric_options,
                                               neighbours_png, inner_verbose)
        measures.setdefault(metric, {})[layer] = value
        if progbar is not None:
            progbar.update(done)
    return {
        "measures": measures,
        "layers": layers,
        "metrics": metrics,
        "estimator_layer": estimator_layer,
        "runs": runs,
        "seed": seed,
        "train_size": int(len(next(iter(feature_set.train.values())))),
        "test_size": int(len(next(iter(feature_set.test.values())))),
    }


def evaluate_encoder(encoder_fn, train_images, test_images, train_labels=None, test_labels=None,
                     batch_size=256, class_names=None, **kwargs):
    """Encodes both splits once (`FeatureSet.from_encoder`), then `evaluate_representation`."""
    layers = kwargs.get("layers")
    names = tuple(sorted(set(layers or PAPER_LAYERS) | {kwargs.get("estimator_layer", "y")}))
    feature_set = FeatureSet.from_encoder(
        encoder_fn, train_images, test_images, train_labels, test_labels, batch_size,
        names=names, class_names=class_names, verbose=kwargs.get("verbose", 0))
    return evaluate_representation(feature_set, **kwargs)
