"""The information bottleneck with MINE (Belghazi et al. 2018, Sec. 5.3, Table 3; ``apps/mine_bottleneck.py``).

For every beta of ``config.betas`` a stochastic encoder (``config.noise``) is trained on
``H(Y|Z) + beta I_MINE(X; Z)`` (:class:`dim_keras.bottleneck.MineInformationBottleneck`), and next to them the
deterministic baseline (no noise, cross-entropy only), each over ``config.seeds`` seeds.  Each run reports its
test error (the prediction averaged over ``config.test_samples`` draws of z) and its statistics network's DV
estimate of I(X; Z) on the test split.  The figure (test error and I(X; Z) against beta, log x axis, the
deterministic baseline and beta = 0 as horizontal lines) goes to ``<output_dir>/mine_bottleneck.png`` and every
number to ``<output_dir>/mine_bottleneck.json``.
"""

import math
import os
import time

from dim_keras import figures, io
from dim_keras.config import to_dict, validate

DETERMINISTIC = "deterministic"


def output_paths(config):
    """``(png, json)`` paths of a run."""
    return (os.path.join(config.output_dir, "mine_bottleneck.png"),
            os.path.join(config.output_dir, "mine_bottleneck.json"))


def settings(config):
    """``[(label, noise, beta)]``: the deterministic baseline first, then the stochastic encoder at each beta."""
    return [(DETERMINISTIC, "none", 0.0)] + [(f"beta={beta:g}", config.noise, float(beta)) for beta in config.betas]


def summary(values):
    """``{"mean", "std", "values"}`` (population std, 0 for one value)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "values": list(values)}


def epochs_of(steps):
    """``(epochs, steps_per_epoch)`` with ``epochs * steps_per_epoch == steps`` and about 10 epochs, so that the
    last epoch's metrics (means over its steps) describe the end of training."""
    epochs = next(k for k in range(min(10, steps), steps + 1) if steps % k == 0)
    return epochs, steps // epochs


def train_and_measure(config, data, noise, beta, seed, compiled=None):
    """Trains one model; returns ``{"test_error" (fraction), "test_mi" (nats), "label_information" (nats),
    "train": the last epoch's metrics, "seconds"}``.

    ``compiled`` (a dict) keeps one compiled model per encoder noise across calls: a later call with the same
    noise restarts that model from a fresh one (:meth:`MineInformationBottleneck.reinitialize`) instead of
    compiling again (XLA compilation is most of a short run on a CPU).
    """
    import keras

    from dim_keras import bottleneck
    from dim_keras.errors import TrainingDiverged
    from dim_keras.models import default_optimizer

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    fresh = bottleneck.build_bottleneck(
        x_train.shape[1], beta, noise=noise, sigma=config.sigma, units=config.representation_dim,
        hidden_units=config.hidden_units, statistics_units=config.statistics_units, ema_decay=config.ema_decay,
        statistics_steps=config.statistics_steps, seed=seed)
    compiled = {} if compiled is None else compiled
    model = compiled.get(noise)
    if model is None:
        model = compiled[noise] = fresh
        model.compile(optimizer=default_optimizer(config.learning_rate),
                      statistics_optimizer=default_optimizer(config.statistics_learning_rate),
                      jit_compile=config.jit_compile)
    else:
        model.reinitialize(fresh)
    epochs, steps_per_epoch = epochs_of(config.steps)
    start = time.time()
    history = model.fit(bottleneck.batches(x_train, y_train, config.batch_size, seed=seed),
                        steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0)
    seconds = time.time() - start
    train = {name: float(values[-1]) for name, values in history.history.items()}
    for name, value in train.items():
        if not math.isfinite(value):
            raise TrainingDiverged(f"{noise} encoder, beta={beta:g}, seed {seed}: training {name} is {value}")
    return {"test_error": bottleneck.test_error(model, x_test, y_test, config.test_samples),
            "test_mi": bottleneck.mi_estimate(model, x_test, y_test, config.batch_size),
            "label_information": bottleneck.label_information_bound(model, x_test, y_test, config.test_samples),
            "train": train, "seconds": seconds}


def load_data(config):
    """``((x_train, y_train), (x_test, y_test))``, flat pixels in [0, 1]; refuses a batch larger than a split."""
    from dim_keras import bottleneck
    from dim_keras.errors import DataError

    data = tuple(bottleneck.flat_digits(config.dataset, split, config.data_dir) for split in ("train", "test"))
    smallest = min(len(data[0][0]), len(data[1][0]))
    if config.batch_size > smallest:
        raise DataError(f"--batch_size={config.batch_size} is more than the {smallest} examples of a split of "
                        f"{config.dataset}")
    return data


