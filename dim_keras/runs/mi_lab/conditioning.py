"""Tschannen et al. (ICLR 2020), Sec. 3.1 "Bias towards hard-to-invert encoders" (Fig. 2; App. F Fig. 5).

g1, g2 are :class:`dim_keras.multiview.ResidualMLP` encoders (four hidden layers of the view's width with a
skip connection each, initialised close to the identity), so they can become non-invertible.  Both views are
corrupted "in a coupled way by adding to each the same [...] random vector" with std ``--noise_std`` (0.05;
:class:`dim_keras.multiview.CoupledNoiseTwoViewInfoMax`): the data then fill the whole input space, and an
encoder that stops being invertible loses MI.  Trained with a bilinear critic to maximise I_NCE or I_NWJ, the
paper finds the test I_EST and the linear probe rising while the condition number ``sigma_max / sigma_min``
of g1's Jacobian at random data inputs grows: the bounds favour hard-to-invert encoders that attenuate part of
the noise over the well-conditioned identity, which preserves the noise and hence the MI.

The linear probe and its pixel baseline are computed on noisy top halves ("the linear classification accuracy
from pixels drops to about 84%" on MNIST).  Each example keeps one noise draw for every evaluation of a run (the
notebook draws afresh each time, which on MNIST's 10k test images averages out; on the 359 test digits it moved
the probe by +-1 % between evaluations, more than the trend).  The condition numbers are computed at
``--jacobian_inputs`` noisy training inputs (fixed per run), and the figure shows the 0th, 20th, ..., 100th
percentiles of their logarithm pooled over the runs, as Fig. 2c.
"""

import zlib

import numpy as np

from dim_keras import figures
from dim_keras.runs.mi_lab import common

# Steps per run on a CPU (the paper: 21k steps with 21 evaluations, 20 runs).  The residual MLP on digits'
# 32-pixel halves is small (5 x 32 x 32 weights), so the default affords more steps than the RealNVP runs; the
# probe's rise on digits needs thousands of steps (docs/MI_LAB.md).
DEFAULT_STEPS = 5000
ESTIMATOR_NAMES = {"infonce": "I_NCE", "nwj": "I_NWJ", "dv": "I_DV", "jsd": "I_JSD", "mine_f": "I_MINE-f"}
PERCENTILES = (0, 20, 40, 60, 80, 100)


def _name(estimator):
    return ESTIMATOR_NAMES.get(estimator, estimator)


def _fmt(stats, digits=3):
    return f"{stats['mean']:.{digits}f}+-{stats['std']:.{digits}f}"


def example_noise(x, std, seed):
    """N(0, std^2) noise for each row of ``x``, a function of ``(seed, the row's bytes)``: the same example gets
    the same noise at every evaluation, whatever batch it comes in."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    noise = np.empty_like(x)
    for k, row in enumerate(x):
        noise[k] = np.random.default_rng([seed, zlib.crc32(row.tobytes())]).standard_normal(row.shape)
    return (std * noise).astype(np.float32)


class NoisyRepresentation:
    """``encoder(x + example_noise(x))``: the probe's view of noisy inputs (``encoder=None``: the noisy pixels)."""

    def __init__(self, encoder, std, seed):
        self.encoder, self.std, self.seed = encoder, float(std), int(seed)

    def __call__(self, x, training=False):
        x = np.asarray(x, dtype=np.float32)
        noisy = x + example_noise(x, self.std, self.seed)
        return noisy if self.encoder is None else self.encoder(noisy, training=False)


def noisy_pixel_baseline(config, train, test):
    """The linear probe on noisy top-half pixels (the noise of seed ``--seed``'s run)."""
    from dim_keras.multiview import probe_accuracy
    noisy = NoisyRepresentation(None, config.noise_std, config.seed)
    chosen = common.probe_indices(len(train), config.probe_examples, config.seed)
    return probe_accuracy(noisy(train.top[chosen]), train.labels[chosen], noisy(test.top), test.labels)


