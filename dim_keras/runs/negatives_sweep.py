"""DIM's number-of-negatives experiment (App. A.3, Fig. 9): probe accuracy against log2 K per estimator.

For every estimator of a :class:`dim_keras.config.NegativesSweepConfig` and every K of
:meth:`~dim_keras.config.NegativesSweepConfig.resolved_negatives` one run of
:func:`dim_keras.runs.train.train` (the training app's path: data, model, fit, checkpoints, export, probe)
trains DIM with ``--estimator`` and ``--negatives=K`` (each global feature contrasted with the local
features of K random other images of its batch, :func:`dim_keras.estimators.sample_negative_mask`) into
``<output_dir>/<estimator>-k<K>``; its linear probe of the exported encoder (``probe.json``'s ``trained``:
logistic regression on all the probe's labels) gives the point's Y, fc and conv accuracies.  Fig. 9 plots Y
and the conv layer against log2 K (0: one negative image per positive); the paper's finding is that JSD is
insensitive to K while infoNCE declines as K falls and DV declines and becomes unstable.

A finished point leaves ``point.json`` in its directory (a diverged one too: DV may give NaN losses at small
K, which is part of the finding, and the point is recorded with its message instead of accuracies); a rerun
with the same ``--output_dir`` and settings skips it, and an unfinished point continues from its last
checkpoint.  ``negatives.json`` (every point, written atomically after each one) and ``negatives.png`` (the
figure) are rewritten as the sweep goes.
"""

import math
import os
import time

from dim_keras import io
from dim_keras.config import finished_record, to_dict, validate
from dim_keras.errors import TrainingDiverged, UsageError

RESULTS_JSON = "negatives.json"
FIGURE_PNG = "negatives.png"
POINT_JSON = "point.json"  # a finished point's record: the mark that a rerun skips it
FEATURES = ("y", "fc", "conv")
PANELS = ("y", "conv")  # Fig. 9: left the global representation Y, right the convolutional layer
# Settings that do not change what a point learns: a finished point is reused whatever they were.
_RUN_ONLY_SETTINGS = ("output_dir", "resume", "verbose", "jit_compile", "download", "streaming", "monitor_every",
                      "monitor_examples")


def point_dir(config, estimator, negatives):
    return os.path.join(config.output_dir, f"{estimator}-k{negatives}")


def _settings_of(train_config):
    """What a record stores of ``train_config``: every setting but the run-only ones, spelled out
    (:meth:`~dim_keras.config.TrainConfig.spelled_out`)."""
    return {k: v for k, v in to_dict(train_config.spelled_out()).items() if k not in _RUN_ONLY_SETTINGS}


def run_point(config, estimator, negatives, log=print):
    """Trains and probes one point (or reuses its ``point.json``); returns its record."""
    import keras
    from dim_keras.runs.train import train
    path = point_dir(config, estimator, negatives)
    settings = _settings_of(config.run_config(estimator, negatives, path))
    record = finished_record(path, POINT_JSON, settings, "point")
    if record is not None:
        log(f"{estimator} K={negatives}: finished, in {path}")
        return record
    resume = os.path.exists(os.path.join(path, "checkpoints", "checkpoint"))
    train_config = config.run_config(estimator, negatives, path, resume=resume)
    log(f"{estimator} K={negatives}: {'resuming' if resume else 'training'} {train_config.resolved_epochs()} "
        f"epochs in {path}")
    record = {"estimator": estimator, "negatives": negatives, "log2_negatives": math.log2(negatives),
              "all_negatives": negatives >= config.train.batch_size - 1, "output_dir": path, "settings": settings,
              "resumed": resume}
    start = time.perf_counter()
    try:
        result = train(train_config, log=log)
    except TrainingDiverged as error:  # DV at small K (A.3: "highly unstable"): a result, not a failure
        record.update(diverged=str(error), probe=None, wall_s=time.perf_counter() - start)
        log(f"{estimator} K={negatives}: diverged ({error})")
    else:
        if "probe" not in result:
            raise UsageError(f"{train_config.dataset} gave no linear probe (it needs labelled train and test "
                             "splits)")
        trained = result["probe"]["trained"]
        record.update(
            diverged=None, epochs=result["epochs"], wall_s=time.perf_counter() - start,
            probe={name: float(trained[name]["all_labels"]) for name in FEATURES},
            random_init_probe={name: float(result["probe"]["random_init"][name]["all_labels"]) for name in FEATURES},
            loss=[float(v) for v in result["history"].get("loss", [])],
            local_mi=[float(v) for v in result["history"].get("local_mi", [])])
    finally:
        keras.backend.clear_session()  # the next point builds its own model: free this one's graphs
    os.makedirs(path, exist_ok=True)
    io.write_json(os.path.join(path, POINT_JSON), record)
    return record


