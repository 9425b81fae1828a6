"""Representation quality at equal epochs: dim_keras's recipes against the authors' DIM(L) step (issue 12).

For every seed of a :class:`dim_keras.config.CompareQualityConfig`:

- ``paper`` / ``improved``: one run of :func:`dim_keras.runs.train.train` (the training app's path: data,
  model, fit, checkpoints, export, probe) with ``--recipe`` set to the arm, ``gamma=0`` (DIM(L) without the
  prior term), the harness's epochs and the seed, in ``<output_dir>/<arm>-seed<seed>``; its linear probe of
  the exported encoder (``probe.json``'s ``trained``) is the arm's result;
- ``random_init``: the same run's probe of the encoder at its seeded initialisation (``probe.json``'s
  ``random_init``), or, when no recipe arm runs, that probe alone (the model built as ``train`` builds it);
- ``torch``: :func:`dim_keras.runs.torch_reference.train_torch_dim` (the authors' step in PyTorch) on the same
  pretraining images (``load_split(dataset, "pretrain", data_dir)``) for the same epochs and batch size, then
  :func:`dim_keras.runs.train.linear_probe` of :func:`~dim_keras.runs.torch_reference.torch_encoder_fn` on the
  same probe data (:func:`dim_keras.runs.train.load_probe_data`): the same protocol, standardised features and
  logistic regression trained on every probe label.

The result (``compare_quality.json``, written atomically) holds, per arm and feature (``conv``, ``fc``, ``y``),
the mean and sample standard deviation (ddof = 1; null for one seed) of the test accuracy over seeds and the
per-seed values, plus every run's wall time; :func:`table` prints it as markdown.  ``compare_quality.png``
plots the linear-probe accuracy against epochs of the dim_keras recipes, read from each run's
``metrics.json`` (``probe_linear_conv``, ``probe_linear_fc``, ``probe_linear_y``, written by the training
app's probe monitor).

A finished run leaves ``arm_result.json`` in its directory; rerunning with the same ``--output_dir`` and
settings reuses it, and an unfinished dim_keras run continues from its last checkpoint (``--resume``).
"""

import json
import math
import os
import time
import warnings

import numpy as np

from dim_keras import io
from dim_keras.config import QUALITY_ARMS, finished_record, to_dict, validate
from dim_keras.errors import UsageError

FEATURES = ("conv", "fc", "y")
RECIPE_ARMS = tuple(arm for arm in QUALITY_ARMS if arm not in ("torch", "random_init"))
RESULTS_JSON = "compare_quality.json"
FIGURE_PNG = "compare_quality.png"
ARM_RESULT = "arm_result.json"  # a finished arm-seed run's record, reused by a rerun with the same settings
TORCH_WEIGHTS = "torch_dim.pt"  # the torch arm's trained networks (TorchDIM.save), for inspection
ALL_LABELS = "all_labels"
# Settings that do not change what a dim_keras run learns: a finished run is reused whatever they were.
_RUN_ONLY_SETTINGS = ("output_dir", "resume", "verbose", "jit_compile", "keep_checkpoints", "keras_optimizer_state",
                      "download")
# What the encoder at its initialisation does not depend on.
_TRAINING_SETTINGS = ("epochs", "steps_per_epoch", "batch_size", "learning_rate", "monitor_every", "monitor_examples")


def run_dir(config, arm, seed):
    return os.path.join(config.output_dir, f"{arm}-seed{seed}")


def mean_std(values):
    """``(mean, sample std with ddof=1)`` of ``values``; the std is None for a single value."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _accuracies(probe, column=ALL_LABELS):
    return {name: float(probe[name][column]) for name in FEATURES}


def _scarce_column(probe):
    return next((c for c in probe[FEATURES[0]] if c.endswith("_labels_per_class")), None)


def _chosen_c(probe):
    """``{feature: {column: C}}``: the inverse L2 strengths ``--probe_c=cv`` chose (``linear_probe``'s
    ``chosen_C``); None when the probe used a fixed C."""
    chosen = {name: probe[name]["chosen_C"] for name in FEATURES if "chosen_C" in probe[name]}
    return chosen or None


def _training_timer():
    """A keras callback that adds up the seconds of each epoch's training steps: from the epoch's start to
    its last batch's end, so the epoch-end work (probe monitor, checkpoint, metrics.json) is left out."""
    import keras

    class TrainingTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_s, self.batches = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._last = time.perf_counter()
            self._count = 0

        def on_train_batch_end(self, batch, logs=None):
            self._last = time.perf_counter()
            self._count += 1

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_s.append(self._last - self._start)
            self.batches.append(self._count)

    return TrainingTimer()


