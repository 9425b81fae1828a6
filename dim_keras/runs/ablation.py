"""Ablation of DIM's objective weights alpha, beta, gamma with keras-tuner (Sec. 4.3, Fig. 10).

Section 4.3 / Fig. 10 of the paper varies alpha (global MI), beta (local MI)
and gamma (prior matching) of eq. 8 and reports classification accuracy,
MS-SSIM, MINE and NDM of the representation.  Every trial trains one DIM run
(:func:`dim_keras.runs.train.train` with ``config.train`` and the trial's
weights) into ``<search_dir>/trials/<trial_id>`` and then measures its
encoder's Y with :mod:`dim_keras.evaluation`; keras-tuner chooses the next
(alpha, beta, gamma) from the objective:

- ``probe_accuracy`` (max): logistic-regression accuracy on Y (test split),
- ``ms_ssim`` (max): MS-SSIM of a decoder trained to reconstruct X from Y,
- ``mine`` (max): MINE estimate of I(X; Y) in nats,
- ``ndm`` (min): neural dependency measure of Y in nats (lower = more independent).

Interrupted searches resume: a second :func:`search` with the same
``search_dir`` reloads the keras-tuner oracle and skips finished trials; a
trial killed mid-training continues from its last epoch checkpoint.  Once a
trial's ``measures.json`` is written its checkpoints and ``model.keras`` are
removed (``keep_trial_models`` keeps them); its exported ``encoder``,
``config.json``, ``metrics.json`` and logs stay.

Writes ``results.json``, ``results.csv`` (one row per trial: the weights, the
objective and every measure) and one PNG per (measure, gamma): a heatmap over
(alpha, beta) with annotated cells in grid mode, an annotated scatter in
Bayesian mode.  Every file goes through :mod:`dim_keras.io` (atomic).

Combinations with alpha = beta = 0 have no MI term; they are recorded as
failed trials (objective empty) and the search goes on.
"""

import csv
import dataclasses
import itertools
import json
import math
import os

import keras_tuner as kt
import numpy as np

from dim_keras import io
from dim_keras.choices import ABLATION_OBJECTIVES
from dim_keras.config import to_dict, validate
from dim_keras.errors import TrainingDiverged, UsageError

PROJECT_NAME = "dim_ablation"
WEIGHTS = ("alpha", "beta", "gamma")
# Ablation measure -> dim_keras.evaluation metric (all measured on Y).
METRICS = {"probe_accuracy": "logistic", "ms_ssim": "ms_ssim", "mine": "mine", "ndm": "ndm"}


# ------------------------------------------------------------ measuring
def measure_encoder(encoder_fn, config, measures):
    """``{measure: value}`` of ``measures`` on Y of ``encoder_fn`` (uint8 images -> features).

    The measures train on at most ``config.eval_max_train`` training images
    (:func:`dim_keras.data.subsample`, seeded by ``config.train.seed``) and
    score the test split; ``probe_accuracy`` is left out on unlabelled data.
    """
    from dim_keras.data import dataset_defaults, load_evaluation_data
    from dim_keras.evaluation import FeatureSet, evaluate_representation

    train_config = config.train
    data = load_evaluation_data(  # cropped to the encoder's input size (e.g. STL-10's central 64 x 64)
        train_config.dataset, train_config.data_dir, download=train_config.download,
        image_size=train_config.image_size, max_train=config.eval_max_train, seed=train_config.seed,
        crop=dataset_defaults(train_config.dataset, train_config.data_dir)["eval_crop"])
    labelled = data.label_kind == "class"
    features = FeatureSet.from_encoder(
        encoder_fn, data.train_images, data.test_images,
        data.train_labels if labelled else None, data.test_labels if labelled else None, names=("y",))
    wanted = [m for m in measures if m != "probe_accuracy" or labelled]
    metrics = [METRICS[m] for m in wanted]
    options = {name: {"epochs": config.eval_epochs} for name in ("ms_ssim", "mine", "ndm") if name in metrics}
    result = evaluate_representation(features, metrics=metrics, layers=["y"], estimator_layer="y",
                                     seed=train_config.seed, options=options)
    return {m: float(result["measures"][METRICS[m]]["y"]) for m in wanted}