# ------------------------------------------------------------------------------------------ figure
def curves(points):
    """``{estimator: {feature: (log2 K list, accuracy list)}}`` of the points that trained (diverged points
    are left out: a gap in the line, marked by :func:`plot`)."""
    result = {}
    for point in points:
        if point.get("probe") is None:
            continue
        lines = result.setdefault(point["estimator"], {name: ([], []) for name in FEATURES})
        for name in FEATURES:
            lines[name][0].append(point["log2_negatives"])
            lines[name][1].append(point["probe"][name])
    for lines in result.values():
        for name, (xs, ys) in lines.items():
            order = sorted(range(len(xs)), key=xs.__getitem__)
            lines[name] = ([xs[k] for k in order], [ys[k] for k in order])
    return result


def plot(result, path):
    """Fig. 9: linear-probe test accuracy (%) of Y (left) and conv (right) against log2 K, one line per
    estimator; a diverged point is an ``x`` on the axis's bottom edge.  Returns ``path``."""
    from dim_keras.figures import drawing, pyplot
    plt = pyplot()
    figure, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS), 3.8))
    lines = curves(result["points"])
    colours = {"jsd": "tab:blue", "infonce": "tab:orange", "dv": "tab:green", "nwj": "tab:red",
               "mine_f": "tab:purple"}
    batch = result["batch_size"]
    with drawing(figure, path):
        for axis, name in zip(axes, PANELS):
            for estimator in result["estimators"]:
                if estimator in lines:
                    xs, ys = lines[estimator][name]
                    axis.plot(xs, [100 * y for y in ys], marker="o", color=colours.get(estimator), label=estimator)
                diverged = [p["log2_negatives"] for p in result["points"]
                            if p["estimator"] == estimator and p.get("probe") is None]
                if diverged:
                    axis.plot(diverged, [0.0] * len(diverged), "x", color=colours.get(estimator), clip_on=False,
                              transform=axis.get_xaxis_transform(), label=f"{estimator}: diverged")
            axis.set_title("Y (global representation)" if name == "y" else "conv (convolutional layer)")
            ticks = [math.log2(k) for k in result["negatives"]]
            axis.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
            axis.set_xlabel(f"log2 K (negative images per positive; B - 1 = {batch - 1}: all)")
            axis.set_ylabel("linear-probe test accuracy (%)")
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        figure.suptitle(f"{result['dataset']}, {result['epochs']} epochs, batch {batch}: accuracy against the number "
                        "of negative samples (DIM Fig. 9)", fontsize=10)
    return path


# ------------------------------------------------------------------------------------------ run
def _result(config, points):
    train = config.train
    return {"dataset": train.dataset, "data_dir": train.data_dir, "epochs": train.resolved_epochs(),
            "batch_size": train.batch_size, "estimators": list(config.estimators),
            "negatives": config.resolved_negatives(),
            "probe": "linear probe (standardised features, logistic regression) on all probe labels: test accuracy",
            "points": points, "config": to_dict(config)}


def _write(config, points):
    result = _result(config, points)
    result["figure"] = plot(result, os.path.join(config.output_dir, FIGURE_PNG))
    io.write_json(os.path.join(config.output_dir, RESULTS_JSON), result)
    return result


def sweep(config, log=print):
    """Runs (or resumes) the sweep of ``config``; returns the result (also ``<output_dir>/negatives.json``)
    with ``points`` (one record per (estimator, K), estimator-major) and ``trained`` (the points this call
    trained).  UsageError for bad settings or data."""
    validate(config)
    os.makedirs(config.output_dir, exist_ok=True)
    io.remove_temporaries(config.output_dir)  # left by a killed sweep
    points, trained = [], 0
    try:
        for estimator in config.estimators:
            for negatives in config.resolved_negatives():
                point = run_point(config, estimator, negatives, log)
                trained += not point.get("reused", False)
                points.append(point)
                _write(config, points)  # the figure and JSON grow as the sweep goes
    except KeyboardInterrupt as interrupt:  # the point's "--resume" hint is not the sweep's: drop it
        raise type(interrupt)() from None
    result = _write(config, points)
    result["trained"] = trained
    return result


def table(result):
    """The markdown table of a sweep: one row per K, the Y / conv accuracy of every estimator."""
    estimators = result["estimators"]
    lines = ["| K | log2 K | " + " | ".join(f"{e} Y | {e} conv" for e in estimators) + " |",
             "|---|---|" + "---|---|" * len(estimators)]
    by_key = {(p["estimator"], p["negatives"]): p for p in result["points"]}
    for k in result["negatives"]:
        cells = []
        for estimator in estimators:
            point = by_key.get((estimator, k))
            if point is None:
                cells += ["–", "–"]
            elif point.get("probe") is None:
                cells += ["diverged", "diverged"]
            else:
                cells += [f"{100 * point['probe'][name]:.2f} %" for name in PANELS]
        lines.append(f"| {k} | {math.log2(k):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(result):
    return [f"{result['dataset']}, {result['epochs']} epochs, batch {result['batch_size']}: linear-probe test "
            f"accuracy against the number of negative images K per positive ({result['trained']} point(s) trained "
            "now)", table(result), f"results: {os.path.join(result['config']['output_dir'], RESULTS_JSON)}",
            f"figure: {result['figure']}"]
