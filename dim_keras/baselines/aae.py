"""The adversarial auto-encoder (Makhzani et al. 2015), a comparison model of DIM's Tables 1-2 (issue 15).

A deterministic auto-encoder whose code is pushed towards a prior by a discriminator on the code
(Makhzani et al., Sec. 2, the "deterministic" ``q(z|x)`` of their three choices):

    z = E(x)                                    the encoder's linear ``y`` (what is exported)
    reconstruction = -log p(x | z)              Bernoulli on [0, 1] intensities, nats per image
                                                (:func:`~dim_keras.baselines.distributions.bernoulli_log_likelihood`,
                                                the VAE's likelihood, so the two reconstructions compare)
    prior_loss = -log D(z)                      the encoder's non-saturating generator loss
    loss = reconstruction / D_x + adversarial_weight * prior_loss      D_x = H * W * C pixels
    discriminator: log D(z') + log(1 - D(stop_gradient(z))),  z' ~ p(z) = N(0, I)

The prior matching is DIM's own (:mod:`dim_keras.priors`, eq. 7, Table 10): the same
:class:`~dim_keras.priors.PriorDiscriminator`, :func:`~dim_keras.priors.sample_prior`,
:func:`~dim_keras.priors.discriminator_loss`, :func:`~dim_keras.priors.encoder_prior_loss` and
:func:`~dim_keras.priors.discriminator_accuracy`, so AAE differs from DIM's prior term only by the decoder's
reconstruction in place of the MI terms.

Hyper-parameters and where they come from:

- prior ``N(0, I)`` (``prior="gaussian"``): Makhzani et al.'s default (their Sec. 3 likelihood experiments
  impose a Gaussian); any prior of :data:`dim_keras.choices.PRIORS` works (``uniform`` squashes the code by a
  sigmoid first, :func:`~dim_keras.priors.match_to_prior_space`, as DIM does).
- discriminator 1000-200-1 ReLU (``discriminator_units=(1000, 200)``): DIM's prior discriminator (Table 10),
  not Makhzani et al.'s two 1000-unit layers: the issue asks to reuse DIM's, and with it DIM's prior term and
  the AAE's see the very same adversary; ``discriminator_units=(1000, 1000)`` gives Makhzani's.
- ``adversarial_weight = 1``: the DIM authors' AAE (their ``cortex`` framework,
  ``built_ins/models/adversarial_autoencoder.py``: ``beta * encoder_loss + reconstruction_loss``, beta 1.0,
  non-saturating generator loss).

Deviation (documented simplification): Makhzani et al. alternate a reconstruction phase (encoder + decoder
on the reconstruction) and a regularisation phase (discriminator, then the encoder on the generator loss),
three updates per batch; here the encoder and decoder take one step on the weighted sum, then the
discriminator one step on the same forward pass (:class:`~dim_keras.models.TwoObjectiveModel`'s step, as
the DIM authors' AAE).  In the loss the reconstruction is *per pixel* (``/ D_x``), as the authors' code averages
its reconstruction error over pixels: summed per image it is about 2080 nats at initialisation on 28 x 28 x 3
digits against a prior term of about log 2, and the sum of the two gradients would leave the prior no pull on
the encoder at all (Adam normalises the sum, not each term, unlike Makhzani's separate regularisation update).
The logged ``reconstruction`` stays in nats per image, comparable with the VAE's.
"""

import keras
from keras import ops

from dim_keras import priors as priors_lib
from dim_keras.baselines import distributions
from dim_keras.baselines.base import BaselineModel
from dim_keras.baselines.decoders import build_decoder


