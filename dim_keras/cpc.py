"""Contrastive Predictive Coding on a grid of local features: the CPC baseline of the DIM paper (Table 3).

CPC (Oord et al. 2018, Sec. 3.2 "Vision") encodes an image as a grid of patch features ``z[i, j]`` (here
the encoder's ``local`` map: the 7 x 7 crop features of the folded encoder, ``--encoder=folded``), runs an
autoregressive summary ("context") network down the rows, ``c[i, j] = g_ar(z[u, v] for u <= i)``, and asks
``c[i, j]`` to pick the feature ``z[i + k, j]`` of the same column ``k`` rows below out of a set of
negatives, with the infoNCE loss (their eq. 4).  DIM's version of this baseline (Sec. 4.2 and App. A.2):

- the summary is "a simple GRU-based PixelRNN with the same number of hidden units as the feature map
  depth": :class:`RowGRU`, a convolutional GRU that steps down the rows (its state is one vector per
  column; the input-to-state and state-to-state maps are 1 x 3 convolutions along the row, as PixelRNN's
  Row LSTM, Oord et al. 2016, but with GRU gating).  The context at row ``i`` depends on rows ``<= i`` of
  the grid only (tests/test_cpc.py perturbs the later rows and checks);
- "a total of 3 [encode-and-dot] networks, where each network for CPC is used for a separate prediction
  task of local feature maps in the next 3 rows of a summary predictor feature within each column"
  (Oord et al. used 5 bilinear ``W_k``): prediction task ``k`` = 1, 2, 3 scores context ``c[b, i, j]``
  against target ``z[b', i', j']`` with its own :class:`~dim_keras.critics.EncodeAndDotCritic`,
  ``T_k(c, z) = f_k(c) . g_k(z)``, the "deep bilinear" critic that replaces ``z^T W_k c``;
- infoNCE (:func:`dim_keras.estimators.infonce_lower_bound`) for every task; the loss is the mean over the
  3 tasks of ``-infoNCE``.

**Negatives.**  For task ``k`` the queries are the ``N = B (H - k) W`` contexts ``c[b, i, j]`` with
``i < H - k`` (those with a row ``k`` below them), and the candidates are the ``N`` features
``z[b, i + k, j]`` of the same positions ``k`` rows down (rows ``k .. H-1`` of every image).  The score
tensor is ``[N, N, 1]``, ``scores[q, t, 0] = T_k(c_q, z_{t + k rows})`` in the flat order (b, i, j) of both
axes, so the positive of query ``q`` is its diagonal entry and its ``N - 1`` negatives are the target
features of every *other* position: the other columns and rows of its own image and every position of the
other images of the batch, as CPC draws them ("from other locations in the image and other images in the
mini-batch", Hénaff et al. 2019, whose pseudo-code scores every prediction against all patch features of
the batch).  The one difference from that pseudo-code: the top ``k`` rows of each image, which no
prediction of task ``k`` targets, are not among task ``k``'s candidates (the square tensor is what the
estimators of :mod:`dim_keras.estimators` read).  The bound is therefore at most ``log N`` nats per task.

**Causality.**  Nothing a prediction is scored with has seen its target: the context network is causal
over rows and the encode-and-dot embeddings have *no batch norm* here (``batch_norm=False``), because
batch statistics over all contexts of a batch would let a context of row ``i`` depend on contexts of later
rows, the leak Hénaff et al. (2019, Sec. 4.1) found CPC exploits; they use layer norm instead, as the
local embedding does.  The encoder is DIM's (:mod:`dim_keras.encoders`), whose batch norm in training mode
computes its statistics over all patches of the batch, as in the DIM paper's CPC runs.

Only the encoder's layers up to its ``local`` map get a gradient from CPC; the layers after it (``fc`` and
``y``, and for the Table 1 / 2 encoders the convs between ``local`` and ``conv``) keep their initial weights.
With the folded encoder ``conv`` *is* the local grid, so ``conv`` is CPC's representation and the exported
``fc`` / ``y`` are an untrained head over it (:attr:`ContrastivePredictiveCoding.representation_variables`).

Training runs on TensorFlow (``_train_on``: ``tf.GradientTape``, tf.distribute) and JAX
(``_jax_train_step``: stateless, jitted) from one backend-free objective (:meth:`objective`, ``keras.ops``).
"""

import keras
from keras import layers, ops

from dim_keras import critics as critics_lib
from dim_keras import encoders as _encoders  # noqa: F401  registers the folded encoder's layers
from dim_keras import estimators as estimators_lib
from dim_keras.models import TwoObjectiveModel