# --------------------------------------------------------------- tuners
class GridOracle(kt.Oracle):
    """Every (alpha, beta, gamma) of the grid once, in order.

    keras-tuner's GridSearchOracle keeps its queue of next combinations
    outside its saved state, so a reloaded search stops after the trials
    that already ran; this oracle derives the next combination from the
    saved trials alone, which makes resuming exact.
    """

    def __init__(self, grid, **kwargs):
        self.grid = [tuple(float(v) for v in combo) for combo in grid]
        super().__init__(**kwargs)

    def populate_space(self, trial_id):
        tried = {tuple(float(t.hyperparameters.values[n]) for n in WEIGHTS) for t in self.trials.values()}
        for combo in self.grid:
            if combo not in tried:
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": dict(zip(WEIGHTS, combo))}
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}


class _AblationTuner:
    """Mixin: a trial = one :func:`dim_keras.runs.train.train` run + the measures of its encoder."""

    def __init__(self, ablation_config, **kwargs):
        self.ablation_config = ablation_config
        self.trainings_run = 0  # trainings started by this process (resume checks)
        super().__init__(**kwargs)

    def trial_dir(self, trial_id):
        return os.path.join(self.ablation_config.search_dir, "trials", str(trial_id))

    def run_trial(self, trial, *args, **kwargs):
        from dim_keras.export import load_encoder
        from dim_keras.runs.train import train

        config = self.ablation_config
        alpha, beta, gamma = (float(trial.hyperparameters.get(name)) for name in WEIGHTS)
        if alpha == 0 and beta == 0:
            raise kt.errors.FailedTrialError("alpha = beta = 0: no MI term to maximise")
        out_dir = self.trial_dir(trial.trial_id)
        measures_path = os.path.join(out_dir, "measures.json")
        finished = _read_measures(measures_path, (alpha, beta, gamma))
        if finished is not None:  # killed after measuring, before keras-tuner recorded the trial
            self.remove_models(out_dir)
            return finished
        train_config = dataclasses.replace(
            config.train, alpha=alpha, beta=beta, gamma=gamma, output_dir=out_dir, probe=False,
            # A trial killed mid-training continues from its last epoch checkpoint.
            resume=os.path.exists(os.path.join(out_dir, "checkpoints", "checkpoint")))
        self.trainings_run += 1
        try:
            result = train(train_config, log=lambda *a: None)
            measures = measure_encoder(load_encoder(result["encoder"]), config, config.all_measures())
        except TrainingDiverged as err:
            raise kt.errors.FailedTrialError(str(err)) from None
        except UsageError as err:  # missing or corrupt data fails every trial alike: stop the search
            raise _StopSearch(err) from None
        for name, value in measures.items():
            if not math.isfinite(value):
                self.remove_models(out_dir)
                raise kt.errors.FailedTrialError(f"{name} is not finite")
        io.write_json(measures_path, {"alpha": alpha, "beta": beta, "gamma": gamma, **measures})
        self.remove_models(out_dir)
        return measures

    def remove_models(self, out_dir):
        """Removes a measured trial's checkpoints and model.keras (unless ``keep_trial_models``).

        Nothing needs them any more: results come from measures.json, and keras-tuner never reruns
        a completed trial (nor :meth:`run_trial` a measured one).  The exported encoder stays.
        """
        if not self.ablation_config.keep_trial_models:
            for name in ("checkpoints", "model.keras"):
                io.remove(os.path.join(out_dir, name))

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        write_results(self.ablation_config, collect_rows(self))


def _read_measures(path, weights):
    """The measures in a trial's ``measures.json`` if it holds ``weights`` (alpha, beta, gamma), else None."""
    try:
        with open(path) as handle:
            measured = json.load(handle)
    except (OSError, ValueError):
        return None
    if tuple(measured.get(name) for name in WEIGHTS) != tuple(weights):
        return None
    return {k: v for k, v in measured.items() if k not in WEIGHTS}


