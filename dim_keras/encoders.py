"""Encoders E_psi with named feature taps (DIM App. A.2, Tables 1-2).

Every builder returns a functional ``keras.Model`` that maps float images in
``[0, 1]`` of shape ``[N, H, W, 3]`` to a dict of features:

- ``local``: the feature map used by the local objective (after BN + ReLU,
  App. A.2: "all feature maps used for DIM included the final batch
  normalization and ReLU activation");
- ``conv``: the last convolutional map ``C_psi(x)`` (input of the global
  critic, Table 6);
- ``fc``: the last hidden fully connected layer;
- ``y``: the representation ``Y = E_psi(x)``, linear, 64 units by default.
"""

import keras
from keras import layers

from dim_keras.choices import ENCODERS


def _bn(synchronized, name):
    # Synchronised BN averages statistics over replicas under tf.distribute.  Only TensorFlow needs (and
    # Keras only accepts) the flag: on JAX, keras.distribution.DataParallel runs one SPMD program over the
    # global batch, whose batch mean is already the mean over every device (tests/test_encoders.py).
    # The builders use Keras's BN defaults (momentum 0.99, eps 1e-3) and glorot-uniform kernels; the authors'
    # step runs with torch's (momentum 0.9, eps 1e-5, kaiming-uniform), which apps/train.py's paper recipe
    # applies afterwards (dim_keras.initializers): on real CIFAR images (10 epochs, one seed) they moved the
    # linear probe by +0.5 (Y), +0.9 (conv), +4.0 (fc) points; docs/RESULTS.md ("Parity").
    return layers.BatchNormalization(
        synchronized=synchronized and keras.backend.backend() == "tensorflow", name=name)