@keras.saving.register_keras_serializable(package="dim_keras")
class AdversarialAutoEncoder(BaselineModel):
    """Adversarial auto-encoder (Makhzani et al. 2015) with a deterministic encoder ``z = y``.

    Args:
        encoder: a ``keras.Model`` of :mod:`dim_keras.encoders` (``y``: the code ``z``).
        decoder: ``[B, latent_dim] -> [B, H, W, C]`` Bernoulli logits
            (:func:`dim_keras.baselines.decoders.build_decoder`).
        prior: the prior on ``z``, one of :data:`dim_keras.choices.PRIORS` (``gaussian``: N(0, I)).
        adversarial_weight: weight of the encoder's generator loss beside the reconstruction.
        discriminator_units: hidden widths of the prior discriminator (DIM's Table 10: 1000, 200).
        seed: seeds the prior samples.
    """

    def __init__(self, encoder, decoder, prior="gaussian", adversarial_weight=1.0,
                 discriminator_units=(1000, 200), seed=None, **kwargs):
        super().__init__(encoder, seed=seed, **kwargs)
        if not adversarial_weight >= 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        self._set_decoder(decoder)
        self.prior = self._check_prior(prior)
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator_units = tuple(int(u) for u in discriminator_units)
        self.discriminator = priors_lib.PriorDiscriminator(self.discriminator_units, name="prior_discriminator")
        self.discriminator.build((None, self.latent_dim))
        self._finish_init(["reconstruction", "prior_loss", "discriminator_accuracy"])

    @property
    def discriminator_variables(self):
        return self.discriminator.trainable_variables

    def code(self, images, training=False):
        """``(features, z)``: the encoder's features of [0, 1] ``images`` and the code ``z`` the decoder and the
        discriminator read: ``y`` itself, or mapped into the prior's support
        (:func:`~dim_keras.priors.match_to_prior_space`: ``uniform`` squashes it by a sigmoid)."""
        features = self.encoder(images, training=training)
        return features, priors_lib.match_to_prior_space(features["y"], self.prior)

    def reconstruction_code(self, images, training=False):
        """The code the decoder reads (``y`` in the prior's support)."""
        return ops.cast(self.code(images, training=training)[1], "float32")

    def reconstruction(self, images, z, training=False):
        """``-log p(x | z)`` per image (nats, ``[B]``): Bernoulli on the [0, 1] intensities."""
        logits = ops.cast(self.decoder(z, training=training), "float32")
        return -distributions.bernoulli_log_likelihood(logits, ops.cast(images, "float32"))

    def _representation_objective(self, images, extra, training):
        """Reconstruction per pixel + ``adversarial_weight`` x the encoder's generator loss ``-log D(z)``
        (Makhzani et al. Sec. 2's two phases summed into one step); ``aux`` is the stop-gradient code for the
        discriminator."""
        _, z = self.code(images, training=training)
        reconstruction = ops.mean(self.reconstruction(images, z, training=training))
        prior_loss = priors_lib.encoder_prior_loss(self.discriminator(z))
        pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        loss = reconstruction / pixels + self.adversarial_weight * prior_loss  # per pixel: module docstring
        return loss, {"reconstruction": reconstruction, "prior_loss": prior_loss}, ops.stop_gradient(z)

    def _discriminator_objective(self, z, training):
        """The discriminator's cross-entropy of prior samples (real) against the codes (fake), eq. 7 of DIM as
        Makhzani et al.'s regularisation phase."""
        real = priors_lib.sample_prior(self.prior, ops.shape(z)[0], self.latent_dim, seed=self.seed_generator)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(z)
        return (priors_lib.discriminator_loss(real_logits, fake_logits),
                {"discriminator_accuracy": priors_lib.discriminator_accuracy(real_logits, fake_logits)})

    def get_config(self):
        return {**super().get_config(), "decoder": keras.saving.serialize_keras_object(self.decoder),
                "prior": self.prior, "adversarial_weight": self.adversarial_weight,
                "discriminator_units": list(self.discriminator_units)}


def build(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """``--method=aae``: the adversarial auto-encoder on ``encoder`` with the decoder mirroring
    ``encoder_name`` (:func:`~dim_keras.baselines.decoders.build_decoder`), N(0, I) prior, DIM's prior
    discriminator, adversarial weight 1, ``config.seed``."""
    decoder = build_decoder(encoder_name, input_shape, int(encoder.output["y"].shape[-1]))
    return AdversarialAutoEncoder(encoder, decoder, seed=config.seed, name="aae")