class _StopSearch(kt.errors.FatalError):
    """Carries a user mistake found in a trial out of keras-tuner (which records other errors as failed
    trials and goes on); :func:`search` raises the UsageError again."""

    def __init__(self, usage_error):
        super().__init__(str(usage_error))
        self.usage_error = usage_error


class GridAblation(_AblationTuner, kt.Tuner):
    pass


class BayesianAblation(_AblationTuner, kt.BayesianOptimization):
    pass


def make_tuner(config):
    """The keras-tuner tuner of ``config`` (reloads ``search_dir`` if it holds a search)."""
    hp = kt.HyperParameters()
    objective = kt.Objective(config.objective, ABLATION_OBJECTIVES[config.objective])
    common = dict(ablation_config=config, directory=config.search_dir, project_name=PROJECT_NAME,
                  overwrite=False)
    if config.mode == "grid":
        for name, values in zip(WEIGHTS, (config.alphas, config.betas, config.gammas)):
            hp.Choice(name, list(values), ordered=True)
        grid = list(itertools.product(config.alphas, config.betas, config.gammas))
        oracle = GridOracle(
            grid, objective=objective, hyperparameters=hp,
            max_trials=min(config.max_trials or len(grid), len(grid)), seed=config.train.seed,
            # Invalid (alpha = beta = 0) trials fail on purpose; never stop the search for them.
            max_consecutive_failed_trials=len(grid) + 1)
        return GridAblation(oracle=oracle, **common)
    for name, (low, high) in zip(WEIGHTS, (config.alpha_range, config.beta_range, config.gamma_range)):
        hp.Float(name, low, high)
    return BayesianAblation(hyperparameters=hp, objective=objective, max_trials=config.max_trials,
                            seed=config.train.seed, max_consecutive_failed_trials=config.max_trials + 1,
                            **common)


# ---------------------------------------------------------------- results
def collect_rows(tuner):
    """One dict per trial (sorted by id): weights, status, objective, measures."""
    rows = []
    objective = tuner.ablation_config.objective
    for trial_id, trial in sorted(tuner.oracle.trials.items(), key=lambda item: int(item[0])):
        row = {"trial_id": trial_id, "status": str(trial.status),
               **{name: float(trial.hyperparameters.values[name]) for name in WEIGHTS}, "objective": None}
        path = os.path.join(tuner.trial_dir(trial_id), "measures.json")
        if trial.status == "COMPLETED" and os.path.exists(path):
            with open(path) as handle:
                measured = json.load(handle)
            row.update({k: v for k, v in measured.items() if k not in WEIGHTS})
            row["objective"] = row.get(objective)
        rows.append(row)
    return rows


def write_csv(path, rows, measures):
    """One line per trial; empty cells for what a trial did not measure."""
    columns = ["trial_id", "status", *WEIGHTS, "objective", *measures]
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return path


def write_results(config, rows):
    """Writes results.json, results.csv and the figures; returns the summary (results.json's content)."""
    measures = config.all_measures()
    direction = ABLATION_OBJECTIVES[config.objective]
    summary = {"objective": config.objective, "direction": direction, "mode": config.mode,
               "measures": measures, "config": to_dict(config), "trials": rows}
    completed = [r for r in rows if r["objective"] is not None]
    if completed:
        pick = max if direction == "max" else min
        summary["best"] = pick(completed, key=lambda r: r["objective"])
    io.write_json(os.path.join(config.search_dir, "results.json"), summary)
    write_csv(os.path.join(config.search_dir, "results.csv"), rows, measures)
    plot_heatmaps(rows, measures, config.search_dir, config.mode)
    return summary


