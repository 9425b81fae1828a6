"""GAN vs GAN+MINE on 25 Gaussians (MINE, Belghazi et al. 2018, Sec. 5.1.1, Fig. 4; ``apps/mine_gan.py``).

For each seed the plain GAN (``beta = 0``) and GAN+MINE (``beta = config.beta``) are trained with the same
networks, data and optimiser settings (:mod:`dim_keras.mine_gan`); each generates ``config.eval_samples``
samples on which the modes covered and the fraction of high-quality samples (within 3 standard deviations of a
mode) are counted.  The KDE plots of the samples (one row per seed: data, GAN, GAN+MINE, like Fig. 4) go to
``<output_dir>/mine_gan.png`` and every number to ``<output_dir>/mine_gan.json``.
"""

import math
import os
import time

import numpy as np

from dim_keras import figures, io
from dim_keras.config import to_dict, validate
from dim_keras.errors import TrainingDiverged

MODELS = ("gan", "gan_mine")
TITLES = {"gan": "GAN", "gan_mine": "GAN+MINE"}


def output_paths(config):
    """``(png, json)`` paths of a run."""
    return (os.path.join(config.output_dir, "mine_gan.png"), os.path.join(config.output_dir, "mine_gan.json"))


def _mean_std(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def train_and_measure(config, beta, seed, log=print):
    """Trains one model (``beta`` 0: the plain GAN) and returns ``(measures dict, samples [N, 2])``."""
    import keras

    from dim_keras import mine_gan

    keras.utils.set_random_seed(seed)
    data = mine_gan.sample_25_gaussians(mine_gan.TRAIN_EXAMPLES, seed=seed)
    model = mine_gan.build_mine_gan(
        beta=beta, noise_dim=config.noise_dim, code_dim=config.code_dim,
        generator_units=config.generator_units, discriminator_units=config.discriminator_units,
        statistics_units=config.statistics_units, ema_decay=config.ema_decay,
        adaptive_clipping=config.adaptive_clipping, statistics_batch_size=config.statistics_batch_size or None,
        seed=seed)
    model.compile(*(mine_gan.default_optimizer(config.learning_rate) for _ in range(3)))
    start = time.time()
    logs = mine_gan.fit_steps(model, data, config.steps, batch_size=config.batch_size,
                              jit_compile=config.jit_compile, seed=seed)
    seconds = time.time() - start
    samples = model.generate(config.eval_samples)
    if not np.all(np.isfinite(samples)):  # else every sample would count as collapsed onto mode 0
        raise TrainingDiverged(f"{'GAN+MINE' if beta > 0 else 'GAN'} (seed {seed}) diverged: its samples are not "
                               f"finite after {config.steps} steps (try a lower --learning_rate)")
    coverage = mine_gan.mode_coverage(samples, min_count=config.min_count)
    strict = sum(count >= config.strict_min_count for count in coverage["counts"])
    measures = {
        "beta": beta, "seed": seed, "covered_modes": coverage["covered_modes"],
        "covered_modes_strict": int(strict), "high_quality_fraction": coverage["high_quality_fraction"],
        "counts": coverage["counts"], "train_seconds": seconds, "final_metrics": logs,
    }
    log(f"seed {seed} {'GAN+MINE' if beta > 0 else 'GAN':8s} modes {coverage['covered_modes']:2d}/25 "
        f"(>= {config.strict_min_count} samples: {strict:2d}), high quality "
        f"{100 * coverage['high_quality_fraction']:5.1f} %, I(G; c) {logs.get('mutual_information', 0.0):.2f} "
        f"nats, {seconds:.0f} s")
    return measures, samples


def kde_grid(samples, bandwidth=0.1, limit=6.0, resolution=120):
    """Gaussian KDE (isotropic ``bandwidth``) of 2-D samples on a ``resolution``^2 grid over ``[-limit, limit]^2``.

    Returns ``(xs, ys, density)``; a fixed small bandwidth (2 mode standard deviations) keeps the 25 modes
    apart, which Scott's rule on the whole mixture would blur together.
    """
    import numpy as np

    axis = np.linspace(-limit, limit, resolution)
    xs, ys = np.meshgrid(axis, axis)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    samples = np.asarray(samples, dtype=np.float64)
    density = np.zeros(len(grid))
    for start in range(0, len(samples), 500):
        chunk = samples[start:start + 500]
        squared = ((grid[:, None, :] - chunk[None, :, :]) ** 2).sum(-1)
        density += np.exp(-0.5 * squared / bandwidth ** 2).sum(axis=1)
    density /= len(samples) * 2.0 * math.pi * bandwidth ** 2
    return xs, ys, density.reshape(xs.shape)


def plot_kde(rows, path, data_samples):
    """MINE Fig. 4 style: one row per seed, columns data / GAN / GAN+MINE (KDE plots), written atomically."""
    import matplotlib.colors as colors

    figure, axes = figures.pyplot().subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    with figures.drawing(figure, path, dpi=80):
        data_kde = kde_grid(data_samples)
        for row, (seed, samples, measures) in zip(axes, rows):
            panels = [("data (25 Gaussians)", data_kde)] + [
                (f"{TITLES[name]}, seed {seed}: {measures[name]['covered_modes']} modes, "
                 f"{100 * measures[name]['high_quality_fraction']:.0f} % HQ", kde_grid(samples[name]))
                for name in MODELS]
            for axis, (title, (xs, ys, density)) in zip(row, panels):
                axis.pcolormesh(xs, ys, density, shading="auto", cmap="viridis",
                                norm=colors.PowerNorm(gamma=0.4, vmin=0.0, vmax=max(density.max(), 1e-12)))
                axis.set_aspect("equal")
                axis.set_xticks([-4, -2, 0, 2, 4])
                axis.set_yticks([-4, -2, 0, 2, 4])
                axis.set_title(title, fontsize=8)


def mine_gan(config, log=print):
    """Runs ``config`` (a :class:`dim_keras.config.MineGANConfig`) and returns the results.

    Returns a dict with ``modes_gan``, ``modes_gan_mine``, ``high_quality_gan``, ``high_quality_gan_mine``
    (means over seeds; modes out of 25, high quality as a fraction), the same with ``_std`` (sample standard
    deviation over seeds), ``modes_strict_gan`` / ``modes_strict_gan_mine`` (modes with at least
    ``strict_min_count`` high-quality samples), ``per_seed`` (``{"gan": [...], "gan_mine": [...]}`` with each
    run's measures), ``seeds``, ``settings``, ``png`` and ``json`` (the files written).
    """
    validate(config)
    from dim_keras import mine_gan as mine_gan_lib

    png, json_path = output_paths(config)
    seeds = list(range(config.seed, config.seed + config.seeds))
    per_seed = {name: [] for name in MODELS}
    rows = []
    for seed in seeds:
        samples, measures = {}, {}
        for name, beta in zip(MODELS, (0.0, config.beta)):
            measures[name], samples[name] = train_and_measure(config, beta, seed, log)
            per_seed[name].append(measures[name])
        rows.append((seed, samples, measures))
    result = {"seeds": seeds}
    for name in MODELS:
        for key, field in (("modes", "covered_modes"), ("modes_strict", "covered_modes_strict"),
                           ("high_quality", "high_quality_fraction")):
            mean, std = _mean_std([m[field] for m in per_seed[name]])
            result[f"{key}_{name}"] = mean
            result[f"{key}_{name}_std"] = std
    result["per_seed"] = per_seed
    result["settings"] = to_dict(config)
    data_samples = mine_gan_lib.sample_25_gaussians(config.eval_samples, seed=config.seed)
    plot_kde(rows, png, data_samples)
    result.update(png=png, json=json_path)
    io.write_json(json_path, result)
    log(f"wrote {png} and {json_path}")
    return result
