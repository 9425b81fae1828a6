"""Tschannen et al. (ICLR 2020), Sec. 3.2 and 3.3: the critic and the target value of the bound.

- ``critics`` (Sec. 3.2, Fig. 3; App. F Fig. 6): MLP encoders g1, g2 (300-300-100) trained to maximise
  I_NCE or I_NWJ with a bilinear critic ``x^T W y``, a separable critic ``phi1(x)^T phi2(y)`` (one hidden
  layer of 100 ReLU units, a linear layer of 100; 40k parameters) or an MLP critic (one hidden layer of 200
  ReLU units on the concatenation ``[x, y]``, a linear output; 40k parameters).  The paper: the bilinear and
  separable critics give the better linear probe, the MLP critic the higher (tighter) test I_NWJ.
- ``target_mi`` (Sec. 3.3, the loss of Fig. 4a-b and App. F Fig. 7): the same MLP encoders and a bilinear
  critic trained to ``min |I_EST - t|`` for each ``t`` of ``--targets``: the test I_EST settles at ``t``.

Every run also scores its critic under I_NCE, I_NWJ and I_DV on fixed batches of the test split (in the
JSON file).  The test I_NWJ of the I_NWJ-trained critics is Fig. 3's right panel; that of an I_NCE-trained
critic means little: I_NCE is invariant to ``f(x, y) + c(x)``, I_NWJ is not (nor is I_DV, which is I_NWJ at
the best constant shift).
"""

import numpy as np

from dim_keras import figures
from dim_keras.runs.mi_lab import common

# Steps per run, sized for ~4 minutes on a shared CPU (the paper trains 21k steps with 21 evaluations, 20 runs
# per setting, on MNIST).  On digits' 32-pixel halves the probe is flat after a few hundred steps and I_NCE
# reaches t = 2 within ~400 steps; longer runs with --steps (docs/MI_LAB.md).
DEFAULT_STEPS = {"critics": 1000, "target_mi": 1500}
# Test batches on which each run's critic is scored under every bound: fixed random batches of --batch_size
# (the digits test split has 359 examples, so they overlap), averaged, because I_NWJ varies a lot per batch.
# The authors' notebook averages over the whole test split in batches of 512 (I_NCE <= log 512 there); with
# the training batch size the test I_NCE has the training ceiling log 128.
TEST_BATCHES = 8
ESTIMATOR_NAMES = {"infonce": "I_NCE", "nwj": "I_NWJ", "dv": "I_DV", "jsd": "I_JSD", "mine_f": "I_MINE-f"}


def build_critic(name):
    """The critics of Sec. 3.2 by name (:data:`dim_keras.choices.MI_LAB_CRITICS`), for 100-dim features.

    ``mlp`` is :class:`~dim_keras.critics.ConcatAndConvolveCritic` with one hidden layer of 200 units: its
    first layer is split into ``W_x x + W_y y + b``, which is the dense layer on ``[x, y]`` evaluated for
    all ``B x B`` pairs at once (the authors tile the concatenations; same function).
    """
    from dim_keras import critics
    if name == "bilinear":
        return critics.BilinearCritic(name="critic")
    if name == "separable":
        return critics.SeparableCritic(100, hidden_units=(100,), name="critic")
    if name == "mlp":
        return critics.ConcatAndConvolveCritic(hidden_units=(200,), name="critic")
    from dim_keras.choices import MI_LAB_CRITICS
    raise ValueError(f"unknown critic {name!r}; choose one of {', '.join(MI_LAB_CRITICS)}")