# ---------------------------------------------------------------- figures
def heatmap_grid(rows, measure, gamma):
    """``(alphas, betas, grid)``: ``grid[i, j]`` is ``measure`` of the completed trial at
    (``alphas[j]``, ``betas[i]``, ``gamma``), NaN where that trial failed or is missing.
    The axes hold every alpha and beta of ``rows`` (all gammas), so the heatmaps line up."""
    alphas = sorted({r["alpha"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    grid = np.full((len(betas), len(alphas)), np.nan)
    for r in rows:
        if r["status"] == "COMPLETED" and r["gamma"] == gamma and r.get(measure) is not None:
            grid[betas.index(r["beta"]), alphas.index(r["alpha"])] = r[measure]
    return alphas, betas, grid


def heatmap_figure(rows, measure, gamma):
    """Fig. 10 style: a cell per (alpha, beta) at ``gamma``, coloured and annotated with
    ``measure``; failed or missing trials are blank.  Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    alphas, betas, grid = heatmap_grid(rows, measure, gamma)
    figure = Figure(figsize=(1.2 * len(alphas) + 2, 1.0 * len(betas) + 1.5))
    axes = figure.subplots()
    image = axes.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            # Dark text on the bright end of viridis, light text on the dark end.
            color = "black" if image.norm(value) > 0.5 else "white"
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", color=color, fontsize=9)
    axes.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    axes.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
    axes.set_xlabel("alpha (global MI)")
    axes.set_ylabel("beta (local MI)")
    axes.set_title(f"{measure}, gamma = {gamma:g}")
    figure.colorbar(image, ax=axes)
    return figure


def scatter_figure(rows, measure):
    """Bayesian mode: the completed trials at their (alpha, beta), coloured and annotated with
    ``measure`` and gamma.  Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    points = [r for r in rows if r["status"] == "COMPLETED" and r.get(measure) is not None]
    if points:
        scatter = axes.scatter([r["alpha"] for r in points], [r["beta"] for r in points],
                               c=[r[measure] for r in points], cmap="viridis", s=80)
        figure.colorbar(scatter, ax=axes)
        for r in points:
            axes.annotate(f"{r[measure]:.3g} (g={r['gamma']:.2g})", (r["alpha"], r["beta"]),
                          fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes.set_xlabel("alpha (global MI)")
    axes.set_ylabel("beta (local MI)")
    axes.set_title(measure)
    return figure


def _save_png(figure, path):
    with io.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def plot_heatmaps(rows, measures, out_dir, mode="grid"):
    """Writes one PNG per (measure, gamma) in grid mode (:func:`heatmap_figure`), one per
    measure otherwise (:func:`scatter_figure`); returns the paths."""
    paths = []
    for measure in measures:
        if mode == "grid":
            for gamma in sorted({r["gamma"] for r in rows}):
                paths.append(_save_png(heatmap_figure(rows, measure, gamma),
                                       os.path.join(out_dir, f"heatmap_{measure}_gamma{gamma:g}.png")))
        else:
            paths.append(_save_png(scatter_figure(rows, measure), os.path.join(out_dir, f"scatter_{measure}.png")))
    return paths


# ------------------------------------------------------------------- run
def search(config):
    """Runs (or resumes) the search of an :class:`dim_keras.config.AblationConfig`.

    Returns ``{"rows": [...], "best": row or None, "trainings_run": int,
    "results": path of results.csv}``; ``rows`` are results.json's trials.
    Raises UsageError for a bad config before any trial.
    """
    validate(config)
    os.makedirs(config.search_dir, exist_ok=True)
    io.remove_temporaries(config.search_dir)  # left by a killed search
    tuner = make_tuner(config)
    try:
        tuner.search()
    except _StopSearch as stop:
        raise stop.usage_error from None
    except KeyboardInterrupt as interrupt:  # the trial's "--resume" hint is not the search's: drop it
        raise type(interrupt)() from None
    summary = write_results(config, collect_rows(tuner))
    return {"rows": summary["trials"], "best": summary.get("best"), "trainings_run": tuner.trainings_run,
            "results": os.path.join(config.search_dir, "results.csv")}
