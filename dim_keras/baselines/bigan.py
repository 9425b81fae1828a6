"""BiGAN (Donahue et al. 2017) / ALI (Dumoulin et al. 2017) with a deterministic encoder, a comparison model of
DIM's Tables 1-2 ("BiGAN (a.k.a. adversarially learned inference with a deterministic encoder)"; issue 15).

An encoder E (the exported encoder: ``E(x) = y``), a generator G (the decoder of
:func:`~dim_keras.baselines.decoders.build_decoder` followed by a sigmoid: images in [0, 1]) and a joint
discriminator D(x, z) on *pairs*.  D learns to tell the encoder's pairs ``(x, E(x))``, x from the data, from
the generator's pairs ``(G(z), z)``, z from the prior (Donahue et al. eq. 3):

    D:      minimise  -log D(x, E(x)) - log(1 - D(G(z), z))           (labels 1 and 0)
    E, G:   minimise  -log(1 - D(x, E(x))) - log D(G(z), z)           (the labels flipped)

E and G train together on the flipped-label cross-entropy, the non-saturating form of the minimax game that
Donahue et al. use in practice (the "inverse" objective of their appendix, arXiv:1605.09782 p. 16: labels
flipped, for stronger gradients early in training, as Goodfellow et al.'s generator loss); with logits
``l``, ``-log D = softplus(-l)`` and ``-log(1 - D) = softplus(l)``, so both
losses are :func:`dim_keras.priors.discriminator_loss` (D's with the pairs in their order, E and G's with the
two pairs swapped).  D only ever sees these two pairings: never (x, z), (G(z), E(x)) or the like.

Hyper-parameters and where they come from:

- prior ``N(0, I)`` (``prior="gaussian"``): ALI's (Dumoulin et al.) and the DIM authors' ALI/BiGAN
  (``cortex``, ``built_ins/models/ali.py``: ``noise_type='normal'``); Donahue et al. draw z uniformly from
  [-1, 1] (50 dimensions on MNIST, 200 on ImageNet).  A Gaussian suits the encoder's *linear* ``y``, which is
  what the deterministic encoder outputs and what every method exports; the other priors of
  :data:`dim_keras.choices.PRIORS` are available (``E(x)`` is then mapped into their support by
  :func:`~dim_keras.priors.match_to_prior_space`, e.g. a sigmoid for ``uniform`` on [0, 1]).
- D (:class:`JointDiscriminator`): the DIM authors' ALI discriminator layout (an x network to a 256-d feature,
  concatenated with z, a 512-128-1 top network, no batch norm), with the x network a DCGAN discriminator
  (Radford et al. 2016: stride-2 4x4 convolutions, LeakyReLU 0.2, no batch norm on pairs: batch statistics
  would differ between the two kinds of pair and give D a shortcut) whose widths mirror the encoder family's
  convolutions (:data:`~dim_keras.baselines.decoders.DECODER_FAMILIES`), and z embedded by a 256-unit layer
  (Donahue et al. and ALI embed z by a network of its own; the authors' ALI has it as an option).  No dropout
  (ALI puts 0.2 on D's layers; Donahue et al. and the DIM authors' code use none).
- one D update per E/G update, Adam lr 1e-4, beta_1 0.5 for both (the training recipe's,
  :func:`dim_keras.models.default_optimizer`; Donahue et al.: Adam, beta_1 0.5, lr 2e-4).
"""

import math

import keras
from keras import layers, ops

from dim_keras import priors as priors_lib
from dim_keras.baselines.base import BaselineModel
from dim_keras.baselines.decoders import build_decoder, decoder_family

LEAK = 0.2  # LeakyReLU slope of D: DCGAN's discriminator (Radford et al. 2016), Donahue et al.'s conv nets