def _condition_tracker_class():
    import keras

    from dim_keras.multiview import jacobian_condition_numbers

    class ConditionNumbers(keras.callbacks.Callback):
        """At the start and after every epoch: ``log(sigma_max / sigma_min)`` of g1's Jacobian at ``inputs``."""

        def __init__(self, inputs):
            super().__init__()
            self.inputs, self.values = inputs, []

        def measure(self):
            self.values.append(np.log(jacobian_condition_numbers(self.model.encoder_top, self.inputs)))

        def on_train_begin(self, logs=None):
            if not self.values:
                self.measure()

        def on_epoch_end(self, epoch, logs=None):
            self.measure()

    return ConditionNumbers


def train_conditioning(config, train, test, estimator, seed, steps, eval_every, label="", log=print):
    """One run of Fig. 2: residual-MLP g1, g2, a bilinear critic and coupled noise, maximising ``estimator``.

    Returns the rows of :func:`common.fit_tracked` (test I_EST on noisy test views, the probe on noisy top
    halves), each with ``log_condition`` (the ``--jacobian_inputs`` values of ``log(sigma_max / sigma_min)``)
    and ``log_condition_median``.
    """
    import keras

    from dim_keras.critics import BilinearCritic
    from dim_keras.multiview import CoupledNoiseTwoViewInfoMax, build_view_encoder

    keras.backend.clear_session()  # several runs per process: drop the previous runs' graphs
    keras.utils.set_random_seed(seed)
    dim = train.top.shape[1]
    model = CoupledNoiseTwoViewInfoMax(build_view_encoder("residual_mlp", dim, name="g1"),
                                       build_view_encoder("residual_mlp", dim, name="g2"),
                                       BilinearCritic(name="critic"), estimator, noise_std=config.noise_std,
                                       seed=seed)
    model.build(((None, dim), (None, dim)))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=True)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(train), min(config.jacobian_inputs, len(train)), replace=False)
    inputs = train.top[chosen] + (config.noise_std * rng.standard_normal((len(chosen), dim))).astype(np.float32)
    tracker = _condition_tracker_class()(inputs)
    rows = common.fit_tracked(model, train, test, config, seed, steps, eval_every, callbacks=[tracker],
                              representation=NoisyRepresentation(model.encoder_top, config.noise_std, seed),
                              label=label, log=log)
    for row, values in zip(rows, tracker.values):
        row["log_condition"] = [float(v) for v in values]
        row["log_condition_median"] = float(np.median(values))
    return rows


def pooled_percentiles(runs):
    """``(steps, [len(PERCENTILES), evaluations])``: percentiles of ``log_condition`` pooled over the runs."""
    steps = [row["step"] for row in runs[0]]
    pooled = [np.concatenate([run[k]["log_condition"] for run in runs]) for k in range(len(steps))]
    return steps, np.array([[np.percentile(values, p) for values in pooled] for p in PERCENTILES])


def plot_conditioning(runs, baseline, path, title):
    """Fig. 2 (and App. F Fig. 5): test I_EST, accuracy (with the noisy-pixel baseline), and per estimator the
    percentile bands of the log condition number; written atomically to ``path``."""
    plt = figures.pyplot()
    figure, axes = plt.subplots(1, 2 + len(runs), figsize=(4.5 * (2 + len(runs)), 3.6), squeeze=False)
    axes = axes[0]
    with figures.drawing(figure, path, dpi=90):
        for axis, key, ylabel in ((axes[0], "test_mi", "test I_EST (nats), noisy views"),
                                  (axes[1], "accuracy", "test accuracy (linear probe), noisy")):
            for label, label_runs in runs.items():
                steps, mean, std = common.mean_and_std(label_runs, key)
                line, = axis.plot(steps, mean, label=label)
                axis.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            if key == "accuracy":
                axis.axhline(baseline, color="k", linestyle="--", label="noisy pixels (linear)")
            axis.set_xlabel("training step")
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for axis, (label, label_runs) in zip(axes[2:], runs.items()):
            steps, bands = pooled_percentiles(label_runs)
            for k in range(len(PERCENTILES) - 1):
                axis.fill_between(steps, bands[k], bands[k + 1], color=colors[k % len(colors)], alpha=0.6,
                                  label=f"{PERCENTILES[k]}-{PERCENTILES[k + 1]}th perc.")
            axis.plot(steps, bands[0], color="gray", linestyle="--", label="minimum")
            axis.plot(steps, bands[-1], color="k", linestyle="--", label="maximum")
            axis.set_xlabel("training step")
            axis.set_ylabel("log condition number of g1's Jacobian")
            axis.set_title(f"{label}: ln(sigma_max / sigma_min), percentiles of "
                           f"{len(label_runs[0][0]['log_condition'])} inputs x {len(label_runs)} runs", fontsize=8)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=6, loc="upper left")
        figure.suptitle(title, fontsize=10)