# DIM Sec. 4.2: "a total of 3 such networks ... the next 3 rows".
PREDICTION_STEPS = 3


def check_grid(height, width, prediction_steps=PREDICTION_STEPS):
    """Raises ValueError (one line) unless a ``height x width`` grid has a row ``prediction_steps`` below its
    first: every task needs at least one context with a target."""
    if height is None or width is None or height < prediction_steps + 1 or width < 1:
        raise ValueError(f"CPC predicts {prediction_steps} rows ahead and needs a local feature grid of at "
                         f"least {prediction_steps + 1} rows, got {height}x{width}")


def _check_batch_size(batch):
    if batch is not None and batch < 2:
        raise ValueError(f"ContrastivePredictiveCoding trains on batches of at least 2 images (the trailing "
                         f"batch of one is skipped, as DeepInfoMax does), got a batch of {batch}")


@keras.saving.register_keras_serializable(package="dim_keras")
class RowGRU(layers.Layer):
    """The autoregressive summary network: a GRU stepping down the rows of a ``[B, H, W, C]`` grid.

    The state ``h_i`` is ``[B, W, units]`` (one vector per column); with ``x_i`` the row ``i`` of the
    grid and ``*`` a ``kernel_width``-wide convolution along the row ("same" padding)::

        u, r = sigmoid(conv_gates([x_i, h_{i-1}]))
        h~   = tanh(conv_candidate([x_i, r h_{i-1}]))
        h_i  = (1 - u) h_{i-1} + u h~,        h_{-1} = 0

    Output ``[B, H, W, units]``: ``h_i`` at row ``i``, a function of rows ``0..i`` only (within a row it
    sees the whole row: CPC's context at row ``i`` summarises the rows up to and including ``i``).  The
    rows are a static Python loop (the grid is small: 7 rows for the folded encoder), so it traces the
    same under ``tf.function`` and ``jax.jit``.
    """

    def __init__(self, units, kernel_width=3, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_width = int(kernel_width)
        self.gates = layers.Conv1D(2 * self.units, self.kernel_width, padding="same", name="gates")
        self.candidate = layers.Conv1D(self.units, self.kernel_width, padding="same", name="candidate")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gates.build((None, None, channels + self.units))
        self.candidate.build((None, None, channels + self.units))

    def call(self, grid):
        rows = []
        x = grid[:, 0]
        state = ops.zeros_like(x[..., :1]) * ops.zeros((self.units,), dtype=x.dtype)  # [B, W, units] zeros
        for i in range(grid.shape[1]):
            x = grid[:, i]
            update, reset = ops.split(ops.sigmoid(self.gates(ops.concatenate([x, state], axis=-1))), 2, axis=-1)
            candidate = ops.tanh(self.candidate(ops.concatenate([x, reset * state], axis=-1)))
            state = (1.0 - update) * state + update * candidate
            rows.append(state)
        return ops.stack(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, kernel_width=self.kernel_width)
        return config


@keras.saving.register_keras_serializable(package="dim_keras")
class ContrastivePredictiveCoding(TwoObjectiveModel):
    """CPC on the encoder's local grid, as the DIM paper's Table 3 baseline (module docstring).

    ``loss = -(1/3) sum_{k=1..3} infoNCE_k``, minimised over the encoder (its ``local`` path), the
    context network and the 3 prediction critics by one optimizer.  Images are uint8 (scaled by 1/255,
    exactly as :class:`~dim_keras.models.DeepInfoMax` and the exported signature scale them) or floats in
    [0, 1].  A static batch of fewer than 2 images raises ``ValueError``; a trailing batch of one in
    ``fit`` is skipped without touching any variable (as DeepInfoMax does).

    Args:
        encoder: a ``keras.Model`` from :mod:`dim_keras.encoders` (dict outputs ``local``, ``conv``,
            ``fc``, ``y``); its ``local`` grid ``[B, H, W, C]`` needs ``H >= prediction_steps + 1``.
        prediction_steps: the rows ahead predicted, one task each (3 in the DIM paper, 5 in Oord et al.).
        context_units: hidden units of the :class:`RowGRU` summary (default: ``C``, "the same number of
            hidden units as the feature map depth", DIM App. A.2).
        embedding_dim: width of the encode-and-dot embeddings (2048 as DIM's critics).
        global_layer_norm: layer norm on the context's embedding too (the local embedding always has
            one, Table 9); ``apps/train.py`` passes its recipe's (on), as for DIM's Y embedding.
        score_scale: multiplies every score before infoNCE (1; the improved recipe's 1/sqrt(width)).
    """

    def __init__(self, encoder, prediction_steps=PREDICTION_STEPS, context_units=None, embedding_dim=2048,
                 global_layer_norm=False, score_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if int(prediction_steps) != prediction_steps or prediction_steps < 1:
            raise ValueError(f"prediction_steps must be an integer >= 1, got {prediction_steps}")
        if not score_scale > 0:
            raise ValueError(f"score_scale must be > 0, got {score_scale}")
        local_shape = tuple(encoder.output["local"].shape)
        check_grid(local_shape[1], local_shape[2], int(prediction_steps))
        self.encoder = encoder
        self.prediction_steps = int(prediction_steps)
        channels = int(local_shape[-1])
        self.context_units = channels if context_units is None else int(context_units)
        self.embedding_dim = int(embedding_dim)
        self.global_layer_norm = bool(global_layer_norm)
        self.score_scale = float(score_scale)

        self.context_network = RowGRU(self.context_units, name="context_network")
        self.context_network.build(local_shape)
        # One encode-and-dot critic per offset; no batch norm (module docstring, "Causality").
        self.predictors = []
        for k in range(1, self.prediction_steps + 1):
            critic = critics_lib.EncodeAndDotCritic(self.embedding_dim, batch_norm=False,
                                                    global_layer_norm=self.global_layer_norm,
                                                    name=f"predictor_{k}")
            critic.build((None, self.context_units), (None, channels))
            self.predictors.append(critic)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mi_tracker = keras.metrics.Mean(name="cpc_mi")
        self.step_trackers = [keras.metrics.Mean(name=f"row{k}_mi") for k in range(1, self.prediction_steps + 1)]
        # The encoder variables the objective reaches: those that compute the local grid (fc and y do not).
        local_model = keras.Model(encoder.inputs, encoder.output["local"])
        self._local_variable_ids = {id(v) for v in local_model.trainable_variables}
        self.built = True

    # ----------------------------------------------------------------- API
    @property
    def metrics(self):
        return [self.loss_tracker, self.mi_tracker, *self.step_trackers]

    @property
    def representation_variables(self):
        """What the optimizer moves: the encoder's variables up to its local grid, the context network and
        the predictors (the encoder's fc and y heads get no gradient from CPC and stay as initialised)."""
        variables = [v for v in self.encoder.trainable_variables if id(v) in self._local_variable_ids]
        variables += self.context_network.trainable_variables
        for predictor in self.predictors:
            variables += predictor.trainable_variables
        return variables

    def _check_batch(self, batch):
        _check_batch_size(batch)

    def get_config(self):
        return {"name": self.name, "encoder": keras.saving.serialize_keras_object(self.encoder),
                "prediction_steps": self.prediction_steps, "context_units": self.context_units,
                "embedding_dim": self.embedding_dim, "global_layer_norm": self.global_layer_norm,
                "score_scale": self.score_scale}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

    # --------------------------------------------------------- objective
    def context(self, local):
        """The ``[B, H, W, context_units]`` summaries of a ``[B, H, W, C]`` local grid (causal over rows)."""
        return self.context_network(local)

    def task_scores(self, context, local, step, training=False):
        """Task ``step``'s float32 score tensor ``[N, N, 1]``, ``N = B (H - step) W`` (module docstring):
        ``scores[q, t, 0] = T_step(context[q], local[t + step rows])`` over the flat (b, i, j) positions
        ``i < H - step``; positives on the diagonal."""
        queries = ops.reshape(context[:, : context.shape[1] - step], (-1, context.shape[-1]))
        targets = ops.reshape(local[:, step:], (-1, local.shape[-1]))
        scores = ops.cast(self.predictors[step - 1](queries, targets, training=training), "float32")
        return scores * self.score_scale if self.score_scale != 1.0 else scores

    def objective(self, images, training=False):
        """``(loss, bounds)``: ``-mean_k infoNCE_k`` and the per-task bounds (nats), from [0, 1] images."""
        local = self.encoder(images, training=training)["local"]
        context = self.context(local)
        bounds = [estimators_lib.infonce_lower_bound(self.task_scores(context, local, k, training))
                  for k in range(1, self.prediction_steps + 1)]
        return -sum(bounds) / self.prediction_steps, bounds

    def _representation_objective(self, images, extra, training):
        """TwoObjectiveModel's hook: ``(loss, bounds, None)`` of :meth:`objective` (no adversary)."""
        loss, bounds = self.objective(images, training=training)
        return loss, bounds, None

    def _update_trackers(self, loss, bounds, d_loss=None, d_terms=None):
        self.loss_tracker.update_state(loss)
        self.mi_tracker.update_state(-loss)
        for tracker, bound in zip(self.step_trackers, bounds):
            tracker.update_state(bound)
