"""Multi-scale SSIM for small images (Wang et al. 2003; DIM section 4.1, Table 4).

``tf.image.ssim_multiscale`` uses 5 scales with an 11x11 Gaussian window by
default, which needs images of at least ``(11 - 1) * 2**4 + 1 = 161`` pixels a
side: at each scale the image is halved, and the window must still fit.  Table
4 reports MS-SSIM on 32x32 CIFAR10 images, so the number of scales and the
window are chosen to fit the image (`ms_ssim_settings`), and the standard power
factors of the scales used are renormalised to sum to 1, so that a perfect
reconstruction still scores exactly 1.

(The authors' code computes single-scale SSIM with a Gaussian of sigma 11
instead of 1.5; this module computes true multi-scale SSIM.)
"""

import dataclasses

import numpy as np
import tensorflow as tf

# Wang et al. (2003) weights of the five scales, finest first (TF's default).
DEFAULT_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MAX_SCALES = len(DEFAULT_POWER_FACTORS)
DEFAULT_FILTER_SIZE = 11
DEFAULT_FILTER_SIGMA = 1.5
# The smallest window used when choosing automatically: a 3x3 window with
# sigma 1.5 is nearly a box filter, 5x5 still has a Gaussian profile.
PREFERRED_MIN_FILTER_SIZE = 5
MIN_FILTER_SIZE = 3


def min_image_side(scales, filter_size):
    """Smallest image side for ``scales`` scales with a ``filter_size`` window.

    Scale k sees the image downsampled k times by 2 (rounding up), and its
    side must be at least the window: ``ceil(side / 2**(scales-1)) >=
    filter_size``, i.e. ``side >= (filter_size - 1) * 2**(scales - 1) + 1``.
    """
    return (filter_size - 1) * 2 ** (scales - 1) + 1


def power_factors(scales):
    """The default power factors of the ``scales`` finest scales, renormalised to sum 1."""
    if not 1 <= scales <= MAX_SCALES:
        raise ValueError(f"scales must be in 1..{MAX_SCALES}, got {scales}")
    used = np.asarray(DEFAULT_POWER_FACTORS[:scales], np.float64)
    return tuple(float(f) for f in used / used.sum())


@dataclasses.dataclass(frozen=True)
class MsSsimSettings:
    scales: int
    filter_size: int
    filter_sigma: float = DEFAULT_FILTER_SIGMA

    @property
    def power_factors(self):
        return power_factors(self.scales)

    @property
    def min_side(self):
        return min_image_side(self.scales, self.filter_size)


def ms_ssim_settings(height, width=None):
    """The most scales, then the widest window (odd, <= 11), that fit the image.

    Windows of at least 5 pixels are preferred over extra scales; only when no
    5x5 window fits (sides below 5) is a 3x3 window used.  Examples: 161x161
    and up: 5 scales, 11x11 (TF's default); 96x96: 5 scales, 5x5; 64x64: 4
    scales, 7x7; 32x32: 3 scales, 7x7; 28x28: 3 scales, 7x7; 8x8: 1 scale, 7x7.
    """
    side = min(height, width if width is not None else height)
    for min_filter in (PREFERRED_MIN_FILTER_SIZE, MIN_FILTER_SIZE):
        for scales in range(MAX_SCALES, 0, -1):
            largest = (side - 1) // 2 ** (scales - 1) + 1  # from min_image_side
            filter_size = min(DEFAULT_FILTER_SIZE, largest - (1 - largest % 2))  # odd
            if filter_size >= min_filter:
                return MsSsimSettings(scales, filter_size)
    raise ValueError(
        f"images of {height}x{width or height} are too small for MS-SSIM "
        f"(need sides >= {MIN_FILTER_SIZE})"
    )


def _check_fits(height, width, scales, filter_size):
    needed = min_image_side(scales, filter_size)
    if min(height, width) < needed:
        raise ValueError(
            f"images of {height}x{width} are too small for MS-SSIM with {scales} scales "
            f"and filter size {filter_size} (need sides >= {needed})"
        )


def ms_ssim(images_a, images_b, max_val, scales=None, filter_size=None,
            filter_sigma=DEFAULT_FILTER_SIGMA):
    """Per-image MS-SSIM of two image batches ``[N, H, W, C]`` (float or uint8).

    Args:
        images_a, images_b: image batches of the same shape.
        max_val: the dynamic range (1.0 for floats in [0, 1], 255 for uint8).
        scales, filter_size: default from `ms_ssim_settings` (give both or neither
            to choose them yourself).
        filter_sigma: width of the Gaussian window.

    Returns:
        float32 numpy array ``[N]`` of values in [0, 1] (1 means identical).

    Raises:
        ValueError: with one line, when the images are too small for the scales
            and window, or the shapes differ.
    """
    images_a = tf.convert_to_tensor(images_a)
    images_b = tf.convert_to_tensor(images_b)
    if images_a.shape.rank != 4 or images_a.shape != images_b.shape:
        raise ValueError(
            f"MS-SSIM needs two [N, H, W, C] batches of the same shape, got "
            f"{images_a.shape.as_list()} and {images_b.shape.as_list()}"
        )
    height, width = int(images_a.shape[1]), int(images_a.shape[2])
    if (scales is None) != (filter_size is None):
        raise ValueError("give both scales and filter_size, or neither")
    if scales is None:
        settings = ms_ssim_settings(height, width)
        scales, filter_size = settings.scales, settings.filter_size
    elif not 1 <= scales <= MAX_SCALES:
        raise ValueError(f"scales must be in 1..{MAX_SCALES}, got {scales}")
    _check_fits(height, width, scales, filter_size)
    # uint8 images go in as floats with max_val kept: tf.image would rescale
    # uint8 to [0, 1] itself, but a float max_val of 255 is explicit and simple.
    images_a = tf.cast(images_a, tf.float32)
    images_b = tf.cast(images_b, tf.float32)
    values = tf.image.ssim_multiscale(
        images_a,
        images_b,
        max_val=float(max_val),
        power_factors=power_factors(scales),
        filter_size=filter_size,
        filter_sigma=filter_sigma,
    )
    return values.numpy()
