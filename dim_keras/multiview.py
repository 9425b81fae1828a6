"""Two views of one image: Tschannen et al. (ICLR 2020), eq. 2, ``max I_EST(g1(X1); g2(X2))``.

Their testbed (Sec. 3, "Setup"): each handwritten digit is split into its top
half ``X1`` and bottom half ``X2`` (flattened, pixels in [0, 1]); two encoders
``g1``, ``g2`` and a critic ``f`` are trained with Adam (batch 128, lr 1e-4)
to maximise an MI lower bound between ``g1(X1)`` and ``g2(X2)``, and
``g1(x_top)`` is evaluated by a linear classifier of the digit.

- :func:`split_views` / :func:`load_views`: the two views of scikit-learn's
  8x8 digits (native resolution, 32 + 32 pixels) or MNIST (392 + 392);
- :func:`build_view_encoder`: the paper's encoders (Sec. 3.1 RealNVP, Sec. 3.2
  MLP, Sec. 3.3 ConvNet);
- :class:`TwoViewInfoMax`: the model, whose ``train_step`` maximises the bound
  (or, with ``target_mi``, minimises ``|I_EST - t|``, Sec. 3.3);
- :func:`probe_accuracy`: the linear evaluation of ``g1``.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dim_keras import estimators as estimators_lib
from dim_keras.choices import VIEW_DATASETS, VIEW_ENCODERS
from dim_keras.errors import DataError

# Tschannen et al. train with batch 128 and Adam at 1e-4 (Sec. 3, "Setup").
PAPER_BATCH_SIZE = 128
PAPER_LEARNING_RATE = 1e-4


@dataclasses.dataclass
class Views:
    """One split as two views: ``top`` and ``bottom`` float32 [N, H/2 * W] in [0, 1], ``labels`` int64 [N].

    ``half_shape`` is ``(H/2, W)``, the shape a conv encoder reshapes each view to.
    """

    top: np.ndarray
    bottom: np.ndarray
    labels: np.ndarray
    half_shape: tuple

    def __len__(self):
        return len(self.labels)


def split_views(images, labels):
    """``Views`` of grayscale ``images`` [N, H, W] with an even H (any numeric dtype; uint8 is scaled by
    1/255): the top ``H / 2`` rows and the bottom ``H / 2`` rows, each flattened."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] % 2:
        raise ValueError(f"split_views takes grayscale images [N, H, W] with an even H, got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255)
    images = images.astype(np.float32)
    half = images.shape[1] // 2
    top, bottom = images[:, :half], images[:, half:]
    return Views(top.reshape(len(images), -1), bottom.reshape(len(images), -1),
                 np.asarray(labels, dtype=np.int64), (half, images.shape[2]))


def load_views(dataset, split, data_dir=None):
    """The two views of ``split`` ("train" or "test") of ``dataset`` (one of :data:`VIEW_DATASETS`).

    ``digits`` is scikit-learn's 8x8 digits at native resolution (no upsampling: 4x8 halves);
    ``mnist`` goes through :func:`dim_keras.data.load_split` (official idx files in ``data_dir``, or tfds).
    """
    if dataset == "digits":
        from dim_keras.data.digits import load_native_digits
        images, labels = load_native_digits(split)
    elif dataset == "mnist":
        from dim_keras.data import load_split
        data = load_split("mnist", split, data_dir)
        images, labels = data.images[..., 0], data.labels
    else:
        raise DataError(f"unknown two-view dataset {dataset!r}; choose one of: {', '.join(VIEW_DATASETS)}")
    return split_views(images, labels)


# ----------------------------------------------------------------- encoders
def build_view_encoder(kind, dim, half_shape=None, seed=None, name=None):
    """An encoder ``g`` of one flattened view of ``dim`` pixels (Tschannen et al.).

    - ``mlp`` (Sec. 3.2): two hidden ReLU layers of 300 units and a linear layer to 100 features;
    - ``conv`` (Sec. 3.3): the view reshaped to ``half_shape``, two 5x5 stride-2 ReLU convolutions of 64 and
      128 channels, layer normalisation ("greatly reduces the variance of I_NWJ"), spatial average pooling
      and a dense layer to 100 features;
    - ``realnvp`` (Sec. 3.1): 30 additive couplings whose shift MLPs have two hidden ReLU layers of 512
      units ("each of them computes the shift"): invertible and volume-preserving, so the true MI is
      constant whatever the weights;
    - ``residual_mlp`` (Sec. 3.1, "bias towards hard-to-invert encoders"): :class:`ResidualMLP`, four hidden
      layers of the view's width with a skip connection each: the identity at zero weights.
    """
    if kind == "residual_mlp":
        return ResidualMLP(dim, name=name)
    if kind == "mlp":
        return keras.Sequential([layers.Input((dim,)), layers.Dense(300, activation="relu"),
                                 layers.Dense(300, activation="relu"), layers.Dense(100)], name=name)
    if kind == "conv":
        if half_shape is None or int(np.prod(half_shape)) != dim:
            raise ValueError(f"conv encoder needs half_shape with {dim} pixels, got {half_shape}")
        return keras.Sequential([
            layers.Input((dim,)), layers.Reshape((*half_shape, 1)),
            layers.Conv2D(64, 5, strides=2, padding="same", activation="relu"),
            layers.Conv2D(128, 5, strides=2, padding="same", activation="relu"),
            # Layer norm as in Ba et al. and the authors' notebook (mirl.ipynb: statistics over H, W and C,
            # a scale and bias per channel); Keras's default axis=-1 would normalise each location on its own.
            # The per-channel affine is left out: it commutes with the average pooling and is absorbed by the
            # dense layer that follows, so the functions are the same (219,492 parameters on MNIST's 14x28
            # halves: the paper's "220k").
            layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False),
            layers.GlobalAveragePooling2D(), layers.Dense(100)], name=name)
    if kind == "realnvp":
        from dim_keras.invertible import RealNVP
        model = RealNVP(dim, num_couplings=30, hidden_units=(512, 512), scale="none", seed=seed, name=name)
        model.build((None, dim))
        return model
    raise ValueError(f"unknown view encoder {kind!r}; choose one of {', '.join(VIEW_ENCODERS)}")


