"""Generator and encoder networks for the implicit generator of App. A.8-A.9.

App. A.9 of Hjelm et al. (ICLR 2019) uses "a ResNet architecture identical to the one found in Gulrajani et
al. (2017)" for both the generator and the encoder, with batch norm on the generator only (the encoder gets a
contractive penalty instead, and batch norm would couple the samples of a batch and so break the per-sample
input gradient that penalty needs). This module provides

* the Gulrajani et al. (WGAN-GP) residual networks: :class:`ResidualBlock` with nearest-neighbour up-sampling
  (generator) or mean-pool down-sampling (encoder), :func:`build_resnet_generator`, :func:`build_resnet_encoder`;
* a DCGAN pair (Radford et al., 2016) for small images, 32x32 or smaller: :func:`build_dcgan_generator`,
  :func:`build_dcgan_encoder`;
* small MLPs for 2-D toy data (the ring of 8 Gaussians): :func:`build_mlp_generator`, :func:`build_mlp_encoder`
  and :func:`build_scalar_discriminator`, the small network used for the 1-D discriminators T_P, T_Q (eq. 14).

Images are float32 in [0, 1] (the convention of the rest of dim_keras), so the generators end in a sigmoid where
Gulrajani et al. use tanh on [-1, 1]; ``sigmoid(2a) = (tanh(a) + 1) / 2``, so the two are the same model.
Every builder returns a functional ``keras.Model`` (serialisable through its own ``get_config``); the one custom
layer is registered with the package.
"""

import keras

_PACKAGE = "dim_keras"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """Pre-activation residual block of Gulrajani et al. (2017), App. F / their ``ResidualBlock``.

    Residual path: [BN] -> ReLU -> [up-sample] -> conv3x3 -> [BN] -> ReLU -> conv3x3 -> [mean-pool].
    Shortcut: identity when neither the resolution nor the width changes, otherwise [up-sample] -> conv1x1 ->
    [mean-pool] (the shortcut is linear so the block stays a residual correction of a resampled input).

    Args:
        filters: output channels.
        resample: ``"up"`` (nearest-neighbour x2, generator), ``"down"`` (2x2 mean pool, encoder) or ``None``.
        use_batch_norm: True in the generator only (App. A.9).
        preactivate: False for the first block of the encoder, which sees raw pixels (their
            ``OptimizedResBlockDisc1`` starts with a convolution, not a ReLU).
    """

    def __init__(self, filters, resample=None, use_batch_norm=False, preactivate=True, **kwargs):
        super().__init__(**kwargs)
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.filters = int(filters)
        self.resample = resample
        self.use_batch_norm = bool(use_batch_norm)
        self.preactivate = bool(preactivate)
        self.conv_1 = keras.layers.Conv2D(self.filters, 3, padding="same", name="conv_1")
        self.conv_2 = keras.layers.Conv2D(self.filters, 3, padding="same", name="conv_2")
        self.shortcut_conv = None
        if self.use_batch_norm:
            self.batch_norm_1 = keras.layers.BatchNormalization(name="batch_norm_1")
            self.batch_norm_2 = keras.layers.BatchNormalization(name="batch_norm_2")
        if resample == "up":
            self.resampling = keras.layers.UpSampling2D(2, interpolation="nearest")
        elif resample == "down":
            self.resampling = keras.layers.AveragePooling2D(2)
        else:
            self.resampling = None

    def build(self, input_shape):
        # Every sub-layer is built here, not on first call, so that a deserialised block owns its weights
        # before any data flows (needed by set_weights and .keras loading). Convs and BN need only channels.
        input_channels = int(input_shape[-1])
        input_spec, output_spec = (None, None, None, input_channels), (None, None, None, self.filters)
        if self.use_batch_norm:
            self.batch_norm_1.build(input_spec)
            self.batch_norm_2.build(output_spec)
        self.conv_1.build(input_spec)
        self.conv_2.build(output_spec)
        if self.resample is not None or input_channels != self.filters:
            self.shortcut_conv = keras.layers.Conv2D(self.filters, 1, name="shortcut_conv")
            self.shortcut_conv.build(input_spec)
        super().build(input_shape)

    def _resample(self, x):
        return x if self.resampling is None else self.resampling(x)

    def call(self, inputs, training=None):
        x = inputs
        if self.preactivate:
            if self.use_batch_norm:
                x = self.batch_norm_1(x, training=training)
            x = keras.ops.relu(x)
        if self.resample == "up":
            x = self._resample(x)
        x = self.conv_1(x)
        if self.use_batch_norm:
            x = self.batch_norm_2(x, training=training)
        x = keras.ops.relu(x)
        x = self.conv_2(x)
        if self.resample == "down":
            x = self._resample(x)

        shortcut = inputs
        if self.shortcut_conv is not None:
            if self.resample == "up":
                shortcut = self._resample(shortcut)
                shortcut = self.shortcut_conv(shortcut)
            else:
                # Down-sampling blocks pool after the 1x1 conv (their ConvMeanPool), the first block before it.
                if self.preactivate:
                    shortcut = self._resample(self.shortcut_conv(shortcut))
                else:
                    shortcut = self.shortcut_conv(self._resample(shortcut))
        return shortcut + x

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.resample == "up":
            height, width = height * 2, width * 2
        elif self.resample == "down":
            height, width = height // 2, width // 2
        return (batch, height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            resample=self.resample,
            use_batch_norm=self.use_batch_norm,
            preactivate=self.preactivate,
        )
        return config


