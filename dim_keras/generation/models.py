"""Generative models of App. A.8-A.9 (Hjelm et al., ICLR 2019) and the two baselines of Table 11.

* :class:`ImplicitPriorGenerator` -- "training a generator by matching to a prior implicitly" (App. A.8).
  An encoder E maps images to one number. Two JSD f-GAN discriminators T_P, T_Q (eq. 14) make the push-forward
  of the data through E match V_P = N(mu_P, 1) and that of the generated samples match V_Q = N(mu_Q, 1)
  (eq. 13). The generator minimises ``(E_z[E(G(z))] - mu_P)^2`` (eq. 15): it only moves the first moment of
  its encoded samples towards the data's mode. G and E do *not* play a minimax game: E's target for the
  generated samples is a fixed distribution, whatever G does.
* :class:`NSGANCP` -- non-saturating GAN whose discriminator (the same encoder network) gets the contractive
  penalty (Table 11, "NS-GAN-CP").
* :class:`WGANGP` -- WGAN with gradient penalty 10 (Gulrajani et al., 2017; Table 11).

All three share one convention: a ``generator`` (z -> images or points) and an ``encoder`` network with a 1-D
output (E, the discriminator or the critic), ``compile(generator_optimizer=..., encoder_optimizer=...,
[discriminator_optimizer=...])`` with one optimizer per player, a custom ``train_step`` in the keras-io GAN
style, and metrics as ``keras.metrics.Mean`` trackers listed by ``metrics``. ``model(z)`` generates.

Regularisation follows App. A.9: "the contractive penalty ... on the encoder, gradient clipping on the
discriminators, and no regularization on the generator". The contractive penalty (Rifai et al., 2011; the R1
penalty of Mescheder et al., 2018) is ``E_x ||dE(x)/dx||^2`` on real samples; gradient clipping is a property of
the discriminator optimizer (pass ``dim_keras.models.default_optimizer(learning_rate, clipnorm=...)``), so it is left
to the caller.
"""

import keras
import tensorflow as tf

from dim_keras.estimators import jsd_negative_term, jsd_positive_term
from dim_keras.models import default_optimizer

_PACKAGE = "dim_keras"


def jsd_fgan_bound(real_scores, fake_scores):
    """JSD f-GAN lower bound of eq. 14, ``E_real[log2 - sp(-T)] - E_fake[sp(T) - log2]``.

    Maximised by the discriminator. Up to the constant ``2 log 2`` it is ``E_real[-sp(-T)] - E_fake[sp(T)]``,
    the softplus form of Nowozin et al. (2016); the optimum is ``2 JSD(real || fake)`` in nats (``2 log 2``
    when the two are disjoint, 0 when they are equal).
    """
    return keras.ops.mean(jsd_positive_term(real_scores)) - keras.ops.mean(jsd_negative_term(fake_scores))


def _squared_input_gradient_norm(network, inputs, training=True):
    """Returns ``(outputs, E_x ||d sum(network(x)) / dx||^2)``.

    With a network that couples no samples (no batch norm), the gradient of the batch sum is the per-sample
    input gradient, so one backward pass gives all of them. Called inside an outer tape, which then
    differentiates the penalty with respect to the weights (double back-propagation).
    """
    with tf.GradientTape() as input_tape:
        input_tape.watch(inputs)
        outputs = network(inputs, training=training)
    input_gradients = input_tape.gradient(outputs, inputs)
    flat = keras.ops.reshape(input_gradients, (keras.ops.shape(input_gradients)[0], -1))
    return outputs, keras.ops.mean(keras.ops.sum(keras.ops.square(flat), axis=1))