# -------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="dim_keras")
class TwoViewInfoMax(keras.Model):
    """``max I_EST(g1(X1); g2(X2))`` (Tschannen et al., eq. 2), or ``min |I_EST - t|`` with ``target_mi=t``
    (Sec. 3.3, "to ensure that both network architectures achieve the same lower bound").

    ``critic(g1(x1), g2(x2))`` scores every pair of the batch, ``[B, B, 1]``; the other halves of the batch
    are the negatives.  ``estimator`` is a name of :mod:`dim_keras.estimators` (the paper uses ``infonce``
    and ``nwj``).  Batches are ``(top, bottom)`` or ``((top, bottom), labels)`` (labels are ignored).
    ``call(top)`` is the representation ``g1(top)``.  Build it with ``model.build(((None, top_dim), (None,
    bottom_dim)))`` before ``fit``.
    """

    def __init__(self, encoder_top, encoder_bottom, critic, estimator="infonce", target_mi=None, **kwargs):
        super().__init__(**kwargs)
        estimators_lib.get_estimator(estimator)  # raises for an unknown name
        self.encoder_top = encoder_top
        self.encoder_bottom = encoder_bottom
        self.critic = critic
        self.estimator = estimator
        self.target_mi = None if target_mi is None else float(target_mi)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mi_tracker = keras.metrics.Mean(name="mi_estimate")

    @property
    def metrics(self):
        return [self.loss_tracker, self.mi_tracker]

    def call(self, top, training=False):
        return self.encoder_top(top, training=training)

    def build(self, input_shape):
        """``input_shape`` is ``((None, top_dim), (None, bottom_dim))``: the two flattened views."""
        top_shape, bottom_shape = input_shape
        for encoder, shape in ((self.encoder_top, top_shape), (self.encoder_bottom, bottom_shape)):
            if not encoder.built:
                encoder.build(tuple(shape))
        if not self.critic.built:
            self.critic.build(self.encoder_top.compute_output_shape(tuple(top_shape)),
                              self.encoder_bottom.compute_output_shape(tuple(bottom_shape)))
        self._view_shapes = [list(top_shape), list(bottom_shape)]
        self.built = True

    def get_build_config(self):
        return {"input_shape": self._view_shapes}

    def build_from_config(self, config):
        self.build(config["input_shape"])

    @staticmethod
    def _views(data):
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list)):
            data = data[0]  # ((top, bottom), labels)
        top, bottom = data
        return top, bottom

    def scores(self, top, bottom, training=False):
        """``[B, B, 1]``: the critic's score of every (top i, bottom j) pair."""
        return self.critic(self.encoder_top(top, training=training),
                           self.encoder_bottom(bottom, training=training), training=training)

    def objective(self, top, bottom, training=False):
        """``(loss, I_EST)`` of one batch: ``-I_EST``, or ``|I_EST - t|`` with a target."""
        estimate = estimators_lib.mi_lower_bound(self.scores(top, bottom, training=training), self.estimator)
        loss = -estimate if self.target_mi is None else ops.abs(estimate - self.target_mi)
        return loss, estimate

    def train_step(self, data):
        top, bottom = self._views(data)
        with tf.GradientTape() as tape:
            loss, estimate = self.objective(top, bottom, training=True)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._track(loss, estimate)

    def test_step(self, data):
        top, bottom = self._views(data)
        return self._track(*self.objective(top, bottom))

    def _track(self, loss, estimate):
        self.loss_tracker.update_state(loss)
        self.mi_tracker.update_state(estimate)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder_top=keras.saving.serialize_keras_object(self.encoder_top),
            encoder_bottom=keras.saving.serialize_keras_object(self.encoder_bottom),
            critic=keras.saving.serialize_keras_object(self.critic),
            estimator=self.estimator, target_mi=self.target_mi)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder_top", "encoder_bottom", "critic"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def view_dataset(views, batch_size, seed, shuffle=True):
    """A repeated, shuffled ``tf.data`` of ``(top, bottom)`` batches (drop_remainder: the bound's negatives
    are the batch, so every batch has the same size)."""
    dataset = tf.data.Dataset.from_tensor_slices((views.top, views.bottom))
    if shuffle:
        dataset = dataset.shuffle(len(views), seed=seed, reshuffle_each_iteration=True)
    return dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def embed(encoder, inputs, batch_size=512):
    """``encoder(inputs)`` in batches, as numpy."""
    from dim_keras.evaluation.probes import apply_in_batches
    return apply_in_batches(encoder, np.asarray(inputs, dtype=np.float32), batch_size=batch_size)


