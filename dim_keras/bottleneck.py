r"""The information bottleneck with MINE (Belghazi et al., "Mutual Information Neural Estimation", ICML 2018,
Sec. 5.3; Sec. 4.4 and Table 3 of arXiv 1801.04062v1).

A classifier ``X -> Z -> Y`` is trained on the IB Lagrangian (their eq. 24 in v1)

    L[q(Z | X)] = H(Y | Z) + beta * I(X; Z),

where ``H(Y | Z)`` is the cross-entropy of a softmax decoder ("The decoder is a simple softmax") and
``I(X; Z)`` is estimated by MINE: a statistics network ``T(x, z)`` maximises the Donsker-Varadhan bound
``E_J[T] - log E_M[e^T]`` while the encoder minimises it, both with MINE's bias-corrected gradient (Sec. 3.2: the
batch denominator ``E_M[e^T]`` of the gradient replaced by an exponential moving average).  As MINE needs no
tractable density of ``q(Z | X)``, the paper compares three stochastic encoders (Table 3):

- ``gaussian``: Alemi et al.'s conditional Gaussian, ``z = mu(x) + sigma(x) * eps``, ``eps ~ N(0, I)``;
- ``additive``: ``z = enc(x + sigma * eps)`` (noise on the input, fixed ``sigma``; the paper's best);
- ``propagated``: ``z = enc([x, eps])`` (the noise is an extra input the encoder learns to use or ignore);

and ``none`` is the deterministic baseline ``z = enc(x)``, trained on the cross-entropy alone.

The encoder is the paper's "MLP with two hidden layers and an output of 256 dimensions" (Alemi et al.'s
784-1024-1024-256; ReLU).  Pieces:

- :class:`StochasticEncoder`: the encoder, one noise draw per call (``noise="none"``: deterministic);
- :class:`StatisticsNetwork`: ``T(x_i, z_j)`` for every pair of a batch, ``[B, B, 1]`` with the joint pairs on
  the diagonal (the layout of :mod:`dim_keras.estimators`);
- :class:`MineInformationBottleneck`: the ``keras.Model`` whose ``train_step`` does one descent step of the
  encoder and decoder on ``H(Y|Z) + beta I_MINE`` and one ascent step of ``T`` on the bound;
- :func:`build_bottleneck` (construction), :func:`flat_digits` and :func:`batches` (data), :func:`test_error`,
  :func:`mi_estimate` and :func:`label_information_bound` (evaluation on the test split).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dim_keras import estimators
from dim_keras.choices import BOTTLENECK_DATASETS, BOTTLENECK_NOISES
from dim_keras.errors import DataError

# Alemi et al. (2017), followed by the paper ("We use a similar setup as Alemi et al."): a 256-dimensional
# representation, two hidden layers of 1024 units, Adam with lr 1e-4 (beta_1 0.5), batch 100; the encoder's
# standard deviation is softplus(. - 5), so a Gaussian encoder starts nearly deterministic (sigma ~ 0.007).
PAPER_REPRESENTATION_DIM = 256
PAPER_HIDDEN_UNITS = (1024, 1024)
PAPER_BATCH_SIZE = 100
GAUSSIAN_STD_OFFSET = 5.0
# Alemi et al. report the test error of the prediction averaged over 12 posterior samples.
PAPER_TEST_SAMPLES = 12
NUM_CLASSES = 10


# ------------------------------------------------------------------------------------------------ data
def flat_digits(dataset, split, data_dir=None):
    """``(x float32 [N, H*W] in [0, 1], y int64 [N])`` of ``split`` ("train" or "test"): permutation-invariant
    input (the paper's "permutation-invariant MNIST": pixels as a flat vector, no convolutions).

    ``digits`` is scikit-learn's 8x8 digits at native resolution (built in); ``mnist`` goes through
    :func:`dim_keras.data.load_split`.
    """
    if dataset == "digits":
        from dim_keras.data.digits import load_native_digits
        images, labels = load_native_digits(split)
    elif dataset == "mnist":
        from dim_keras.data import load_split
        data = load_split("mnist", split, data_dir)
        images, labels = data.images[..., 0].astype(np.float32) / np.float32(255), data.labels
    else:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(BOTTLENECK_DATASETS)}")
    images = np.asarray(images, dtype=np.float32)
    return images.reshape(len(images), -1), np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------------------------- encoder
@keras.saving.register_keras_serializable(package="dim_keras")
class StochasticEncoder(layers.Layer):
    """``z ~ q(z | x)``: an MLP (``hidden_units`` ReLU layers, a linear output of ``units``) with noise.

    ``noise`` is one of :data:`BOTTLENECK_NOISES` (see the module docstring); ``sigma`` is the input-noise
    scale of ``additive``.  Every call draws fresh noise, in training and at inference alike (Z *is* the
    noisy variable whose information about X is measured); ``mean(x)`` is the noise-free path (the mean for
    ``gaussian``, ``eps = 0`` for the others).
    """

    def __init__(self, units=PAPER_REPRESENTATION_DIM, hidden_units=PAPER_HIDDEN_UNITS, noise="gaussian",
                 sigma=0.3, seed=None, **kwargs):
        super().__init__(**kwargs)
        if noise not in BOTTLENECK_NOISES:
            raise ValueError(f"unknown encoder noise {noise!r}; choose one of {', '.join(BOTTLENECK_NOISES)}")
        self.units = int(units)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.noise = noise
        self.sigma = float(sigma)
        self.seed = seed
        self.hidden = [layers.Dense(u, activation="relu", name=f"hidden_{k}")
                       for k, u in enumerate(self.hidden_units)]
        # The Gaussian encoder's last layer emits mean and pre-softplus std (2K outputs, Alemi et al.).
        self.out = layers.Dense(2 * self.units if noise == "gaussian" else self.units, name="out")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        width = 2 * dim if self.noise == "propagated" else dim  # [x, eps], eps of x's size
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        self.out.build((None, width))

    def _trunk(self, inputs):
        h = inputs
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)

    def _normal(self, like):
        return keras.random.normal(ops.shape(like), seed=self.seed_generator, dtype=like.dtype)

    def call(self, inputs, training=None):
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if self.noise == "none":
            return self._trunk(inputs)
        if self.noise == "additive":
            return self._trunk(inputs + self.sigma * self._normal(inputs))
        if self.noise == "propagated":
            return self._trunk(ops.concatenate([inputs, self._normal(inputs)], axis=-1))
        params = self._trunk(inputs)
        mean, raw = params[:, :self.units], params[:, self.units:]
        return mean + self.std_of(raw) * self._normal(mean)

    @staticmethod
    def std_of(raw):
        return ops.softplus(raw - GAUSSIAN_STD_OFFSET)

    def mean(self, inputs):
        """The noise-free representation: ``mu(x)`` (gaussian), ``enc(x)`` (additive), ``enc([x, 0])``."""
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if self.noise == "propagated":
            return self._trunk(ops.concatenate([inputs, ops.zeros_like(inputs)], axis=-1))
        return self._trunk(inputs)[:, :self.units]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, hidden_units=list(self.hidden_units), noise=self.noise,
                      sigma=self.sigma, seed=self.seed)
        return config


# ---------------------------------------------------------------------------------- statistics network
@keras.saving.register_keras_serializable(package="dim_keras")
class StatisticsNetwork(layers.Layer):
    """MINE's statistics network ``T(x, z)``, scored for every pair of a batch: ``scores[i, j, 0] = T(x_i, z_j)``.

    An MLP on the concatenation ``[x; z]`` with ELU units.  Its first layer is linear in the concatenation,
    ``W [x; z] = W_x x + W_z z``, so both halves are computed once per sample and summed by broadcasting into
    ``[B, B, H]`` (every joint pair on the diagonal, every product-of-marginals pair off it) without forming
    the ``B^2`` concatenations.  In training, Gaussian noise of std ``input_noise`` is added to x and z and of
    ``hidden_noise`` to every hidden unit, a regulariser of ``T`` (a public reimplementation of this
    experiment, mohith-sakthivel/mine-pytorch, uses 0.3 and 0.5 with two hidden layers of 512; the paper's text
    gives no statistics network).  Deviations, for a CPU: the input noise is drawn per sample, not per pair
    (the first layer is split), and ``hidden_noise`` defaults to 0, as its ``B^2 H`` normal draws per layer
    made a jit-compiled step about 100 times slower on a CPU (XLA's random-number generator).
    """

    def __init__(self, hidden_units=(256,), input_noise=0.3, hidden_noise=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if not self.hidden_units:
            raise ValueError("StatisticsNetwork needs at least one hidden layer")
        self.input_noise = float(input_noise)
        self.hidden_noise = float(hidden_noise)
        self.seed = seed
        first = self.hidden_units[0]
        self.x_projection = layers.Dense(first, name="first_x")
        self.z_projection = layers.Dense(first, use_bias=False, name="first_z")
        self.hidden = [layers.Dense(u, name=f"hidden_{k}") for k, u in enumerate(self.hidden_units[1:], start=1)]
        self.score = layers.Dense(1, name="score")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, x_shape, z_shape):
        self.x_projection.build((None, int(x_shape[-1])))
        self.z_projection.build((None, int(z_shape[-1])))
        width = self.hidden_units[0]
        for layer in self.hidden:
            layer.build((None, None, width))
            width = layer.units
        self.score.build((None, None, width))

    def _noisy(self, values, scale, training):
        if not training or scale == 0.0:
            return values
        return values + scale * keras.random.normal(ops.shape(values), seed=self.seed_generator,
                                                    dtype=values.dtype)

    def call(self, x, z, training=None):
        a = self.x_projection(self._noisy(x, self.input_noise, training))  # [B, H]
        c = self.z_projection(self._noisy(z, self.input_noise, training))  # [B, H]
        h = self._noisy(ops.elu(a[:, None, :] + c[None, :, :]), self.hidden_noise, training)  # [B(x), B(z), H]
        for layer in self.hidden:
            h = self._noisy(ops.elu(layer(h)), self.hidden_noise, training)
        return self.score(h)  # [B, B, 1]

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=list(self.hidden_units), input_noise=self.input_noise,
                      hidden_noise=self.hidden_noise, seed=self.seed)
        return config


# ------------------------------------------------------------------------------------------------ model
@keras.saving.register_keras_serializable(package="dim_keras")
class MineInformationBottleneck(keras.Model):
    """``min H(Y|Z) + beta I(X; Z)`` with ``I`` estimated by MINE (Belghazi et al. 2018, Sec. 5.3, eq. 24).

    ``encoder`` is a :class:`StochasticEncoder`, ``classifier`` the softmax decoder (logits of ``z``),
    ``statistics`` a :class:`StatisticsNetwork`.  One ``train_step`` on a batch ``(x, y)``:

    1. (``statistics_steps - 1`` times: an ascent step of ``T`` alone on a fresh draw of ``z``;)
    2. draws ``z ~ q(z | x)`` once and scores every pair ``T(x_i, z_j)`` (``[B, B, 1]``);
    3. the DV bound and its bias-corrected surrogate (:func:`dim_keras.estimators.dv_bias_corrected`) with the
       moving average ``log E_M[e^T]`` kept in the non-trainable weight ``dv_log_ema`` (``-inf``: no history;
       ``ema_decay = 0``: plain DV gradients);
    4. the encoder and decoder descend ``cross-entropy + beta * max(I, 0)`` (``optimizer``): the MI term's
       gradient reaches the encoder through ``z`` in both the joint and the marginal scores, with ``T`` held
       fixed; the max with 0 (a constant ``T``'s bound) keeps the encoder from driving a lagging ``T``'s bound
       to -inf;
    5. ``T`` ascends ``I`` (``statistics_optimizer``).

    ``I``'s value is the DV bound of the batch; its gradient is the bias-corrected one, for both players.
    They step from the same forward pass (simultaneous gradient descent-ascent: one pass per step on a CPU;
    the paper does not say how it interleaves them).  ``beta = 0`` trains the encoder on the cross-entropy
    alone; ``T`` is still trained, so the model reports an estimate of ``I(X; Z)`` whatever beta.

    Metrics: ``loss`` (cross-entropy + beta max(I, 0)), ``cross_entropy``, ``mi_estimate`` (the DV bound,
    nats), ``accuracy`` (of one noise draw).  ``call(x)`` is the logits of one draw of ``z``.
    """

    def __init__(self, encoder, classifier, statistics, beta=1e-3, ema_decay=0.99, statistics_steps=1, **kwargs):
        super().__init__(**kwargs)
        if int(statistics_steps) < 1:
            raise ValueError(f"statistics_steps must be >= 1, got {statistics_steps}")
        self.statistics_steps = int(statistics_steps)
        if not beta >= 0.0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.encoder = encoder
        self.classifier = classifier
        self.statistics = statistics
        self.ema_decay = float(ema_decay)
        self.dv_log_ema = self.add_weight(shape=(), initializer=keras.initializers.Constant(-math.inf),
                                          trainable=False, name="dv_log_ema")
        # A variable, not a constant of the compiled step, so one compiled model serves every beta.
        self.beta_weight = self.add_weight(shape=(), initializer=keras.initializers.Constant(float(beta)),
                                           trainable=False, name="beta")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.mi_tracker = keras.metrics.Mean(name="mi_estimate")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.cross_entropy_tracker, self.mi_tracker, self.accuracy_tracker]

    @property
    def beta(self):
        return float(ops.convert_to_numpy(self.beta_weight))

    @beta.setter
    def beta(self, value):
        if not value >= 0.0:
            raise ValueError(f"beta must be >= 0, got {value}")
        self.beta_weight.assign(float(value))

    def reinitialize(self, template):
        """Restarts training from ``template`` (a model of the same architecture, e.g. built with another seed
        and beta) without recompiling: its weights (beta included), the states of its noise generators, the
        moving average forgotten (``-inf``) and both optimizers' steps and moments zeroed."""
        if [tuple(v.shape) for v in self.weights] != [tuple(v.shape) for v in template.weights]:
            raise ValueError("reinitialize needs a model of the same architecture")
        for target, source in zip(self.weights, template.weights):
            target.assign(source)
        for mine, theirs in ((self.encoder, template.encoder), (self.statistics, template.statistics)):
            mine.seed_generator.state.assign(theirs.seed_generator.state)
        self.dv_log_ema.assign(-math.inf)
        for optimizer in (self.optimizer, self.statistics_optimizer):
            for variable in optimizer.variables:
                if variable.path.split("/")[-1] != "learning_rate":
                    variable.assign(ops.zeros_like(variable))

    def build(self, input_shape):
        """``input_shape`` is ``(None, input_dim)``: flattened inputs."""
        input_shape = tuple(input_shape)
        if not self.encoder.built:
            self.encoder.build(input_shape)
        z_shape = self.encoder.compute_output_shape(input_shape)
        if not self.classifier.built:
            self.classifier.build(z_shape)
        if not self.statistics.built:
            self.statistics.build(input_shape, z_shape)
        self._input_shape = list(input_shape)
        self.built = True

    def get_build_config(self):
        return {"input_shape": self._input_shape}

    def build_from_config(self, config):
        self.build(config["input_shape"])

    def call(self, x, training=False):
        return self.classifier(self.encoder(x, training=training), training=training)

    # -- compile -----------------------------------------------------------------------------------------
    def compile(self, optimizer=None, statistics_optimizer=None, **kwargs):
        """Adam (lr 1e-4, beta_1 0.5: Alemi et al.'s and the paper's) for both players unless given."""
        from dim_keras.models import default_optimizer
        optimizer = default_optimizer() if optimizer is None else keras.optimizers.get(optimizer)
        self.statistics_optimizer = (default_optimizer() if statistics_optimizer is None
                                     else keras.optimizers.get(statistics_optimizer))
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.model_variables)
        self.statistics_optimizer.build(self.statistics.trainable_variables)

    def get_compile_config(self):
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer),
                "statistics_optimizer": keras.saving.serialize_keras_object(self.statistics_optimizer)}

    def compile_from_config(self, config):
        self.compile(**{name: keras.saving.deserialize_keras_object(value) for name, value in config.items()})

    @property
    def model_variables(self):
        """The variables of the encoder and the decoder (the IB player)."""
        return self.encoder.trainable_variables + self.classifier.trainable_variables

    # -- steps -------------------------------------------------------------------------------------------
    @staticmethod
    def _unpack(data):
        x, y = data[0], data[1]
        return tf.cast(x, tf.float32), tf.cast(y, tf.int64)

    def objective(self, x, y, training=False):
        """``(cross_entropy, bound, corrected, accuracy, new_log_ema)`` of one batch and one draw of ``z``.

        ``bound`` is the DV bound (DV's gradient); ``corrected`` has the bound's value and MINE's
        bias-corrected gradient.
        """
        z = self.encoder(x, training=training)
        logits = self.classifier(z, training=training)
        cross_entropy = ops.mean(ops.sparse_categorical_crossentropy(y, logits, from_logits=True))
        scores = self.statistics(x, z, training=training)
        bound, surrogate, new_log_ema = estimators.dv_bias_corrected(scores, self.dv_log_ema, self.ema_decay)
        corrected = surrogate + tf.stop_gradient(bound - surrogate)
        accuracy = ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=-1), y), "float32"))
        return cross_entropy, bound, corrected, accuracy, new_log_ema

    def _statistics_step(self, x):
        """One ascent step of ``T`` alone on a fresh draw of ``z`` (the encoder is not differentiated)."""
        z = tf.stop_gradient(self.encoder(x, training=True))
        variables = self.statistics.trainable_variables
        with tf.GradientTape() as tape:
            scores = self.statistics(x, z, training=True)
            bound, surrogate, new_log_ema = estimators.dv_bias_corrected(scores, self.dv_log_ema, self.ema_decay)
            loss = -surrogate
        self.statistics_optimizer.apply(tape.gradient(loss, variables), variables)
        self.dv_log_ema.assign(new_log_ema)

    def train_step(self, data):
        x, y = self._unpack(data)
        for _ in range(self.statistics_steps - 1):
            self._statistics_step(x)
        with tf.GradientTape(persistent=True) as tape:
            cross_entropy, bound, corrected, accuracy, new_log_ema = self.objective(x, y, training=True)
            # The encoder descends max(I_T, 0), the better of T's bound and a constant T's (which is 0): still a
            # lower bound on I(X; Z).  Without the max the encoder drives the bound of a lagging T to -inf
            # (moving z where T scores a product-of-marginals pair high); on digits beta >= 0.01 diverged so.
            loss = cross_entropy + self.beta_weight * ops.relu(corrected)
            statistics_loss = -corrected
        model_variables = self.model_variables
        statistics_variables = self.statistics.trainable_variables
        self.optimizer.apply(tape.gradient(loss, model_variables), model_variables)
        self.statistics_optimizer.apply(tape.gradient(statistics_loss, statistics_variables), statistics_variables)
        del tape
        self.dv_log_ema.assign(new_log_ema)
        return self._track(loss, cross_entropy, bound, accuracy)

    def test_step(self, data):
        x, y = self._unpack(data)
        cross_entropy, bound, _, accuracy, _ = self.objective(x, y, training=False)
        return self._track(cross_entropy + self.beta_weight * ops.relu(bound), cross_entropy, bound, accuracy)

    def _track(self, loss, cross_entropy, mi, accuracy):
        self.loss_tracker.update_state(loss)
        self.cross_entropy_tracker.update_state(cross_entropy)
        self.mi_tracker.update_state(mi)
        self.accuracy_tracker.update_state(accuracy)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            classifier=keras.saving.serialize_keras_object(self.classifier),
            statistics=keras.saving.serialize_keras_object(self.statistics),
            beta=self.beta, ema_decay=self.ema_decay, statistics_steps=self.statistics_steps)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "classifier", "statistics"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_bottleneck(input_dim, beta, noise="gaussian", sigma=0.3, units=PAPER_REPRESENTATION_DIM,
                     hidden_units=PAPER_HIDDEN_UNITS, statistics_units=(256,), statistics_input_noise=0.3,
                     statistics_hidden_noise=0.0, ema_decay=0.99, statistics_steps=1, seed=None):
    """A built :class:`MineInformationBottleneck` for flat inputs of ``input_dim``.

    The deterministic baseline is ``noise="none", beta=0``.
    """
    encoder = StochasticEncoder(units, hidden_units, noise=noise, sigma=sigma, seed=seed, name="encoder")
    classifier = layers.Dense(NUM_CLASSES, name="decoder")  # "The decoder is a simple softmax"
    statistics = StatisticsNetwork(statistics_units, input_noise=statistics_input_noise,
                                   hidden_noise=statistics_hidden_noise,
                                   seed=None if seed is None else seed + 1, name="statistics")
    model = MineInformationBottleneck(encoder, classifier, statistics, beta=beta, ema_decay=ema_decay,
                                      statistics_steps=statistics_steps, name="mine_information_bottleneck")
    model.build((None, int(input_dim)))
    return model


