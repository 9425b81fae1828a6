"""Invertible encoders: RealNVP coupling flows (Dinh et al., ICLR 2017).

Building block for Tschannen et al., ICLR 2020, Sec. 3.1 / App. B, where the
two encoders ``g1``, ``g2`` are invertible, so ``I(g1(X1); g2(X2))`` equals
``I(X1; X2)`` for every parameter setting, and any change in an MI estimate
during training is estimator bias.

:class:`AffineCoupling` splits a vector ``x`` of dimension ``D`` into
``x_a = x[..., :num_masked]`` (passed through) and ``x_b = x[..., num_masked:]``
and returns ``[x_a, x_b * scale(x_a) + t(x_a)]``; ``s`` and ``t`` are separate
MLPs.  ``scale`` is one of

- ``"tanh"`` (default): ``scale = exp(s)``, with the log-scale soft-clamped as
  ``s = bound * tanh(s_raw / bound)`` so that ``exp`` cannot blow up (common
  practice for stability; slope 1 at 0, ``|s| < bound``);
- ``"softplus"``: ``scale = 1e-7 + softplus(s_raw)``, the modification the
  authors' companion notebook makes to TFP's RealNVP for the adversarial
  experiment (App. B), "due to numerical instability";
- ``"none"``: shift only (additive, NICE-style, volume preserving, log-det 0),
  the setting the notebook uses for the Sec. 3.1 experiment (``shift_only=True``;
  the paper: each coupling "computes the shift using a separate MLP").

:class:`RealNVP` stacks ``num_couplings`` couplings, with a fixed permutation of
the coordinates after each, so the transformed half changes from layer to layer:
``"random"`` (a seeded random permutation per layer, as in the notebook's
``np.random.permutation(dimensions)``) or ``"reverse"`` (a flip, which swaps the
halves when ``D`` is even).  The permutations are regenerated from ``seed`` (kept
in the config) with :class:`numpy.random.RandomState`, so a saved model
reloads with the same permutations.

Everything in the math is :mod:`keras.ops`, so it runs on any Keras backend.
"""

import numpy as np

import keras
from keras import layers, ops

_SCALES = ("tanh", "softplus", "none")
_PERMUTATIONS = ("random", "reverse")


def _default_initializer():
    # The notebook: truncated_normal(stddev=1e-4) kernels, zero biases, so a
    # fresh flow is close to the identity.
    return keras.initializers.TruncatedNormal(stddev=1e-4)