class _GeneratorEncoderModel(keras.Model):
    """Shared plumbing: sub-networks, z sampling, input unpacking, (de)serialisation and compile config."""

    _optimizer_names = ("generator_optimizer", "encoder_optimizer")

    def __init__(self, generator, encoder, z_dim=None, encoder_steps=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.encoder = encoder
        self.z_dim = int(z_dim if z_dim is not None else generator.inputs[0].shape[-1])
        if int(encoder_steps) < 1:
            raise ValueError(f"encoder_steps must be >= 1, got {encoder_steps}")
        self.encoder_steps = int(encoder_steps)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    # -- generation ----------------------------------------------------------------------------------
    def call(self, z, training=False):
        return self.generator(z, training=training)

    def sample_z(self, batch_size):
        """z ~ N(0, I): the "simple prior p(z) (such as a spherical Gaussian)" of App. A.8."""
        return keras.random.normal((batch_size, self.z_dim), seed=self.seed_generator)

    def generate(self, num_samples, batch_size=256):
        """Draws ``num_samples`` samples with the generator in inference mode (numpy array)."""
        return self.generator.predict(
            keras.random.normal((num_samples, self.z_dim), seed=self.seed_generator),
            batch_size=batch_size,
            verbose=0,
        )

    @staticmethod
    def _real_samples(data):
        """Accepts x, (x,) or (x, labels); uint8 images become float32 in [0, 1]."""
        if isinstance(data, (tuple, list)):
            data = data[0]
        if data.dtype == tf.uint8:
            return tf.cast(data, tf.float32) / 255.0
        return tf.cast(data, tf.float32)

    # -- compile -----------------------------------------------------------------------------------
    def _compile_optimizers(self, optimizers, networks, **kwargs):
        for name, optimizer in optimizers.items():
            # Unset players get DIM's Adam (lr 1e-4, beta_1 0.5), also Gulrajani et al.'s for the GANs.
            setattr(self, name, default_optimizer() if optimizer is None else keras.optimizers.get(optimizer))
        # The generator's optimizer is "the" optimizer for Keras; otherwise Keras builds an unused default one
        # over every variable. Building each optimizer on its own variables now also makes them usable under
        # MirroredStrategy (keras-team/keras #19246).
        super().compile(optimizer=self.generator_optimizer, **kwargs)
        for name, network_list in networks.items():
            variables = [v for network in network_list for v in network.trainable_variables]
            getattr(self, name).build(variables)
        self._compiled_optimizer_names = tuple(optimizers)

    def get_compile_config(self):
        names = getattr(self, "_compiled_optimizer_names", ())
        return {name: keras.saving.serialize_keras_object(getattr(self, name)) for name in names}

    def compile_from_config(self, config):
        self.compile(**{name: keras.saving.deserialize_keras_object(value) for name, value in config.items()})

    # -- config --------------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            encoder=keras.saving.serialize_keras_object(self.encoder),
            z_dim=self.z_dim,
            encoder_steps=self.encoder_steps,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "encoder", "prior_discriminator_p", "prior_discriminator_q"):
            if key in config:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImplicitPriorGenerator(_GeneratorEncoderModel):
    """Generator trained by implicit prior matching to two Gaussians, App. A.8, eqs. 13-15.

    One ``train_step`` does ``encoder_steps`` times [a discriminator update of T_P and T_Q (ascent on the sum of
    the two JSD bounds of eq. 14) and, from the same forward pass, an encoder update (descent on eq. 14 plus the
    contractive penalty)], then one generator update on eq. 15.

    Args:
        generator: z [N, z_dim] -> samples.
        encoder: E, samples -> [N, 1]. No batch norm (App. A.9), so that the contractive penalty is per sample.
        prior_discriminator_p, prior_discriminator_q: T_P, T_Q, [N, 1] -> [N, 1] (eq. 14).
        mu_p, mu_q: means of V_P and V_Q (eq. 13), not given in the paper. Their distance sets how much the two
            modes of E's output overlap, i.e. "by choosing the overlap, we fix the strength of the encoder"
            (App. A.8). The default gap of 4 (Bhattacharyya coefficient exp(-16/8) = 0.14) with 2 encoder steps
            covered the toy ring and trained the digits more reliably than a gap of 2 (docs/GENERATION.md).
        contractive_penalty_weight: weight of ``E_x ||dE(x)/dx||^2`` on real samples in the encoder loss.
        encoder_loss: "non_saturating" (E minimises ``E[sp(-T(E(x)))]``, i.e. makes its outputs look like prior
            samples to T, as the DIM authors train their encoder against the prior discriminator) or "minimax"
            (E minimises the bound of eq. 14 itself, ``-E[sp(T(E(x)))]``).
        encoder_steps: encoder/discriminator updates per generator update (the "training ratio" of Fig. 15);
            2 by default (see mu_p, mu_q).
        seed: seed of the z and prior samples.

    Metrics: ``discriminator_loss`` (minus the two bounds), ``encoder_loss`` (adversarial part),
    ``contractive_penalty``, ``generator_loss`` (eq. 15), ``encoded_real_mean`` and ``encoded_fake_mean``
    (the means of E(x) and E(G(z)), which should sit near mu_P and mu_Q).
    """

    _ENCODER_LOSSES = ("non_saturating", "minimax")

    def __init__(
        self,
        generator,
        encoder,
        prior_discriminator_p,
        prior_discriminator_q,
        mu_p=1.0,
        mu_q=-3.0,
        contractive_penalty_weight=1.0,
        encoder_loss="non_saturating",
        z_dim=None,
        encoder_steps=2,
        seed=None,
        **kwargs,
    ):
        super().__init__(generator, encoder, z_dim=z_dim, encoder_steps=encoder_steps, seed=seed, **kwargs)
        if encoder_loss not in self._ENCODER_LOSSES:
            raise ValueError(f"encoder_loss must be one of {self._ENCODER_LOSSES}, got {encoder_loss!r}")
        if float(mu_p) == float(mu_q):
            raise ValueError("mu_p and mu_q must differ: the generator is trained by moving from mu_q to mu_p")
        if float(contractive_penalty_weight) < 0:
            raise ValueError(f"contractive_penalty_weight must be >= 0, got {contractive_penalty_weight}")
        self.prior_discriminator_p = prior_discriminator_p
        self.prior_discriminator_q = prior_discriminator_q
        self.mu_p = float(mu_p)
        self.mu_q = float(mu_q)
        self.contractive_penalty_weight = float(contractive_penalty_weight)
        self.encoder_loss = encoder_loss
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.encoder_loss_tracker = keras.metrics.Mean(name="encoder_loss")
        self.contractive_penalty_tracker = keras.metrics.Mean(name="contractive_penalty")
        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.encoded_real_tracker = keras.metrics.Mean(name="encoded_real_mean")
        self.encoded_fake_tracker = keras.metrics.Mean(name="encoded_fake_mean")

    @property
    def metrics(self):
        return [
            self.discriminator_loss_tracker,
            self.encoder_loss_tracker,
            self.contractive_penalty_tracker,
            self.generator_loss_tracker,
            self.encoded_real_tracker,
            self.encoded_fake_tracker,
        ]

    def compile(self, generator_optimizer=None, encoder_optimizer=None, discriminator_optimizer=None, **kwargs):
        """One optimizer per player (default: ``default_optimizer()``). Clip the discriminators' gradients
        (App. A.9) through ``discriminator_optimizer``'s ``clipnorm``/``clipvalue``; the default clips at 1."""
        if discriminator_optimizer is None:
            discriminator_optimizer = default_optimizer(clipnorm=1.0)
        self._compile_optimizers(
            {
                "generator_optimizer": generator_optimizer,
                "encoder_optimizer": encoder_optimizer,
                "discriminator_optimizer": discriminator_optimizer,
            },
            {
                "generator_optimizer": [self.generator],
                "encoder_optimizer": [self.encoder],
                "discriminator_optimizer": [self.prior_discriminator_p, self.prior_discriminator_q],
            },
            **kwargs,
        )

    def _prior_samples(self, batch_size, mean):
        return mean + keras.random.normal((batch_size, 1), seed=self.seed_generator)

    def _encoder_and_discriminator_step(self, real):
        batch_size = tf.shape(real)[0]
        # G is not updated here: its samples are fixed inputs for E (no minimax between G and E).
        fake = tf.stop_gradient(self.generator(self.sample_z(batch_size), training=True))
        prior_p = self._prior_samples(batch_size, self.mu_p)
        prior_q = self._prior_samples(batch_size, self.mu_q)
        discriminator_variables = (
            self.prior_discriminator_p.trainable_variables + self.prior_discriminator_q.trainable_variables
        )
        with tf.GradientTape(persistent=True) as tape:
            encoded_real, contractive_penalty = _squared_input_gradient_norm(self.encoder, real)
            encoded_fake = self.encoder(fake, training=True)
            # eq. 14: the prior samples are the "real" side of each discriminator, the encoder outputs the "fake".
            scores_encoded_real = self.prior_discriminator_p(encoded_real, training=True)
            scores_encoded_fake = self.prior_discriminator_q(encoded_fake, training=True)
            bound_p = jsd_fgan_bound(self.prior_discriminator_p(prior_p, training=True), scores_encoded_real)
            bound_q = jsd_fgan_bound(self.prior_discriminator_q(prior_q, training=True), scores_encoded_fake)
            discriminator_loss = -(bound_p + bound_q)
            if self.encoder_loss == "non_saturating":
                # -E[log2 - sp(-T(E(x)))] = E[sp(-T(E(x)))] - log2: E pushes its outputs to the prior side of T.
                adversarial_loss = -(
                    keras.ops.mean(jsd_positive_term(scores_encoded_real))
                    + keras.ops.mean(jsd_positive_term(scores_encoded_fake))
                )
            else:
                # The encoder's part of eq. 14 (the prior terms do not depend on E).
                adversarial_loss = -(
                    keras.ops.mean(jsd_negative_term(scores_encoded_real))
                    + keras.ops.mean(jsd_negative_term(scores_encoded_fake))
                )
            encoder_loss = adversarial_loss + self.contractive_penalty_weight * contractive_penalty
        discriminator_gradients = tape.gradient(discriminator_loss, discriminator_variables)
        encoder_gradients = tape.gradient(encoder_loss, self.encoder.trainable_variables)
        del tape
        self.discriminator_optimizer.apply_gradients(zip(discriminator_gradients, discriminator_variables))
        self.encoder_optimizer.apply_gradients(zip(encoder_gradients, self.encoder.trainable_variables))
        self.discriminator_loss_tracker.update_state(discriminator_loss)
        self.encoder_loss_tracker.update_state(adversarial_loss)
        self.contractive_penalty_tracker.update_state(contractive_penalty)
        self.encoded_real_tracker.update_state(keras.ops.mean(encoded_real))
        self.encoded_fake_tracker.update_state(keras.ops.mean(encoded_fake))

    def _generator_step(self, batch_size):
        with tf.GradientTape() as tape:
            generated = self.generator(self.sample_z(batch_size), training=True)
            encoded_mean = keras.ops.mean(self.encoder(generated, training=True))
            generator_loss = keras.ops.square(encoded_mean - self.mu_p)  # eq. 15
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply_gradients(zip(tape.gradient(generator_loss, variables), variables))
        self.generator_loss_tracker.update_state(generator_loss)

    def train_step(self, data):
        real = self._real_samples(data)
        for _ in range(self.encoder_steps):  # a fixed, small count: unrolled in the graph
            self._encoder_and_discriminator_step(real)
        self._generator_step(tf.shape(real)[0])
        return {metric.name: metric.result() for metric in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            prior_discriminator_p=keras.saving.serialize_keras_object(self.prior_discriminator_p),
            prior_discriminator_q=keras.saving.serialize_keras_object(self.prior_discriminator_q),
            mu_p=self.mu_p,
            mu_q=self.mu_q,
            contractive_penalty_weight=self.contractive_penalty_weight,
            encoder_loss=self.encoder_loss,
        )
        return config