# ------------------------------------------------------------------------------------------ evaluation
def class_probabilities(model, x, samples=PAPER_TEST_SAMPLES, batch_size=1000):
    """``p(y | x)`` averaged over ``samples`` draws of ``z`` (one draw for a deterministic encoder), numpy."""
    samples = 1 if model.encoder.noise == "none" else int(samples)
    x = np.asarray(x, dtype=np.float32)
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        total = 0.0
        for _ in range(samples):
            total = total + ops.convert_to_numpy(ops.softmax(model(batch, training=False), axis=-1))
        chunks.append(total / samples)
    return np.concatenate(chunks, axis=0)


def label_information_bound(model, x, y, samples=PAPER_TEST_SAMPLES, batch_size=1000):
    """Barber and Agakov's variational lower bound ``I(Z; Y) >= H(Y) - E[-log q(y | z)]`` (nats) with the
    decoder as ``q``, ``H(Y)`` the entropy of the labels' frequencies in ``y`` and the cross-entropy averaged
    over ``samples`` draws of ``z``.  By the data-processing inequality (``Y - X - Z``) it is also a lower
    bound on ``I(X; Z)``: a cross-check of MINE's estimate that needs no statistics network."""
    samples = 1 if model.encoder.noise == "none" else int(samples)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    frequencies = np.bincount(y) / len(y)
    entropy = -float(np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0])))
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch, labels = x[start:start + batch_size], y[start:start + batch_size]
        for _ in range(samples):
            losses = ops.sparse_categorical_crossentropy(labels, model(batch, training=False), from_logits=True)
            total += float(ops.convert_to_numpy(ops.sum(losses)))
    return entropy - total / (samples * len(x))