def probe_accuracy(train_features, train_labels, test_features, test_labels, max_iter=1000):
    """The paper's linear evaluation: test accuracy of multinomial logistic regression trained on every
    training label (they use scikit-learn's SAGA; lbfgs on standardised features reaches the same optimum
    of the same convex problem, faster at these sizes).

    BLAS runs single-threaded here: on a busy CPU OpenBLAS's spinning worker threads made this ~100-feature
    fit take ~10 s instead of ~0.1 s (measured on the shared 2-core machine), and the experiments probe
    every ``eval_every`` steps."""
    from threadpoolctl import threadpool_limits

    from dim_keras.evaluation.probes import logistic_regression_accuracy
    with threadpool_limits(limits=1, user_api="blas"):
        return logistic_regression_accuracy(train_features, train_labels, test_features, test_labels,
                                            max_iter=max_iter)


# ------------------------------------------- Sec. 3.1, "bias towards hard-to-invert encoders" (Fig. 2)
@keras.saving.register_keras_serializable(package="dim_keras")
class ResidualMLP(keras.Model):
    """Tschannen et al. Sec. 3.1: "an MLP architecture with 4 hidden layers of the same dimension as the input,
    and with a skip connection added to each layer (hence by setting all weights to 0 the network becomes the
    identity function)".

    ``x <- x + relu(W_k x + b_k)`` for the ``hidden_layers`` hidden layers, then ``x <- x + W x + b`` for the
    linear output layer, which has a skip connection too (the authors' notebook, mirl.ipynb: ``MLP([392] * 5,
    shortcuts=True)``).  Kernels start at ``TruncatedNormal(kernel_stddev)`` (the notebook's 1e-4) and biases at
    0, "initialized very close to the identity function"; the output has the input's width.
    """

    def __init__(self, dim, hidden_layers=4, kernel_stddev=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden_layers, self.kernel_stddev = int(dim), int(hidden_layers), float(kernel_stddev)
        self.residual_layers = [
            layers.Dense(self.dim, activation="relu" if k < self.hidden_layers else None,
                         kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.kernel_stddev),
                         bias_initializer="zeros", name=f"residual_{k}")
            for k in range(self.hidden_layers + 1)]

    def build(self, input_shape=None):
        for layer in self.residual_layers:
            if not layer.built:
                layer.build((None, self.dim))
        self.built = True

    def call(self, x, training=False):
        for layer in self.residual_layers:
            x = x + layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {"name": self.name, "dim": self.dim, "hidden_layers": self.hidden_layers,
                "kernel_stddev": self.kernel_stddev}


