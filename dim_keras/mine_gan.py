"""GAN + MINE against mode collapse: MINE (Belghazi et al., ICML 2018), Sec. 5.1 and Fig. 4 (25 Gaussians).

Following InfoGAN, the generator's prior is the concatenation of noise and a code, ``Z = [eps, c]``, and the
generator maximises (Sec. 5.1 of the ICML version; the earlier arXiv version used ``I(G(Z); Z)`` instead)

    E[log D(G([eps, c]))] + beta * I(G([eps, c]); c),

the non-saturating GAN objective plus the mutual information between its samples and the code, estimated by
MINE: a statistics network ``T(x, c)`` trained to maximise the Donsker-Varadhan bound
``E_joint[T] - log E_marginals[e^T]``.  "Since the mutual information is unbounded", the MI
gradient reaching the generator is adaptively clipped (MINE supplementary, "adaptive clipping"): with
``g_u`` the gradient of the GAN loss and ``g_m`` that of ``-I``, the generator follows
``g_u + beta * min(||g_u||, ||g_m||) g_m / ||g_m||`` (norms over all generator weights together).
``beta = 0`` is the "orthodox GAN" of Goodfellow et al. with the same networks (Sec. 5.1.1 compares
``beta = 0`` with ``beta = 1``); it trains no statistics network.

The MI term is computed with :mod:`dim_keras.estimators`: the statistics network scores every
``(G([eps_i, c_i]), c_j)`` pair of the batch (``[B, B, 1]``, joint pairs on the diagonal, the other pairs
samples of the product of marginals; or only the pairs of the batch's first ``K`` samples, see
``statistics_batch_size``) and MINE's bias-corrected DV gradient
(:func:`dim_keras.estimators.dv_bias_corrected`, Sec. 3.2) replaces the batch denominator
``E_M[e^T]`` by a moving average whose log is a non-trainable variable of the model.  MINE's Algorithm 1
draws ``b`` marginal samples by shuffling; using all off-diagonal pairs is the same estimator with more
negatives.  One forward pass of the generator feeds D and T: T ascends the bound and G its clipped gradient.

Data and measures.  The experiment's settings are in the ICML version's supplementary, whose text was not
available where this was written (the stored earlier arXiv version has no such appendix); the values marked
"supplementary" below could not be checked against its text here: they are our reading of it, and agree
with a public third-party reproduction's configuration (generator width 500, discriminator width 400, learning rate 1e-4), the rest come from the papers
its 2-D experiment builds on or are marked as chosen here:

* 25 Gaussians: an equal-weight mixture of isotropic Gaussians with standard deviation 0.05 centred on the
  5 x 5 grid ``{-4, -2, 0, 2, 4}^2`` (std 0.05: supplementary; the grid: ALI (Dumoulin et al., 2016), VEEGAN
  (Srivastava et al., 2017) and PacGAN (Lin et al., 2018) -- PacGAN's code builds on ALI's, written by
  MINE's first author); the training set is 100,000 samples (supplementary).
* Networks (supplementary): generator of two fully connected layers of 500 units with batch normalisation and
  Leaky-ReLU (as in Dumoulin et al.), discriminator and statistics network of three fully connected layers of
  400 units; Adam with learning rate 1e-4, batch 100, 5,000 iterations.  Not stated and chosen here: the
  Leaky-ReLU slope 0.2 (also in the discriminator), ReLU in the statistics network, Adam's ``beta_1 = 0.5``
  (DCGAN, ALI), ``eps ~ N(0, I_10)`` and ``c ~ N(0, I_3)`` (Sec. 5.1: "a spherical Gaussian"; no dimensions
  are given), the EMA decay 0.99 of the bias correction.  The builders below default to the paper's sizes;
  the CPU run of ``apps/mine_gan.py`` uses smaller networks, a larger learning rate and more steps
  (:class:`dim_keras.config.MineGANConfig` says which and why).
* Mode counting (the MINE paper shows Fig. 4's KDE plots only; these are VEEGAN's measures, as
  implemented in PacGAN's released code): on 2,500 generated samples, a sample is *high quality* if it lies
  within 3 standard deviations of its nearest mode centre; a mode is *covered* if at least one
  (``min_count``) high-quality sample has it as nearest centre.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from dim_keras import critics as critics_lib
from dim_keras import estimators

_PACKAGE = "dim_keras"

GRID_SIDE = 5
GRID_SPACING = 2.0
GRID_STD = 0.05
TRAIN_EXAMPLES = 100_000  # the MINE supplementary's training set size


# ---------------------------------------------------------------------- data
def grid_centers(side=GRID_SIDE, spacing=GRID_SPACING):
    """Mode centres ``[side**2, 2]`` float32 on a ``side x side`` grid centred at 0 (``{-4,...,4}^2`` for 5, 2).

    Row-major: centre ``k`` is ``(x[k // side], x[k % side])`` with ``x = (arange(side) - (side - 1) / 2) * spacing``.
    """
    axis = (np.arange(side, dtype=np.float64) - (side - 1) / 2.0) * spacing
    xs, ys = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def sample_25_gaussians(num_samples, std=GRID_STD, seed=None, side=GRID_SIDE, spacing=GRID_SPACING,
                        return_modes=False):
    """``[N, 2]`` float32 samples of the equal-weight grid mixture (and, with ``return_modes``, each one's mode)."""
    rng = np.random.default_rng(seed)
    centers = grid_centers(side, spacing)
    modes = rng.integers(0, len(centers), size=int(num_samples))
    samples = (centers[modes] + std * rng.standard_normal((int(num_samples), 2))).astype(np.float32)
    return (samples, modes) if return_modes else samples


# ------------------------------------------------------------------ measures
def mode_coverage(samples, centers=None, std=GRID_STD, num_std=3.0, min_count=1):
    """VEEGAN's two measures of mode collapse on 2-D samples of a Gaussian mixture.

    A sample is *high quality* if its Euclidean distance to the nearest centre is at most ``num_std * std``
    (within 3 standard deviations of a mode; for an isotropic mode this is PacGAN's per-dimension-normalised
    distance).  A mode is *covered* if at least ``min_count`` high-quality samples have it as nearest centre.
    VEEGAN counts a mode as captured when it is the nearest mode of at least one high-quality sample, and
    PacGAN's released code (``MetricLogger``: distance normalised by the std, threshold 3, modes with a
    non-zero count) does the same, hence ``min_count = 1``; the MINE paper itself defines no measure.

    Returns ``{"covered_modes": int, "high_quality_fraction": float, "counts": [per mode]}``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape [N, 2], got {samples.shape}")
    if len(samples) == 0:
        raise ValueError("mode_coverage needs at least one sample")
    centers = grid_centers() if centers is None else np.asarray(centers)
    centers = centers.astype(np.float64)
    distances = np.linalg.norm(samples[:, None, :] - centers[None, :, :], axis=-1)
    nearest = np.argmin(distances, axis=1)
    close = distances[np.arange(len(samples)), nearest] <= num_std * std
    counts = np.bincount(nearest[close], minlength=len(centers))
    return {
        "covered_modes": int(np.sum(counts >= min_count)),
        "high_quality_fraction": float(np.mean(close)),
        "counts": counts.tolist(),
    }


# ------------------------------------------------------------------ networks
def build_generator(noise_dim=10, code_dim=3, hidden_units=(500, 500), output_dim=2, name="generator"):
    """``[eps, c] -> x``: dense (no bias) -> batch norm -> Leaky-ReLU(0.2) per hidden layer, linear output."""
    z = keras.Input((noise_dim + code_dim,), name="z")
    x = z
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, use_bias=False, name=f"hidden_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu_{index}")(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(z, outputs, name=name)


def build_discriminator(input_dim=2, hidden_units=(400, 400, 400), name="discriminator"):
    """``x -> logit of D(x)``: dense -> Leaky-ReLU(0.2) per hidden layer, linear output (no batch norm)."""
    inputs = keras.Input((input_dim,), name="x")
    x = inputs
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, name=f"hidden_{index}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu_{index}")(x)
    outputs = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=name)


def build_statistics_network(hidden_units=(400, 400, 400), sample_dim=2, code_dim=3, name="statistics_network"):
    """MINE's ``T(x, c)``: an MLP on the concatenation ``[x, c]`` (ReLU hidden layers, linear output),
    evaluated on every pair of a batch (:class:`dim_keras.critics.ConcatAndConvolveCritic`: its first layer is
    split into an ``x`` and a ``c`` half summed by broadcasting, so no ``[B, B, 5]`` input is formed).
    Called as ``T(x [B, 2], c [B, code_dim]) -> [B, B, 1]`` with ``scores[i, j] = T(x_i, c_j)``."""
    network = critics_lib.ConcatAndConvolveCritic(hidden_units=tuple(hidden_units), name=name)
    network.build((None, sample_dim), (None, code_dim))
    return network


def default_optimizer(learning_rate=1e-4, beta_1=0.5):
    """Adam with the paper's learning rate 1e-4 (``beta_1 = 0.5``: not stated, DCGAN's and ALI's)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1)


def global_norm(tensors):
    """``sqrt(sum ||t||^2)`` over a list of tensors (``None`` entries count as 0)."""
    squares = [tf.reduce_sum(tf.square(t)) for t in tensors if t is not None]
    return tf.sqrt(tf.add_n(squares)) if squares else tf.constant(0.0)


def adaptive_clip(gan_gradients, mi_gradients):
    """MINE's adaptive clipping: ``g_a = min(||g_u||, ||g_m||) g_m / ||g_m||`` (all weights together).

    ``g_u`` are the gradients of the generator's GAN loss, ``g_m`` those of ``-I`` (both lists over the same
    variables); ``g_a`` has the direction of ``g_m`` and at most the norm of ``g_u``.  A zero ``g_m`` stays 0.
    """
    norm_u = global_norm(gan_gradients)
    norm_m = global_norm(mi_gradients)
    scale = tf.math.divide_no_nan(tf.minimum(norm_u, norm_m), norm_m)
    return [None if g is None else g * scale for g in mi_gradients]


# --------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package=_PACKAGE)
class MineGAN(keras.Model):
    """Non-saturating GAN whose generator also maximises ``beta * I(G([eps, c]); c)`` (MINE Sec. 5.1, eq. 17).

    One ``train_step(real)`` is one discriminator update on ``real`` and a fresh generated batch, then one
    generator update on another fresh batch; with ``beta > 0`` the generator's forward pass also feeds the
    statistics network, which takes one ascent step on the bias-corrected DV bound from the same forward pass
    while the generator takes the adaptively clipped gradient of ``beta * I`` on top of its GAN gradient.

    Args:
        generator: ``[eps, c] [B, noise_dim + code_dim] -> x [B, 2]``.
        discriminator: ``x -> logit [B, 1]``.
        statistics_network: ``T(x [B, 2], c [B, code_dim]) -> [B, B, 1]``; may be ``None`` when ``beta == 0``.
        noise_dim, code_dim: split of the generator's input into ``eps`` and ``c`` (``code_dim >= 1``).
        beta: MINE weight (the paper's 1.0; 0 is the plain GAN).
        ema_decay: decay of MINE's moving average of ``E_M[e^T]`` (0: the plain, biased DV gradient).
        adaptive_clipping: clip the MI gradient to the GAN gradient's norm (the paper's choice).
        statistics_batch_size: ``K``: the statistics network scores the ``K x K`` pairs of the batch's first
            ``K`` samples (``K`` joint, ``K (K - 1)`` marginal pairs) instead of all ``B x B`` (``None``), so that
            its cost, quadratic in the batch, stays small on a CPU (MINE's Algorithm 1 uses ``b`` of each).
        seed: seed of the prior samples.

    Metrics: ``discriminator_loss`` (``E[sp(-D(x))] + E[sp(D(G(z)))]``, i.e. ``-V(D, G)`` in nats),
    ``generator_loss`` (``E[sp(-D(G(z)))]``, the non-saturating GAN loss), ``mutual_information`` (the DV
    bound of the batch, nats; 0 when ``beta == 0``).
    """

    def __init__(self, generator, discriminator, statistics_network=None, noise_dim=10, code_dim=3, beta=1.0,
                 ema_decay=0.99, adaptive_clipping=True, statistics_batch_size=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(code_dim) < 1 or int(noise_dim) < 0:
            raise ValueError(f"need code_dim >= 1 and noise_dim >= 0, got {code_dim}, {noise_dim}")
        if float(beta) < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if float(beta) > 0 and statistics_network is None:
            raise ValueError("beta > 0 needs a statistics network")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.generator = generator
        self.discriminator = discriminator
        self.statistics_network = statistics_network
        self.noise_dim = int(noise_dim)
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.ema_decay = float(ema_decay)
        self.adaptive_clipping = bool(adaptive_clipping)
        if statistics_batch_size is not None and int(statistics_batch_size) < 2:
            raise ValueError(f"statistics_batch_size must be >= 2, got {statistics_batch_size}")
        self.statistics_batch_size = None if statistics_batch_size is None else int(statistics_batch_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # log of MINE's moving average of E_M[e^T]; -inf = no history yet (estimators.update_log_ema).
        self.mine_log_ema = self.add_weight(shape=(), initializer=keras.initializers.Constant(-math.inf),
                                            trainable=False, name="mine_log_ema")
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.generator_loss_tracker = keras.metrics.Mean(name="generator_loss")
        self.mutual_information_tracker = keras.metrics.Mean(name="mutual_information")

    @property
    def metrics(self):
        return [self.discriminator_loss_tracker, self.generator_loss_tracker, self.mutual_information_tracker]

    # -- prior and generation ------------------------------------------------------------------------
    def sample_prior(self, batch_size):
        """``z = [eps, c]`` with ``eps ~ N(0, I_noise_dim)``, ``c ~ N(0, I_code_dim)`` ("a spherical Gaussian")."""
        return keras.random.normal((batch_size, self.noise_dim + self.code_dim), seed=self.seed_generator)

    def code_of(self, z):
        """The code ``c``: the last ``code_dim`` entries of ``z``."""
        return z[:, self.noise_dim:]

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def generate(self, num_samples, batch_size=2500):
        """``num_samples`` samples ``[N, 2]`` (numpy) with the generator in inference mode."""
        z = self.sample_prior(num_samples)
        return np.asarray(self.generator.predict(z, batch_size=batch_size, verbose=0))

    # -- compile -------------------------------------------------------------------------------------
    def compile(self, generator_optimizer=None, discriminator_optimizer=None, statistics_optimizer=None, **kwargs):
        """One optimizer per network (default: Adam, learning rate 1e-4, ``beta_1 = 0.5``)."""
        self.generator_optimizer = generator_optimizer or default_optimizer()
        self.discriminator_optimizer = discriminator_optimizer or default_optimizer()
        self.statistics_optimizer = statistics_optimizer or default_optimizer()
        # The generator's optimizer is "the" optimizer for Keras (so it builds no unused default one).
        super().compile(optimizer=self.generator_optimizer, **kwargs)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        if self.statistics_network is not None:
            self.statistics_optimizer.build(self.statistics_network.trainable_variables)

    # -- training ------------------------------------------------------------------------------------
    def discriminator_step(self, real):
        """One ascent step of D on ``V(D, G) = E[log D(x)] + E[log(1 - D(G(z)))]`` (eq. 16)."""
        fake = tf.stop_gradient(self.generator(self.sample_prior(tf.shape(real)[0]), training=True))
        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            loss = (tf.reduce_mean(tf.nn.softplus(-self.discriminator(real, training=True)))
                    + tf.reduce_mean(tf.nn.softplus(self.discriminator(fake, training=True))))
        self.discriminator_optimizer.apply(tape.gradient(loss, variables), variables)
        self.discriminator_loss_tracker.update_state(loss)
        return loss

    def generator_gradients(self, z):
        """Gradients for the generator (and the statistics network) from one batch ``z``, without applying them.

        Returns ``(generator_gradients, statistics_gradients, gan_loss, mi_bound, new_log_ema)``:
        ``generator_gradients = g_u + beta * g_a`` (``g_u`` of the non-saturating loss ``E[sp(-D(G(z)))]``,
        ``g_a`` the adaptively clipped gradient of ``-I``; just ``g_u`` when ``beta == 0``),
        ``statistics_gradients`` those of ``-surrogate`` for T (``None`` when ``beta == 0``), ``mi_bound`` the
        DV bound of the batch (0 when ``beta == 0``) and ``new_log_ema`` the moving average after this batch.
        """
        generator_variables = self.generator.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            fake = self.generator(z, training=True)
            gan_loss = tf.reduce_mean(tf.nn.softplus(-self.discriminator(fake, training=True)))
            if self.beta > 0:
                fake_pairs, code_pairs = fake, self.code_of(z)
                if self.statistics_batch_size is not None:  # the first K samples' K x K pairs
                    fake_pairs = fake_pairs[:self.statistics_batch_size]
                    code_pairs = code_pairs[:self.statistics_batch_size]
                scores = self.statistics_network(fake_pairs, code_pairs, training=True)  # [K, K, 1]
                bound, surrogate, new_log_ema = estimators.dv_bias_corrected(
                    scores, self.mine_log_ema, self.ema_decay)
                mi_loss = -surrogate
        gan_gradients = tape.gradient(gan_loss, generator_variables)
        if self.beta == 0:
            del tape
            return gan_gradients, None, gan_loss, tf.constant(0.0), tf.convert_to_tensor(self.mine_log_ema)
        mi_gradients = tape.gradient(mi_loss, generator_variables)
        statistics_gradients = tape.gradient(mi_loss, self.statistics_network.trainable_variables)
        del tape
        if self.adaptive_clipping:
            mi_gradients = adaptive_clip(gan_gradients, mi_gradients)
        gradients = [u if m is None else u + self.beta * m for u, m in zip(gan_gradients, mi_gradients)]
        return gradients, statistics_gradients, gan_loss, bound, new_log_ema

    def generator_step(self, batch_size):
        """One generator update (and, with ``beta > 0``, one statistics-network update) on a fresh batch."""
        gradients, statistics_gradients, gan_loss, bound, new_log_ema = self.generator_gradients(
            self.sample_prior(batch_size))
        self.generator_optimizer.apply(gradients, self.generator.trainable_variables)
        if statistics_gradients is not None:
            self.statistics_optimizer.apply(statistics_gradients, self.statistics_network.trainable_variables)
            self.mine_log_ema.assign(new_log_ema)
        self.generator_loss_tracker.update_state(gan_loss)
        self.mutual_information_tracker.update_state(bound)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.cast(real, tf.float32)
        self.discriminator_step(real)
        self.generator_step(tf.shape(real)[0])
        return {metric.name: metric.result() for metric in self.metrics}

    # -- config --------------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            discriminator=keras.saving.serialize_keras_object(self.discriminator),
            statistics_network=(None if self.statistics_network is None
                                else keras.saving.serialize_keras_object(self.statistics_network)),
            noise_dim=self.noise_dim, code_dim=self.code_dim, beta=self.beta, ema_decay=self.ema_decay,
            adaptive_clipping=self.adaptive_clipping, statistics_batch_size=self.statistics_batch_size,
            seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "discriminator", "statistics_network"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_mine_gan(beta=1.0, noise_dim=10, code_dim=3, generator_units=(500, 500),
                   discriminator_units=(400, 400, 400), statistics_units=(400, 400, 400), ema_decay=0.99,
                   adaptive_clipping=True, statistics_batch_size=None, seed=None):
    """A :class:`MineGAN` with the networks above (no statistics network when ``beta == 0``), not compiled."""
    # The generator and discriminator are built first, so that under keras.utils.set_random_seed the plain GAN
    # and GAN+MINE of one seed start from the same weights (each unseeded initializer draws its seed when built).
    generator = build_generator(noise_dim, code_dim, generator_units)
    discriminator = build_discriminator(hidden_units=discriminator_units)
    statistics = (build_statistics_network(statistics_units, code_dim=code_dim) if beta > 0 else None)
    return MineGAN(generator, discriminator, statistics, noise_dim=noise_dim,
                   code_dim=code_dim, beta=beta, ema_decay=ema_decay, adaptive_clipping=adaptive_clipping,
                   statistics_batch_size=statistics_batch_size, seed=seed)


def fit_steps(model, data, steps, batch_size=100, steps_per_call=250, jit_compile=False, seed=0,
              on_chunk=None):
    """Trains a compiled :class:`MineGAN` for ``steps`` steps on minibatches drawn from ``data`` [N, 2].

    Each minibatch is ``batch_size`` rows drawn uniformly (with replacement) inside the graph, and
    ``steps_per_call`` steps run in one ``tf.function`` call: the networks are small, so Keras's per-step
    dispatch in ``model.fit`` would otherwise dominate.  ``jit_compile`` is off by default: on the 2-core CPU
    this was written on, XLA made these small MLP steps 4-10x *slower* (its random-number and small-op code
    on CPU), measured on the plain GAN step.  ``on_chunk(done, metrics)`` is called after every call.
    Returns the metrics of the last call.
    """
    data = tf.constant(np.asarray(data, dtype=np.float32))
    count = int(data.shape[0])
    # Another stream than the model's prior noise (MineGAN's SeedGenerator(seed)): the same seed would reuse
    # its stateless keys for the minibatch indices.
    seed_generator = keras.random.SeedGenerator(seed + 1_000_003)

    @tf.function(jit_compile=jit_compile)
    def run(n):
        logs = {m.name: tf.constant(0.0) for m in model.metrics}
        for _ in tf.range(n):
            index = keras.random.randint((batch_size,), 0, count, seed=seed_generator)
            logs = model.train_step(tf.gather(data, index))
        return logs

    done, logs = 0, {}
    while done < steps:
        chunk = min(steps_per_call, steps - done)
        for metric in model.metrics:
            metric.reset_state()
        logs = {k: float(v) for k, v in run(tf.constant(chunk)).items()}
        done += chunk
        if on_chunk is not None:
            on_chunk(done, logs)
    return logs
