"""Offline measures of generation quality (App. A.8-A.10, Table 11, Fig. 15).

Table 11 reports the Inception score and FID, both computed with ImageNet Inception weights that cannot be
downloaded here. The same two statistics are computed on the features of any feature extractor instead -- a
callable ``images -> features`` -- in practice a DIM encoder trained on the same data (see
:func:`encoder_feature_extractor`), or, failing one, the fixed random-init conv net of
:func:`build_random_feature_extractor`. Distances in different feature spaces are not comparable with each
other nor with published FIDs; within one feature space they rank models and track training.

* :func:`frechet_distance`: ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted
  to two feature sets (Heusel et al., 2017).
* :func:`kernel_distance`: the unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3`` averaged over
  random subsets, i.e. KID (Binkowski et al., 2018); unbiased, so its mean is 0 for equal distributions.
* :func:`mode_overlap`: the overlap of the two modes of E's one-dimensional output for real and generated
  samples, which App. A.8 (Fig. 15) reads as the health of training: "lack of overlap between the two modes of
  the discriminator is symptomatic of poor training".
* :func:`sample_ring_of_gaussians` and :func:`ring_mode_coverage`: the 2-D mixture of 8 Gaussians on a ring
  (Metz et al., 2017) and its mode coverage.
"""

import math

import keras
import numpy as np
from sklearn.metrics.pairwise import polynomial_kernel


def _as_feature_matrix(features, name):
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        features = features.reshape(features.shape[0], -1)
    if features.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {features.shape[0]}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return features


def _symmetric_sqrt(matrix):
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (clipping the tiny
    negative eigenvalues that round-off produces)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (the "F" of FID).

    ``Tr((S_a S_b)^(1/2))`` is computed as ``Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))`` (the two matrices are similar),
    whose argument is symmetric PSD: it needs no complex square root, and identical sets give 0 up to round-off.
    Returns a Python float.
    """
    features_a = _as_feature_matrix(features_a, "features_a")
    features_b = _as_feature_matrix(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature widths differ: {features_a.shape[1]} vs {features_b.shape[1]}")
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    covariance_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    covariance_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    sqrt_a = _symmetric_sqrt(covariance_a)
    middle = sqrt_a @ covariance_b @ sqrt_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt_product = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_sqrt_product
    return float(max(distance, 0.0))


def kernel_distance(features_a, features_b, num_subsets=10, subset_size=1000, degree=3, seed=0):
    """Kernel (Inception) distance: unbiased MMD^2 with the kernel ``(x.y / D + 1)^degree``, KID.

    Averaged over ``num_subsets`` random subsets of ``min(subset_size, N_a, N_b)`` samples of each set, as in
    Binkowski et al. (2018). Returns ``(mean, standard deviation over subsets)`` as Python floats; the mean is
    0 in expectation for two samples of one distribution (and may then be slightly negative).
    """
    features_a = _as_feature_matrix(features_a, "features_a")
    features_b = _as_feature_matrix(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature widths differ: {features_a.shape[1]} vs {features_b.shape[1]}")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    rng = np.random.default_rng(seed)
    width = features_a.shape[1]
    estimates = []
    for _ in range(num_subsets):
        subset_a = features_a[rng.choice(features_a.shape[0], size, replace=False)]
        subset_b = features_b[rng.choice(features_b.shape[0], size, replace=False)]
        kernel = dict(degree=degree, gamma=1.0 / width, coef0=1.0)
        kernel_aa = polynomial_kernel(subset_a, **kernel)
        kernel_bb = polynomial_kernel(subset_b, **kernel)
        kernel_ab = polynomial_kernel(subset_a, subset_b, **kernel)
        # Unbiased: the diagonal k(x_i, x_i) terms are left out of the within-set means.
        within = (kernel_aa.sum() - np.trace(kernel_aa) + kernel_bb.sum() - np.trace(kernel_bb)) / (size * (size - 1))
        estimates.append(within - 2.0 * kernel_ab.mean())
    return float(np.mean(estimates)), float(np.std(estimates))


def mode_overlap(encoded_real, encoded_fake, bins=100):
    """Overlap of the histograms of E's outputs for real and generated samples (the two modes of Fig. 15).

    Both histograms share ``bins`` bins over the joint range. Returns a dict with
    ``bhattacharyya`` = sum_k sqrt(p_k q_k) and ``overlap`` = sum_k min(p_k, q_k) (both 1 for identical, 0 for
    disjoint histograms; for N(0, 1) vs N(d, 1) they approach exp(-d^2 / 8) and 2 Phi(-d / 2)), and the two
    means and standard deviations.
    """
    encoded_real = np.asarray(encoded_real, dtype=np.float64).reshape(-1)
    encoded_fake = np.asarray(encoded_fake, dtype=np.float64).reshape(-1)
    if encoded_real.size == 0 or encoded_fake.size == 0:
        raise ValueError("mode_overlap needs non-empty real and generated outputs")
    low = min(encoded_real.min(), encoded_fake.min())
    high = max(encoded_real.max(), encoded_fake.max())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    real_mass = np.histogram(encoded_real, edges)[0] / encoded_real.size
    fake_mass = np.histogram(encoded_fake, edges)[0] / encoded_fake.size
    return {
        "bhattacharyya": float(np.sum(np.sqrt(real_mass * fake_mass))),
        "overlap": float(np.sum(np.minimum(real_mass, fake_mass))),
        "real_mean": float(encoded_real.mean()),
        "real_std": float(encoded_real.std()),
        "fake_mean": float(encoded_fake.mean()),
        "fake_std": float(encoded_fake.std()),
    }


def ring_mode_centers(num_modes=8, radius=2.0):
    """Centres [num_modes, 2] of the ring mixture, evenly spaced on a circle of ``radius``."""
    angles = 2.0 * math.pi * np.arange(num_modes) / num_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def sample_ring_of_gaussians(num_samples, num_modes=8, radius=2.0, std=0.05, seed=None):
    """Samples [N, 2] float32 of an equal-weight mixture of isotropic Gaussians on a ring (Metz et al., 2017)."""
    rng = np.random.default_rng(seed)
    centers = ring_mode_centers(num_modes, radius)
    modes = rng.integers(0, num_modes, size=num_samples)
    return (centers[modes] + std * rng.standard_normal((num_samples, 2))).astype(np.float32)


def ring_mode_coverage(samples, num_modes=8, radius=2.0, std=0.05, num_std=3.0, min_count=20):
    """Mode coverage of 2-D samples on the ring of Gaussians.

    A sample counts for its nearest mode if it lies within ``num_std`` standard deviations of that mode's centre
    (a "high-quality" sample); a mode is covered if it gets at least ``min_count`` samples. Returns a dict with
    ``covered_modes`` (int), ``counts`` (per mode) and ``high_quality_fraction``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape [N, 2], got {samples.shape}")
    centers = ring_mode_centers(num_modes, radius).astype(np.float64)
    distances = np.linalg.norm(samples[:, None, :] - centers[None, :, :], axis=-1)
    nearest = np.argmin(distances, axis=1)
    close = distances[np.arange(len(samples)), nearest] <= num_std * std
    counts = np.bincount(nearest[close], minlength=num_modes)
    return {
        "covered_modes": int(np.sum(counts >= min_count)),
        "counts": counts.tolist(),
        "high_quality_fraction": float(np.mean(close)) if len(samples) else 0.0,
    }


