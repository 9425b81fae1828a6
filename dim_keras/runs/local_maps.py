"""Fig. 14 of the DIM paper: where the local objective suffers when Y sees an occluded image.

For a finished training run (its ``model.keras``), a batch of test images is encoded twice: once whole,
once with App. A.7's occlusion masks (:mod:`dim_keras.occlusion`).  The local features always come from
the whole images; Y comes from the whole or the occluded images.  At every location the infoNCE loss of
Y against that location's local feature is computed with the run's own critic (the other images of the
batch give the negatives, as in training; Fig. 14 uses this NCE loss, "minus the value in Equation 5",
whatever estimator the run trained with).  The figure shows, per image, the input Y saw and the loss map
beside it, whole then occluded.

The paper's observation ("with occluded inputs, this loss tends to be highest for local features with
receptive fields that overlap the occluded region") is measured as well: each location is given the
occluded fraction of its cell of the image (the ``side / M`` pixels square it sits on, a stand-in for its
receptive field, which is larger), and the summary reports the mean loss increase at fully occluded vs
fully visible cells and their correlation over all locations.
"""

import os

import numpy as np

from dim_keras import figures, io
from dim_keras.config import load_run_config
from dim_keras.errors import UsageError


def location_losses(model, images, y_images=None):
    """The infoNCE loss ``[B, M, M]`` of Y (from ``y_images``, default ``images``) against the local feature
    of ``images`` at every location, with ``model``'s (a ``DeepInfoMax``) local critic and score settings."""
    from keras import ops

    from dim_keras import estimators
    from dim_keras.models import as_unit_floats

    local = model.encoder(as_unit_floats(images), training=False)["local"]
    source = images if y_images is None else y_images
    y = model.encoder(as_unit_floats(source), training=False)["y"]
    scores = model.local_scores(y, local)
    losses = estimators.infonce_location_losses(scores)
    return ops.convert_to_numpy(ops.reshape(losses, (-1, local.shape[1], local.shape[2])))


def cell_occlusion(masks, rows, cols):
    """The occluded fraction of each location's cell: ``masks`` [B, H, W, 1] (1 visible) -> [B, rows, cols];
    location ``(i, j)``'s cell is rows ``[i H / rows, (i + 1) H / rows)`` and likewise for columns."""
    height, width = masks.shape[1:3]
    row_edges = [i * height // rows for i in range(rows + 1)]
    col_edges = [j * width // cols for j in range(cols + 1)]
    visible = np.stack([np.stack([masks[:, row_edges[i]:row_edges[i + 1], col_edges[j]:col_edges[j + 1], 0]
                                  .mean(axis=(1, 2)) for j in range(cols)], axis=-1) for i in range(rows)], axis=1)
    return 1.0 - visible


def _summary(full, occluded, occlusion):
    increase = occluded - full
    covered, clear = occlusion >= 1.0, occlusion <= 0.0
    summary = {
        "mean_loss_full": float(full.mean()),
        "mean_loss_occluded": float(occluded.mean()),
        "loss_increase_at_occluded_cells": float(increase[covered].mean()) if covered.any() else None,
        "loss_increase_at_visible_cells": float(increase[clear].mean()) if clear.any() else None,
        "occluded_cells": int(covered.sum()),
        "visible_cells": int(clear.sum()),
    }
    if increase.std() > 0 and occlusion.std() > 0:
        summary["correlation_increase_vs_occlusion"] = float(np.corrcoef(increase.ravel(), occlusion.ravel())[0, 1])
    return summary


def _plot(path, images, occluded_images, full, occluded, count):
    plt = figures.pyplot()
    top = max(full[:count].max(), occluded[:count].max())
    figure, axes = plt.subplots(count, 4, figsize=(7.6, 1.9 * count), squeeze=False)
    with figures.drawing(figure, path, tight=False):
        figure.subplots_adjust(left=0.02, right=0.86, top=0.95, bottom=0.02, wspace=0.08, hspace=0.12)
        for row in range(count):
            panels = ((images[row], "input for Y: whole"), (full[row], "NCE loss per location"),
                      (occluded_images[row], "input for Y: occluded"), (occluded[row], "NCE loss per location"))
            for axis, (panel, title) in zip(axes[row], panels):
                if panel.ndim == 3:
                    axis.imshow(panel)
                else:
                    shown = axis.imshow(panel, cmap="magma", vmin=0.0, vmax=top)
                axis.set_xticks([]), axis.set_yticks([])
                if row == 0:
                    axis.set_title(title, fontsize=8)
        figure.colorbar(shown, cax=figure.add_axes([0.89, 0.2, 0.025, 0.6]), label="nats")


def local_maps(config, log=print):
    """Writes the figure and its JSON summary; returns the summary."""
    run_config, _ = load_run_config(config.run_dir)
    import keras

    import dim_keras
    from dim_keras.data.load import load_split
    from dim_keras.occlusion import check_image_size, occlusion_masks

    model = dim_keras.load_model(os.path.join(config.run_dir, "model.keras"))
    if getattr(model, "local_critic", None) is None:
        raise UsageError(f"--run_dir: the run in {config.run_dir} has no local objective (--beta=0): no local map")
    split = load_split(run_config.dataset, "test", run_config.data_dir, image_size=run_config.image_size)
    images = np.asarray(split.images[:config.batch_size])
    if len(images) < 2:
        raise UsageError(f"the test split of {run_config.dataset} has {len(images)} image(s); the loss needs 2")
    height, width = images.shape[1:3]
    try:
        check_image_size(height, width)
    except ValueError as err:
        raise UsageError(str(err)) from None
    masks = keras.ops.convert_to_numpy(occlusion_masks(len(images), height, width,
                                                       keras.random.SeedGenerator(config.seed)))
    occluded_images = (images * masks).astype(np.uint8)  # occluded pixels are 0, as in training
    full = location_losses(model, images)
    occluded = location_losses(model, images, y_images=occluded_images)
    rows, cols = full.shape[1:]
    summary = _summary(full, occluded, cell_occlusion(masks, rows, cols))
    summary.update(run_dir=config.run_dir, images=len(images), grid=[rows, cols], seed=config.seed)
    path = config.output or os.path.join(config.run_dir, "local_maps.png")
    _plot(path, images, occluded_images, full, occluded, min(config.images, len(images)))
    io.write_json(os.path.splitext(path)[0] + ".json", summary)
    log(f"local maps of {len(images)} test images ({rows}x{cols} locations) written to {path}")
    return summary


def summary_line(summary):
    at_occluded = summary["loss_increase_at_occluded_cells"]
    at_visible = summary["loss_increase_at_visible_cells"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
    return (f"mean NCE loss {summary['mean_loss_full']:.3f} nats with the whole image, "
            f"{summary['mean_loss_occluded']:.3f} with the occluded one; increase at fully occluded cells "
            f"{fmt(at_occluded)}, at fully visible cells {fmt(at_visible)}")