# ------------------------------------------------------------------------------------------ reuse
def _settings_of(train_config):
    """What a record stores of ``train_config``: every setting but the run-only ones, spelled out
    (:meth:`~dim_keras.config.TrainConfig.spelled_out`)."""
    return {k: v for k, v in to_dict(train_config.spelled_out()).items() if k not in _RUN_ONLY_SETTINGS}


def _reusable(path, settings):
    """The finished run's record in ``path`` (its ``arm_result.json``) when it was made with ``settings``
    (:func:`dim_keras.config.finished_record`); None when there is none."""
    return finished_record(path, ARM_RESULT, settings, "run")


def _finish_record(path, record, probe, random_init_probe=None):
    """Adds the label-scarce probe column (when the probe has one; with ``random_init_probe``'s too, when
    given) and the C a cross-validated probe chose to ``record`` and writes it as ``path``'s
    ``arm_result.json``, the mark of a finished run; returns it."""
    scarce = _scarce_column(probe)
    if scarce:
        record["scarce_labels"] = {"column": scarce, "probe": _accuracies(probe, scarce)}
        if random_init_probe is not None:
            record["scarce_labels"]["random_init_probe"] = _accuracies(random_init_probe, scarce)
    if (chosen := _chosen_c(probe)) is not None:
        record["probe_C"] = chosen
    os.makedirs(path, exist_ok=True)
    io.write_json(os.path.join(path, ARM_RESULT), record)
    return record


# ------------------------------------------------------------------------------------------ arms
def _dim_keras_arm(config, arm, seed, log):
    """One dim_keras training run (``apps/train.py``'s path) of recipe ``arm``; its record."""
    import keras
    from dim_keras.runs.train import train
    path = run_dir(config, arm, seed)
    train_config = config.run_config(arm, seed, path)
    settings = _settings_of(train_config)
    record = _reusable(path, settings)
    if record is not None:
        log(f"{arm} seed {seed}: reusing the finished run in {path}")
        return record
    resume = os.path.exists(os.path.join(path, "checkpoints", "checkpoint"))
    train_config = config.run_config(arm, seed, path, resume=resume)
    log(f"{arm} seed {seed}: {'resuming' if resume else 'training'} {train_config.resolved_epochs()} epochs "
        f"in {path}")
    timer = _training_timer()
    start = time.perf_counter()
    result = train(train_config, extra_callbacks=(timer,), log=log)
    wall_s = time.perf_counter() - start
    keras.backend.clear_session()  # the next run builds its own model: free this one's graphs
    if "probe" not in result:
        raise UsageError(f"{train_config.dataset} gave no linear probe (it needs labelled train and test splits)")
    probe = result["probe"]
    train_s = float(sum(timer.epoch_s))
    images = sum(timer.batches) * train_config.batch_size
    record = {
        "arm": arm, "seed": seed, "output_dir": path, "epochs": result["epochs"], "settings": settings,
        "probe": _accuracies(probe["trained"]), "random_init_probe": _accuracies(probe["random_init"]),
        "wall_s": wall_s, "train_s": train_s, "images_per_s": images / train_s if train_s > 0 else None,
        "resumed": resume, "loss": [float(v) for v in result["history"].get("loss", [])],
    }
    return _finish_record(path, record, probe["trained"], random_init_probe=probe["random_init"])


def random_init_probe(train_config, log=print):
    """The linear probe of ``train_config``'s encoder at its seeded initialisation, computed as
    :func:`dim_keras.runs.train.train` computes its ``random_init`` probe (same seed, model and data)."""
    import keras
    from dim_keras.evaluation import keras_encoder_fn
    from dim_keras.runs.train import (build_model, linear_probe, load_pretraining_data, load_probe_data,
                                      set_precision)
    _, _, input_shape = load_pretraining_data(train_config)
    keras.utils.set_random_seed(train_config.seed)
    set_precision(train_config.mixed_precision)
    model = build_model(train_config, input_shape)
    probe_data = load_probe_data(train_config, train_config.probe_max_train, log=log)
    if probe_data is None:
        raise UsageError(f"{train_config.dataset} gave no linear probe (it needs labelled train and test splits)")
    probe = linear_probe(keras_encoder_fn(model.encoder), probe_data, train_config.resolved_probe_c())
    keras.backend.clear_session()
    return probe