def run(config, log=print):
    """Sec. 3.1, Fig. 2: every estimator of ``--estimators``, ``--seeds`` runs each."""
    steps, eval_every = common.steps_and_interval(config, DEFAULT_STEPS)
    train, test = common.open_views(config)
    baseline = noisy_pixel_baseline(config, train, test)
    log(f"linear probe on the raw top-half pixels with noise of std {config.noise_std:g}: {baseline:.3f}")
    runs = {}
    for estimator in config.estimators:
        label = _name(estimator)
        runs[label] = [train_conditioning(config, train, test, estimator, seed, steps, eval_every, label=label,
                                          log=log)
                       for seed in range(config.seed, config.seed + config.seeds)]
    keys = ("test_mi", "accuracy", "log_condition_median")
    start = {label: {key: common.final([[run[0]] for run in label_runs], key) for key in keys}
             for label, label_runs in runs.items()}
    final = {label: {key: common.final(label_runs, key) for key in keys} for label, label_runs in runs.items()}
    percentiles = {}
    for label, label_runs in runs.items():
        steps_list, bands = pooled_percentiles(label_runs)
        percentiles[label] = {"steps": steps_list, **{f"p{p}": [float(v) for v in band]
                                                      for p, band in zip(PERCENTILES, bands)}}

    plot_conditioning(runs, baseline, common.output_paths(config)[1],
                      f"Tschannen et al. Fig. 2 on {config.dataset}: residual MLP g1, g2 (identity at 0), bilinear "
                      f"critic, coupled noise std {config.noise_std:g}, {config.seeds} seeds")

    lines = [f"conditioning (Sec. 3.1, Fig. 2) on {config.dataset}: residual MLP g1, g2, bilinear critic, coupled "
             f"noise std {config.noise_std:g}, {steps} steps x {config.seeds} seeds; linear probe on noisy pixels "
             f"{baseline:.3f}; log(sigma_max / sigma_min) of g1's Jacobian at {config.jacobian_inputs} noisy inputs",
             f"  {'estimator':<11}{'test I_EST start':<19}{'test I_EST end':<17}{'accuracy start':<17}"
             f"{'accuracy end':<15}{'median log cond start':<23}median log cond end"]
    for label in runs:
        s, f = start[label], final[label]
        lines.append(f"  {label:<11}{_fmt(s['test_mi']):<19}{_fmt(f['test_mi']):<17}{_fmt(s['accuracy']):<17}"
                     f"{_fmt(f['accuracy']):<15}{_fmt(s['log_condition_median']):<23}"
                     f"{_fmt(f['log_condition_median'])}")
    for label in runs:
        s, f, p = start[label], final[label], percentiles[label]
        ill = (common.clearly_above(f["test_mi"], s["test_mi"])
               and common.clearly_above(f["log_condition_median"], s["log_condition_median"]))
        lines.append(f"  claim ({label}: I_EST rises while g1's Jacobian, the identity's at the start, grows "
                     f"ill-conditioned): I_EST {s['test_mi']['mean']:.3f} -> {f['test_mi']['mean']:.3f}, log "
                     f"condition number median {s['log_condition_median']['mean']:.2f} -> "
                     f"{f['log_condition_median']['mean']:.2f} (max {p['p100'][0]:.2f} -> {p['p100'][-1]:.2f}): "
                     + ("reproduced" if ill else "NOT reproduced"))
        better = common.clearly_above(f["accuracy"], s["accuracy"]) and f["accuracy"]["mean"] > baseline
        lines.append(f"  claim ({label}: the linear probe rises, by more than the spread over seeds): accuracy "
                     f"{s['accuracy']['mean']:.3f} -> {f['accuracy']['mean']:.3f} (noisy pixels {baseline:.3f}): "
                     + ("reproduced" if better else "NOT reproduced"))
    return common.write_results(config, summary_lines=lines, result={
        "steps": steps, "eval_every": eval_every, "pixel_baseline": baseline, "start": start, "final": final,
        "log_condition_percentiles": percentiles, "runs": runs})