def _bounds_tracker_class():
    import keras
    import tensorflow as tf

    from dim_keras import estimators

    class TestBounds(keras.callbacks.Callback):
        """At the start and after every epoch: the model's critic scored on fixed random test batches under
        each of ``names`` (averaged over the batches), as ``{"test_<name>": value}`` rows."""

        def __init__(self, test, batch_size, batches, seed, names):
            super().__init__()
            rng = np.random.default_rng(seed)
            size = min(batch_size, len(test))
            chosen = [np.sort(rng.choice(len(test), size, replace=False)) for _ in range(batches)]
            self.tops = tf.constant(np.stack([test.top[c] for c in chosen]))
            self.bottoms = tf.constant(np.stack([test.bottom[c] for c in chosen]))
            self.names, self.rows, self._bounds = tuple(names), [], None

        def _all_bounds(self):
            # One graph for all batches and bounds (eagerly, this evaluation cost as much as 100 steps), a
            # graph loop over the batches (unrolled, tracing took seconds per run).
            totals = [tf.constant(0.0) for _ in self.names]
            for k in tf.range(self.tops.shape[0]):
                scores = self.model.scores(self.tops[k], self.bottoms[k])
                totals = [total + estimators.mi_lower_bound(scores, name) for total, name in zip(totals, self.names)]
            return {name: total / self.tops.shape[0] for name, total in zip(self.names, totals)}

        def measure(self):
            if self._bounds is None:
                self._bounds = tf.function(self._all_bounds)
            self.rows.append({f"test_{name}": float(v) for name, v in self._bounds().items()})

        def on_train_begin(self, logs=None):
            if not self.rows:
                self.measure()

        def on_epoch_end(self, epoch, logs=None):
            self.measure()

    return TestBounds


def train_two_views(config, train, test, encoder, critic, estimator, seed, steps, eval_every, target_mi=None,
                    label="", log=print):
    """One run: g1, g2 of kind ``encoder`` and the critic ``critic`` trained on ``train``'s two views to
    maximise ``estimator`` (or, with ``target_mi=t``, to minimise ``|I_EST - t|``).

    Returns the rows of :func:`common.fit_tracked` (step, train_mi, test_mi, accuracy), each with the critic's
    test I_NCE, I_NWJ, I_DV (and the trained bound) as ``test_infonce``, ``test_nwj``, ``test_dv``.
    """
    import keras

    from dim_keras import multiview

    keras.backend.clear_session()  # dozens of runs per process: drop the previous runs' graphs
    keras.utils.set_random_seed(seed)
    top_dim, bottom_dim = train.top.shape[1], train.bottom.shape[1]
    model = multiview.TwoViewInfoMax(
        multiview.build_view_encoder(encoder, top_dim, train.half_shape, seed=seed, name="g1"),
        multiview.build_view_encoder(encoder, bottom_dim, train.half_shape, seed=seed + 1, name="g2"),
        build_critic(critic), estimator, target_mi=target_mi)
    model.build(((None, top_dim), (None, bottom_dim)))
    # XLA makes the dense layers ~2x faster on this CPU but the small convolutions ~10x slower.
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=encoder != "conv")
    names = tuple(dict.fromkeys(("infonce", "nwj", "dv", estimator)))
    bounds = _bounds_tracker_class()(test, config.batch_size, TEST_BATCHES, config.seed, names)
    rows = common.fit_tracked(model, train, test, config, seed, steps, eval_every, callbacks=[bounds],
                              label=label, log=log)
    for row, extra in zip(rows, bounds.rows):
        row.update(extra)
    return rows