@keras.saving.register_keras_serializable(package="dim_keras")
class CoupledNoiseTwoViewInfoMax(TwoViewInfoMax):
    """:class:`TwoViewInfoMax` on views corrupted "in a coupled way by adding to each the same [...] random
    vector, whose coordinates are sampled [...] from a normal with standard deviation 0.05" (Tschannen et al.
    Sec. 3.1), so that the data's support is the whole input space and a non-invertible encoder loses MI.

    A fresh noise vector per example and step, in ``train_step`` and ``test_step`` alike (the notebook draws
    it in the graph); the two views must have the same width.
    """

    def __init__(self, encoder_top, encoder_bottom, critic, estimator="infonce", target_mi=None, noise_std=0.05,
                 seed=None, **kwargs):
        super().__init__(encoder_top, encoder_bottom, critic, estimator=estimator, target_mi=target_mi, **kwargs)
        self.noise_std = float(noise_std)
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        top_shape, bottom_shape = input_shape
        if top_shape[-1] != bottom_shape[-1]:
            raise ValueError(f"coupled noise needs views of the same width, got {top_shape} and {bottom_shape}")
        super().build(input_shape)

    def _views(self, data):
        top, bottom = TwoViewInfoMax._views(data)
        noise = self.noise_std * keras.random.normal(ops.shape(top), seed=self.noise_seed)
        return top + noise, bottom + noise

    def get_config(self):
        config = super().get_config()
        config.update(noise_std=self.noise_std, seed=self.seed)
        return config


def jacobian_condition_numbers(function, inputs):
    """``sigma_max / sigma_min`` of the Jacobian of ``function`` ([N, D] -> [N, D']) at each row of ``inputs``
    (Tschannen et al. Sec. 3.1, Fig. 2c: "the ratio between the largest and the smallest singular value"), as
    float64 numpy [N]; ``inf`` where the smallest singular value is 0.

    The Jacobians come from ``tf.GradientTape.batch_jacobian`` and the singular values from
    ``tf.linalg.svd`` in float64 (so that a well-conditioned float32 map reads exactly).
    """
    x = tf.convert_to_tensor(np.asarray(inputs, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    jacobians = tf.cast(tape.batch_jacobian(y, x), tf.float64)  # [N, D', D]
    singular_values = tf.linalg.svd(jacobians, compute_uv=False).numpy()  # descending
    with np.errstate(divide="ignore"):
        return singular_values[:, 0] / singular_values[:, -1]
