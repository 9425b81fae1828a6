"""MINE's simulation: estimate the MI of correlated Gaussians with a trained critic.

    python apps/estimate_mi.py --estimator=dv --rho=0.9 --dim=2 --json
    python apps/estimate_mi.py --plot=mi_vs_rho.png      # all estimators over rho

x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) eps; the analytic MI is -d/2 log(1 - rho^2) nats.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags, logging  # noqa: E402

from dim_keras import cli  # noqa: E402

from dim_keras.choices import CRITICS, ESTIMATORS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("estimator", "dv", f"MI estimator: {', '.join(ESTIMATORS)}.")
flags.DEFINE_string("critic", "separable", f"Critic for the vector pairs: {', '.join(CRITICS)}.")
flags.DEFINE_float("rho", 0.8, "Per-dimension correlation of x and z, in (-1, 1).")
flags.DEFINE_integer("dim", 2, "Number of dimensions d.")
flags.DEFINE_integer("batch_size", 512, "Pairs per batch (B x B scores per batch).")
flags.DEFINE_integer("steps", 1000, "Critic training steps.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the critic.")
flags.DEFINE_integer("hidden_units", 128, "Hidden width of the critic's MLPs.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_boolean("json", False, "Print a JSON object as the last line.")
flags.DEFINE_string("plot", None, "Write a PNG of the estimate vs rho for every estimator "
                    "(next to the analytic MI) to this path.")
flags.DEFINE_string("rhos", "0.0,0.2,0.4,0.6,0.8,0.9,0.95", "Correlations for --plot.")


def fail(message, code=2):
    cli.fail("estimate_mi.py", message, code)



def _validate():
    if FLAGS.estimator not in ESTIMATORS:
        fail(f"unknown estimator {FLAGS.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if FLAGS.critic not in CRITICS:
        fail(f"unknown critic {FLAGS.critic!r}; choose one of {', '.join(CRITICS)}")
    if not -1.0 < FLAGS.rho < 1.0:
        fail(f"rho must be in (-1, 1), got {FLAGS.rho}")
    for name in ("dim", "steps", "hidden_units"):
        if FLAGS[name].value < 1:
            fail(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if FLAGS.batch_size < 2:
        fail(f"--batch_size must be >= 2, got {FLAGS.batch_size}")
    try:
        rhos = [float(r) for r in FLAGS.rhos.split(",")]
    except ValueError:
        fail(f"--rhos must be comma-separated numbers, got {FLAGS.rhos!r}")
    if not all(-1.0 < r < 1.0 for r in rhos):
        fail("every value of --rhos must be in (-1, 1)")
    if FLAGS.plot:
        parent = os.path.dirname(os.path.abspath(FLAGS.plot))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            fail(f"cannot write the plot to {FLAGS.plot}: {parent} is not a writable directory")
    return rhos


def _estimate(estimator, rho):
    from dim_keras.simulation import estimate_gaussian_mi
    return estimate_gaussian_mi(
        estimator, rho=rho, dim=FLAGS.dim, critic=FLAGS.critic, batch_size=FLAGS.batch_size,
        steps=FLAGS.steps, learning_rate=FLAGS.learning_rate, hidden_units=FLAGS.hidden_units,
        seed=FLAGS.seed)


def _plot(rhos, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dim_keras.simulation import gaussian_mi
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 4))
    dense = np.linspace(min(rhos), max(rhos), 100)
    ax.plot(dense, [gaussian_mi(r, FLAGS.dim) for r in dense], "k--", label="true MI")
    results = {}
    for estimator in ESTIMATORS:
        values = [_estimate(estimator, r)["estimate"] for r in rhos]
        results[estimator] = values
        ax.plot(rhos, values, "o-", label=estimator)
        print(f"{estimator}: " + ", ".join(f"rho={r:g}: {v:.3f}" for r, v in zip(rhos, values)))
    ax.set_xlabel("rho")
    ax.set_ylabel("nats")
    ax.set_title(f"MI estimates, d={FLAGS.dim}, batch {FLAGS.batch_size}, {FLAGS.critic} critic")
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return results


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)
    rhos = _validate()
    if FLAGS.plot:
        _plot(rhos, FLAGS.plot)
        print(f"wrote {FLAGS.plot}")
    result = _estimate(FLAGS.estimator, FLAGS.rho)
    print(f"{FLAGS.estimator} estimate {result['estimate']:.4f} nats; true MI "
          f"{result['true_mi']:.4f} nats (rho={FLAGS.rho}, d={FLAGS.dim}, batch {FLAGS.batch_size})")
    if FLAGS.json:
        result.pop("history")
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main, "estimate_mi.py")