def test_error(model, x, y, samples=PAPER_TEST_SAMPLES):
    """The misclassification rate (a fraction) of the prediction averaged over ``samples`` draws of ``z``."""
    predictions = np.argmax(class_probabilities(model, x, samples), axis=-1)
    return float(np.mean(predictions != np.asarray(y)))


def batches(x, y, batch_size, seed=None, shuffle=True, repeat=True):
    """``tf.data`` of ``(x, y)`` batches of exactly ``batch_size`` (the bound's negatives are the batch)."""
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.float32), np.asarray(y, np.int64)))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def mi_estimate(model, x, y, batch_size):
    """MINE's estimate of ``I(X; Z)`` (nats) on ``(x, y)``: the trained ``T``'s DV bound (not clamped at 0)
    averaged over consecutive batches of ``batch_size`` (each batch's other samples are its negatives; a partial
    last batch is left out), one draw of ``z`` per example.  Runs eagerly: a few batches need no compilation."""
    steps = len(x) // batch_size
    if steps < 1:
        raise DataError(f"{len(x)} examples are fewer than one batch of {batch_size}")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    bounds = [float(model.objective(x[k * batch_size:(k + 1) * batch_size], y[k * batch_size:(k + 1) * batch_size])[1])
              for k in range(steps)]
    return float(np.mean(bounds))
