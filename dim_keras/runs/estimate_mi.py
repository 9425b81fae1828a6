"""MINE's correlated-Gaussian check (``apps/estimate_mi.py``): an estimator's MI estimate vs the analytic MI.

x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) eps; the analytic MI is -d/2 log(1 - rho^2) nats
(:mod:`dim_keras.simulation`).  Optionally every estimator is run over a range of rho and
plotted next to the analytic curve.
"""

from dim_keras import choices, io
from dim_keras.config import validate


def _estimate(config, estimator, rho):
    from dim_keras.simulation import estimate_gaussian_mi
    return estimate_gaussian_mi(
        estimator, rho=rho, dim=config.dim, critic=config.critic, batch_size=config.batch_size,
        steps=config.steps, learning_rate=config.learning_rate, hidden_units=config.hidden_units,
        seed=config.seed)


def plot_estimates(config, log=print):
    """Every estimator's estimate at each of ``config.rhos``, plotted to ``config.plot`` (PNG, atomically).

    Returns ``{estimator: [estimate per rho]}``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dim_keras.simulation import gaussian_mi

    rhos = list(config.rhos)
    figure, axis = plt.subplots(figsize=(6, 4))
    try:
        dense = np.linspace(min(rhos), max(rhos), 100)
        axis.plot(dense, [gaussian_mi(r, config.dim) for r in dense], "k--", label="true MI")
        estimates = {}
        for estimator in choices.ESTIMATORS:
            values = [_estimate(config, estimator, r)["estimate"] for r in rhos]
            estimates[estimator] = values
            axis.plot(rhos, values, "o-", label=estimator)
            log(f"{estimator}: " + ", ".join(f"rho={r:g}: {v:.3f}" for r, v in zip(rhos, values)))
        axis.set_xlabel("rho")
        axis.set_ylabel("nats")
        axis.set_title(f"MI estimates, d={config.dim}, batch {config.batch_size}, {config.critic} critic")
        axis.legend()
        figure.tight_layout()
        with io.atomic_path(config.plot) as tmp:
            figure.savefig(tmp, dpi=120)
    finally:
        plt.close(figure)
    return estimates


def estimate_mi(config, log=print):
    """Runs ``config`` (an :class:`dim_keras.config.EstimateMIConfig`).

    Returns what :func:`dim_keras.simulation.estimate_gaussian_mi` returns for
    ``config.estimator`` at ``config.rho`` (``estimate``, ``true_mi``,
    ``history``, the settings); with ``config.plot`` also ``plot``: the path,
    ``rhos`` and every estimator's ``estimates`` there.
    """
    validate(config)
    plot = None
    if config.plot:
        plot = {"path": config.plot, "rhos": list(config.rhos), "estimates": plot_estimates(config, log)}
        log(f"wrote {config.plot}")
    result = _estimate(config, config.estimator, config.rho)
    if plot is not None:
        result["plot"] = plot
    return result
