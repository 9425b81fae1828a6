"""Decoders (generators) of the comparison models, one per encoder family (issue 15).

The DIM paper compares against auto-encoders and GANs "with the same architecture" (Sec. 4, App. A.2):
the decoder mirrors the encoder that ``apps/train.py --encoder`` builds (:mod:`dim_keras.encoders`):
latent -> the encoder's fc widths in reverse (dense, BN, ReLU) -> a ``base x base x C`` map -> one
stride-2 4x4 transposed convolution per stride-2 step of the encoder, widths reversed (BN, ReLU) -> a
3x3 convolution to the image's channels.  DCGAN (Radford et al. 2016) is the pattern: BN and ReLU in the
generator, no BN on its output.  The output is *pre-activation* (logits / means): each model turns it into
its likelihood (:mod:`dim_keras.baselines.distributions`), and ``sigmoid`` of it is the image in [0, 1].

``base = ceil(side / 2**n)`` for ``n`` upsampling steps; an output larger than the image (a side that is
not ``base * 2**n``, e.g. 28 with ``n = 3``) is center-cropped, so every input size an encoder takes has
a decoder.
"""

import math

import keras
from keras import layers

# (fc widths, conv widths from the latent side, stride-2 steps) mirroring each encoder of dim_keras.encoders
# at its default size: small (8-28 px): conv 32-64-128 (two stride 2), fc 256; dcgan (32 px, Table 1):
# conv 64-128-256 (three stride 2), fc 1024; alexnet (64 px, Table 2): five convs + three max-pools (64 ->
# 7), fc 4096-4096, here four stride-2 steps of 384-384-192-96; folded and the ResNets (32 px): the DCGAN
# decoder (their crop/residual structure has no transposed counterpart worth the parameters).
DECODER_FAMILIES = {
    "small": ((256,), (128, 64, 32), 2),
    "dcgan": ((1024,), (256, 128, 64), 3),
    "alexnet": ((4096,), (384, 384, 192, 96), 4),
    "folded": ((1024,), (256, 128, 64), 3),
    "resnet18": ((1024,), (256, 128, 64), 3),
    "resnet50": ((1024,), (256, 128, 64), 3),
}


def decoder_family(encoder_name):
    if encoder_name not in DECODER_FAMILIES:
        raise ValueError(f"no decoder for the {encoder_name!r} encoder; one of {', '.join(DECODER_FAMILIES)}")
    return DECODER_FAMILIES[encoder_name]


def build_decoder(encoder_name, image_shape, latent_dim, fc_units=None, widths=None, name="decoder"):
    """The decoder mirroring ``encoder_name`` (``small``, ``dcgan``, ``alexnet``, ``folded``, ``resnet18``,
    ``resnet50``; "auto" is resolved by the caller): ``[B, latent_dim]`` -> ``[B, H, W, C]`` pre-activation
    outputs (logits or means; ``sigmoid`` gives [0, 1] images).  ``fc_units`` / ``widths`` override the
    family's (small test models)."""
    family_fc, family_widths, steps = decoder_family(encoder_name)
    fc_units = tuple(family_fc if fc_units is None else fc_units)
    widths = tuple(family_widths if widths is None else widths)
    height, width, channels = (int(d) for d in image_shape)
    # Each stride-2 step of the encoder halves the side (rounding up with "same" padding).
    steps = min(steps, len(widths), max(0, int(math.floor(math.log2(min(height, width))))) - 1)
    steps = max(steps, 1)
    base_h, base_w = math.ceil(height / 2 ** steps), math.ceil(width / 2 ** steps)
    z = keras.Input((int(latent_dim),), name="latent")
    x = z
    for k, units in enumerate(fc_units, start=1):
        x = layers.Dense(units, use_bias=False, name=f"fc{k}_dense")(x)
        x = layers.BatchNormalization(name=f"fc{k}_bn")(x)
        x = layers.ReLU(name=f"fc{k}_relu")(x)
    x = layers.Dense(base_h * base_w * widths[0], use_bias=False, name="project_dense")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.ReLU(name="project_relu")(x)
    x = layers.Reshape((base_h, base_w, widths[0]), name="to_map")(x)
    for k in range(steps):
        filters = widths[min(k + 1, len(widths) - 1)]
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, name=f"up{k + 1}_deconv")(x)
        x = layers.BatchNormalization(name=f"up{k + 1}_bn")(x)
        x = layers.ReLU(name=f"up{k + 1}_relu")(x)
    out_h, out_w = base_h * 2 ** steps, base_w * 2 ** steps
    if (out_h, out_w) != (height, width):
        top, left = (out_h - height) // 2, (out_w - width) // 2
        x = layers.Cropping2D(((top, out_h - height - top), (left, out_w - width - left)), name="crop")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", name="to_image")(x)
    return keras.Model(z, outputs, name=name)