class _TwoPlayerModel(_GeneratorEncoderModel):
    """A generator against one encoder/critic: the comparison GANs of Table 11.

    A step is ``encoder_steps`` updates of the encoder/critic (``_encoder_step``) and one of the generator,
    whose loss on the encoder's output for generated images is ``_generator_loss``.
    """

    def _encoder_step(self, real):
        raise NotImplementedError

    def _generator_loss(self, fake_output):
        raise NotImplementedError

    def _generator_step(self, batch_size):
        with tf.GradientTape() as tape:
            fake_output = self.encoder(self.generator(self.sample_z(batch_size), training=True), training=True)
            loss = self._generator_loss(fake_output)
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.generator_loss_tracker.update_state(loss)

    def train_step(self, data):
        real = self._real_samples(data)
        for _ in range(self.encoder_steps):
            self._encoder_step(real)
        self._generator_step(tf.shape(real)[0])
        return {metric.name: metric.result() for metric in self.metrics}

    def compile(self, generator_optimizer=None, encoder_optimizer=None, **kwargs):
        self._compile_optimizers(
            {"generator_optimizer": generator_optimizer, "encoder_optimizer": encoder_optimizer},
            {"generator_optimizer": [self.generator], "encoder_optimizer": [self.encoder]},
            **kwargs,
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NSGANCP(_TwoPlayerModel):
    """Non-saturating GAN with contractive penalty (NS-GAN-CP, Table 11).

    The encoder network is the discriminator D (logits). D minimises ``E[sp(-D(x))] + E[sp(D(G(z)))] +
    w * E_x ||dD(x)/dx||^2`` (real samples only, as for the implicit generator's encoder); G minimises the
    non-saturating ``E[sp(-D(G(z)))]`` (Goodfellow et al., 2014).

    Metrics: ``encoder_loss`` (the discriminator's cross-entropy), ``contractive_penalty``, ``generator_loss``,
    ``encoded_real_mean`` and ``encoded_fake_mean`` (mean logits).
    """

    def __init__(self, generator, encoder, contractive_penalty_weight=1.0, z_dim=None, encoder_steps=1, seed=None,
                 **kwargs):
        super().__init__(generator, encoder, z_dim=z_dim, encoder_steps=encoder_steps, seed=seed, **kwargs)
        if float(contractive_penalty_weight) < 0:
            raise ValueError(f"contractive_penalty_weight must be >= 0, got {contractive_penalty_weight}")
        self.contractive_penalty_weight = float(contractive_penalty_weight)
        self.encoder_loss_tracker = keras.metrics.Mean(name="encoder_loss")
        self.contractive_penalty_tracker = keras.metrics.Mean(name="contractive_penalty")
        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.encoded_real_tracker = keras.metrics.Mean(name="encoded_real_mean")
        self.encoded_fake_tracker = keras.metrics.Mean(name="encoded_fake_mean")

    @property
    def metrics(self):
        return [
            self.encoder_loss_tracker,
            self.contractive_penalty_tracker,
            self.generator_loss_tracker,
            self.encoded_real_tracker,
            self.encoded_fake_tracker,
        ]

    def _encoder_step(self, real):
        fake = tf.stop_gradient(self.generator(self.sample_z(tf.shape(real)[0]), training=True))
        with tf.GradientTape() as tape:
            real_logits, contractive_penalty = _squared_input_gradient_norm(self.encoder, real)
            fake_logits = self.encoder(fake, training=True)
            cross_entropy = keras.ops.mean(tf.nn.softplus(-real_logits)) + keras.ops.mean(tf.nn.softplus(fake_logits))
            loss = cross_entropy + self.contractive_penalty_weight * contractive_penalty
        variables = self.encoder.trainable_variables
        self.encoder_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.encoder_loss_tracker.update_state(cross_entropy)
        self.contractive_penalty_tracker.update_state(contractive_penalty)
        self.encoded_real_tracker.update_state(keras.ops.mean(real_logits))
        self.encoded_fake_tracker.update_state(keras.ops.mean(fake_logits))

    def _generator_loss(self, fake_logits):
        return keras.ops.mean(tf.nn.softplus(-fake_logits))  # non-saturating

    def get_config(self):
        config = super().get_config()
        config.update(contractive_penalty_weight=self.contractive_penalty_weight)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WGANGP(_TwoPlayerModel):
    """WGAN with gradient penalty (Gulrajani et al., 2017), the WGAN-GP baseline of Table 11.

    The encoder network is the critic D. D minimises ``E[D(G(z))] - E[D(x)] + lambda * E[(||dD(x_hat)/dx_hat||
    - 1)^2]`` with ``x_hat`` uniformly on segments between real and generated samples and ``lambda = 10``;
    G minimises ``-E[D(G(z))]``. Gulrajani et al. use 5 critic updates per generator update (the default of
    ``encoder_steps`` here).

    Metrics: ``encoder_loss`` (critic loss without penalty), ``gradient_penalty``, ``generator_loss`` and
    ``wasserstein_estimate`` (``E[D(x)] - E[D(G(z))]``).
    """

    def __init__(self, generator, encoder, gradient_penalty_weight=10.0, z_dim=None, encoder_steps=5, seed=None,
                 **kwargs):
        super().__init__(generator, encoder, z_dim=z_dim, encoder_steps=encoder_steps, seed=seed, **kwargs)
        self.gradient_penalty_weight = float(gradient_penalty_weight)
        self.encoder_loss_tracker = keras.metrics.Mean(name="encoder_loss")
        self.gradient_penalty_tracker = keras.metrics.Mean(name="gradient_penalty")
        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.wasserstein_tracker = keras.metrics.Mean(name="wasserstein_estimate")

    @property
    def metrics(self):
        return [
            self.encoder_loss_tracker,
            self.gradient_penalty_tracker,
            self.generator_loss_tracker,
            self.wasserstein_tracker,
        ]

    def _encoder_step(self, real):  # the critic's update
        batch_size = tf.shape(real)[0]
        fake = tf.stop_gradient(self.generator(self.sample_z(batch_size), training=True))
        # One mixing coefficient per sample, broadcast over the sample's other axes.
        mixing = keras.random.uniform((batch_size,) + (1,) * (real.shape.rank - 1), seed=self.seed_generator)
        interpolated = mixing * real + (1.0 - mixing) * fake
        with tf.GradientTape() as tape:
            with tf.GradientTape() as input_tape:
                input_tape.watch(interpolated)
                interpolated_scores = self.encoder(interpolated, training=True)
            gradients = input_tape.gradient(interpolated_scores, interpolated)
            gradients = keras.ops.reshape(gradients, (batch_size, -1))
            gradient_norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(gradients), axis=1) + 1e-12)
            gradient_penalty = keras.ops.mean(keras.ops.square(gradient_norm - 1.0))
            wasserstein = keras.ops.mean(self.encoder(real, training=True)) - keras.ops.mean(
                self.encoder(fake, training=True)
            )
            loss = -wasserstein + self.gradient_penalty_weight * gradient_penalty
        variables = self.encoder.trainable_variables
        self.encoder_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.encoder_loss_tracker.update_state(-wasserstein)
        self.gradient_penalty_tracker.update_state(gradient_penalty)
        self.wasserstein_tracker.update_state(wasserstein)

    def _generator_loss(self, fake_scores):
        return -keras.ops.mean(fake_scores)

    def get_config(self):
        config = super().get_config()
        config.update(gradient_penalty_weight=self.gradient_penalty_weight)
        return config