def _check_image_shape(image_shape):
    """Validates an (H, W, C) image shape and returns how many x2 steps separate it from its smallest map.

    The generators start from a ``base x base`` map and double it ``num_resamplings`` times; the encoders
    halve it as often. ``base`` is the image side divided by 2 as often as that leaves an integer >= 4, so
    32 -> 4 (3 steps), 64 -> 4 (4 steps), 28 -> 7 (2 steps).
    """
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (height, width, channels), got {tuple(image_shape)}")
    height, width, channels = (int(d) for d in image_shape)
    if height != width:
        raise ValueError(f"square images are required, got {height}x{width}")
    if height < 4 or channels < 1:
        raise ValueError(f"images must be at least 4x4 with one channel, got {tuple(image_shape)}")
    base, num_resamplings = height, 0
    while base % 2 == 0 and base // 2 >= 4:
        base //= 2
        num_resamplings += 1
    return base, num_resamplings


def build_resnet_generator(image_shape, z_dim=128, base_filters=128, name="resnet_generator"):
    """ResNet generator of Gulrajani et al. (2017) (their 32x32/64x64 ``Generator``), BN on (App. A.9).

    z -> dense(base*base*F) -> reshape -> one up-sampling residual block per doubling (width halves from
    8F at 64x64, constant F at 32x32 and below, as in their code) -> BN -> ReLU -> conv3x3(C) -> sigmoid.
    """
    base, num_up = _check_image_shape(image_shape)
    channels = int(image_shape[-1])
    if num_up == 0:
        raise ValueError(f"images of side {image_shape[0]} are too small for the ResNet generator")
    # Their 64x64 generator halves the width at each doubling (8F, 8F, 4F, 2F, F); their CIFAR one keeps F.
    widths = [base_filters * 2 ** max(0, min(3, num_up - 1 - i)) for i in range(num_up)]
    if num_up <= 3:
        widths = [base_filters] * num_up
    z = keras.Input((z_dim,), name="z")
    x = keras.layers.Dense(base * base * widths[0], name="project")(z)
    x = keras.layers.Reshape((base, base, widths[0]))(x)
    for index, width in enumerate(widths):
        x = ResidualBlock(width, resample="up", use_batch_norm=True, name=f"block_{index}")(x)
    x = keras.layers.BatchNormalization(name="output_batch_norm")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", name="to_image")(x)
    images = keras.layers.Activation("sigmoid", name="images")(x)
    return keras.Model(z, images, name=name)


def build_resnet_encoder(image_shape, base_filters=128, output_dim=1, name="resnet_encoder"):
    """ResNet encoder/critic of Gulrajani et al. (2017), without batch norm (App. A.9).

    First block without pre-activation (their ``OptimizedResBlockDisc1``), then mean-pool down-sampling blocks
    until the smallest map, two plain blocks at 32x32 and below as in their CIFAR critic, ReLU, global mean
    pool and a linear output of ``output_dim`` (1 for the implicit generator's E, eq. 13).
    """
    _, num_down = _check_image_shape(image_shape)
    if num_down == 0:
        raise ValueError(f"images of side {image_shape[0]} are too small for the ResNet encoder")
    widths = [base_filters * 2 ** min(3, i) for i in range(num_down)] if num_down > 3 else [base_filters] * num_down
    images = keras.Input(tuple(int(d) for d in image_shape), name="images")
    x = ResidualBlock(widths[0], resample="down", preactivate=False, name="block_0")(images)
    for index, width in enumerate(widths[1:], start=1):
        x = ResidualBlock(width, resample="down", name=f"block_{index}")(x)
    if num_down <= 3:
        x = ResidualBlock(widths[-1], name=f"block_{num_down}")(x)
        x = ResidualBlock(widths[-1], name=f"block_{num_down + 1}")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(images, outputs, name=name)