def _conv_block(x, filters, kernel, strides, padding, name, synchronized):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                      use_bias=False, name=f"{name}_conv")(x)
    x = _bn(synchronized, f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense_block(x, units, name, synchronized):
    x = layers.Dense(units, use_bias=False, name=f"{name}_dense")(x)
    x = _bn(synchronized, f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _head(x, conv, local, fc_units, y_dim, synchronized, inputs, name):
    h = layers.Flatten(name="flatten")(x)
    for k, units in enumerate(fc_units, start=1):
        h = _dense_block(h, units, f"fc{k}", synchronized)
    # Y is linear: no BN, no activation (authors' code, Table 1 encoder).
    y = layers.Dense(y_dim, name="y")(h)
    outputs = {"local": local, "conv": conv, "fc": h, "y": y}
    return keras.Model(inputs, outputs, name=name)


def _check_local_layer(local_layer, n_convs):
    if not 1 <= local_layer <= n_convs:
        raise ValueError(f"local_layer must be in 1..{n_convs}, got {local_layer}")


def dcgan_encoder(input_shape=(32, 32, 3), widths=(64, 128, 256), fc_units=1024,
                  y_dim=64, local_layer=2, synchronized_bn=False, name="encoder"):
    """DCGAN-discriminator-like encoder for 32x32 images (CIFAR, Table 1).

    conv 64-128-256, 4x4, stride 2, padding 1 (Keras "same" pads 1 on each
    side for k=4, s=2), each BN + ReLU; fc 1024 BN + ReLU; linear Y of 64.
    The local map is the 2nd conv's output, 128x8x8 for 32x32 inputs
    ("next-to-last layer worked best for CIFAR10").
    """
    check_input_shape("dcgan", input_shape, len(widths))
    _check_local_layer(local_layer, len(widths))
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    local = None
    for k, filters in enumerate(widths, start=1):
        x = _conv_block(x, filters, 4, 2, "same", f"conv{k}", synchronized_bn)
        if k == local_layer:
            local = x
    return _head(x, x, local, (fc_units,), y_dim, synchronized_bn, inputs, name)


def alexnet_encoder(input_shape=(64, 64, 3), widths=(96, 192, 384, 384, 192),
                    fc_units=(4096, 4096), y_dim=64, local_layer=3,
                    synchronized_bn=False, name="encoder"):
    """AlexNet-like encoder for 64x64 images (STL-10, Tiny ImageNet; Table 2).

    conv 96 -> maxpool(3, 2) -> conv 192 -> maxpool(3, 2) -> conv 384 ->
    conv 384 -> conv 192 -> maxpool(3, 2); all 3x3, stride 1, padding 1,
    BN + ReLU; fc 4096, 4096 (BN + ReLU); Y 64.  The local map is the 3rd
    conv's output, 384x15x15 for 64x64 inputs ("for the other larger
    datasets it was the previous layer").
    """
    if len(widths) != 5:
        raise ValueError("the AlexNet encoder has five conv widths")
    check_input_shape("alexnet", input_shape)
    _check_local_layer(local_layer, 5)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    local = None
    for k, filters in enumerate(widths, start=1):
        x = _conv_block(x, filters, 3, 1, "same", f"conv{k}", synchronized_bn)
        if k == local_layer:
            local = x
        if k in (1, 2, 5):
            x = layers.MaxPooling2D(3, 2, name=f"pool{k}")(x)
    return _head(x, x, local, tuple(fc_units), y_dim, synchronized_bn, inputs, name)


def small_encoder(input_shape=(28, 28, 3), widths=(32, 64, 128), fc_units=256,
                  y_dim=64, local_layer=2, synchronized_bn=False, name="encoder"):
    """A small encoder for 8x8 to 28x28 inputs (not in the paper).

    conv 3x3 stride 1, then two 4x4 stride-2 convs, each BN + ReLU; fc BN +
    ReLU; linear Y.  The local map is the 2nd conv (half the input size).
    """
    check_input_shape("small", input_shape)
    _check_local_layer(local_layer, 3)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    local = None
    specs = ((widths[0], 3, 1), (widths[1], 4, 2), (widths[2], 4, 2))
    for k, (filters, kernel, stride) in enumerate(specs, start=1):
        x = _conv_block(x, filters, kernel, stride, "same", f"conv{k}", synchronized_bn)
        if k == local_layer:
            local = x
    return _head(x, x, local, (fc_units,), y_dim, synchronized_bn, inputs, name)


def auto_encoder_name(image_size):
    """The paper's choice by image size: DCGAN for 32x32, AlexNet for 64x64."""
    if image_size <= 28:
        return "small"
    if image_size < 64:
        return "dcgan"
    return "alexnet"


def check_input_shape(encoder, input_shape, n_stride2=3):
    """Raises ValueError (one line) when ``encoder`` cannot take the images."""
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"images must be [H, W, 3], got {tuple(input_shape)}")
    height, width = int(input_shape[0]), int(input_shape[1])
    side = min(height, width)
    if encoder == "small" and not 8 <= side <= 31:
        raise ValueError(f"the small encoder takes 8x8 to 31x31 images, got {height}x{width}")
    if encoder == "dcgan":
        factor = 2 ** n_stride2
        if side < 2 * factor or height % factor or width % factor:
            raise ValueError(
                f"the dcgan encoder needs sides that are multiples of {factor} and "
                f">= {2 * factor} (32x32 in the paper), got {height}x{width}"
            )
    if encoder == "alexnet" and side < 32:
        raise ValueError(f"the alexnet encoder needs images of at least 32x32 (64x64 in the paper), got {height}x{width}")


def build_encoder(name="auto", input_shape=(32, 32, 3), y_dim=64, widths=None,
                  fc_units=None, local_layer=None, synchronized_bn=False):
    """Encoder by name (``auto``, ``small``, ``dcgan`` or ``alexnet``)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "auto":
        name = auto_encoder_name(min(input_shape[0], input_shape[1]))
    builder = {"small": small_encoder, "dcgan": dcgan_encoder,
               "alexnet": alexnet_encoder}[name]
    kwargs = {"input_shape": tuple(input_shape), "y_dim": y_dim,
              "synchronized_bn": synchronized_bn}
    if widths is not None:
        kwargs["widths"] = tuple(widths)
    if fc_units is not None:
        kwargs["fc_units"] = fc_units
    if local_layer is not None:
        kwargs["local_layer"] = local_layer
    return builder(**kwargs)