def plot(result, path):
    """Left: test error against beta; right: MINE's test estimate of I(X; Z) and the lower bound H(Y) - CE on
    I(Z; Y) <= I(X; Z).  Log x axis; beta = 0 and the deterministic baseline as horizontal lines; mean +- std
    over seeds and dots for the seeds.  Written atomically to ``path``."""
    rows = result["results"]
    positive = [row for row in rows.values() if row["noise"] != "none" and row["beta"] > 0]
    lines = [(DETERMINISTIC, "k", "deterministic"), ("beta=0", "tab:gray", f"{result['noise']} noise, beta = 0")]
    panels = [
        ("test error (%)", [("test_error", 100.0, "o-", f"{result['noise']} noise + MINE")]),
        ("nats (test split)", [("test_mi", 1.0, "o-", "MINE estimate of I(X; Z)"),
                               ("label_information", 1.0, "s--", "H(Y) - CE <= I(Z; Y) <= I(X; Z)")]),
    ]
    figure, axes = figures.pyplot().subplots(1, 2, figsize=(10.5, 3.9))
    with figures.drawing(figure, path, dpi=90):
        for axis, (ylabel, series) in zip(axes, panels):
            for key, scale, style, label in series:
                color = "tab:blue" if key != "label_information" else "tab:green"
                if positive:
                    axis.errorbar([row["beta"] for row in positive], [scale * row[key]["mean"] for row in positive],
                                  yerr=[scale * row[key]["std"] for row in positive], fmt=style, capsize=3,
                                  color=color, label=label)
                    for row in positive:  # the seeds themselves: a mean +- std hides a lone diverged run
                        axis.plot([row["beta"]] * len(row[key]["values"]), [scale * v for v in row[key]["values"]],
                                  ".", color=color, alpha=0.45)
                    axis.set_xscale("log")
                    if len(positive) == 1:  # matplotlib leaves a lone point's log axis degenerate
                        axis.set_xlim(positive[0]["beta"] / 3, positive[0]["beta"] * 3)
                for name, line_color, text in lines:
                    if name in rows:
                        mean, std = scale * rows[name][key]["mean"], scale * rows[name][key]["std"]
                        style_of_line = "--" if key != "label_information" else ":"
                        axis.axhline(mean, color=line_color, linestyle=style_of_line,
                                     label=text if key == series[0][0] else None)
                        axis.axhspan(mean - std, mean + std, color=line_color, alpha=0.1)
            axis.set_xlabel("beta")
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"MINE information bottleneck on {result['dataset']}: {result['seeds']} seeds, "
                        f"{result['steps']} steps (mean +- std)", fontsize=10)


def bottleneck(config, log=print):
    """Runs ``config`` (a :class:`dim_keras.config.BottleneckConfig`); returns the results written to JSON.

    ``results`` maps each setting's label (``deterministic``, ``beta=<b>``) to its ``noise``, ``beta`` and the
    summaries over seeds (``mean``, ``std``, ``values``) of ``test_error`` (a fraction), ``test_mi`` (MINE's
    estimate of I(X; Z) on the test split, nats) and ``label_information`` (H(Y) - test cross-entropy, a lower
    bound on I(Z; Y) <= I(X; Z), nats), plus ``runs`` (per seed: the same, the last epoch's training metrics
    and the training time).  Also ``png`` and ``json``: the files written.
    """
    validate(config)
    data = load_data(config)
    png, json_path = output_paths(config)
    seeds = list(range(config.seed, config.seed + config.seeds))
    log(f"MINE information bottleneck on {config.dataset} ({len(data[0][0])} train, {len(data[1][0])} test), "
        f"{config.noise} encoder, {config.steps} steps x batch {config.batch_size}, seeds {seeds}; "
        f"writing to {config.output_dir}")
    start = time.time()
    results = {}
    compiled = {}
    for label, noise, beta in settings(config):
        runs = []
        for seed in seeds:
            run = train_and_measure(config, data, noise, beta, seed, compiled)
            run["seed"] = seed
            runs.append(run)
            log(f"{label:14s} seed {seed}: test error {100 * run['test_error']:5.2f} %, MINE I(X;Z) "
                f"{run['test_mi']:6.3f} nats, H(Y) - CE {run['label_information']:6.3f} nats (train: "
                f"cross-entropy {run['train']['cross_entropy']:.3f}, MINE {run['train']['mi_estimate']:.3f}), "
                f"{run['seconds']:.0f} s")
        results[label] = {"noise": noise, "beta": beta,
                          **{key: summary([run[key] for run in runs])
                             for key in ("test_error", "test_mi", "label_information")},
                          "runs": runs}
    result = {"dataset": config.dataset, "noise": config.noise, "steps": config.steps, "seeds": config.seeds,
              "batch_size": config.batch_size, "results": results, "seconds": time.time() - start,
              "config": to_dict(config), "png": png, "json": json_path}
    plot(result, png)
    io.write_json(json_path, result)
    return result
