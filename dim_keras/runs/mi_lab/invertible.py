"""Tschannen et al. (ICLR 2020), Sec. 3.1 "Large MI is not predictive of downstream performance", with
invertible encoders (RealNVP, :class:`dim_keras.invertible.RealNVP`), so that ``I(g1(X1); g2(X2)) =
I(X1; X2)`` for every parameter value: the true MI is constant during training.

- ``invertible`` (Fig. 1a-b, "Maximized MI and improved downstream performance"): g1, g2 are RealNVPs of
  additive couplings ("each of them computes the shift using a separate MLP with two ReLU hidden layers"),
  trained with a bilinear critic to maximise I_NCE or I_NWJ; the paper finds the test I_EST and the linear
  probe of g1(x_top) rising anyway, so the estimators' bias, not MI, drives the representation.
- ``adversarial`` (Fig. 1c, App. B, "Maximized MI and worsened downstream performance"): g1 alone, trained
  against a linear classifier to make its output uniform (:class:`dim_keras.adversarial_invertible.
  AdversarialInvertible`); the paper finds a separately trained linear classifier on the frozen g1 ending
  below raw pixels while g1 stays invertible, i.e. MI stays maximal.

Both measure ``max |g1^-1(g1(x)) - x|`` on the test split at every evaluation: float32 round-off (1e-7 to 1e-4
in the default runs, for pixels in [0, 1]) means g1 is invertible in practice, so the true MI did not change.

CPU scaling (the paper: 30 couplings of 512-512 shift MLPs on MNIST's 392-pixel halves, 21k steps, 20 runs):
the defaults use ``--realnvp_couplings=6 --realnvp_hidden_units=128,128`` on digits' 32-pixel halves (~120k
parameters per encoder, for shifts of 16 coordinates by functions of the other 16) and fewer steps
(``DEFAULT_STEPS``); the paper's sizes are ``--realnvp_couplings=30 --realnvp_hidden_units=512,512`` (~0.4 s per
step on this CPU, against ~15 ms).
"""

import numpy as np

from dim_keras.runs.mi_lab import common

# Steps per run on a CPU (the paper: 21k steps with 21 evaluations for Fig. 1a-b; the notebook runs 4k
# encoder steps for Fig. 1c).  "adversarial" counts encoder steps, each after --classifier_steps classifier
# steps.
DEFAULT_STEPS = {"invertible": 1000, "adversarial": 1500}
ESTIMATOR_NAMES = {"infonce": "I_NCE", "nwj": "I_NWJ", "dv": "I_DV", "jsd": "I_JSD", "mine_f": "I_MINE-f"}


def build_realnvp(config, dim, seed, name):
    """The Sec. 3.1 encoder with ``--realnvp_couplings`` additive couplings of ``--realnvp_hidden_units``.

    Additive (shift-only, ``scale="none"``) couplings as in the paper's text and the notebook's invertible
    experiment; the notebook's adversarial run uses affine couplings with a softplus scale instead, but App. B
    says "the same RealNVP architecture as in the first experiment", which is what is used here for both.
    """
    from dim_keras.invertible import RealNVP
    model = RealNVP(dim, num_couplings=config.realnvp_couplings, hidden_units=config.realnvp_hidden_units,
                    scale="none", seed=seed, name=name)
    model.build((None, dim))
    return model


def inverse_error(encoder, inputs, batch_size=512):
    """``max |encoder.inverse(encoder(x)) - x|`` over the rows of ``inputs`` (float)."""
    from keras import ops
    worst = 0.0
    for start in range(0, len(inputs), batch_size):
        x = np.asarray(inputs[start:start + batch_size], dtype=np.float32)
        back = ops.convert_to_numpy(encoder.inverse(encoder(x)))
        worst = max(worst, float(np.max(np.abs(back - x))))
    return worst


def _name(estimator):
    return ESTIMATOR_NAMES.get(estimator, estimator)


def _fmt(stats, digits=3):
    return f"{stats['mean']:.{digits}f}+-{stats['std']:.{digits}f}"


