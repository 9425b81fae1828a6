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

Beside the paper's Table 1-2 encoders: a ResNet family with a CIFAR-sized stem (:func:`resnet_encoder`,
``resnet18`` / ``resnet50``), and the strided-crop ("folded") encoder of Sec. 4.2 / Table 3
(:func:`folded_encoder`), whose crop network is a small conv net or one of those ResNets.
"""

import keras
from keras import layers
from keras import ops

from dim_keras.choices import CROP_ENCODERS, ENCODERS


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


# ------------------------------------------------------------------ ResNet family
# (blocks per stage, bottleneck?) of He et al. (2016), Table 1.  The stem is CIFAR-sized (one 3x3 conv,
# stride 1, no max-pool: the 7x7/2 conv + pool of the ImageNet stem would leave 1x1 maps on 32x32 images).
RESNET_DEPTHS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}
# Bottleneck blocks widen their output by 4 (He et al. 2016, Sec. 4.1, "deeper bottleneck architectures").
BOTTLENECK_EXPANSION = 4


def _resnet_block(x, width, stride, bottleneck, name, synchronized):
    """One post-activation residual block (He et al. 2016): basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4),
    each conv followed by BN, ReLU after the sum; a 1x1 projection (+ BN) shortcut where the shape changes.
    The stride sits on the 3x3 conv of a bottleneck ("ResNet v1.5", torchvision's)."""
    out_width = width * BOTTLENECK_EXPANSION if bottleneck else width
    shortcut = x
    if stride != 1 or x.shape[-1] != out_width:
        shortcut = layers.Conv2D(out_width, 1, strides=stride, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = _bn(synchronized, f"{name}_proj_bn")(shortcut)
    if bottleneck:
        h = _conv_block(x, width, 1, 1, "same", f"{name}_a", synchronized)
        h = _conv_block(h, width, 3, stride, "same", f"{name}_b", synchronized)
        h = layers.Conv2D(out_width, 1, use_bias=False, name=f"{name}_c_conv")(h)
        h = _bn(synchronized, f"{name}_c_bn")(h)
    else:
        h = _conv_block(x, width, 3, stride, "same", f"{name}_a", synchronized)
        h = layers.Conv2D(out_width, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(h)
        h = _bn(synchronized, f"{name}_b_bn")(h)
    h = layers.Add(name=f"{name}_add")([h, shortcut])
    return layers.ReLU(name=f"{name}_relu")(h)


def _resnet_stages(x, depth, widths, blocks, synchronized, prefix=""):
    """The stem and the four stages of a CIFAR ResNet; returns each stage's output (after its last ReLU).
    Stage k (1-based) has stride 1 for k = 1 and 2 after, so a 32x32 input gives 32, 16, 8, 4."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, RESNET_DEPTHS))}, got {depth}")
    default_blocks, bottleneck = RESNET_DEPTHS[depth]
    blocks = tuple(default_blocks if blocks is None else blocks)
    widths = tuple(widths)
    if len(widths) != 4 or len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"a ResNet has four stages: four widths and four block counts >= 1, got widths "
                         f"{widths} and blocks {blocks}")
    x = _conv_block(x, widths[0], 3, 1, "same", f"{prefix}stem", synchronized)
    stages = []
    for k, (width, count) in enumerate(zip(widths, blocks), start=1):
        for b in range(1, count + 1):
            stride = 2 if k > 1 and b == 1 else 1
            x = _resnet_block(x, width, stride, bottleneck, f"{prefix}stage{k}_block{b}", synchronized)
        stages.append(x)
    return stages


def resnet_encoder(input_shape=(32, 32, 3), depth=18, widths=(64, 128, 256, 512), blocks=None, fc_units=(),
                   y_dim=64, local_layer=3, synchronized_bn=False, name="encoder"):
    """A ResNet (He et al. 2016) with a CIFAR-sized stem: 3x3 conv, stride 1, no max-pool; basic blocks for
    depths 18 and 34, bottleneck blocks (x4 wider outputs) for 50; BN + ReLU throughout.

    The DIM paper used a ResNet-50 for CIFAR-10 in Table 3 (inside the strided-crop architecture; see
    :func:`folded_encoder`) but gives no details, so the stem and taps here are this library's choices:

    - ``local``: the output of stage ``local_layer`` (after its last BN + ReLU, as A.2 asks), stage 3 by
      default: 8x8 on 32x32 images, the size of the Table 1 encoder's local map;
    - ``conv``: the last stage's output (4x4 on 32x32);
    - ``fc``: its global average (the standard ResNet's penultimate features), followed by a dense + BN +
      ReLU layer per entry of ``fc_units`` (none by default);
    - ``y``: linear, ``y_dim`` units.

    ``widths`` are the four stages' base widths; ``blocks`` overrides the blocks per stage of ``depth``
    (tiny networks for tests).
    """
    check_input_shape("resnet", input_shape)
    _check_local_layer(local_layer, 4)
    fc_units = (fc_units,) if isinstance(fc_units, int) else tuple(fc_units)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    stages = _resnet_stages(x, depth, widths, blocks, synchronized_bn)
    h = layers.GlobalAveragePooling2D(name="pool")(stages[-1])
    for k, units in enumerate(fc_units, start=1):
        h = _dense_block(h, units, f"fc{k}", synchronized_bn)
    y = layers.Dense(y_dim, name="y")(h)
    outputs = {"local": stages[local_layer - 1], "conv": stages[-1], "fc": h, "y": y}
    return keras.Model(inputs, outputs, name=name)


def resnet18_encoder(input_shape=(32, 32, 3), **kwargs):
    """:func:`resnet_encoder` of depth 18 (basic blocks, 2-2-2-2)."""
    return resnet_encoder(input_shape, depth=18, **kwargs)


def resnet50_encoder(input_shape=(32, 32, 3), **kwargs):
    """:func:`resnet_encoder` of depth 50 (bottleneck blocks, 3-4-6-3; 2048-wide last stage)."""
    return resnet_encoder(input_shape, depth=50, **kwargs)


# ------------------------------------------------------------------ strided crops
# The folded grid: crops of 1/4 of the side at a stride of 1/8 give 7 crops per side (Sec. 4.2).
FOLDED_GRID = 7


def crop_geometry(height, width):
    """``((crop_h, crop_w), (stride_h, stride_w), (rows, cols))`` of the strided-crop encoder on an image of
    ``height x width``: crops of 25 % of each side at a stride of 12.5 % (DIM Sec. 4.2: 8x8 crops with 4x4
    strides on CIFAR-10's 32x32, 16x16 with 8x8 on STL-10's 64x64), so 7 x 7 crops for sides divisible
    by 8.  Raises ValueError (one line) for sides that are not multiples of 8 or below 32."""
    if height % 8 or width % 8 or min(height, width) < 32:
        raise ValueError(f"the folded encoder needs sides that are multiples of 8 and >= 32 (crops of 1/4 "
                         f"of the side at a stride of 1/8: 8x8 crops on 32x32), got {height}x{width}")
    crop, stride = (height // 4, width // 4), (height // 8, width // 8)
    return crop, stride, (FOLDED_GRID, FOLDED_GRID)


@keras.saving.register_keras_serializable(package="dim_keras")
class StridedCrops(layers.Layer):
    """Cuts ``[B, H, W, C]`` images into ``rows x cols`` overlapping crops and stacks them along the batch:
    ``[B * rows * cols, crop_h, crop_w, C]``, image-major, then row-major (crop ``(i, j)`` of image ``b``
    is at ``b * rows * cols + i * cols + j`` and holds ``x[b, i*sh : i*sh+ch, j*sw : j*sw+cw]``).

    Plain slices, stacked: exact on every backend.  ``keras.ops.image.extract_patches`` would give the same
    values through a convolution with an identity kernel (Keras 3.15 implements it that way on TensorFlow
    and JAX alike), which is exact on CPU but not under the reduced-precision (TF32) convolutions GPUs run
    float32 convs in by default; and its patches come flattened.
    """

    def __init__(self, crop, stride, grid, **kwargs):
        super().__init__(**kwargs)
        self.crop, self.stride, self.grid = tuple(crop), tuple(stride), tuple(grid)

    def call(self, images):
        (ch, cw), (sh, sw), (rows, cols) = self.crop, self.stride, self.grid
        crops = [images[:, i * sh:i * sh + ch, j * sw:j * sw + cw, :] for i in range(rows) for j in range(cols)]
        stacked = ops.stack(crops, axis=1)  # [B, rows * cols, ch, cw, C]
        return ops.reshape(stacked, (-1, ch, cw, images.shape[-1]))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        batch = None if batch is None else batch * self.grid[0] * self.grid[1]
        return (batch, *self.crop, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(crop=self.crop, stride=self.stride, grid=self.grid)
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class CropGrid(layers.Layer):
    """The inverse of :class:`StridedCrops`' stacking for one vector per crop:
    ``[B * rows * cols, D]`` -> ``[B, rows, cols, D]``."""

    def __init__(self, grid, **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(grid)

    def call(self, features):
        return ops.reshape(features, (-1, *self.grid, features.shape[-1]))

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        batch = None if batch is None else batch // (self.grid[0] * self.grid[1])
        return (batch, *self.grid, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(grid=self.grid)
        return config


def _crop_features(crops, crop_encoder, widths, blocks, synchronized):
    """One feature vector per crop: the crop network's last map (after BN + ReLU), averaged over space (as
    CPC's crop encoder mean-pools; Oord et al. 2018, Sec. 3.2)."""
    if crop_encoder == "conv":
        # small_encoder's conv stack (3x3/1, then two 4x4/2): 8x8 crops -> 2x2, 16x16 -> 4x4.
        widths = (64, 128, 256) if widths is None else tuple(widths)
        if len(widths) != 3:
            raise ValueError(f"the conv crop network has three conv widths, got {widths}")
        x = crops
        for k, (filters, kernel, stride) in enumerate(zip(widths, (3, 4, 4), (1, 2, 2)), start=1):
            x = _conv_block(x, filters, kernel, stride, "same", f"crop_conv{k}", synchronized)
    elif crop_encoder in ("resnet18", "resnet50"):
        depth = int(crop_encoder[len("resnet"):])
        widths = (64, 128, 256, 512) if widths is None else tuple(widths)
        x = _resnet_stages(crops, depth, widths, blocks, synchronized, prefix="crop_")[-1]
    else:
        raise ValueError(f"unknown crop_encoder {crop_encoder!r}; choose one of {', '.join(CROP_ENCODERS)}")
    return layers.GlobalAveragePooling2D(name="crop_pool")(x)


def folded_encoder(input_shape=(32, 32, 3), crop_encoder="conv", widths=None, blocks=None, fc_units=1024,
                   y_dim=64, synchronized_bn=False, name="encoder"):
    """The strided-crop ("folded") encoder of DIM Sec. 4.2 / Table 3, after CPC (Oord et al. 2018).

    The image is cut into overlapping crops of 25 % of its side at a stride of 12.5 % (8x8 crops, stride 4
    on 32x32; 16x16, stride 8 on 64x64; :func:`crop_geometry`), 7 x 7 of them; one shared crop network
    (``crop_encoder``) maps each crop to one feature vector, the average of its last BN + ReLU map:

    - ``conv`` (default, this library's): small_encoder's conv stack, ``widths`` (64, 128, 256);
    - ``resnet18`` / ``resnet50``: the CIFAR ResNet of :func:`resnet_encoder` (``widths`` its four stage
      widths, ``blocks`` its blocks per stage).  The paper's CIFAR-10 run of Table 3 used "a ResNet-50
      encoder" in this architecture; it does not say more, e.g. how the crop's map is pooled.

    Taps: ``local`` is the 7 x 7 map of crop features ([B, 7, 7, C]); ``conv`` is the same map (the last
    map before the global head, so the global critic of DIM(G) scores Y against it); ``fc`` and ``y`` come
    from a Table 1-like head over it: flatten -> ``fc_units`` dense + BN + ReLU -> linear Y.  The
    crop network's batch norm sees every crop of every image of the batch as one batch.
    """
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"images must be [H, W, 3], got {tuple(input_shape)}")
    crop, stride, grid = crop_geometry(int(input_shape[0]), int(input_shape[1]))
    fc_units = (fc_units,) if isinstance(fc_units, int) else tuple(fc_units)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    crops = StridedCrops(crop, stride, grid, name="crops")(x)
    features = _crop_features(crops, crop_encoder, widths, blocks, synchronized_bn)
    local = CropGrid(grid, name="crop_grid")(features)
    return _head(local, local, local, fc_units, y_dim, synchronized_bn, inputs, name)


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
    if encoder.startswith("resnet") and side < 8:
        raise ValueError(f"a resnet encoder needs images of at least 8x8 (its three stride-2 stages), got "
                         f"{height}x{width}")
    if encoder == "folded":
        crop_geometry(height, width)


def build_encoder(name="auto", input_shape=(32, 32, 3), y_dim=64, widths=None,
                  fc_units=None, local_layer=None, synchronized_bn=False, crop_encoder=None, blocks=None):
    """Encoder by name (``auto``, ``small``, ``dcgan``, ``alexnet``, ``folded``, ``resnet18`` or ``resnet50``).

    ``crop_encoder`` (folded only: ``conv``, ``resnet18`` or ``resnet50``) and ``blocks`` (the ResNets' blocks
    per stage, also a ResNet crop network's) pass through; ``local_layer`` does not apply to ``folded``,
    whose local map is its crop grid."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "auto":
        name = auto_encoder_name(min(input_shape[0], input_shape[1]))
    builder = {"small": small_encoder, "dcgan": dcgan_encoder, "alexnet": alexnet_encoder,
               "folded": folded_encoder, "resnet18": resnet18_encoder, "resnet50": resnet50_encoder}[name]
    kwargs = {"input_shape": tuple(input_shape), "y_dim": y_dim,
              "synchronized_bn": synchronized_bn}
    if widths is not None:
        kwargs["widths"] = tuple(widths)
    if fc_units is not None:
        kwargs["fc_units"] = fc_units
    if local_layer is not None:
        if name == "folded":
            raise ValueError("local_layer does not apply to the folded encoder: its local map is the crop grid")
        kwargs["local_layer"] = local_layer
    if crop_encoder is not None:
        if name != "folded":
            raise ValueError(f"crop_encoder applies to the folded encoder only, not {name}")
        kwargs["crop_encoder"] = crop_encoder
    if blocks is not None:
        if name not in ("resnet18", "resnet50", "folded"):
            raise ValueError(f"blocks applies to the resnet encoders (and folded ones with a resnet crop "
                             f"network), not {name}")
        kwargs["blocks"] = tuple(blocks)
    return builder(**kwargs)
