"""Ablation of DIM's objective weights alpha, beta, gamma with keras-tuner (Fig. 10).

    python tuning/ablation.py --alphas=0,0.5,1 --betas=0,1 --gammas=0.1,1
    python tuning/ablation.py --mode=bayesian --max_trials=20 --objective=ndm

Section 4.3 / Fig. 10 of the paper varies alpha (global MI), beta (local MI)
and gamma (prior matching) of eq. 8 and reports classification accuracy,
MS-SSIM, MINE and NDM of the representation.  Every trial trains one DIM run
(`dim_keras.training.train`) into ``<search_dir>/trials/<trial_id>`` and then
measures its encoder's Y with `dim_keras.evaluation`; keras-tuner chooses the
next (alpha, beta, gamma) from the objective.

Interrupted searches resume: rerunning with the same ``--search_dir`` reloads
the keras-tuner oracle (``overwrite=False``) and skips finished trials.

Writes ``results.json``, ``results.csv`` (one row per trial: the weights, the
objective and every measure) and one PNG per (measure, gamma): a heatmap over
(alpha, beta) with annotated cells in grid mode, an annotated scatter in
Bayesian mode.  Every file is written atomically.

Combinations with alpha = beta = 0 have no MI term; they are recorded as
failed trials (objective empty) and the search goes on.
"""

import csv
import dataclasses
import io
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags, logging  # noqa: E402

from dim_keras import cli  # noqa: E402
from dim_keras.choices import DATASETS, ESTIMATORS, STRATEGIES  # noqa: E402
from dim_keras.config import UsageError  # noqa: E402

# name -> (keras-tuner direction, what it measures)
OBJECTIVES = {
    "probe_accuracy": ("max", "logistic-regression accuracy on Y (test split)"),
    "ms_ssim": ("max", "MS-SSIM of a decoder trained to reconstruct X from Y"),
    "mine": ("max", "MINE estimate of I(X; Y) in nats"),
    "ndm": ("min", "neural dependency measure of Y in nats (lower = more independent)"),
}
MODES = ("grid", "bayesian")
PROJECT_NAME = "dim_ablation"


@dataclasses.dataclass
class AblationConfig:
    """Settings of one search (the flags of this app)."""
    search_dir: str = "saved_models/ablation"
    mode: str = "grid"
    objective: str = "probe_accuracy"
    measures: tuple = ()  # measured besides the objective (probe_accuracy always is)
    alphas: tuple = (0.0, 0.5, 1.0)
    betas: tuple = (0.0, 0.5, 1.0)
    gammas: tuple = (0.1,)
    alpha_range: tuple = (0.0, 1.0)
    beta_range: tuple = (0.0, 1.0)
    gamma_range: tuple = (0.0, 1.0)
    max_trials: int = None
    dataset: str = "digits"
    data_dir: str = None
    epochs: int = 5
    steps_per_epoch: int = None
    batch_size: int = 64
    embedding_dim: int = 2048
    y_dim: int = 64
    estimator: str = "jsd"
    strategy: str = "default"
    jit_compile: bool = True
    seed: int = 0
    eval_epochs: int = 20
    eval_max_train: int = 10000
    verbose: int = 0

    def all_measures(self):
        names = ["probe_accuracy", self.objective, *self.measures]
        return list(dict.fromkeys(names))