def plot_grid(grid, path, title):
    """A grid of panels, ``grid[r][c] = {"groups": {label: [run, ...]}, "key", "ylabel", "title", "hlines":
    [(y, label)], "styles": {label: plot kwargs}, "dotted": key}``: mean +- std over each group's runs against
    the step, and (``dotted``) the mean of a second key as a dotted line of the same colour; written
    atomically to ``path``."""
    plt = figures.pyplot()
    rows, cols = len(grid), max(len(row) for row in grid)
    figure, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    with figures.drawing(figure, path, dpi=90):
        for r, row in enumerate(grid):
            for c in range(cols):
                axis = axes[r][c]
                if c >= len(row):
                    axis.axis("off")
                    continue
                panel = row[c]
                for name, runs in panel["groups"].items():
                    steps, mean, std = common.mean_and_std(runs, panel["key"])
                    line, = axis.plot(steps, mean, label=name, **panel.get("styles", {}).get(name, {}))
                    axis.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
                    if panel.get("dotted"):  # rows without the value (e.g. step 0's train_mi) are skipped
                        kept = [k for k in range(len(runs[0])) if all(run[k][panel["dotted"]] is not None
                                                                      for run in runs)]
                        axis.plot([runs[0][k]["step"] for k in kept],
                                  [np.mean([run[k][panel["dotted"]] for run in runs]) for k in kept],
                                  color=line.get_color(), linestyle=":", linewidth=1)
                for value, label in panel.get("hlines", ()):
                    axis.axhline(value, color="k", linestyle="--", linewidth=1, label=label)
                axis.set_title(panel.get("title", ""), fontsize=9)
                axis.set_xlabel("training step")
                axis.set_ylabel(panel["ylabel"])
                axis.grid(alpha=0.3)
                axis.legend(fontsize=7)
        figure.suptitle(title, fontsize=10)


def estimator_name(estimator):
    return ESTIMATOR_NAMES.get(estimator, estimator)


def _fmt(stats):
    return f"{stats['mean']:.3f}+-{stats['std']:.3f}"


def run(config, log=print):
    """``critics`` or ``target_mi`` (``config.experiment``); returns the results written to the JSON file."""
    if config.experiment == "target_mi":
        result = run_targets(config, ("mlp",), DEFAULT_STEPS["target_mi"], log=log)
        return finish_targets(config, result, reach_lines(result))
    return run_critics(config, log=log)


# |test I_EST - t| within this fraction of t counts as "reaching" the target in the summary lines.
REACH_TOLERANCE = 0.1


def reach_lines(result):
    """One line per estimator and target: does the mean final test I_EST of every encoder reach ``t``?"""
    lines = []
    for estimator, by_target in result["final"].items():
        for target, by_encoder in by_target.items():
            t = float(target[2:])
            values = {encoder: f[f"test_{estimator}"]["mean"] for encoder, f in by_encoder.items()}
            reached = all(abs(v - t) <= REACH_TOLERANCE * t for v in values.values())
            lines.append(f"  claim (test {estimator_name(estimator)} reaches t={t:g} within {REACH_TOLERANCE:.0%}): "
                         + ", ".join(f"{e} {v:.3f}" for e, v in values.items())
                         + (": reproduced" if reached else ": NOT reproduced"))
    return lines


def run_critics(config, log=print):
    """Sec. 3.2, Fig. 3: every critic of ``--critics`` with every estimator of ``--estimators``."""
    steps, eval_every = common.steps_and_interval(config, DEFAULT_STEPS["critics"])
    train, test = common.open_views(config)
    baseline = common.pixel_baseline(config, train, test)
    log(f"linear probe on the raw top-half pixels: {baseline:.3f}")
    runs = {}
    for estimator in config.estimators:
        for critic in config.critics:
            label = f"{critic}, {estimator_name(estimator)}"
            runs[label] = [train_two_views(config, train, test, "mlp", critic, estimator, seed, steps, eval_every,
                                           label=label, log=log)
                           for seed in range(config.seed, config.seed + config.seeds)]
    keys = tuple(dict.fromkeys(("accuracy", "test_infonce", "test_nwj", "test_dv",
                                *(f"test_{e}" for e in config.estimators))))
    final = {estimator: {critic: {key: common.final(runs[f"{critic}, {estimator_name(estimator)}"], key)
                                  for key in keys}
                         for critic in config.critics} for estimator in config.estimators}

    grid = [[{"groups": {c: runs[f"{c}, {estimator_name(e)}"] for c in config.critics}, "key": "accuracy",
              "ylabel": f"test accuracy with {estimator_name(e)}", "hlines": [(baseline, "pixels (linear)")],
              "title": f"trained with {estimator_name(e)}"} for e in config.estimators],
            [{"groups": {c: runs[f"{c}, {estimator_name(e)}"] for c in config.critics}, "key": f"test_{e}",
              "ylabel": f"test {estimator_name(e)} (nats)", "title": f"trained with {estimator_name(e)}"}
             for e in config.estimators]]
    png = common.output_paths(config)[1]
    plot_grid(grid, png, f"Tschannen et al. Fig. 3 on {config.dataset}: critics, MLP encoders "
                         f"({config.seeds} seeds, mean +- std)")

    lines = [f"critics (Sec. 3.2) on {config.dataset}, {steps} steps x {config.seeds} seeds; linear probe on "
             f"pixels {baseline:.3f}; final test values, mean+-std over seeds:",
             f"  {'trained with':<13}{'critic':<11}{'accuracy':<15}{'test I_EST':<15}test I_NWJ"]
    for estimator in config.estimators:
        for critic in config.critics:
            f = final[estimator][critic]
            nwj = "n/a" if estimator == "infonce" else _fmt(f["test_nwj"])
            lines.append(f"  {estimator_name(estimator):<13}{critic:<11}{_fmt(f['accuracy']):<15}"
                         f"{_fmt(f[f'test_{estimator}']):<15}{nwj}")
    if "infonce" in config.estimators:
        lines.append("  (n/a: I_NCE leaves f(x, y) + c(x) free and I_NWJ does not, so an I_NCE-trained critic's I_NWJ "
                     "is meaningless; the JSON has it)")
    lines += _critic_claims(config, final)
    return common.write_results(config, summary_lines=lines, result={
        "steps": steps, "eval_every": eval_every, "pixel_baseline": baseline, "final": final, "runs": runs})