def build_dcgan_generator(image_shape, z_dim=128, base_filters=64, name="dcgan_generator"):
    """DCGAN generator (Radford et al., 2016) for small images (side <= 32).

    z -> dense(base*base*2^(n-1)F) -> BN -> ReLU -> n x [transposed conv 4x4 stride 2 -> BN -> ReLU], the last
    one replaced by a transposed conv to C channels and a sigmoid; the width halves at each doubling.
    """
    base, num_up = _check_image_shape(image_shape)
    channels = int(image_shape[-1])
    if num_up == 0 or image_shape[0] > 32:
        raise ValueError(f"the DCGAN networks are for images of side 8 to 32, got {image_shape[0]}")
    z = keras.Input((z_dim,), name="z")
    width = base_filters * 2 ** (num_up - 1)
    x = keras.layers.Dense(base * base * width, use_bias=False, name="project")(z)
    x = keras.layers.BatchNormalization(name="project_batch_norm")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Reshape((base, base, width))(x)
    for index in range(num_up - 1):
        width //= 2
        x = keras.layers.Conv2DTranspose(
            width, 4, strides=2, padding="same", use_bias=False, name=f"deconv_{index}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"batch_norm_{index}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same", name="to_image")(x)
    images = keras.layers.Activation("sigmoid", name="images")(x)
    return keras.Model(z, images, name=name)


def build_dcgan_encoder(image_shape, base_filters=64, output_dim=1, name="dcgan_encoder"):
    """DCGAN encoder/discriminator without batch norm (App. A.9): n x [conv 4x4 stride 2 -> LeakyReLU(0.2)],
    width doubling, then flatten and a linear output of ``output_dim``."""
    _, num_down = _check_image_shape(image_shape)
    if num_down == 0 or image_shape[0] > 32:
        raise ValueError(f"the DCGAN networks are for images of side 8 to 32, got {image_shape[0]}")
    images = keras.Input(tuple(int(d) for d in image_shape), name="images")
    x = images
    width = base_filters
    for index in range(num_down):
        x = keras.layers.Conv2D(width, 4, strides=2, padding="same", name=f"conv_{index}")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        width *= 2
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(images, outputs, name=name)


def build_mlp_generator(output_dim=2, z_dim=2, hidden_units=(128, 128), name="mlp_generator"):
    """MLP generator for 2-D toy data: dense(ReLU) layers then a linear output (no BN: the toy data are
    unbounded points, and BN in a 2-layer MLP only adds batch coupling)."""
    z = keras.Input((z_dim,), name="z")
    x = z
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(z, outputs, name=name)


def build_mlp_encoder(input_dim=2, output_dim=1, hidden_units=(128, 128), name="mlp_encoder"):
    """MLP encoder/critic for 2-D toy data: dense(LeakyReLU 0.2) layers then a linear ``output_dim`` output.

    LeakyReLU rather than ReLU keeps the input gradient non-zero everywhere, which the generator (eq. 15)
    and the contractive penalty both rely on."""
    inputs = keras.Input((input_dim,), name="inputs")
    x = inputs
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, name=f"hidden_{index}")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def build_scalar_discriminator(hidden_units=(64, 64), name="scalar_discriminator"):
    """A 1-D -> 1-D discriminator, T_P or T_Q of eq. 14: it separates encoder outputs from samples of
    N(mu, 1). One input feature, so a small MLP is plenty (the DIM prior discriminator is 1000-200-1 for
    64-D codes, App. A.2)."""
    return build_mlp_encoder(input_dim=1, output_dim=1, hidden_units=hidden_units, name=name)


def build_networks(architecture, image_shape, z_dim=128, base_filters=None):
    """Returns ``(generator, encoder)`` for ``architecture`` in {"dcgan", "resnet", "mlp"}.

    For "mlp" ``image_shape`` is the point shape ``(D,)``. ``base_filters`` defaults to each family's usual
    width (64 for DCGAN, 128 for ResNet, 128 hidden units for the MLPs)."""
    if architecture == "dcgan":
        filters = 64 if base_filters is None else base_filters
        return (
            build_dcgan_generator(image_shape, z_dim=z_dim, base_filters=filters),
            build_dcgan_encoder(image_shape, base_filters=filters),
        )
    if architecture == "resnet":
        filters = 128 if base_filters is None else base_filters
        return (
            build_resnet_generator(image_shape, z_dim=z_dim, base_filters=filters),
            build_resnet_encoder(image_shape, base_filters=filters),
        )
    if architecture == "mlp":
        units = 128 if base_filters is None else base_filters
        (dim,) = image_shape
        return (
            build_mlp_generator(output_dim=dim, z_dim=z_dim, hidden_units=(units, units)),
            build_mlp_encoder(input_dim=dim, hidden_units=(units, units)),
        )
    raise ValueError(f"unknown architecture {architecture!r}; expected 'dcgan', 'resnet' or 'mlp'")
