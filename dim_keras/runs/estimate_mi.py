"""MINE's correlated-Gaussian check (``apps/estimate_mi.py``): an estimator's MI estimate vs the analytic MI.

x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) eps; the analytic MI is -d/2 log(1 - rho^2) nats
(:mod:`dim_keras.simulation`).  Optionally every estimator is run over a range of rho and
plotted next to the analytic curve.  ``--experiment=sweep`` runs MINE's Fig. 1 (estimators x
dimensions x seeds, estimate vs true MI with error bars) and ``--experiment=invariance`` MINE's
Fig. 2 (``Y = f(X) + sigma eps`` for several f).
"""

from dim_keras import choices, figures, io
from dim_keras.config import validate


def _estimate(config, estimator, rho):
    from dim_keras.simulation import estimate_gaussian_mi
    return estimate_gaussian_mi(
        estimator, rho=rho, dim=config.dim, critic=config.critic, batch_size=config.batch_size,
        steps=config.steps, learning_rate=config.learning_rate, hidden_units=config.hidden_units,
        seed=config.seed, ema_decay=config.ema_decay)


def plot_estimates(config, log=print):
    """Every estimator's estimate at each of ``config.rhos``, plotted to ``config.plot`` (PNG, atomically).

    Returns ``{estimator: [estimate per rho]}``.
    """
    import numpy as np

    from dim_keras.simulation import gaussian_mi

    rhos = list(config.rhos)
    figure, axis = figures.pyplot().subplots(figsize=(6, 4))
    with figures.drawing(figure, config.plot, dpi=120):
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
    return estimates


def plot_sweep(result, path):
    """MINE Fig. 1 style: estimate (mean +- std over seeds) vs true MI, one line per estimator."""
    figure, axis = figures.pyplot().subplots(figsize=(6, 4))
    with figures.drawing(figure, path, dpi=80):
        true = result["true_mi"]
        axis.plot(true, true, "k--", label="true MI")
        for name, row in result["estimators"].items():
            axis.errorbar(true, row["mean"], yerr=row["std"], fmt="o-", capsize=3, label=name)
        for d, t in zip(result["dims"], true):
            axis.annotate(f"d={d}", (t, 0), textcoords="offset points", xytext=(0, 4), fontsize=7, ha="center")
        axis.set_xlabel("true MI (nats)")
        axis.set_ylabel("estimate (nats)")
        axis.set_title(f"rho={result['rho']}, {result['seeds']} seeds, batch {result['batch_size']}, "
                       f"{result['steps']} steps", fontsize=9)
        axis.legend(fontsize=7)


def plot_invariance(result, path):
    """MINE Fig. 2 style: the estimate per f against sigma, with the numerical MI dashed."""
    figure, axis = figures.pyplot().subplots(figsize=(6, 4))
    with figures.drawing(figure, path, dpi=80):
        sigmas = result["sigmas"]
        for name, row in result["functions"].items():
            line, = axis.plot(sigmas, row["estimates"], "o-", label=f"{name} (estimate)")
            axis.plot(sigmas, row["true_mi"], "--", color=line.get_color(), label=f"{name} (numerical MI)")
        axis.set_xscale("log")
        axis.set_xlabel("sigma")
        axis.set_ylabel("nats")
        axis.set_title(f"I(X; f(X) + sigma eps), X ~ U(-1, 1), {result['estimator']}", fontsize=9)
        axis.legend(fontsize=7)


def _common(config):
    return dict(critic=config.critic, batch_size=config.sweep_batch_size, steps=config.sweep_steps,
                learning_rate=config.learning_rate, hidden_units=config.hidden_units)


def run_sweep(config, log=print):
    """``--experiment=sweep``: :func:`dim_keras.simulation.sweep_gaussian_mi` (+ plot, JSON)."""
    from dim_keras.simulation import sweep_gaussian_mi
    result = sweep_gaussian_mi(config.sweep_estimators, config.sweep_dims, rho=config.rho, seeds=config.seeds,
                               log=log, ema_decay_for_dv_ema=config.ema_decay, first_seed=config.seed,
                               **_common(config))
    return result


def run_invariance(config, log=print):
    """``--experiment=invariance``: :func:`dim_keras.simulation.invariance_experiment` (+ plot, JSON)."""
    from dim_keras.simulation import invariance_experiment
    return invariance_experiment(config.functions, config.sigmas, estimator=config.estimator, seed=config.seed,
                                 log=log, ema_decay=config.ema_decay, **_common(config))


def estimate_mi(config, log=print):
    """Runs ``config`` (an :class:`dim_keras.config.EstimateMIConfig`).

    ``--experiment=sweep`` / ``invariance`` return what
    :func:`dim_keras.simulation.sweep_gaussian_mi` /
    :func:`~dim_keras.simulation.invariance_experiment` return (plus
    ``experiment``, ``batch_size``, ``steps``), after writing ``config.plot``
    and ``config.output_json`` if set.  Otherwise returns what
    :func:`dim_keras.simulation.estimate_gaussian_mi` returns for
    ``config.estimator`` at ``config.rho`` (``estimate``, ``true_mi``,
    ``history``, the settings); with ``config.plot`` also ``plot``: the path,
    ``rhos`` and every estimator's ``estimates`` there.
    """
    validate(config)
    if config.experiment != "single":
        run, draw = {"sweep": (run_sweep, plot_sweep), "invariance": (run_invariance, plot_invariance)}[
            config.experiment]
        result = run(config, log)
        result.update(experiment=config.experiment, batch_size=config.sweep_batch_size, steps=config.sweep_steps)
        if config.plot:
            draw(result, config.plot)
            log(f"wrote {config.plot}")
        if config.output_json:
            io.write_json(config.output_json, result)
            log(f"wrote {config.output_json}")
        return result
    plot = None
    if config.plot:
        plot = {"path": config.plot, "rhos": list(config.rhos), "estimates": plot_estimates(config, log)}
        log(f"wrote {config.plot}")
    result = _estimate(config, config.estimator, config.rho)
    if plot is not None:
        result["plot"] = plot
    return result