def run(config, log=print):
    """``invertible`` or ``adversarial`` (``config.experiment``); returns the results written to the JSON."""
    if config.experiment == "adversarial":
        return run_adversarial(config, log=log)
    return run_invertible(config, log=log)


# ------------------------------------------------------------------------------------------- invertible
def relative_change(encoder, inputs, reference):
    """``mean ||g(x) - g0(x)|| / mean ||g0(x)||`` over the rows ``x`` of ``inputs``, ``reference`` being
    ``g0(inputs)`` (the untrained encoder's codes): how far training moved the encoder."""
    from dim_keras.multiview import embed
    return float(np.mean(np.linalg.norm(embed(encoder, inputs) - reference, axis=1))
                 / np.mean(np.linalg.norm(reference, axis=1)))


def _inverse_tracker_class():
    import keras

    from dim_keras.multiview import embed

    class InverseError(keras.callbacks.Callback):
        """At the start and after every epoch: ``max |g1^-1(g1(x)) - x|`` and :func:`relative_change` of g1
        on ``inputs``."""

        def __init__(self, inputs):
            super().__init__()
            self.inputs, self.values, self.reference = inputs, [], None

        def measure(self):
            encoder = self.model.encoder_top
            self.values.append({"inverse_error": inverse_error(encoder, self.inputs),
                                "relative_change": relative_change(encoder, self.inputs, self.reference)})

        def on_train_begin(self, logs=None):
            if not self.values:
                self.reference = embed(self.model.encoder_top, self.inputs)
                self.measure()

        def on_epoch_end(self, epoch, logs=None):
            self.measure()

    return InverseError


def build_invertible_model(config, top_dim, bottom_dim, estimator, seed):
    """The compiled Fig. 1a-b model: RealNVP g1, g2 and a bilinear critic maximising ``estimator``."""
    import keras

    from dim_keras.critics import BilinearCritic
    from dim_keras.multiview import TwoViewInfoMax

    model = TwoViewInfoMax(build_realnvp(config, top_dim, seed, "g1"),
                           build_realnvp(config, bottom_dim, seed + 1, "g2"),
                           BilinearCritic(name="critic"), estimator)
    model.build(((None, top_dim), (None, bottom_dim)))
    # XLA: ~2x faster dense layers on this CPU (13 vs 23 ms per step with 10 couplings of 128-128).
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=True)
    return model


def train_invertible(config, train, test, estimator, seed, steps, eval_every, label="", log=print):
    """One run of Fig. 1a-b: the rows of :func:`common.fit_tracked` with ``inverse_error`` (max |g1^-1(g1(x))
    - x| on the test split) and ``relative_change`` (mean ||g1(x) - g1_0(x)|| / mean ||g1_0(x)||, g1_0 untrained)."""
    import keras

    keras.backend.clear_session()  # several runs per process: drop the previous runs' graphs
    keras.utils.set_random_seed(seed)
    model = build_invertible_model(config, train.top.shape[1], train.bottom.shape[1], estimator, seed)
    tracker = _inverse_tracker_class()(test.top)
    rows = common.fit_tracked(model, train, test, config, seed, steps, eval_every, callbacks=[tracker],
                              label=label, log=log)
    for row, values in zip(rows, tracker.values):
        row.update(values)
    return rows