def _random_init_arm(config, seed, recipe_records, log):
    """The random-init encoder's probe: from a recipe run of this seed, else computed alone."""
    if recipe_records:  # any recipe run of this seed: its encoder is built first after the same seeding
        record = recipe_records[0]
        derived = {"arm": "random_init", "seed": seed, "output_dir": record["output_dir"], "epochs": 0,
                   "probe": dict(record["random_init_probe"]), "wall_s": None, "train_s": 0.0,
                   "from_run": record["arm"]}
        if "scarce_labels" in record:
            derived["scarce_labels"] = {"column": record["scarce_labels"]["column"],
                                        "probe": record["scarce_labels"]["random_init_probe"]}
        return derived
    path = run_dir(config, "random_init", seed)
    train_config = config.run_config(RECIPE_ARMS[0], seed, path)
    settings = {k: v for k, v in _settings_of(train_config).items() if k not in _TRAINING_SETTINGS}
    record = _reusable(path, settings)
    if record is not None:
        return record
    log(f"random_init seed {seed}: probing the untrained encoder")
    start = time.perf_counter()
    probe = random_init_probe(train_config, log=log)
    record = {"arm": "random_init", "seed": seed, "output_dir": path, "epochs": 0, "settings": settings,
              "probe": _accuracies(probe), "wall_s": time.perf_counter() - start, "train_s": 0.0}
    return _finish_record(path, record, probe)


def _torch_arm(config, seed, threads, log):
    """The authors' step in PyTorch, trained on the dim_keras runs' pretraining images and probed alike."""
    from dim_keras.data import load_split
    from dim_keras.runs import torch_reference
    from dim_keras.runs.train import linear_probe, load_probe_data
    torch = torch_reference.import_torch(beside_tensorflow=True)
    path = run_dir(config, "torch", seed)
    train_config = config.run_config(RECIPE_ARMS[0], seed, path)  # the data, epochs and batch of every arm
    settings = {"implementation": "torch_reference", **{k: v for k, v in _settings_of(train_config).items()
                                                         if k in ("dataset", "data_dir", "epochs", "batch_size",
                                                                  "seed", "steps_per_epoch", "probe_max_train",
                                                                  "probe_c")},
                "learning_rate": train_config.resolved_learning_rate()}
    record = _reusable(path, settings)
    if record is not None:
        log(f"torch seed {seed}: reusing the finished run in {path}")
        return record
    # The dim_keras runs' pretraining images (load_pretraining_data's split), as one array.
    split = load_split(train_config.dataset, "pretrain", train_config.data_dir, download=train_config.download,
                       image_size=train_config.image_size, streaming="off")
    probe_data = load_probe_data(train_config, train_config.probe_max_train, log=log)
    if probe_data is None:
        raise UsageError(f"{train_config.dataset} gave no linear probe (it needs labelled train and test splits)")
    epochs = train_config.resolved_epochs()
    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # a CUDA build of torch on a machine without a GPU warns here
        warnings.simplefilter("ignore", UserWarning)
        device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"torch seed {seed}: training {epochs} epochs of the authors' step on {len(split)} images ({device}, "
        f"{threads} threads)")
    start = time.perf_counter()
    trained = torch_reference.train_torch_dim(
        split.images, epochs, seed=seed, batch_size=train_config.batch_size,
        learning_rate=train_config.resolved_learning_rate(),
        steps_per_epoch=train_config.steps_per_epoch, device=device, log=log if train_config.verbose else None)
    probe = linear_probe(torch_reference.torch_encoder_fn(trained["model"]), probe_data,
                         train_config.resolved_probe_c())
    wall_s = time.perf_counter() - start
    trained["model"].save(os.path.join(path, TORCH_WEIGHTS))
    record = {
        "arm": "torch", "seed": seed, "output_dir": path, "epochs": epochs, "settings": settings,
        "probe": _accuracies(probe), "wall_s": wall_s, "train_s": trained["wall_s"],
        "images_per_s": trained["images_per_s"], "loss": [h["loss"] for h in trained["history"]],
        "threads": trained["threads"], "device": trained["device"], "torch_version": trained["torch_version"],
    }
    return _finish_record(path, record, probe)