@keras.saving.register_keras_serializable(package="dim_keras")
class JointDiscriminator(keras.Model):
    """BiGAN / ALI's joint discriminator ``D(x, z)``: one logit per pair ``(x, z)``.

    x: stride-2 4x4 convolutions (``conv_widths``), LeakyReLU 0.2, flattened, a ``x_units`` layer; z: a
    ``z_units`` layer; both concatenated and through ``joint_units`` layers to one logit; LeakyReLU 0.2
    throughout, no batch norm.  float32 throughout (like :class:`dim_keras.priors.PriorDiscriminator`).
    Called as ``D((x, z))`` with ``x`` ``[B, H, W, C]`` images in [0, 1] and ``z`` ``[B, latent_dim]``.
    """

    def __init__(self, conv_widths=(64, 128, 256), x_units=256, z_units=256, joint_units=(512, 128), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.conv_widths = tuple(int(w) for w in conv_widths)
        self.x_units = int(x_units)
        self.z_units = int(z_units)
        self.joint_units = tuple(int(u) for u in joint_units)
        self.convs = [layers.Conv2D(w, 4, strides=2, padding="same", dtype="float32", name=f"x_conv{k + 1}")
                      for k, w in enumerate(self.conv_widths)]
        self.x_dense = layers.Dense(self.x_units, dtype="float32", name="x_dense")
        self.z_dense = layers.Dense(self.z_units, dtype="float32", name="z_dense")
        self.joint = [layers.Dense(u, dtype="float32", name=f"joint_dense{k + 1}")
                      for k, u in enumerate(self.joint_units)]
        self.logit = layers.Dense(1, dtype="float32", name="logit")

    def build(self, input_shape):
        image_shape, z_shape = input_shape
        batch, height, width, channels = image_shape
        for conv in self.convs:
            conv.build((batch, height, width, channels))
            height, width, channels = math.ceil(height / 2), math.ceil(width / 2), conv.filters
        self.x_dense.build((batch, height * width * channels))
        self.z_dense.build((batch, z_shape[-1]))
        units = self.x_units + self.z_units
        for layer in self.joint:
            layer.build((batch, units))
            units = layer.units
        self.logit.build((batch, units))
        self.built = True

    def call(self, inputs, training=False):
        x, z = inputs
        h = ops.cast(x, "float32")
        for conv in self.convs:
            h = ops.leaky_relu(conv(h), LEAK)
        h = ops.leaky_relu(self.x_dense(ops.reshape(h, (ops.shape(h)[0], -1))), LEAK)
        v = ops.leaky_relu(self.z_dense(ops.cast(z, "float32")), LEAK)
        joint = ops.concatenate([h, v], axis=-1)
        for layer in self.joint:
            joint = ops.leaky_relu(layer(joint), LEAK)
        return ops.squeeze(self.logit(joint), axis=-1)

    def get_config(self):
        return {"name": self.name, "conv_widths": list(self.conv_widths), "x_units": self.x_units,
                "z_units": self.z_units, "joint_units": list(self.joint_units)}


def discriminator_widths(encoder_name, image_shape):
    """The x network's convolution widths for ``encoder_name``'s family at ``image_shape``: the family's
    convolutions from the image side (the decoder's, reversed), one stride-2 step each while the side stays
    at least 2 (so small images get fewer)."""
    _, widths, _ = decoder_family(encoder_name)
    steps = max(1, min(len(widths), int(math.floor(math.log2(min(image_shape[:2])))) - 1))
    return tuple(reversed(widths))[:steps]


@keras.saving.register_keras_serializable(package="dim_keras")
class BiGAN(BaselineModel):
    """BiGAN / ALI with a deterministic encoder (Donahue et al. 2017, Dumoulin et al. 2017).

    Args:
        encoder: a ``keras.Model`` of :mod:`dim_keras.encoders`; ``E(x)`` is its ``y``.
        decoder: the generator's network, ``[B, latent_dim] -> [B, H, W, C]`` pre-activation
            (:func:`dim_keras.baselines.decoders.build_decoder`); ``G(z) = sigmoid(decoder(z))``.
        prior: the prior of z, one of :data:`dim_keras.choices.PRIORS` (``gaussian``: N(0, I)).
        discriminator_widths, discriminator_x_units, discriminator_z_units, discriminator_joint_units: the
            :class:`JointDiscriminator`'s sizes.
        seed: seeds the prior samples z.
    """

    def __init__(self, encoder, decoder, prior="gaussian", discriminator_widths=(64, 128, 256),
                 discriminator_x_units=256, discriminator_z_units=256, discriminator_joint_units=(512, 128),
                 seed=None, **kwargs):
        super().__init__(encoder, seed=seed, **kwargs)
        self._set_decoder(decoder)
        self.prior = self._check_prior(prior)
        self.discriminator = JointDiscriminator(discriminator_widths, discriminator_x_units, discriminator_z_units,
                                                discriminator_joint_units, name="joint_discriminator")
        self.discriminator.build([(None, *self.image_shape), (None, self.latent_dim)])
        self._finish_init(["generator_loss", "discriminator_accuracy"])

    @property
    def discriminator_variables(self):
        return self.discriminator.trainable_variables

    def infer(self, images, training=False):
        """``E(x)``: the encoder's ``y`` of [0, 1] ``images``, in the prior's support
        (:func:`~dim_keras.priors.match_to_prior_space`; ``y`` itself for the Gaussian prior)."""
        return priors_lib.match_to_prior_space(self.encoder(images, training=training)["y"], self.prior)

    def reconstruction_code(self, images, training=False):
        """``E(x)``: :meth:`reconstruct` is ``G(E(x))``, BiGAN's reconstruction."""
        return ops.cast(self.infer(images, training=training), "float32")

    def generate(self, z, training=False):
        """``G(z)``: [0, 1] float32 images of codes ``z``."""
        return ops.sigmoid(ops.cast(self.decoder(z, training=training), "float32"))

    def sample_latents(self, batch_size):
        """``batch_size`` draws of z from the prior (``seed_generator``)."""
        return priors_lib.sample_prior(self.prior, batch_size, self.latent_dim, seed=self.seed_generator)

    def _pair_logits(self, pairs, training):
        """D's logits on the encoder's pairs ``(x, E(x))`` and on the generator's pairs ``(G(z), z)``."""
        (images, inferred), (generated, latents) = pairs
        return (self.discriminator((images, inferred), training=training),
                self.discriminator((generated, latents), training=training))

    def _representation_objective(self, images, extra, training):
        """E and G's flipped-label cross-entropy (Donahue et al.'s "inverse" objective): D's logits on ``(x, E(x))``
        labelled 0 and on ``(G(z), z)`` labelled 1.  ``aux``: both pairs, stop-gradient, for D's update."""
        images = ops.cast(images, "float32")
        latents = self.sample_latents(ops.shape(images)[0])
        pairs = ((images, self.infer(images, training=training)),
                 (self.generate(latents, training=training), latents))
        real_logits, fake_logits = self._pair_logits(pairs, training)
        # The flip: the generator's pairs play "real" and the encoder's "fake" in D's own cross-entropy.
        generator_loss = priors_lib.discriminator_loss(fake_logits, real_logits)
        aux = tuple(tuple(ops.stop_gradient(t) for t in pair) for pair in pairs)
        return generator_loss, {"generator_loss": generator_loss}, aux

    def _discriminator_objective(self, pairs, training):
        """D's cross-entropy (Donahue et al. eq. 3): ``(x, E(x))`` real, ``(G(z), z)`` fake, on the
        representation pass's own (stop-gradient) pairs."""
        real_logits, fake_logits = self._pair_logits(pairs, training)
        return (priors_lib.discriminator_loss(real_logits, fake_logits),
                {"discriminator_accuracy": priors_lib.discriminator_accuracy(real_logits, fake_logits)})

    def get_config(self):
        d = self.discriminator
        return {**super().get_config(), "decoder": keras.saving.serialize_keras_object(self.decoder),
                "prior": self.prior, "discriminator_widths": list(d.conv_widths),
                "discriminator_x_units": d.x_units, "discriminator_z_units": d.z_units,
                "discriminator_joint_units": list(d.joint_units)}


def build(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """``--method=bigan``: BiGAN on ``encoder`` with the generator mirroring ``encoder_name``
    (:func:`~dim_keras.baselines.decoders.build_decoder`), D's x network with the family's widths
    (:func:`discriminator_widths`), N(0, I) prior, ``config.seed``."""
    decoder = build_decoder(encoder_name, input_shape, int(encoder.output["y"].shape[-1]), name="generator")
    return BiGAN(encoder, decoder, discriminator_widths=discriminator_widths(encoder_name, input_shape),
                 seed=config.seed, name="bigan")
