"""Reconstruction from a fixed representation, scored by MS-SSIM (DIM Table 4).

Section 4.1: "MS-SSIM (Wang et al., 2003), using a decoder trained on the L2
reconstruction loss.  This is a proxy for the total MI between the input and
the representation."  Table 4: "MS-SSIM is estimated by training a separate
decoder using the fixed representation as input and minimizing the L2 loss
with the original input."  The decoder is DCGAN's generator (App. A.2,
"Generative models ... we used a generator from DCGAN").
"""

import keras
import numpy as np

from dim_keras.evaluation.ms_ssim import ms_ssim
from dim_keras.evaluation.probes import apply_in_batches


def _upsampling_count(height, width, min_base=3, max_upsamplings=5):
    """How many stride-2 transposed convs lead from a small base grid to the image."""
    count = 0
    while (count < max_upsamplings and height % 2 ** (count + 1) == 0
           and width % 2 ** (count + 1) == 0
           and min(height, width) // 2 ** (count + 1) >= min_base):
        count += 1
    return count


def build_dcgan_decoder(latent_dim, image_shape, base_filters=64, max_filters=512,
                        name="decoder"):
    """DCGAN generator: Dense -> reshape -> [Conv2DTranspose 4x4/2 + BN + ReLU]* -> sigmoid.

    The base grid is the image divided by the largest power of two (at most
    2**5) that keeps it >= 3 pixels a side: 4x4 for 32x32 and 64x64, 3x3 for
    96x96, 7x7 for 28x28.  Widths halve at every upsampling (DCGAN), ending at
    ``base_filters``; the output layer is a 3x3 (stride 1) transposed conv
    with a sigmoid, so pixels are in [0, 1].

    Args:
        latent_dim: width of the representation fed to the decoder.
        image_shape: ``(H, W, C)`` of the images to reconstruct.
    """
    height, width, channels = (int(s) for s in image_shape)
    upsamplings = _upsampling_count(height, width)
    base_h, base_w = height // 2 ** upsamplings, width // 2 ** upsamplings
    first_filters = min(max_filters, base_filters * 2 ** upsamplings)
    inputs = keras.Input((latent_dim,), name="representation")
    x = keras.layers.Dense(base_h * base_w * first_filters, use_bias=False, name="project")(inputs)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.ReLU(name="project_relu")(x)
    x = keras.layers.Reshape((base_h, base_w, first_filters), name="to_grid")(x)
    for k in range(upsamplings):
        filters = min(max_filters, base_filters * 2 ** (upsamplings - k - 1))
        x = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same",
                                         use_bias=False, name=f"up{k + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"up{k + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"up{k + 1}_relu")(x)
    outputs = keras.layers.Conv2DTranspose(channels, 3, padding="same",
                                           activation="sigmoid", name="pixels")(x)
    return keras.Model(inputs, outputs, name=name)


def _to_unit_float(images):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def train_decoder(train_representation, train_images, epochs=20, batch_size=64,
                  learning_rate=1e-3, base_filters=64, seed=0, verbose=0):
    """Trains `build_dcgan_decoder` with the L2 loss to map Y back to the image.

    Args:
        train_representation: float ``[N, D]`` (the frozen encoder's output).
        train_images: uint8 (or float in [0, 1]) ``[N, H, W, C]``.

    Returns:
        the trained decoder (a keras.Model mapping ``[N, D]`` to ``[N, H, W, C]`` in [0, 1]).
    """
    representation = np.asarray(train_representation, np.float32)
    targets = _to_unit_float(train_images)
    if representation.ndim != 2 or targets.ndim != 4 or len(representation) != len(targets):
        raise ValueError("the decoder needs representations [N, D] and images [N, H, W, C] of the same N")
    keras.utils.set_random_seed(seed)
    decoder = build_dcgan_decoder(representation.shape[1], targets.shape[1:], base_filters)
    decoder.compile(optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
                    loss=keras.losses.MeanSquaredError())
    decoder.fit(representation, targets, batch_size=batch_size, epochs=epochs,
                shuffle=True, verbose=verbose)
    return decoder


def reconstruction_ms_ssim(train_representation, train_images, test_representation,
                           test_images, epochs=20, batch_size=64, learning_rate=1e-3,
                           base_filters=64, seed=0, verbose=0, **ms_ssim_kwargs):
    """Mean MS-SSIM between held-out images and their reconstruction from Y (Table 4).

    The decoder is trained on the training split (`train_decoder`) and scored
    on the test split with `ms_ssim` (scales and window fitted to the image
    size unless given in ``ms_ssim_kwargs``).

    Returns:
        float in [0, 1].
    """
    targets = _to_unit_float(test_images)
    # Fail before training when the images are too small for the MS-SSIM settings.
    ms_ssim(targets[:1], targets[:1], max_val=1.0, **ms_ssim_kwargs)
    decoder = train_decoder(train_representation, train_images, epochs, batch_size,
                            learning_rate, base_filters, seed, verbose)
    reconstructions = apply_in_batches(decoder, np.asarray(test_representation, np.float32))
    return float(np.mean(ms_ssim(targets, reconstructions, max_val=1.0, **ms_ssim_kwargs)))