def run_invertible(config, log=print):
    """Sec. 3.1, Fig. 1a-b: every estimator of ``--estimators``, ``--seeds`` runs each."""
    steps, eval_every = common.steps_and_interval(config, DEFAULT_STEPS["invertible"])
    train, test = common.open_views(config)
    baseline = common.pixel_baseline(config, train, test)
    log(f"linear probe on the raw top-half pixels: {baseline:.3f}")
    runs = {}
    for estimator in config.estimators:
        label = _name(estimator)
        runs[label] = [train_invertible(config, train, test, estimator, seed, steps, eval_every, label=label,
                                        log=log)
                       for seed in range(config.seed, config.seed + config.seeds)]
    keys = ("test_mi", "accuracy", "inverse_error", "relative_change")
    final = {_name(e): {key: common.final(runs[_name(e)], key) for key in keys} for e in config.estimators}
    start = {_name(e): {key: common.final([[run[0]] for run in runs[_name(e)]], key) for key in keys[:2]}
             for e in config.estimators}
    worst = max(row["inverse_error"] for label_runs in runs.values() for run in label_runs for row in run)

    common.plot_curves(runs, [("test_mi", "test I_EST (nats)"), ("accuracy", "test accuracy (linear probe)")],
                       common.output_paths(config)[1],
                       f"Fig. 1a-b on {config.dataset}: RealNVP g1, g2 ({config.realnvp_couplings} couplings), "
                       f"{config.seeds} seeds; max |g1^-1(g1(x)) - x| = {worst:.0e}", baseline=baseline)

    lines = [f"invertible (Sec. 3.1, Fig. 1a-b) on {config.dataset}: RealNVP g1, g2 with "
             f"{config.realnvp_couplings} additive couplings of {','.join(map(str, config.realnvp_hidden_units))}, "
             f"bilinear critic, {steps} steps x {config.seeds} seeds; linear probe on pixels {baseline:.3f}",
             f"  {'estimator':<11}{'test I_EST start':<19}{'test I_EST end':<17}{'accuracy start':<17}"
             f"{'accuracy end':<15}{'change of g1 (end)':<20}max |g1^-1(g1(x)) - x|"]
    for estimator in config.estimators:
        s, f = start[_name(estimator)], final[_name(estimator)]
        lines.append(f"  {_name(estimator):<11}{_fmt(s['test_mi']):<19}{_fmt(f['test_mi']):<17}"
                     f"{_fmt(s['accuracy']):<17}{_fmt(f['accuracy']):<15}{_fmt(f['relative_change']):<20}"
                     f"{max(f['inverse_error']['values']):.1e}")
    for estimator in config.estimators:
        s, f = start[_name(estimator)], final[_name(estimator)]
        lines.append(f"  claim ({_name(estimator)}: test I_EST rises although the true MI is constant): "
                     f"{s['test_mi']['mean']:.3f} -> {f['test_mi']['mean']:.3f}, max |g1^-1(g1(x)) - x| "
                     f"{max(f['inverse_error']['values']):.1e}: "
                     + ("reproduced" if common.clearly_above(f["test_mi"], s["test_mi"]) else "NOT reproduced"))
        better = common.clearly_above(f["accuracy"], s["accuracy"]) and f["accuracy"]["mean"] > baseline
        lines.append(f"  claim ({_name(estimator)}: the linear probe rises above pixels, by more than the spread "
                     f"over seeds): {s['accuracy']['mean']:.3f} -> {f['accuracy']['mean']:.3f} (pixels "
                     f"{baseline:.3f}): " + ("reproduced" if better else "NOT reproduced"))
    lines.append(f"  invertibility: max |g1^-1(g1(x)) - x| over every evaluation of every run = {worst:.1e} "
                 f"(float32 round-off: g1 stays invertible, the true MI is constant)")
    return common.write_results(config, summary_lines=lines, result={
        "steps": steps, "eval_every": eval_every, "pixel_baseline": baseline, "max_inverse_error": worst,
        "start": start, "final": final, "runs": runs})


