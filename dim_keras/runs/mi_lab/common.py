"""What the experiments of ``apps/mi_lab.py`` share: the two views, a training loop that tracks the test
I_EST and the linear probe of ``g1(x_top)`` every ``eval_every`` steps, the mean +- std figure and the
results file.

A "run" is a list of rows ``{"step", "train_mi", "test_mi", "accuracy"}`` (step 0 is the untrained
model); an experiment compares labelled groups of runs (one run per seed).
"""

import numpy as np

from dim_keras import figures, io
from dim_keras.errors import TrainingDiverged


def steps_and_interval(config, default_steps):
    """``(steps, eval_every)``: the flags, or the experiment's default steps and a tenth of them.

    Raises :class:`UsageError` when ``eval_every`` does not divide the steps (one flag given, the other the
    experiment's default; :class:`dim_keras.config.MILabConfig` checks the pair when both are given).
    """
    from dim_keras.config import check_evaluation_interval
    steps = config.steps or default_steps
    eval_every = config.eval_every or max(1, steps // 10)
    if config.eval_every is None and steps % eval_every:
        eval_every = next(k for k in range(eval_every, 0, -1) if steps % k == 0)  # about ten evaluations
    check_evaluation_interval(steps, eval_every)
    return steps, eval_every


def open_views(config):
    """``(train, test)`` :class:`dim_keras.multiview.Views` of ``config.dataset``."""
    from dim_keras.multiview import load_views
    return load_views(config.dataset, "train", config.data_dir), load_views(config.dataset, "test", config.data_dir)


def probe_indices(size, limit, seed):
    """At most ``limit`` sorted indices of ``range(size)`` (all of them when ``size <= limit``)."""
    if size <= limit:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))


def pixel_baseline(config, train, test):
    """The linear probe on the raw top-half pixels (the paper's baseline: about 85 % on MNIST)."""
    from dim_keras.multiview import probe_accuracy
    chosen = probe_indices(len(train), config.probe_examples, config.seed)
    return probe_accuracy(train.top[chosen], train.labels[chosen], test.top, test.labels)


def _tracker_class():
    import keras

    from dim_keras.multiview import embed, probe_accuracy, view_dataset

    class ProbeTracker(keras.callbacks.Callback):
        """Every epoch (= ``eval_every`` steps): the test I_EST (``model.evaluate`` over the test split) and
        the linear probe of ``representation(x_top)`` (``model.encoder_top`` unless given)."""

        def __init__(self, train, test, eval_every, batch_size, probe_examples, seed, representation=None,
                     log=None):
            super().__init__()
            self.log = log
            self.train, self.test = train, test
            self.eval_every = eval_every
            self.batch_size = min(batch_size, len(test))
            self.chosen = probe_indices(len(train), probe_examples, seed)
            self.representation = representation
            self.rows = []

        def _test_dataset(self):
            steps = max(1, len(self.test) // self.batch_size)
            return view_dataset(self.test, self.batch_size, seed=0, shuffle=False), steps

        def measure(self, step, train_mi=None):
            encoder = self.representation or self.model.encoder_top
            dataset, steps = self._test_dataset()
            logs = self.model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)
            train_features, test_features = embed(encoder, self.train.top[self.chosen]), embed(encoder, self.test.top)
            if not (np.all(np.isfinite(train_features)) and np.all(np.isfinite(test_features))):
                raise TrainingDiverged(f"the encoder's features are not finite at step {step} (try a lower "
                                       f"--learning_rate)")
            accuracy = probe_accuracy(train_features, self.train.labels[self.chosen], test_features,
                                      self.test.labels)
            row = {"step": int(step), "train_mi": None if train_mi is None else float(train_mi),
                   "test_mi": float(logs["mi_estimate"]), "accuracy": float(accuracy)}
            self.rows.append(row)
            if self.log is not None:
                self.log(f"step {row['step']}: test I_EST {row['test_mi']:.3f} nats, linear probe "
                         f"{row['accuracy']:.3f}")
            return row

        def on_train_begin(self, logs=None):
            if not self.rows:
                self.measure(0)

        def on_epoch_end(self, epoch, logs=None):
            self.measure((epoch + 1) * self.eval_every, (logs or {}).get("mi_estimate"))

    return ProbeTracker


def fit_tracked(model, train, test, config, seed, steps, eval_every, callbacks=(), representation=None,
                label="", log=print):
    """Trains ``model`` (compiled) for ``steps`` steps on ``train``'s two views; returns the run's rows.

    Each evaluation is one line of ``log`` prefixed with ``label`` (a run is many short epochs, so Keras's
    own per-epoch output is off).
    """
    from dim_keras.multiview import view_dataset

    prefix = f"{label} seed {seed}: " if label else f"seed {seed}: "
    tracker = _tracker_class()(train, test, eval_every, config.batch_size, config.probe_examples, seed,
                               representation=representation, log=lambda line: log(prefix + line))
    epochs = max(1, steps // eval_every)
    model.fit(view_dataset(train, config.batch_size, seed), steps_per_epoch=eval_every, epochs=epochs,
              callbacks=[tracker, *callbacks], shuffle=False, verbose=0)
    return tracker.rows


def mean_and_std(runs, key):
    """``(steps, mean, std)`` of ``key`` over runs (lists of rows with the same steps)."""
    steps = [row["step"] for row in runs[0]]
    values = np.array([[np.nan if row[key] is None else row[key] for row in run] for run in runs], dtype=float)
    return steps, np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def final(runs, key):
    """``{"mean", "std", "values"}`` of ``key`` at the last row of each run."""
    values = [float(run[-1][key]) for run in runs]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def clearly_above(high, low):
    """Whether ``high["mean"]`` exceeds ``low["mean"]`` by more than the larger of their ``"std"`` (two
    :func:`final`-style summaries): a change larger than the spread over seeds, for the claims' verdicts."""
    return high["mean"] - low["mean"] > max(high["std"], low["std"])


def plot_curves(groups, panels, path, title, baseline=None):
    """One panel per ``(key, y label)`` of ``panels``: mean +- std over each group's runs against the step.

    ``groups`` is ``{label: [run, ...]}``; ``baseline`` (an accuracy) is drawn as a dashed line on the
    ``accuracy`` panel.  Written atomically to ``path`` (PNG).
    """
    figure, axes = figures.pyplot().subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    with figures.drawing(figure, path, dpi=90):
        for axis, (key, label) in zip(axes[0], panels):
            for name, runs in groups.items():
                steps, mean, std = mean_and_std(runs, key)
                line, = axis.plot(steps, mean, label=name)
                axis.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            if key == "accuracy" and baseline is not None:
                axis.axhline(baseline, color="k", linestyle="--", label="pixels (linear)")
            axis.set_xlabel("training step")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        figure.suptitle(title, fontsize=10)


def output_paths(config):
    """``(json path, png path)`` of the experiment in ``config.output_dir``."""
    import os
    base = os.path.join(config.output_dir, config.experiment)
    return base + ".json", base + ".png"


def write_results(config, result, summary_lines=()):
    """Adds the settings and the ``summary_lines`` (the table and the verdicts the app prints) to ``result``,
    writes it to ``<output_dir>/<experiment>.json`` (atomically) and returns it."""
    from dim_keras import config as config_lib
    result = {"experiment": config.experiment, "config": config_lib.to_dict(config), **result,
              "summary_lines": list(summary_lines)}
    io.write_json(output_paths(config)[0], result)
    return result