def build_random_feature_extractor(image_shape, widths=(32, 64, 128), seed=0, name="random_feature_extractor"):
    """A fixed, randomly initialised conv net used as a stand-in feature space when no trained DIM encoder is
    given: conv3x3 stride 2 + ReLU per width, and the global average of each layer's map concatenated
    (``sum(widths)`` features). The seeded initialisers make it the same network for every run with one
    ``seed``, so distances from different runs are comparable; it is *not* an Inception network."""
    initializer_seed = int(seed)
    images = keras.Input(tuple(int(d) for d in image_shape), name="images")
    x = images
    pooled = []
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(
            width,
            3,
            strides=2,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.HeNormal(seed=initializer_seed + index),
            name=f"conv_{index}",
        )(x)
        pooled.append(keras.layers.GlobalAveragePooling2D()(x))
    features = keras.layers.Concatenate(name="features")(pooled) if len(pooled) > 1 else pooled[0]
    model = keras.Model(images, features, name=name)
    model.trainable = False
    return model


def encoder_feature_extractor(path, feature="fc"):
    """Features from a DIM encoder exported by ``dim_keras.export.export_encoder`` (a SavedModel dir):
    returns a callable uint8 or [0, 1] float images -> numpy features, picking ``feature`` from the
    encoder's output dict ("fc" by default: the paper's classification experiments find it the most
    linearly informative layer after conv)."""
    from dim_keras.export import load_encoder  # imported lazily: only needed when a DIM encoder is given

    encoder = load_encoder(path)

    def extract(images):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = to_uint8(images)
        outputs = encoder(images)
        if isinstance(outputs, dict):
            if feature not in outputs:
                raise ValueError(f"the encoder at {path} has no output {feature!r}; it has {sorted(outputs)}")
            outputs = outputs[feature]
        outputs = np.asarray(outputs)
        return outputs.reshape(outputs.shape[0], -1)

    return extract


def to_uint8(images):
    """Float images in [0, 1] -> uint8 pixels ``round(255 x)``, clipped to [0, 255]."""
    return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def compute_features(extractor, images, batch_size=256):
    """Runs ``extractor`` over ``images`` in batches and returns float64 features [N, D]. uint8 images are
    scaled to [0, 1] for a Keras model; a plain callable gets the images as they are."""
    images = np.asarray(images)
    is_keras_model = isinstance(extractor, keras.Model)
    if is_keras_model and images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    batches = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        outputs = extractor(batch, training=False) if is_keras_model else extractor(batch)
        outputs = np.asarray(outputs, dtype=np.float64)
        batches.append(outputs.reshape(outputs.shape[0], -1))
    return np.concatenate(batches, axis=0)