def parse_floats(text, name):
    """``"0,0.5,1"`` -> (0.0, 0.5, 1.0); UsageError (one line) otherwise."""
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--{name} must be a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"--{name} is empty")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise UsageError(f"--{name} values must be finite and >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise UsageError(f"--{name} lists a value twice: {text!r}")
    return values


def validate(config):
    """Raises UsageError for every bad setting before TensorFlow work starts."""
    if config.mode not in MODES:
        raise UsageError(f"unknown mode {config.mode!r}; choose one of {', '.join(MODES)}")
    for name in config.all_measures():
        if name not in OBJECTIVES:
            raise UsageError(f"unknown measure {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if config.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    if config.estimator not in ESTIMATORS:
        raise UsageError(f"unknown estimator {config.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if config.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for name in ("alpha_range", "beta_range", "gamma_range"):
        low, high = getattr(config, name)
        if not low < high:
            raise UsageError(f"--{name} must be low,high with low < high, got {low},{high}")
    if config.mode == "bayesian" and not config.max_trials:
        raise UsageError("--mode=bayesian needs --max_trials")
    if config.max_trials is not None and config.max_trials < 1:
        raise UsageError(f"--max_trials must be >= 1, got {config.max_trials}")
    for name in ("epochs", "batch_size", "embedding_dim", "y_dim", "eval_epochs", "eval_max_train"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(config, name)}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise UsageError(f"--steps_per_epoch must be >= 1, got {config.steps_per_epoch}")
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise UsageError(f"data dir {config.data_dir} does not exist")


# ----------------------------------------------------------------- files
def _write_atomically(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _rows_to_csv(rows, measures):
    out = io.StringIO()
    columns = ["trial_id", "status", "alpha", "beta", "gamma", "objective", *measures]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue().encode()


def _figure_png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def plot_heatmaps(rows, measures, out_dir, mode="grid"):
    """One PNG per (measure, gamma) in grid mode, one per measure otherwise.

    Fig. 10 style: a cell per (alpha, beta), coloured and annotated with the
    measure; failed or missing trials are blank.  Returns the written paths.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in rows if r["status"] == "COMPLETED"]
    paths = []
    for measure in measures:
        if mode == "grid":
            for gamma in sorted({r["gamma"] for r in rows}):
                alphas = sorted({r["alpha"] for r in rows})
                betas = sorted({r["beta"] for r in rows})
                grid = np.full((len(betas), len(alphas)), np.nan)
                for r in done:
                    if r["gamma"] == gamma and r.get(measure) is not None:
                        grid[betas.index(r["beta"]), alphas.index(r["alpha"])] = r[measure]
                figure, axes = plt.subplots(figsize=(1.2 * len(alphas) + 2, 1.0 * len(betas) + 1.5))
                image = axes.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis")
                for i in range(len(betas)):
                    for j in range(len(alphas)):
                        if np.isfinite(grid[i, j]):
                            # Dark text on the bright end of viridis, light text on the dark end.
                            bright = image.norm(grid[i, j]) > 0.5
                            axes.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center",
                                      color="black" if bright else "white", fontsize=9)
                axes.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
                axes.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
                axes.set_xlabel("alpha (global MI)")
                axes.set_ylabel("beta (local MI)")
                axes.set_title(f"{measure}, gamma = {gamma:g}")
                figure.colorbar(image, ax=axes)
                path = os.path.join(out_dir, f"heatmap_{measure}_gamma{gamma:g}.png")
                _write_atomically(path, _figure_png(figure))
                plt.close(figure)
                paths.append(path)
        else:
            figure, axes = plt.subplots(figsize=(6, 5))
            points = [r for r in done if r.get(measure) is not None]
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
            path = os.path.join(out_dir, f"scatter_{measure}.png")
            _write_atomically(path, _figure_png(figure))
            plt.close(figure)
            paths.append(path)
    return paths


# ------------------------------------------------------------ measuring
def measure_encoder(encoder_fn, config, measures):
    """Every measure of ``measures`` on Y of ``encoder_fn`` (uint8 -> features)."""
    import numpy as np

    from dim_keras.data import DataError, load_split
    from dim_keras.evaluation import FeatureSet, evaluate_representation

    try:
        train = load_split(config.dataset, "train", config.data_dir)
        test = load_split(config.dataset, "test", config.data_dir)
    except DataError as err:
        raise UsageError(str(err)) from None
    keep = np.sort(np.random.default_rng(config.seed).permutation(len(train))[:config.eval_max_train])
    labelled = train.labels is not None and train.label_kind == "class"
    features = FeatureSet.from_encoder(
        encoder_fn, train.images[keep], test.images,
        train.labels[keep] if labelled else None, test.labels if labelled else None, names=("y",))
    metric_names = {"probe_accuracy": "logistic", "ms_ssim": "ms_ssim", "mine": "mine", "ndm": "ndm"}
    wanted = [m for m in measures if m != "probe_accuracy" or labelled]
    options = {name: {"epochs": config.eval_epochs} for name in ("ms_ssim", "mine", "ndm")}
    metrics = [metric_names[m] for m in wanted]
    result = evaluate_representation(
        features, metrics=metrics, layers=["y"], estimator_layer="y", seed=config.seed,
        options={k: v for k, v in options.items() if k in metrics})
    return {m: float(result["measures"][metric_names[m]]["y"]) for m in wanted}


# --------------------------------------------------------------- tuners
class _AblationTuner:
    """Mixin: a trial = one `training.train` run + measures of its encoder."""

    def __init__(self, ablation_config, **kwargs):
        self.ablation_config = ablation_config
        self.trainings_run = 0  # trainings started by this process (resume checks)
        super().__init__(**kwargs)

    def trial_dir(self, trial_id):
        return os.path.join(self.ablation_config.search_dir, "trials", str(trial_id))

    def run_trial(self, trial, *args, **kwargs):
        import keras_tuner as kt

        from dim_keras import training
        from dim_keras.export import load_encoder

        cfg = self.ablation_config
        hp = trial.hyperparameters
        alpha, beta, gamma = (float(hp.get(name)) for name in ("alpha", "beta", "gamma"))
        if alpha == 0 and beta == 0:
            raise kt.errors.FailedTrialError("alpha = beta = 0: no MI term to maximise")
        out_dir = self.trial_dir(trial.trial_id)
        train_config = training.TrainConfig(
            dataset=cfg.dataset, data_dir=cfg.data_dir, alpha=alpha, beta=beta, gamma=gamma,
            estimator=cfg.estimator, embedding_dim=cfg.embedding_dim, y_dim=cfg.y_dim,
            epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, batch_size=cfg.batch_size,
            seed=cfg.seed, jit_compile=cfg.jit_compile, strategy=cfg.strategy,
            output_dir=out_dir, probe=False, verbose=cfg.verbose,
            # A trial killed mid-training continues from its last epoch checkpoint.
            resume=os.path.exists(os.path.join(out_dir, "checkpoints", "checkpoint")))
        self.trainings_run += 1
        try:
            result = training.train(train_config, log=lambda *a: None)
        except training.TrainingDiverged as err:
            raise kt.errors.FailedTrialError(str(err)) from None
        measures = measure_encoder(load_encoder(result["encoder"]), cfg, cfg.all_measures())
        for name, value in measures.items():
            if not math.isfinite(value):
                raise kt.errors.FailedTrialError(f"{name} is not finite")
        _write_atomically(os.path.join(out_dir, "measures.json"),
                          json.dumps({"alpha": alpha, "beta": beta, "gamma": gamma,
                                      **measures}, indent=2).encode())
        return measures

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        write_results(self)


def _make_tuner_classes():
    import keras_tuner as kt

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
            tried = {tuple(float(t.hyperparameters.values[n]) for n in ("alpha", "beta", "gamma"))
                     for t in self.trials.values()}
            for combo in self.grid:
                if combo not in tried:
                    return {"status": kt.engine.trial.TrialStatus.RUNNING,
                            "values": dict(zip(("alpha", "beta", "gamma"), combo))}
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}

    class GridAblation(_AblationTuner, kt.Tuner):
        pass

    class BayesianAblation(_AblationTuner, kt.BayesianOptimization):
        pass

    return GridOracle, GridAblation, BayesianAblation


def make_tuner(config):
    """The keras-tuner tuner of ``config`` (reloads ``search_dir`` if it holds a search)."""
    import itertools

    import keras_tuner as kt

    grid_oracle_cls, grid_cls, bayes_cls = _make_tuner_classes()
    hp = kt.HyperParameters()
    objective = kt.Objective(config.objective, OBJECTIVES[config.objective][0])
    common = dict(ablation_config=config, directory=config.search_dir,
                  project_name=PROJECT_NAME, overwrite=False)
    if config.mode == "grid":
        hp.Choice("alpha", list(config.alphas), ordered=True)
        hp.Choice("beta", list(config.betas), ordered=True)
        hp.Choice("gamma", list(config.gammas), ordered=True)
        grid = list(itertools.product(config.alphas, config.betas, config.gammas))
        oracle = grid_oracle_cls(
            grid, objective=objective, hyperparameters=hp,
            max_trials=min(config.max_trials or len(grid), len(grid)), seed=config.seed,
            # Invalid (alpha = beta = 0) trials fail on purpose; never stop the search for them.
            max_consecutive_failed_trials=len(grid) + 1)
        return grid_cls(oracle=oracle, **common)
    hp.Float("alpha", *config.alpha_range)
    hp.Float("beta", *config.beta_range)
    hp.Float("gamma", *config.gamma_range)
    return bayes_cls(hyperparameters=hp, objective=objective, max_trials=config.max_trials,
                     seed=config.seed, max_consecutive_failed_trials=config.max_trials + 1, **common)


def collect_rows(tuner):
    """One dict per trial (sorted by id): weights, status, objective, measures."""
    rows = []
    objective = tuner.ablation_config.objective
    for trial_id, trial in sorted(tuner.oracle.trials.items(), key=lambda item: int(item[0])):
        values = trial.hyperparameters.values
        row = {"trial_id": trial_id, "status": str(trial.status),
               "alpha": float(values["alpha"]), "beta": float(values["beta"]),
               "gamma": float(values["gamma"]), "objective": None}
        path = os.path.join(tuner.trial_dir(trial_id), "measures.json")
        if trial.status == "COMPLETED" and os.path.exists(path):
            with open(path) as handle:
                measured = json.load(handle)
            row.update({k: v for k, v in measured.items() if k not in ("alpha", "beta", "gamma")})
            row["objective"] = row.get(objective)
        rows.append(row)
    return rows


def write_results(tuner):
    """results.json, results.csv and the figures; returns the rows."""
    config = tuner.ablation_config
    rows = collect_rows(tuner)
    measures = config.all_measures()
    os.makedirs(config.search_dir, exist_ok=True)
    summary = {"objective": config.objective, "direction": OBJECTIVES[config.objective][0],
               "mode": config.mode, "measures": measures,
               "config": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in dataclasses.asdict(config).items()},
               "trials": rows}
    completed = [r for r in rows if r["objective"] is not None]
    if completed:
        pick = max if summary["direction"] == "max" else min
        summary["best"] = pick(completed, key=lambda r: r["objective"])
    _write_atomically(os.path.join(config.search_dir, "results.json"),
                      json.dumps(summary, indent=2).encode())
    _write_atomically(os.path.join(config.search_dir, "results.csv"), _rows_to_csv(rows, measures))
    plot_heatmaps(rows, measures, config.search_dir, config.mode)
    return rows


def run_search(config):
    """Runs (or resumes) the search; returns ``(rows, tuner)``."""
    validate(config)
    os.makedirs(config.search_dir, exist_ok=True)
    tuner = make_tuner(config)
    tuner.search()
    return write_results(tuner), tuner


# ------------------------------------------------------------------ app
FLAGS = flags.FLAGS


def define_flags():
    """Defines the app's flags; only the command line needs them, so importing
    this module (tests, the Python API) leaves the global absl flags alone."""
    flags.DEFINE_string("mode", "grid", "grid: every combination of --alphas x --betas x --gammas "
                      "(kt.GridSearch); bayesian: kt.BayesianOptimization over the --*_range intervals.")
    flags.DEFINE_string("objective", "probe_accuracy", "What the tuner optimises: probe_accuracy (linear "
                        "probe on Y, max), ms_ssim (max), mine (max) or ndm (min).")
    flags.DEFINE_string("measures", "", "Further measures to record per trial (comma list, same names).")
    flags.DEFINE_string("alphas", "0,0.5,1", "Grid values of alpha (global MI weight).")
    flags.DEFINE_string("betas", "0,0.5,1", "Grid values of beta (local MI weight).")
    flags.DEFINE_string("gammas", "0.1", "Grid values of gamma (prior-matching weight).")
    flags.DEFINE_string("alpha_range", "0,1", "Bayesian mode: low,high of alpha.")
    flags.DEFINE_string("beta_range", "0,1", "Bayesian mode: low,high of beta.")
    flags.DEFINE_string("gamma_range", "0,1", "Bayesian mode: low,high of gamma.")
    flags.DEFINE_integer("max_trials", None, "Trials to run (required for bayesian; grid: default the whole grid).")
    flags.DEFINE_string("dataset", "digits", "Dataset (see apps/train.py).")
    flags.DEFINE_string("data_dir", None, "Directory with the dataset's files.")
    flags.DEFINE_integer("epochs", 5, "Training epochs per trial.")
    flags.DEFINE_integer("steps_per_epoch", None, "Cap on the steps per epoch.")
    flags.DEFINE_integer("batch_size", 64, "Global batch size.")
    flags.DEFINE_integer("embedding_dim", 2048, "Width of the encode-and-dot critic's embedding.")
    flags.DEFINE_integer("y_dim", 64, "Size of the representation Y.")
    flags.DEFINE_string("estimator", "jsd", "MI estimator: jsd, dv, infonce or nwj.")
    flags.DEFINE_string("search_dir", "saved_models/ablation", "Where the search, trials and results go; "
                        "rerun with the same directory to resume.")
    flags.DEFINE_string("strategy", "default", "tf.distribute strategy of each trial: default, mirrored, "
                        "multi_worker (see docs/DISTRIBUTED.md).")
    flags.DEFINE_boolean("jit_compile", True, "XLA for the training step (off under mirrored/multi_worker).")
    flags.DEFINE_integer("seed", 0, "Random seed of training, evaluation and the tuner.")
    flags.DEFINE_integer("eval_epochs", 20, "Training epochs of the MS-SSIM decoder, MINE and NDM networks.")
    flags.DEFINE_integer("eval_max_train", 10000, "Training images used by the measures.")
    flags.DEFINE_integer("verbose", 0, "Keras verbosity of each trial's training.")


def _range(text, name):
    values = parse_floats(text, name)
    if len(values) != 2:
        raise UsageError(f"--{name} must be low,high, got {text!r}")
    return values


def config_from_flags():
    measures = tuple(m.strip() for m in FLAGS.measures.split(",") if m.strip())
    return AblationConfig(
        search_dir=FLAGS.search_dir, mode=FLAGS.mode, objective=FLAGS.objective, measures=measures,
        alphas=parse_floats(FLAGS.alphas, "alphas"), betas=parse_floats(FLAGS.betas, "betas"),
        gammas=parse_floats(FLAGS.gammas, "gammas"),
        alpha_range=_range(FLAGS.alpha_range, "alpha_range"),
        beta_range=_range(FLAGS.beta_range, "beta_range"),
        gamma_range=_range(FLAGS.gamma_range, "gamma_range"),
        max_trials=FLAGS.max_trials, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch, batch_size=FLAGS.batch_size,
        embedding_dim=FLAGS.embedding_dim, y_dim=FLAGS.y_dim, estimator=FLAGS.estimator,
        strategy=FLAGS.strategy, jit_compile=FLAGS.jit_compile, seed=FLAGS.seed,
        eval_epochs=FLAGS.eval_epochs, eval_max_train=FLAGS.eval_max_train, verbose=FLAGS.verbose)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel INFO lines are not for users
    if len(argv) > 1:
        cli.fail("ablation.py", f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
        validate(config)
        rows, _ = run_search(config)
    except UsageError as err:
        cli.fail("ablation.py", str(err))
    done = sum(r["status"] == "COMPLETED" for r in rows)
    print(f"{done}/{len(rows)} trials completed; results in {os.path.join(config.search_dir, 'results.csv')}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, "ablation.py")