# ------------------------------------------------------------------------------------------ adversarial
def probe_accuracy_and_loss(train_features, train_labels, test_features, test_labels, max_iter=1000):
    """The linear probe (logistic regression on standardised features, as
    :func:`dim_keras.multiview.probe_accuracy`) trained separately on frozen features: ``(test accuracy, test
    cross-entropy in nats)``; Fig. 1c shows that loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # see dim_keras.multiview.probe_accuracy
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        model.fit(train_features, train_labels)
        probabilities = model.predict_proba(test_features)
    accuracy = float(np.mean(model.classes_[np.argmax(probabilities, axis=1)] == test_labels))
    return accuracy, float(log_loss(test_labels, probabilities, labels=model.classes_))


def _adversarial_tracker_class():
    import keras

    from dim_keras.multiview import embed

    class SeparateProbe(keras.callbacks.Callback):
        """At the start (after the warm-up) and after every epoch (``eval_every`` encoder steps): a separately
        trained linear probe on the frozen ``g1(x_top)`` (accuracy and test cross-entropy), the adversary's own
        test accuracy, and ``max |g1^-1(g1(x)) - x|`` on the test split."""

        def __init__(self, train, test, eval_every, probe_examples, seed, log):
            super().__init__()
            self.train, self.test, self.eval_every, self.log = train, test, eval_every, log
            self.chosen = common.probe_indices(len(train), probe_examples, seed)
            self.rows, self.reference = [], None

        def measure(self, step):
            encoder = self.model.encoder
            accuracy, loss = probe_accuracy_and_loss(
                embed(encoder, self.train.top[self.chosen]), self.train.labels[self.chosen],
                embed(encoder, self.test.top), self.test.labels)
            logits = embed(self.model.logits, self.test.top)
            row = {"step": int(step), "accuracy": accuracy, "probe_loss": loss,
                   "classifier_accuracy": float(np.mean(np.argmax(logits, axis=1) == self.test.labels)),
                   "inverse_error": inverse_error(encoder, self.test.top),
                   "relative_change": relative_change(encoder, self.test.top, self.reference)}
            self.rows.append(row)
            self.log(f"step {row['step']}: separate linear probe {accuracy:.3f} (test cross-entropy {loss:.3f}), "
                     f"adversary's classifier {row['classifier_accuracy']:.3f}, max |g1^-1(g1(x)) - x| "
                     f"{row['inverse_error']:.1e}")

        def on_train_begin(self, logs=None):
            if not self.rows:
                self.reference = embed(self.model.encoder, self.test.top)
                self.measure(0)

        def on_epoch_end(self, epoch, logs=None):
            self.measure((epoch + 1) * self.eval_every)

    return SeparateProbe


def _labelled_dataset(views, batch_size, seed):
    import tensorflow as tf
    dataset = tf.data.Dataset.from_tensor_slices((views.top, views.labels))
    dataset = dataset.shuffle(len(views), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def train_adversarial(config, train, test, seed, steps, eval_every, log=print):
    """One run of Fig. 1c / App. B: the warm-up, then ``steps`` rounds of ``--classifier_steps`` classifier
    steps and one encoder step; returns the tracker's rows and the warm-up's last classifier loss/accuracy."""
    import keras

    from dim_keras.adversarial_invertible import AdversarialInvertible

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    dim = train.top.shape[1]
    model = AdversarialInvertible(build_realnvp(config, dim, seed, "g1"), num_classes=10,
                                  classifier_steps=config.classifier_steps)
    model.build((None, dim))
    model.compile(classifier_optimizer=keras.optimizers.Adam(config.classifier_learning_rate),
                  encoder_optimizer=keras.optimizers.Adam(config.encoder_learning_rate), jit_compile=True)
    warm = model.warm_up(_labelled_dataset(train, config.batch_size, seed), config.warmup_steps)
    prefix = f"seed {seed}: "
    if warm is not None:
        log(prefix + f"warm-up, {config.warmup_steps} classifier steps: training cross-entropy {warm[0]:.3f}, "
                     f"accuracy {warm[1]:.3f}")
    tracker = _adversarial_tracker_class()(train, test, eval_every, config.probe_examples, seed,
                                           log=lambda line: log(prefix + line))
    # Each round takes (classifier_steps + 1) batches: one per classifier step and one for the encoder step.
    rounds = _labelled_dataset(train, (config.classifier_steps + 1) * config.batch_size, seed + 1)
    model.fit(rounds, steps_per_epoch=eval_every, epochs=max(1, steps // eval_every), callbacks=[tracker],
              shuffle=False, verbose=0)
    return tracker.rows


def run_adversarial(config, log=print):
    """Sec. 3.1, Fig. 1c, App. B: ``--seeds`` adversarial runs (no MI estimator: ``--estimators`` is unused)."""
    steps, eval_every = common.steps_and_interval(config, DEFAULT_STEPS["adversarial"])
    train, test = common.open_views(config)
    chosen = common.probe_indices(len(train), config.probe_examples, config.seed)
    baseline, baseline_loss = probe_accuracy_and_loss(train.top[chosen], train.labels[chosen], test.top,
                                                      test.labels)
    log(f"linear probe on the raw top-half pixels: {baseline:.3f} (test cross-entropy {baseline_loss:.3f})")
    runs = [train_adversarial(config, train, test, seed, steps, eval_every, log=log)
            for seed in range(config.seed, config.seed + config.seeds)]
    keys = ("accuracy", "probe_loss", "classifier_accuracy", "inverse_error", "relative_change")
    start = {key: common.final([[run[0]] for run in runs], key) for key in keys if key != "inverse_error"}
    final = {key: common.final(runs, key) for key in keys}
    worst = max(row["inverse_error"] for run in runs for row in run)

    group = {"adversarially trained invertible g1": runs}
    common.plot_curves(group, [("accuracy", "test accuracy, separate linear probe"),
                               ("probe_loss", "test cross-entropy, separate linear probe"),
                               ("classifier_accuracy", "test accuracy of the adversary's classifier")],
                       common.output_paths(config)[1],
                       f"Tschannen et al. Fig. 1c on {config.dataset}: RealNVP g1 ({config.realnvp_couplings} "
                       f"couplings) trained against a linear classifier, {config.seeds} seeds; pixels: accuracy "
                       f"{baseline:.3f}, cross-entropy {baseline_loss:.3f}; max |g1^-1(g1(x)) - x| = {worst:.1e}",
                       baseline=baseline)

    lines = [f"adversarial (Sec. 3.1, Fig. 1c, App. B) on {config.dataset}: RealNVP g1 with "
             f"{config.realnvp_couplings} additive couplings of {','.join(map(str, config.realnvp_hidden_units))}; "
             f"Adam {config.classifier_learning_rate:g} (classifier) / {config.encoder_learning_rate:g} (encoder), "
             f"{config.classifier_steps} classifier steps per encoder step, {config.warmup_steps} warm-up steps, "
             f"{steps} encoder steps x {config.seeds} seeds",
             f"  {'':<44}{'start':<17}end",
             f"  {'separate linear probe, test accuracy':<44}{_fmt(start['accuracy']):<17}{_fmt(final['accuracy'])}"
             f"   (pixels {baseline:.3f})",
             f"  {'separate linear probe, test cross-entropy':<44}{_fmt(start['probe_loss']):<17}"
             f"{_fmt(final['probe_loss'])}   (pixels {baseline_loss:.3f})",
             f"  {'adversary classifier, test accuracy':<44}{_fmt(start['classifier_accuracy']):<17}"
             f"{_fmt(final['classifier_accuracy'])}",
             f"  {'change of g1, |g1(x) - g1_0(x)| / |g1_0(x)|':<44}{_fmt(start['relative_change']):<17}"
             f"{_fmt(final['relative_change'])}"]
    worse = (common.clearly_above({"mean": baseline, "std": 0.0}, final["accuracy"])
             and common.clearly_above(final["probe_loss"], {"mean": baseline_loss, "std": 0.0}))
    lines.append(f"  claim (an invertible g1, hence maximal MI, with a linear probe worse than pixels by more than the "
                 f"spread over seeds): accuracy "
                 f"{final['accuracy']['mean']:.3f} vs pixels {baseline:.3f}, cross-entropy "
                 f"{final['probe_loss']['mean']:.3f} vs {baseline_loss:.3f}, max |g1^-1(g1(x)) - x| {worst:.1e}: "
                 + ("reproduced" if worse else "NOT reproduced"))
    return common.write_results(config, summary_lines=lines, result={
        "steps": steps, "eval_every": eval_every, "pixel_baseline": baseline, "pixel_baseline_loss": baseline_loss,
        "max_inverse_error": worst, "start": start, "final": final, "runs": runs})