def verdict(margin, spread):
    """"reproduced" when the claimed difference ``margin`` exceeds ``spread`` (the larger std over seeds of
    the compared settings), "NOT reproduced" when it is below ``-spread``, otherwise "not resolved"."""
    if margin > spread:
        return "reproduced"
    if margin < -spread:
        return "NOT reproduced"
    return "not resolved (the difference is within the seeds' std)"


def _critic_claims(config, final):
    """Fig. 3's claims, one line each (only with all three critics): per estimator, the bilinear and separable
    critics beat the mlp critic on the probe; with I_NWJ, the mlp critic reaches the highest test I_NWJ."""
    if set(config.critics) != {"bilinear", "separable", "mlp"}:
        return []
    lines = []
    for estimator in config.estimators:
        f = final[estimator]
        mean = {c: f[c]["accuracy"]["mean"] for c in f}
        spread = max(f[c]["accuracy"]["std"] for c in f)
        lines.append(f"  claim (probe, {estimator_name(estimator)}): bilinear {mean['bilinear']:.3f}, separable "
                     f"{mean['separable']:.3f} > mlp {mean['mlp']:.3f}: "
                     + verdict(min(mean["bilinear"], mean["separable"]) - mean["mlp"], spread))
    if "nwj" in config.estimators:
        f = final["nwj"]
        nwj = {c: f[c]["test_nwj"]["mean"] for c in f}
        spread = max(f[c]["test_nwj"]["std"] for c in f)
        lines.append(f"  claim (tighter bound): test I_NWJ of the mlp critic {nwj['mlp']:.3f} > bilinear "
                     f"{nwj['bilinear']:.3f}, separable {nwj['separable']:.3f}: "
                     + verdict(nwj["mlp"] - max(nwj["bilinear"], nwj["separable"]), spread))
    return lines


