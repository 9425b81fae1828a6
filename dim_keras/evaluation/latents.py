"""Measures of a code that MIM's claims are about (Livne et al. 2019; issue 15): active units, reconstruction
error, and a 2-D picture of the code coloured by class.

- **Active units** (Burda et al. 2016, "Importance Weighted Autoencoders", Sec. 5.2): dimension ``u`` of the
  code is active when ``A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01``; with the posterior mean as the exported ``y``,
  ``A_u`` is the variance of ``y_u`` over the images.  Posterior collapse shows as few active units (a
  collapsed dimension's mean no longer depends on x).  MIM's paper reports it as its collapse indicator.
- **Reconstruction error**: the mean squared error per pixel (images in [0, 1]) of ``model.reconstruct``
  (the decoder on the code: VAE, beta-VAE, AE, MIM, AAE; G(E(x)) for BiGAN), on test images.
- **Latent picture**: the codes of test images projected onto their first two principal components (the
  code itself when it is 2-D), one panel per model, coloured by class.  PCA rather than t-SNE: linear, so
  the picture shows the code's own geometry (clusters that a linear probe can separate), and deterministic.
"""

import numpy as np

# Burda et al. (2016), Sec. 5.2: "we found the threshold 10^-2 to be a useful indicator".
ACTIVE_UNIT_THRESHOLD = 1e-2


def active_units(codes, threshold=ACTIVE_UNIT_THRESHOLD):
    """``(count, variances)``: how many dimensions of ``codes`` ([N, D] posterior means) vary over the
    images by more than ``threshold`` (Burda et al. 2016), and every dimension's variance (float64)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise ValueError(f"active units need codes of shape [N >= 2, D], got {codes.shape}")
    variances = codes.var(axis=0)
    return int(np.sum(variances > threshold)), variances


def reconstruction_error(reconstruct, images, batch_size=256):
    """Mean squared error per pixel between uint8 ``images`` (as [0, 1] floats) and ``reconstruct(batch)``
    ([0, 1] floats of the same shape), over all images."""
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        target = batch.astype(np.float32) / 255.0
        output = np.asarray(reconstruct(target), dtype=np.float32)
        if output.shape != target.shape:
            raise ValueError(f"the reconstruction has shape {output.shape}, the images {target.shape}")
        total += float(np.sum((output.astype(np.float64) - target) ** 2))
        count += target.size
    return total / count


def principal_plane(codes):
    """``codes`` [N, D] on their first two principal components ([N, 2]; the codes themselves for D <= 2,
    a zero column added for D = 1)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.shape[1] <= 2:
        return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
    centred = codes - codes.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def latent_picture(codes_by_model, labels, path, class_names=None):
    """Writes a PNG with one scatter panel per model (``{name: [N, D] codes}``): the codes of ``labels``'s
    images on their principal plane, coloured by class."""
    from dim_keras.figures import drawing, pyplot

    plt = pyplot()
    names = list(codes_by_model)
    columns = min(len(names), 5)
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    with drawing(figure, path):
        for axis in axes.flat[len(names):]:
            axis.axis("off")
        for axis, name in zip(axes.flat, names):
            plane = principal_plane(codes_by_model[name])
            for k, label in enumerate(classes):
                chosen = labels == label
                title = class_names[label] if class_names is not None and label < len(class_names) else str(label)
                axis.scatter(plane[chosen, 0], plane[chosen, 1], s=4, color=colours(k % colours.N), label=title)
            axis.set_title(name)
            axis.set_xticks([])
            axis.set_yticks([])
        if len(classes) <= 10:
            axes.flat[columns - 1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, fontsize=7)