# ------------------------------------------------------------------------------------------ summary
def summarise(runs):
    """``{arm: {"features": {feature: {"mean", "std", "per_seed"}}, "seeds", "epochs", "wall_s", ...}}`` of
    ``runs`` (``{arm: [record per seed]}``)."""
    arms = {}
    for arm, records in runs.items():
        features = {}
        for name in FEATURES:
            values = [record["probe"][name] for record in records]
            mean, std = mean_std(values)
            features[name] = {"mean": mean, "std": std, "per_seed": values}
        walls = [record["wall_s"] for record in records]
        trains = [record.get("train_s") for record in records]
        arms[arm] = {
            "features": features, "seeds": [record["seed"] for record in records],
            "epochs": records[0]["epochs"],
            "wall_s": {"per_seed": walls, "mean": None if None in walls else mean_std(walls)[0]},
            "train_s": {"per_seed": trains, "mean": None if None in trains else mean_std(trains)[0]},
            "images_per_s": {"per_seed": [record.get("images_per_s") for record in records]},
            "runs": records,
        }
    return arms


def _cell(feature):
    text = f"{100 * feature['mean']:.2f}"
    return text + (f" ± {100 * feature['std']:.2f}" if feature["std"] is not None else "") + " %"


def table(result):
    """The markdown table of a :func:`compare_quality` result."""
    lines = ["| arm | conv | fc | y | epochs | seeds | wall time per run | training images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, summary in result["arms"].items():
        wall = summary["wall_s"]["mean"]
        speeds = [v for v in summary["images_per_s"]["per_seed"] if v]
        lines.append(
            f"| {arm} | " + " | ".join(_cell(summary["features"][name]) for name in FEATURES)
            + f" | {summary['epochs']} | {len(summary['seeds'])} | "
            + (f"{wall:.0f} s" if wall is not None else "–") + " | "
            + (f"{np.mean(speeds):.1f}" if speeds else "–") + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ figure
def _monitor_curves(records):
    """``{feature: (epochs, mean, std)}`` over the seeds' ``metrics.json`` (epochs every seed measured), and the
    output dirs of the runs without ``probe_linear_*``."""
    per_seed, missing = [], []
    for record in records:
        try:
            with open(os.path.join(record["output_dir"], "metrics.json")) as handle:
                rows = json.load(handle)
        except (OSError, ValueError):
            rows = []
        curves = {name: {int(row["epoch"]): float(row[f"probe_linear_{name}"]) for row in rows
                         if f"probe_linear_{name}" in row and math.isfinite(row[f"probe_linear_{name}"])}
                  for name in FEATURES}
        if not any(curves.values()):
            missing.append(record["output_dir"])
        else:
            per_seed.append(curves)
    result = {}
    for name in FEATURES:
        if not per_seed:
            break
        epochs = sorted(set.intersection(*(set(curves[name]) for curves in per_seed)))
        values = np.array([[curves[name][e] for e in epochs] for curves in per_seed], dtype=np.float64)
        if epochs:
            result[name] = (epochs, values.mean(axis=0), values.std(axis=0, ddof=1) if len(values) > 1 else None)
    return result, missing


def plot(result, path):
    """``path``: linear-probe accuracy against epochs of the dim_keras recipes (the probe monitor's
    ``probe_linear_*`` in their ``metrics.json``: probes on ``--monitor_examples`` images), and every arm's
    final probe (on all the probe's labels) as a marker at its epochs.  Returns ``(path or None, note)``."""
    from dim_keras.figures import drawing, pyplot
    curves, notes = {}, []
    for arm in result["arms"]:
        if arm not in RECIPE_ARMS:
            continue
        arm_curves, missing = _monitor_curves(result["arms"][arm]["runs"])
        if missing:
            notes.append(f"no probe_linear_* in the metrics.json of {', '.join(missing)}")
        if arm_curves:
            curves[arm] = arm_curves
    if not curves:
        return None, "; ".join(notes) or "no dim_keras recipe among the arms: nothing to plot"
    plt = pyplot()
    figure, axes = plt.subplots(1, len(FEATURES), figsize=(4.2 * len(FEATURES), 3.6), sharex=True)
    colours = {"paper": "tab:blue", "improved": "tab:green", "torch": "tab:red", "random_init": "tab:gray"}
    with drawing(figure, path):
        for axis, name in zip(axes, FEATURES):
            for arm, arm_curves in curves.items():
                if name not in arm_curves:
                    continue
                epochs, mean, std = arm_curves[name]
                axis.plot(epochs, 100 * mean, marker="o", markersize=3, color=colours.get(arm), label=arm)
                if std is not None:
                    axis.fill_between(epochs, 100 * (mean - std), 100 * (mean + std), color=colours.get(arm),
                                      alpha=0.2)
            # Every arm's final probe (all the probe's labels; the monitor's curves use a subsample, so the two
            # differ by the probe's size): recipes hollow, the authors' step a square, random init a cross.
            for arm, summary in result["arms"].items():
                if "features" not in summary:
                    continue
                feature = summary["features"][name]
                marker = {"torch": "s", "random_init": "x"}.get(arm, "o")
                axis.errorbar([summary["epochs"]], [100 * feature["mean"]],
                              yerr=None if feature["std"] is None else [100 * feature["std"]], marker=marker,
                              markerfacecolor="none" if arm in RECIPE_ARMS else colours.get(arm),
                              color=colours.get(arm), linestyle="none", capsize=3, label=f"{arm}: final probe")
            axis.set_title(f"{name}")
            axis.set_xlabel("epoch")
            axis.set_ylabel("linear-probe test accuracy (%)")
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        figure.suptitle(f"{result['dataset']}: linear probe during training (lines: probe monitor) and after it "
                        f"(markers: final probe); mean ± std over seeds", fontsize=10)
    return path, "; ".join(notes)


# ------------------------------------------------------------------------------------------ run
def compare_quality(config, log=print):
    """Trains and probes every arm of ``config`` for every seed; returns the result dict (also written to
    ``<output_dir>/compare_quality.json``).  UsageError for bad settings or data."""
    validate(config)
    import tensorflow as tf
    from dim_keras.runs.benchmark import configure_threads
    threads = configure_threads(tf, config.threads)
    if "torch" in config.arms:  # before hours of the other arms' training, not after
        from dim_keras.runs import torch_reference
        from dim_keras.runs.train import load_pretraining_data
        _, _, input_shape = load_pretraining_data(config.run_config(RECIPE_ARMS[0], config.seeds[0], None))
        torch_reference.check_torch_input_shape((None, *input_shape))
    os.makedirs(config.output_dir, exist_ok=True)
    recipes = [arm for arm in config.arms if arm in RECIPE_ARMS]
    runs = {arm: [] for arm in config.arms}
    for seed in config.seeds:
        records = {arm: _dim_keras_arm(config, arm, seed, log) for arm in recipes}
        if "random_init" in config.arms:
            runs["random_init"].append(_random_init_arm(config, seed, list(records.values()), log))
        if "torch" in config.arms:
            runs["torch"].append(_torch_arm(config, seed, threads, log))
        for arm, record in records.items():
            runs[arm].append(record)
    result = {
        "dataset": config.train.dataset, "data_dir": config.train.data_dir,
        "epochs": config.train.resolved_epochs(), "seeds": list(config.seeds), "threads": threads,
        "probe": "linear probe (standardised features, logistic regression) trained on all probe labels: test "
                 "accuracy; std over seeds with ddof=1",
        "arms": summarise(runs), "config": to_dict(config),
    }
    figure, note = plot(result, os.path.join(config.output_dir, FIGURE_PNG))
    result.update(figure=figure, figure_note=note)
    io.write_json(os.path.join(config.output_dir, RESULTS_JSON), result)
    return result


def summary_lines(result):
    """What the app prints: the table, then where the JSON and the figure went."""
    lines = [f"{result['dataset']}, {result['epochs']} epochs, seeds {','.join(map(str, result['seeds']))}: linear-"
             f"probe test accuracy (mean ± std over seeds)", table(result)]
    torch_arm = result["arms"].get("torch")
    if torch_arm:
        speeds = [v for v in torch_arm["images_per_s"]["per_seed"] if v]
        lines.append(f"torch step: {np.mean(speeds):.1f} images/s ({result['threads']} threads)")
    lines.append(f"results: {os.path.join(result['config']['output_dir'], RESULTS_JSON)}")
    if result["figure"]:
        lines.append(f"figure: {result['figure']}" + (f" ({result['figure_note']})" if result["figure_note"] else ""))
    else:
        lines.append(f"figure skipped: {result['figure_note']}")
    return lines