@keras.saving.register_keras_serializable(package="dim_keras")
class AffineCoupling(layers.Layer):
    """One RealNVP affine coupling layer on vectors ``[..., D]``.

    Args:
      hidden_units: widths of the hidden layers of each of the ``s`` and ``t``
        MLPs (paper, Sec. 3.1: two ReLU layers of 512 units).
      num_masked: size of the pass-through half ``x_a``; default ``D // 2``.
      scale: ``"tanh"``, ``"softplus"`` or ``"none"`` (see module docstring).
      log_scale_bound: the bound of the ``"tanh"`` soft clamp.
      activation: hidden activation of the MLPs.
      kernel_initializer, output_initializer: initializers of the hidden and
        of the last Dense layers (``output_initializer="zeros"`` makes the
        layer exactly the identity at initialisation).
    """

    def __init__(self, hidden_units=(512, 512), num_masked=None, scale="tanh",
                 log_scale_bound=2.0, activation="relu",
                 kernel_initializer=None, output_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}")
        if log_scale_bound <= 0:
            raise ValueError("log_scale_bound must be positive")
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.num_masked = None if num_masked is None else int(num_masked)
        self.scale = scale
        self.log_scale_bound = float(log_scale_bound)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or _default_initializer())
        self.output_initializer = keras.initializers.get(
            output_initializer or _default_initializer())
        self._t_layers = self._mlp("t")
        self._s_layers = self._mlp("s") if scale != "none" else []

    def _mlp(self, prefix):
        mlp = [layers.Dense(units, activation=self.activation,
                            kernel_initializer=self.kernel_initializer,
                            bias_initializer="zeros", dtype=self.dtype_policy,
                            name=f"{prefix}_hidden_{i}")
               for i, units in enumerate(self.hidden_units)]
        # The output width (D - num_masked) is only known in build().
        return mlp

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None or dim < 2:
            raise ValueError(f"AffineCoupling needs a known last dimension >= 2, got {dim}")
        if self.num_masked is None:
            self.num_masked = dim // 2
        if not 0 < self.num_masked < dim:
            raise ValueError(f"num_masked must be in (0, {dim}), got {self.num_masked}")
        self.dim = int(dim)
        out_units = self.dim - self.num_masked
        for prefix, mlp in (("t", self._t_layers), ("s", self._s_layers)):
            if self.scale == "none" and prefix == "s":
                continue
            mlp.append(layers.Dense(out_units, kernel_initializer=self.output_initializer,
                                    bias_initializer="zeros", dtype=self.dtype_policy,
                                    name=f"{prefix}_out"))
            shape = (None, self.num_masked)
            for layer in mlp:
                layer.build(shape)
                shape = (None, layer.units)
        super().build(input_shape)

    @staticmethod
    def _apply(mlp, x):
        for layer in mlp:
            x = layer(x)
        return x

    def _split(self, x):
        return x[..., :self.num_masked], x[..., self.num_masked:]

    def _scale_and_log(self, x_a):
        """(scale, log scale) of the transformed half; (None, None) if shift only."""
        if self.scale == "none":
            return None, None
        raw = self._apply(self._s_layers, x_a)
        if self.scale == "tanh":
            log_scale = self.log_scale_bound * ops.tanh(raw / self.log_scale_bound)
            return ops.exp(log_scale), log_scale
        scale = ops.softplus(raw) + 1e-7
        return scale, ops.log(scale)

    def forward_and_log_det(self, x):
        """``(y, log|det dy/dx|)`` in one pass; log-det has shape ``x.shape[:-1]``."""
        x_a, x_b = self._split(x)
        shift = self._apply(self._t_layers, x_a)
        scale, log_scale = self._scale_and_log(x_a)
        if scale is None:
            y_b = x_b + shift
            log_det = ops.zeros(ops.shape(x)[:-1], dtype=x.dtype)
        else:
            y_b = x_b * scale + shift
            log_det = ops.sum(log_scale, axis=-1)
        return ops.concatenate([x_a, y_b], axis=-1), log_det

    def call(self, x):
        return self.forward_and_log_det(x)[0]

    def inverse(self, y):
        y = ops.convert_to_tensor(y, dtype=self.compute_dtype)
        if not self.built:
            self.build(y.shape)
        y_a, y_b = self._split(y)
        shift = self._apply(self._t_layers, y_a)
        scale, _ = self._scale_and_log(y_a)
        x_b = y_b - shift if scale is None else (y_b - shift) / scale
        return ops.concatenate([y_a, x_b], axis=-1)

    def log_det_jacobian(self, x):
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        if not self.built:
            self.build(x.shape)
        return self.forward_and_log_det(x)[1]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            num_masked=self.num_masked,
            scale=self.scale,
            log_scale_bound=self.log_scale_bound,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            output_initializer=keras.initializers.serialize(self.output_initializer),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("kernel_initializer", "output_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)


def make_permutations(dim, num_couplings, kind="random", seed=0):
    """The fixed permutations applied after each coupling, as int arrays."""
    if kind == "reverse":
        return [np.arange(dim)[::-1].copy() for _ in range(num_couplings)]
    if kind == "random":
        rng = np.random.RandomState(seed)
        return [rng.permutation(dim) for _ in range(num_couplings)]
    raise ValueError(f"permutation must be one of {_PERMUTATIONS}, got {kind!r}")


@keras.saving.register_keras_serializable(package="dim_keras")
class RealNVP(keras.Model):
    """A stack of :class:`AffineCoupling` layers with fixed permutations between.

    ``call(x) -> y``, ``inverse(y) -> x`` and ``log_det_jacobian(x)`` (the
    per-example ``log|det dy/dx|``; permutations contribute 0).  Defaults are
    the paper's Sec. 3.1 encoder: 30 couplings, two hidden ReLU layers of 512
    units per MLP; ``dim`` is the flattened half image (392 = 14x28 for MNIST,
    32 = 4x8 for scikit-learn's 8x8 digits).
    """

    def __init__(self, dim, num_couplings=30, hidden_units=(512, 512), scale="tanh",
                 permutation="random", seed=None, log_scale_bound=2.0,
                 activation="relu", kernel_initializer=None, output_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if int(dim) < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        if int(num_couplings) < 1:
            raise ValueError(f"num_couplings must be >= 1, got {num_couplings}")
        if permutation not in _PERMUTATIONS:
            raise ValueError(f"permutation must be one of {_PERMUTATIONS}, got {permutation!r}")
        self.dim = int(dim)
        self.num_couplings = int(num_couplings)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.scale = scale
        self.permutation = permutation
        if seed is None:  # draw one now and keep it, so the config reproduces the model
            seed = int(np.random.randint(0, 2**31 - 1))
        self.seed = int(seed)
        self.log_scale_bound = float(log_scale_bound)
        self._activation = keras.activations.serialize(keras.activations.get(activation))
        init = lambda i: keras.initializers.serialize(  # noqa: E731
            keras.initializers.get(i or _default_initializer()))
        self._kernel_initializer = init(kernel_initializer)
        self._output_initializer = init(output_initializer)
        perms = make_permutations(self.dim, self.num_couplings, permutation, self.seed)
        self._perms = [p.astype("int32") for p in perms]
        self._inverse_perms = [np.argsort(p).astype("int32") for p in perms]
        self.couplings = [
            AffineCoupling(hidden_units=self.hidden_units, scale=scale,
                           log_scale_bound=log_scale_bound, activation=activation,
                           kernel_initializer=keras.initializers.deserialize(self._kernel_initializer),
                           output_initializer=keras.initializers.deserialize(self._output_initializer),
                           name=f"coupling_{i}")
            for i in range(self.num_couplings)]

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] not in (None, self.dim):
            raise ValueError(f"RealNVP built for dim {self.dim}, got input shape {input_shape}")
        for coupling in self.couplings:
            if not coupling.built:
                coupling.build((None, self.dim))
        self.built = True

    def _check(self, x):
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        if x.shape[-1] != self.dim:
            raise ValueError(f"RealNVP built for dim {self.dim}, got input shape {x.shape}")
        if not self.built:
            self.build(x.shape)
        return x

    def forward_and_log_det(self, x):
        """``(y, log|det dy/dx|)`` in one pass."""
        x = self._check(x)
        log_det = ops.zeros(ops.shape(x)[:-1], dtype=x.dtype)
        for coupling, perm in zip(self.couplings, self._perms):
            x, ld = coupling.forward_and_log_det(x)
            x = ops.take(x, perm, axis=-1)
            log_det = log_det + ld
        return x, log_det

    def call(self, x):
        return self.forward_and_log_det(x)[0]

    def inverse(self, y):
        y = self._check(y)
        for coupling, inv in zip(reversed(self.couplings), reversed(self._inverse_perms)):
            y = coupling.inverse(ops.take(y, inv, axis=-1))
        return y

    def log_det_jacobian(self, x):
        return self.forward_and_log_det(x)[1]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            "name": self.name,
            "dim": self.dim,
            "num_couplings": self.num_couplings,
            "hidden_units": list(self.hidden_units),
            "scale": self.scale,
            "permutation": self.permutation,
            "seed": self.seed,
            "log_scale_bound": self.log_scale_bound,
            "activation": self._activation,
            "kernel_initializer": self._kernel_initializer,
            "output_initializer": self._output_initializer,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("kernel_initializer", "output_initializer"):
            if isinstance(config.get(key), dict):
                config[key] = keras.initializers.deserialize(config[key])
        if config.get("activation") is not None:
            config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)