def run_targets(config, encoders, default_steps, log=print):
    """Sec. 3.3: for every estimator, target ``t`` of ``--targets`` and encoder kind, ``min |I_EST - t|``
    with a bilinear critic.  Returns ``{"steps", "eval_every", "pixel_baseline", "final": {estimator:
    {"t=<t>": {encoder: {"accuracy", "test_mi", "gap"}}}}, "runs": {label: [rows per seed]}}`` (written to the
    JSON file) and the figure: accuracy (top row) and test I_EST with the targets (bottom row) per estimator.
    """
    steps, eval_every = common.steps_and_interval(config, default_steps)
    train, test = common.open_views(config)
    baseline = common.pixel_baseline(config, train, test)
    log(f"linear probe on the raw top-half pixels: {baseline:.3f}")
    runs, final = {}, {}
    for estimator in config.estimators:
        final[estimator] = {}
        for target in config.targets:
            final[estimator][f"t={target:g}"] = {}
            for encoder in encoders:
                label = f"{encoder}, {estimator_name(estimator)}, t={target:g}"
                runs[label] = [train_two_views(config, train, test, encoder, "bilinear", estimator, seed, steps,
                                               eval_every, target_mi=target, label=label, log=log)
                               for seed in range(config.seed, config.seed + config.seeds)]
                for run_rows in runs[label]:
                    for row in run_rows:
                        row["gap"] = abs(row[f"test_{estimator}"] - target)
                final[estimator][f"t={target:g}"][encoder] = {
                    key: common.final(runs[label], key) for key in ("accuracy", f"test_{estimator}", "gap")}

    def groups(estimator):
        name = estimator_name(estimator)
        return {(label.replace(f", {name}", "") if len(encoders) > 1 else label.split(", ")[-1]): rs
                for label, rs in runs.items() if f", {estimator_name(estimator)}," in label}

    colours = [f"C{k}" for k in range(10)]
    dashes = ["-", "--", "-.", ":"]

    targets = [f"t={t:g}" for t in config.targets]

    def styles(estimator):
        # One colour per encoder and a dash per target (one colour per target with a single encoder).
        style = {}
        for label in groups(estimator):
            k = targets.index(label.split(", ")[-1])
            style[label] = ({"color": colours[encoders.index(label.split(", ")[0]) % 10], "linestyle": dashes[k % 4]}
                            if len(encoders) > 1 else {"color": colours[k % 10]})
        return style

    grid = [[{"groups": groups(e), "key": "accuracy", "ylabel": f"test accuracy with {estimator_name(e)}",
              "hlines": [(baseline, "pixels (linear)")], "title": f"min |{estimator_name(e)} - t|",
              "styles": styles(e)} for e in config.estimators],
            [{"groups": groups(e), "key": f"test_{e}", "ylabel": f"{estimator_name(e)} (nats)", "dotted": "train_mi",
              "hlines": [(t, None) for t in config.targets], "styles": styles(e),
              "title": "test (solid), training batches (dotted); targets dashed"} for e in config.estimators]]
    what = "MLP vs ConvNet encoders" if len(encoders) > 1 else f"{encoders[0]} encoders"
    plot_grid(grid, common.output_paths(config)[1],
              f"Sec. 3.3 on {config.dataset}: {what}, min |I_EST - t|, bilinear critic ({config.seeds} seeds)")
    return {"steps": steps, "eval_every": eval_every, "pixel_baseline": baseline, "final": final, "runs": runs}


def target_lines(config, result):
    """The summary table of :func:`run_targets`'s result."""
    lines = [f"{config.experiment} (Sec. 3.3) on {config.dataset}, bilinear critic, min |I_EST - t|, "
             f"{result['steps']} steps x {config.seeds} seeds; linear probe on pixels "
             f"{result['pixel_baseline']:.3f}; final test values, mean+-std over seeds:",
             f"  {'estimator':<11}{'t':<6}{'encoder':<9}{'test I_EST':<15}{'|I_EST - t|':<15}accuracy"]
    for estimator, by_target in result["final"].items():
        for target, by_encoder in by_target.items():
            for encoder, f in by_encoder.items():
                lines.append(f"  {estimator_name(estimator):<11}{target[2:]:<6}{encoder:<9}"
                             f"{_fmt(f[f'test_{estimator}']):<15}{_fmt(f['gap']):<15}{_fmt(f['accuracy'])}")
    return lines


def finish_targets(config, result, extra_lines=()):
    """Writes :func:`run_targets`'s result with its ``summary_lines`` (printed by the app); returns it."""
    lines = target_lines(config, result) + list(extra_lines)
    return common.write_results(config, result, summary_lines=lines)
