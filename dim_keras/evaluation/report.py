"""Results of `dim_keras.evaluation.suite` as Markdown tables.

Results are plain JSON-ready dicts (write them with `dim_keras.io.write_json`,
read them back with `read_json`)::

    {"measures": {measure: {layer: value}}, "layers": [...], ...}

where a value is a float, or a dict with ``mean``/``std`` (several runs, e.g.
the five SVMs of Table 4) or ``mean``/``min``/``max`` (CelebA attributes,
Fig. 11), or ``path`` (a figure).
"""

import json
import math
import os

# Row titles, in the order of the paper's tables (Tables 1, 2, 4; Fig. 11).
MEASURE_TITLES = {
    "svm": "SVM accuracy (%)",
    "logistic": "Logistic regression accuracy (%)",
    "mlp": "Non-linear (200 units) accuracy (%)",
    "knn": "k-NN accuracy (%)",
    "attributes": "Attribute accuracy (%), mean (min-max)",
    "semi_supervised": "Semi-supervised fine-tuning (SS) accuracy (%)",
    "ms_ssim": "MS-SSIM",
    "mine": "MINE I(X; Y) (nats)",
    "ndm": "NDM (nats)",
    "neighbours": "Nearest neighbours (figure)",
    # dim_keras.evaluation.latents (MIM's claims, issue 15)
    "active_units": "Active units of Y (Burda et al. 2016)",
    "reconstruction_mse": "Reconstruction MSE per pixel",
}
# Measures whose values are accuracies in [0, 1], shown in percent like the paper.
ACCURACY_MEASURES = ("svm", "logistic", "mlp", "knn", "attributes", "semi_supervised")
LAYER_TITLES = {"conv": "conv", "fc": "fc", "y": "Y", "local": "local"}


def format_value(measure, value, digits=2):
    """A table cell: ``63.25 ± 0.86`` for runs, ``75.4 (51.2-93.0)`` for attributes."""
    if value is None:
        return "-"
    scale = 100.0 if measure in ACCURACY_MEASURES else 1.0
    if isinstance(value, dict):
        if "path" in value:
            return f"`{os.path.basename(value['path'])}`"
        if "min" in value and "max" in value:
            return (f"{value['mean'] * scale:.{digits}f} "
                    f"({value['min'] * scale:.{digits}f}-{value['max'] * scale:.{digits}f})")
        if "std" in value and len(value.get("values", [0, 0])) > 1:
            return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"
        value = value["mean"]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):  # counts (active units)
        return str(value)
    if measure == "reconstruction_mse":
        return f"{float(value):.{digits + 2}f}"
    return f"{float(value) * scale:.{digits}f}"


def markdown_table(results, digits=2):
    """One row per measure, one column per layer (conv, fc, Y), like Table 4."""
    layers = list(results.get("layers") or [])
    measures = results["measures"]
    for per_layer in measures.values():
        layers += [layer for layer in per_layer if layer not in layers]
    header = "| Measure | " + " | ".join(LAYER_TITLES.get(l, l) for l in layers) + " |"
    lines = [header, "|" + "---|" * (len(layers) + 1)]
    ordered = [m for m in MEASURE_TITLES if m in measures] + [m for m in measures if m not in MEASURE_TITLES]
    for measure in ordered:
        cells = [format_value(measure, measures[measure].get(layer), digits) for layer in layers]
        lines.append(f"| {MEASURE_TITLES.get(measure, measure)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_table(results_by_model, digits=2):
    """Table 4's shape: one row per model, one column per (measure, layer) found."""
    columns = []
    for results in results_by_model.values():
        for measure in MEASURE_TITLES:
            for layer in results["measures"].get(measure, {}):
                if (measure, layer) not in columns and measure != "neighbours":
                    columns.append((measure, layer))
    short = {"svm": "SVM", "logistic": "LogReg", "mlp": "MLP", "knn": "k-NN", "attributes": "Attr.",
             "semi_supervised": "SS", "ms_ssim": "MS-SSIM", "mine": "I(X;Y)", "ndm": "NDM",
             "active_units": "AU", "reconstruction_mse": "Rec. MSE"}
    titles = [f"{short.get(m, m)} ({LAYER_TITLES.get(l, l)})" for m, l in columns]
    lines = ["| Model | " + " | ".join(titles) + " |", "|" + "---|" * (len(columns) + 1)]
    for model, results in results_by_model.items():
        cells = [format_value(m, results["measures"].get(m, {}).get(l), digits) for m, l in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_json(path):
    """The results written to ``path`` (by `dim_keras.io.write_json`)."""
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)
