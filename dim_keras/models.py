"""The Deep InfoMax model (DIM section 3, eq. 8) as a Keras model.

Training logic lives only in ``train_step``; estimators are the pure functions of
:mod:`dim_keras.estimators`, networks are the layers of :mod:`dim_keras.critics`,
:mod:`dim_keras.encoders` and :mod:`dim_keras.priors`.

The objective (``_representation_loss``, ``_discriminator_loss``) is written with
``keras.ops`` only.  What Keras requires per backend sits in one place each: the
TensorFlow step (``_train_on``: ``tf.GradientTape``, ``tf.distribute``) and the
stateless JAX step (``_jax_train_step``: ``jax.value_and_grad``, ``StatelessScope``,
``optimizer.stateless_apply``), plus the input gradient of the prior's optional
gradient penalty (:func:`_with_input_gradient`).  Importing this module does not
import TensorFlow on the JAX backend.
"""

import keras
import numpy as np
from keras import ops

from dim_keras import coordinates as coordinates_lib
from dim_keras import critics as critics_lib
from dim_keras import encoders as _encoders  # noqa: F401  registers the folded encoder's layers
from dim_keras import estimators as estimators_lib
from dim_keras import local_blocks
from dim_keras import occlusion as occlusion_lib
from dim_keras import priors as priors_lib


def default_optimizer(learning_rate=1e-4, **kwargs):
    """Adam, lr 1e-4, betas (0.5, 0.999): the authors' setting (their
    framework's default beta_1 of 0.5 is easy to miss; App. A.2 gives the lr).

    The one optimizer factory of dim_keras; ``kwargs`` go to Adam (e.g. ``clipnorm``)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.999, **kwargs)


def _images_of(data):
    """Images from a batch that may be ``x``, ``(x,)``, ``(x, y)`` or a dict."""
    if isinstance(data, dict):
        return data["images"]
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


def _extra_of(data):
    """The per-example tensors of a ``(x, ...)`` batch after its images (e.g. NAT's image indices); ``()``
    for a bare ``x`` or a dict."""
    if isinstance(data, (tuple, list)):
        return tuple(data[1:])
    return ()


# x / 255 for every uint8 x, each an IEEE float32 division (numpy's).  Looking the quotients up is exact in
# eager, graph and XLA code alike; a traced ``x / 255.0`` is rewritten to ``x * (1 / 255)``, 1 ulp off for
# some x, so uint8 images would not train exactly like ``images / 255`` floats.
_UNIT_FLOATS = np.arange(256, dtype=np.float32) / np.float32(255)


def as_unit_floats(images):
    """The encoder's input: uint8 images become float32 ``x / 255`` (exactly as the exported
    signature of :mod:`dim_keras.export` scales them); float images pass through unchanged (they are
    taken to be in [0, 1] already).  Other integer (and bool) images raise ``ValueError``: their range
    is unknown, and feeding 0..255 values unscaled silently wrecks training."""
    if getattr(images, "dtype", None) is None:  # e.g. a list: left to the encoder
        return images
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype == "uint8":
        return ops.take(ops.convert_to_tensor(_UNIT_FLOATS), ops.cast(images, "int32"))
    if "int" in dtype or dtype == "bool":
        raise ValueError(f"DeepInfoMax takes uint8 images (scaled by 1/255) or float images in [0, 1], "
                         f"got {dtype} images")
    return images


def _batch_size_of(data):
    """The leading dimension of a batch's images, ``None`` where unknown."""
    shape = getattr(_images_of(data), "shape", None)
    return shape[0] if shape is not None and len(shape) else None


def _reducible_across_workers(logs):
    """Gives scalar logs a leading axis of 1 under multi-worker training.

    Keras 3's fit reduces the logs of a MultiWorkerMirroredStrategy step with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars
    ("Invalid reduction dimension 0 for input with 0 dimensions"); the
    reduction removes the added axis again, so the logs stay scalars.
    """
    import tensorflow as tf  # this helper serves the TensorFlow step only

    strategy = tf.distribute.get_strategy()
    if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return {name: ops.reshape(value, (1,)) for name, value in logs.items()}
    return logs


def _check_batch_size(batch, model="DeepInfoMax",
                      why="the negatives are the other images of the batch (section 3.1)"):
    """Raises for a static batch of fewer than 2 images."""
    if batch is not None and batch < 2:
        raise ValueError(f"{model} needs at least 2 images per batch: {why}, got a batch of {batch}")


def _run_unless_batch_of_one(step, images, *extra):
    """Runs ``step(images, *extra)`` (a step that updates variables) unless the batch
    has fewer than 2 images, where every MI bound is NaN (no negatives).  ``extra``:
    more per-example tensors of the batch (e.g. NAT's image indices).

    A static batch of 0 or 1 raises ``ValueError`` at trace time.  A dynamic
    batch (``None``: ``fit``'s last, partial batch) goes through a cond, so a
    trailing batch of one runs nothing at all: no weight, batch-norm
    statistic, optimizer iteration, seed or metric moves.  Under tf.distribute
    all replicas skip when any has fewer than 2 images (their gradients are
    all-reduced together).  TensorFlow only: under JAX every batch shape is
    static (see ``DeepInfoMax._jax_train_step``).
    """
    import tensorflow as tf

    batch = images.shape[0]
    if batch is not None:
        _check_batch_size(batch)
        step(images, *extra)
        return
    enough = ops.shape(images)[0] >= 2
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        short = tf.distribute.get_replica_context().all_reduce(
            "SUM", ops.cast(ops.logical_not(enough), "int32"))
        enough = ops.equal(short, 0)
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        ops.cond(enough, lambda: step(images, *extra), lambda: None)
        return

    # The optimizers' apply() calls merge_call, which a cond branch built in a
    # replica context cannot: build the cond in the cross-replica context and
    # run the step per replica inside it (as keras' LossScaleOptimizer does).
    def cross_replica(distribution, enough, images, *extra):
        ops.cond(distribution.experimental_local_results(enough)[0],
                 lambda: distribution.extended.call_for_each_replica(step, args=(images, *extra)),
                 lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(enough, images, *extra))


def _with_input_gradient(fn, inputs):
    """``(fn(inputs), d sum(fn(inputs)) / d inputs)``: the input gradient that the prior
    discriminator's gradient penalty needs, the one piece of its loss that ``keras.ops`` cannot
    express.  Both versions stay differentiable with respect to ``fn``'s weights (the penalty's
    second-order gradient reaches the discriminator)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        outputs, pullback = jax.vjp(fn, inputs)
        (gradient,) = pullback(ops.ones_like(outputs))
        return outputs, gradient
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(inputs)
            outputs = fn(inputs)
        return outputs, tape.gradient(outputs, inputs)
    raise NotImplementedError(f"the prior gradient penalty supports the tensorflow and jax backends, not {backend}")


class _PairParts:
    """The two optimizers of an :class:`_OptimizerPair` (a plain holder, invisible to Keras's saving)."""

    def __init__(self, representation, discriminator):
        self.representation = representation
        self.discriminator = discriminator


class _OptimizerPair(keras.optimizers.Optimizer):
    """The JAX backend's ``model.optimizer`` when a prior discriminator has its own optimizer.

    Keras's JAX trainer threads exactly ``model.optimizer.variables`` through its jitted,
    stateless step (and syncs, shards and saves them).  A second optimizer held beside it would
    enter the step as constants and its updates would be lost, so on JAX ``model.optimizer`` is
    this pair: its ``variables`` are the representation optimizer's followed by the
    discriminator optimizer's, and ``DeepInfoMax._jax_train_step`` applies each to its own
    slice with ``stateless_apply``.  ``iterations``, ``learning_rate`` and ``scale_loss`` are
    the representation optimizer's (what callbacks and schedules read).  It is never serialised:
    ``DeepInfoMax.get_compile_config`` stores the two optimizers themselves, and in a ``.keras``
    file its own entry holds the representation optimizer's variables, as on TensorFlow (the
    discriminator optimizer is saved under its own attribute), so the file is the same on both
    backends.
    """

    def __init__(self, representation, discriminator, name="optimizer_pair"):
        super().__init__(learning_rate=0.0, name=name)
        # Held out of sight of Keras's saving, which walks an optimizer's attributes and would save
        # both parts a second time under this one; ``representation`` and ``discriminator`` are read
        # through ``__getattr__``.
        self._parts = _PairParts(representation, discriminator)
        self.built = True  # both parts are built by DeepInfoMax.compile

    def __getattr__(self, name):
        parts = self.__dict__.get("_parts")
        if parts is not None and name in ("representation", "discriminator"):
            return getattr(parts, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build(self, var_list):
        """Nothing to build: ``DeepInfoMax.compile`` builds each optimizer on its own variables."""
        self.built = True

    @property
    def variables(self):
        return self.representation.variables + self.discriminator.variables

    def split(self, values):
        """``values`` (one per variable of ``variables``) as (representation's, discriminator's)."""
        count = len(self.representation.variables)
        return list(values[:count]), list(values[count:])

    @property
    def iterations(self):
        return self.representation.iterations

    @property
    def learning_rate(self):
        return self.representation.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.representation.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.representation.scale_loss(loss)

    def save_own_variables(self, store):
        self.representation.save_own_variables(store)

    def load_own_variables(self, store):
        self.representation.load_own_variables(store)

    def finalize_variable_values(self, var_list):
        """Each optimizer's end-of-training step (e.g. ``use_ema``) on the variables it trains."""
        for optimizer in (self.representation, self.discriminator):
            own = {id(v) for v in getattr(optimizer, "_trainable_variables", ())}
            optimizer.finalize_variable_values([v for v in var_list if id(v) in own])

    def apply(self, grads, trainable_variables=None):
        raise TypeError("an optimizer pair has no single update: DeepInfoMax's JAX step applies "
                        "model.optimizer.representation and .discriminator to their own variables")

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise TypeError("an optimizer pair has no single update: DeepInfoMax's JAX step applies "
                        "model.optimizer.representation and .discriminator to their own variables")

    def get_config(self):
        raise TypeError("an optimizer pair is not serialised: DeepInfoMax.get_compile_config stores its two parts")


def _scope_values(scope, variables, previous):
    """The values of ``variables`` at the end of a ``StatelessScope`` (``previous`` where untouched)."""
    current = [scope.get_current_value(v) for v in variables]
    return [value if value is not None else old for value, old in zip(current, previous)]


def _with_replaced(values, positions, replacements):
    values = list(values)
    for position, value in zip(positions, replacements):
        values[position] = value
    return values


def stateless_test_step(model, state, data):
    """The JAX test step of a model whose TensorFlow test step is ``model._evaluate_on(images)`` (as
    :class:`DeepInfoMax` and :class:`dim_keras.cpc.ContrastivePredictiveCoding`): that very method, run in
    one ``StatelessScope`` over every variable it reads or moves (seed state, metrics).  A batch of fewer
    than 2 images returns the state untouched (shapes are static under jit); ``model._jax_metrics`` gives
    the logs."""
    trainable, non_trainable, metric_values = state
    images = as_unit_floats(_images_of(data))
    if images.shape[0] < 2:
        logs, _ = model._jax_metrics(metric_values)
        return logs, state
    state_mapping = (list(zip(model.trainable_variables, trainable))
                     + list(zip(model.non_trainable_variables, non_trainable))
                     + list(zip(model.metrics_variables, metric_values)))
    with keras.StatelessScope(state_mapping=state_mapping) as scope:
        model._evaluate_on(images)
        logs = model._logs()
    return logs, (trainable, _scope_values(scope, model.non_trainable_variables, non_trainable),
                  _scope_values(scope, model.metrics_variables, metric_values))


class TwoObjectiveModel(keras.Model):
    """The training machinery of a representation learner with one or two backend-free objectives:
    :class:`DeepInfoMax` (eq. 8 and its prior discriminator) and the comparison models of
    :mod:`dim_keras.baselines` (VAE, MIM, AAE, BiGAN, NAT, ...).

    A step minimises the *representation* objective over :attr:`representation_variables` with
    ``model.optimizer`` and then, when :attr:`discriminator_variables` is not empty, the *discriminator*
    objective over those with ``model.discriminator_optimizer``, from the same forward pass (the
    discriminator's inputs, ``aux``, come out of the representation objective, stop-gradient'ed by the
    subclass); then the metrics.  The TensorFlow step (``_train_on``: ``tf.GradientTape``, tf.distribute)
    and the stateless JAX step (``_jax_train_step``) are written once, here.  On JAX with a discriminator
    ``model.optimizer`` is an :class:`_OptimizerPair` (Keras's JAX trainer threads only
    ``model.optimizer.variables``); :meth:`representation_optimizer` is the first optimizer on both backends.

    A subclass defines (all in ``keras.ops``):

    - ``representation_variables`` (property) and, with an adversary, ``discriminator_variables``;
    - ``_representation_objective(images, extra, training) -> (loss, terms, aux)``: ``extra`` is the
      tuple of the batch's other per-example tensors (``(x, indices)`` batches give ``(indices,)``, as NAT
      needs; empty in evaluation);
    - ``_discriminator_objective(aux, training) -> (loss, d_terms)`` (with an adversary);
    - ``_update_trackers(loss, terms, d_loss, d_terms)`` and the ``metrics`` property;
    - ``_check_batch(batch)``: raises ``ValueError`` for a static batch the objective cannot take (default:
      fewer than 2 images); a trailing batch of one in ``fit`` is skipped without touching any variable.

    Images are uint8 (scaled by 1/255 exactly as the exported signature scales them) or floats in [0, 1].
    """

    # -------------------------------------------------------- subclass API
    @property
    def discriminator_variables(self):
        """The adversary's variables (moved by ``discriminator_optimizer``); none by default."""
        return []

    def _discriminator_objective(self, aux, training):
        raise NotImplementedError(f"{type(self).__name__} has no discriminator")

    def _check_batch(self, batch):
        _check_batch_size(batch, type(self).__name__, "batch statistics and in-batch negatives need two")

    # ------------------------------------------------------------ Keras API
    def call(self, inputs, training=False):
        """The encoder's feature dict (``local``, ``conv``, ``fc``, ``y``) of uint8 or [0, 1] float images."""
        return self.encoder(as_unit_floats(inputs), training=training)

    def train_on_batch(self, x, *args, **kwargs):
        """Keras' ``train_on_batch``; a batch of fewer than 2 images raises ``ValueError`` here already:
        once traced for two batch sizes, Keras relaxes the batch dimension to ``None`` and ``train_step``
        could only skip the batch."""
        self._check_batch(_batch_size_of(x))
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        """Keras' ``test_on_batch``; raises like ``train_on_batch``."""
        self._check_batch(_batch_size_of(x))
        return super().test_on_batch(x, *args, **kwargs)

    def compile(self, optimizer=None, discriminator_optimizer=None, **kwargs):
        """Compiles with one optimizer for the representation (``optimizer``) and, when the model has a
        discriminator, one for it (``discriminator_optimizer``); both default to
        :func:`default_optimizer`.  Accepts optimizer instances, names or configs."""
        if isinstance(optimizer, _OptimizerPair):  # recompiling with a JAX model's own model.optimizer
            discriminator_optimizer = discriminator_optimizer or optimizer.discriminator
            optimizer = optimizer.representation
        optimizer = keras.optimizers.get(optimizer) if optimizer is not None else default_optimizer()
        # The main optimizer goes to super().compile; otherwise Keras builds an
        # unused default optimizer over every variable.
        super().compile(optimizer=optimizer, **kwargs)
        self.discriminator_optimizer = None
        d_variables = self.discriminator_variables
        if d_variables:
            d_opt = (keras.optimizers.get(discriminator_optimizer)
                     if discriminator_optimizer is not None else default_optimizer())
            if (keras.mixed_precision.global_policy().name == "mixed_float16"
                    and not isinstance(d_opt, keras.optimizers.LossScaleOptimizer)):
                d_opt = keras.optimizers.LossScaleOptimizer(d_opt)
            self.discriminator_optimizer = d_opt
            # Built inside the strategy scope (MirroredStrategy needs the slot
            # variables of every optimizer created up front).
            self.discriminator_optimizer.build(d_variables)
        self.optimizer.build(self.representation_variables)
        if keras.backend.backend() == "jax" and self.discriminator_optimizer is not None:
            self.optimizer = _OptimizerPair(self.optimizer, self.discriminator_optimizer)

    def representation_optimizer(self):
        """The optimizer of the representation (``model.optimizer`` itself, except on JAX with a
        discriminator, where ``model.optimizer`` is the pair of both; see ``_OptimizerPair``).
        A method, not a property: Keras's saving walks a model's attributes and would store the JAX
        pair's part a second time under the property's name."""
        optimizer = getattr(self, "optimizer", None)
        return optimizer.representation if isinstance(optimizer, _OptimizerPair) else optimizer

    def get_compile_config(self):
        if not self.compiled:  # an uncompiled model saves (and reloads) without a compile config
            return None
        config = {"optimizer": keras.saving.serialize_keras_object(self.representation_optimizer())}
        if getattr(self, "discriminator_optimizer", None) is not None:
            config["discriminator_optimizer"] = keras.saving.serialize_keras_object(
                self.discriminator_optimizer)
        return config

    def compile_from_config(self, config):
        self.compile(
            optimizer=keras.saving.deserialize_keras_object(config["optimizer"]),
            discriminator_optimizer=(
                keras.saving.deserialize_keras_object(config["discriminator_optimizer"])
                if "discriminator_optimizer" in config else None),
        )

    def _logs(self):
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------- the TensorFlow step
    def _train_on(self, images, *extra):
        """The TensorFlow step on a batch of >= 2 images: the representation's update, then the
        discriminator's, then the metrics."""
        import tensorflow as tf

        # Gradients are summed over replicas under tf.distribute: scale the
        # per-replica mean so the update matches one device on the global batch.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.representation_variables
        with tf.GradientTape() as tape:
            loss, terms, aux = self._representation_objective(images, extra, training=True)
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)

        d_loss = d_terms = None
        d_variables = self.discriminator_variables
        if d_variables:
            with tf.GradientTape() as d_tape:
                d_loss, d_terms = self._discriminator_objective(aux, training=True)
                d_scaled = self.discriminator_optimizer.scale_loss(d_loss / replicas)
            d_grads = d_tape.gradient(d_scaled, d_variables)
            self.discriminator_optimizer.apply(d_grads, d_variables)
        self._update_trackers(loss, terms, d_loss, d_terms)

    def _evaluate_on(self, images):
        loss, terms, aux = self._representation_objective(images, (), training=False)
        d_loss = d_terms = None
        if self.discriminator_variables:
            d_loss, d_terms = self._discriminator_objective(aux, training=False)
        self._update_trackers(loss, terms, d_loss, d_terms)

    def train_step(self, *args):
        """One training step: ``train_step(data)`` on TensorFlow, ``train_step(state, data)`` ->
        ``(logs, state)`` on JAX (Keras's stateless convention there)."""
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        (data,) = args
        images = as_unit_floats(_images_of(data))
        self._check_batch(images.shape[0])
        # A trailing batch of one is skipped (see _run_unless_batch_of_one); partial batches of >= 2 train.
        _run_unless_batch_of_one(self._train_on, images, *_extra_of(data))
        return _reducible_across_workers(self._logs())

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return stateless_test_step(self, *args)
        (data,) = args
        images = as_unit_floats(_images_of(data))
        self._check_batch(images.shape[0])
        _run_unless_batch_of_one(self._evaluate_on, images)
        return self._logs()

    # ------------------------------------------------------ the JAX step
    def _jax_positions(self):
        """Positions in ``trainable_variables`` of the representation's and the discriminator's variables."""
        position = {id(v): k for k, v in enumerate(self.trainable_variables)}
        return ([position[id(v)] for v in self.representation_variables],
                [position[id(v)] for v in self.discriminator_variables])

    def _jax_metrics(self, metric_values, loss=None, terms=None, d_loss=None, d_terms=None):
        """Stateless metric update: the logs and the new metric values (no update when ``loss`` is None)."""
        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metric_values))) as scope:
            if loss is not None:
                self._update_trackers(loss, terms, d_loss, d_terms)
            logs = self._logs()
        return logs, _scope_values(scope, self.metrics_variables, metric_values)

    def _jax_train_step(self, state, data):
        """The stateless JAX step, the same update as ``_train_on``: the representation by ``optimizer``,
        then the discriminator by its own optimizer on the ``aux`` of the same forward pass, then the
        metrics.

        Batch shapes are static under ``jax.jit``, so a batch of fewer than 2 images (``fit``'s
        trailing batch) returns the state untouched, as the TensorFlow step's cond does.  Under
        ``keras.distribution.DataParallel`` the step is one SPMD program over the global batch
        (in-batch negatives and batch norm see the global batch).
        """
        import jax

        trainable, non_trainable, optimizer_values, metric_values = state
        images = as_unit_floats(_images_of(data))
        extra = _extra_of(data)
        if images.shape[0] < 2:
            logs, _ = self._jax_metrics(metric_values)
            return logs, state
        if isinstance(self.optimizer, _OptimizerPair):
            optimizer, d_optimizer = self.optimizer.representation, self.optimizer.discriminator
            opt_values, d_opt_values = self.optimizer.split(optimizer_values)
        else:
            optimizer, d_optimizer = self.optimizer, None
            opt_values, d_opt_values = list(optimizer_values), []
        rep_positions, d_positions = self._jax_positions()

        def mapping(trainable_values, non_trainable_values, opt, opt_values):
            return (list(zip(self.trainable_variables, trainable_values))
                    + list(zip(self.non_trainable_variables, non_trainable_values))
                    + list(zip(opt.variables, opt_values)))  # scale_loss reads a loss-scale optimizer's state

        def representation_objective(rep_values, non_trainable_values):
            values = _with_replaced(trainable, rep_positions, rep_values)
            with keras.StatelessScope(state_mapping=mapping(values, non_trainable_values, optimizer,
                                                            opt_values)) as scope:
                loss, terms, aux = self._representation_objective(images, extra, training=True)
                scaled = optimizer.scale_loss(loss)
            return scaled, (loss, terms, aux,
                            _scope_values(scope, self.non_trainable_variables, non_trainable_values))

        rep_values = [trainable[k] for k in rep_positions]
        (_, (loss, terms, aux, non_trainable)), grads = jax.value_and_grad(
            representation_objective, has_aux=True)(rep_values, non_trainable)
        rep_values, opt_values = optimizer.stateless_apply(opt_values, grads, rep_values)

        d_loss = d_terms = None
        if d_positions:
            def discriminator_objective(d_values, non_trainable_values):
                values = _with_replaced(trainable, d_positions, d_values)
                with keras.StatelessScope(state_mapping=mapping(values, non_trainable_values, d_optimizer,
                                                                d_opt_values)) as scope:
                    d_loss, d_terms = self._discriminator_objective(aux, training=True)
                    scaled = d_optimizer.scale_loss(d_loss)
                return scaled, (d_loss, d_terms,
                                _scope_values(scope, self.non_trainable_variables, non_trainable_values))

            d_values = [trainable[k] for k in d_positions]
            (_, (d_loss, d_terms, non_trainable)), d_grads = jax.value_and_grad(
                discriminator_objective, has_aux=True)(d_values, non_trainable)
            d_values, d_opt_values = d_optimizer.stateless_apply(d_opt_values, d_grads, d_values)
            trainable = _with_replaced(trainable, d_positions, d_values)
        trainable = _with_replaced(trainable, rep_positions, rep_values)

        logs, metric_values = self._jax_metrics(metric_values, loss, terms, d_loss, d_terms)
        return logs, (trainable, non_trainable, list(opt_values) + list(d_opt_values), metric_values)


@keras.saving.register_keras_serializable(package="dim_keras")
class DeepInfoMax(TwoObjectiveModel):
    """Deep InfoMax: ``alpha * global MI + beta * local MI - gamma * prior divergence``.

    The full objective of eq. 8, minimised as

        loss = -alpha * I_global(X; E(X))                          (eq. 3/4/5)
               - beta * mean over M x M locations I(C^(i)(X); E(X)) (eq. 6)
               + gamma * prior-matching generator loss              (eq. 7)

    with one of the estimators ``jsd`` (eq. 4, the paper's default), ``dv``
    (eq. 2), ``infonce`` (eq. 5) or ``nwj``.  Defaults are DIM(L): alpha = 0,
    beta = 1, gamma = 0.1 with the uniform prior and the encode-and-dot
    critic; DIM(G) is alpha = 1, beta = 0, gamma = 1 (section 4).

    Negatives come from the other images of the batch at every location
    (section 3.1); the JSD estimator excludes the positives from them (A.3).
    A batch therefore needs at least 2 images: a static batch of one raises
    ``ValueError``; a trailing partial batch of one in ``fit``/``evaluate``
    (dynamic batch dimension) is skipped without touching any variable, and
    partial batches of 2 or more train normally.
    Images are uint8 (scaled by 1/255 inside ``fit``/``evaluate``/``call``,
    exactly as the exported encoder's signature scales them, so uint8 and
    ``uint8 / 255`` floats give identical results) or floats already in
    [0, 1] (``dim_keras.data.make_dataset``'s); other integer dtypes raise
    ``ValueError``.  ``model.encoder`` itself takes floats in [0, 1].
    The prior discriminator (Table 10) is trained by its own optimizer on a
    stop-gradient copy of Y after the encoder's update in the same step.

    Args:
        encoder: a ``keras.Model`` mapping images in [0, 1] to a dict with
            ``local``, ``conv`` and ``y`` (see :mod:`dim_keras.encoders`).
        alpha, beta, gamma: weights of the global, local and prior terms.
        estimator: MI estimator for both MI terms.
        local_critic: ``dot`` (encode-and-dot, Tables 8-9), ``concat``
            (concat-and-convolve, Table 7), ``bilinear`` or ``separable``.
        embedding_dim: width of the encode-and-dot embedding (2048 in the paper).
        prior: ``uniform`` (paper), ``gaussian``, ``unit_ball`` or ``unit_sphere``.
        prior_gradient_penalty: weight of a gradient penalty on the prior
            discriminator's real and fake inputs (the authors' code adds one;
            the paper does not mention it, so it is off by default).
        local_samples: if set, score only this many randomly chosen locations
            of the local map per step (the same for every image): the infoNCE
            score tensor is B x B x L, so this bounds its memory.
        global_layer_norm: layer norm on the encode-and-dot critic's global
            embedding, as the authors' code has (see
            :class:`~dim_keras.critics.EncodeAndDotCritic`).
        score_scale: multiplies every critic score before the estimator.
            AMDIM (Bachman et al. 2019) divides encode-and-dot scores by
            sqrt(embedding width): two layer-normed 2048-d embeddings give
            scores with a standard deviation of about 45 at initialisation.
        score_penalty: weight of AMDIM's ``mean(score^2)`` penalty (on the
            scaled scores, before clipping) added to the encoder loss.
        score_clip: if set, soft-clip scores to ``c * tanh(s / c)`` before the
            estimator (AMDIM's stabiliser for infoNCE, useful under fp16).
        occlusion: compute Y from an occluded copy of the image (one random rectangle,
            :mod:`dim_keras.occlusion`) while the local and conv features come from the full
            image (Sec. 4.3, App. A.7).
        coordinate_prediction: ``none``, ``absolute``, ``relative`` or ``both``: auxiliary
            coordinate-prediction tasks (Sec. 4.3, App. A.7, :mod:`dim_keras.coordinates`) whose
            cross-entropy is added to the encoder's loss with weight ``coordinate_weight``; their
            predictors train with the encoder and critics.  Table 5's "coord" runs use both.
        negatives: if set (K >= 1), the negatives of global feature i are the local features (at all
            locations) of only K other images of the batch, drawn at random without replacement per
            global feature and step (:func:`dim_keras.estimators.sample_negative_mask`), instead of all
            B - 1: DIM's number-of-negatives experiment (App. A.3, Fig. 9).  A K >= B - 1 uses all.
            One draw per step serves the global and the local MI term.
        num_globals: multiple globals (Sec. 4.2, Table 3 "DIM(L) multiple globals"; 0: off): K less-global
            features, each computed by one shared network (:class:`~dim_keras.local_blocks.LessGlobalNetwork`)
            from a random 3 x 3 block of the local grid (drawn per image and step), each scored against the
            full set of local features by the one local critic and estimator.  The local term becomes the
            mean over the K + 1 globals (Y and the K less-global ones); see ``mi_terms``.  Needs the local
            term (beta > 0) and a local grid of at least 3 x 3 (the paper's: the folded encoder's 7 x 7).
        views: 1, or 2 for AMDIM's two views (Bachman et al. 2019, beyond the paper): training batches are
            ``(view, other_view)`` pairs, two independent augmentations of the same images
            (``dim_keras.data.make_dataset(..., views=2)``); the local, conv and fc features come from
            ``view`` and Y from ``other_view``, so every MI term pairs Y with features of another
            augmentation of its image and Y must keep what survives the augmentation.  Evaluation batches
            (one view) read every feature from the same images.
        seed: seed for prior samples, location subsampling, occlusion masks, source locations and blocks.
    """

    def __init__(self, encoder, alpha=0.0, beta=1.0, gamma=0.1, estimator="jsd",
                 local_critic="dot", embedding_dim=2048, prior="uniform",
                 prior_gradient_penalty=0.0, local_samples=None, score_clip=None,
                 global_layer_norm=False, score_scale=1.0, score_penalty=0.0,
                 occlusion=False, coordinate_prediction="none", coordinate_weight=1.0,
                 negatives=None, num_globals=0, views=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        estimators_lib.get_estimator(estimator)  # validates the name
        if prior not in priors_lib.PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(priors_lib.PRIORS)}")
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if alpha == 0 and beta == 0:
            raise ValueError("alpha and beta are both 0: no mutual information term to maximise")
        if not score_scale > 0:
            raise ValueError(f"score_scale must be > 0, got {score_scale}")
        if not score_penalty >= 0:
            raise ValueError(f"score_penalty must be >= 0, got {score_penalty}")
        if local_samples is not None and local_samples < 1:
            raise ValueError(f"local_samples must be >= 1, got {local_samples}")
        if coordinate_prediction not in coordinates_lib.COORDINATE_TASKS:
            raise ValueError(f"unknown coordinate_prediction {coordinate_prediction!r}; choose one of "
                             f"{', '.join(coordinates_lib.COORDINATE_TASKS)}")
        if not coordinate_weight >= 0:
            raise ValueError(f"coordinate_weight must be >= 0, got {coordinate_weight}")
        if negatives is not None and (int(negatives) != negatives or negatives < 1):
            raise ValueError(f"negatives must be an integer >= 1 (or None: all other images), got {negatives}")
        self.encoder = encoder
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.estimator = estimator
        self.local_critic_name = local_critic
        self.embedding_dim = int(embedding_dim)
        self.prior = prior
        self.prior_gradient_penalty = float(prior_gradient_penalty)
        self.local_samples = local_samples
        self.score_clip = score_clip
        self.global_layer_norm = bool(global_layer_norm)
        self.score_scale = float(score_scale)
        self.score_penalty = float(score_penalty)
        self.occlusion = bool(occlusion)
        self.coordinate_prediction = coordinate_prediction
        self.coordinate_weight = float(coordinate_weight)
        if int(num_globals) != num_globals or num_globals < 0:
            raise ValueError(f"num_globals must be an integer >= 0, got {num_globals}")
        if num_globals and beta == 0:
            raise ValueError("num_globals needs the local MI term (beta > 0): the less-global features are "
                             "scored against the local features")
        self.num_globals = int(num_globals)
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views!r}")
        self.views = int(views)
        self.negatives = None if negatives is None else int(negatives)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._bound = estimators_lib.get_estimator(estimator)

        shapes = {k: tuple(v.shape) for k, v in encoder.output.items()}
        self.y_dim = int(shapes["y"][-1])
        self.global_critic = None
        self.local_critic = None
        self.prior_discriminator = None
        if self.alpha > 0:
            self.global_critic = critics_lib.GlobalCritic(name="global_critic")
            self.global_critic.build(shapes["y"], shapes["conv"])
        if self.beta > 0:
            self.local_critic = critics_lib.build_critic(
                local_critic, self.embedding_dim, global_layer_norm=self.global_layer_norm)
            self.local_critic.build(shapes["y"], shapes["local"])
        if self.gamma > 0:
            self.prior_discriminator = priors_lib.PriorDiscriminator(name="prior_discriminator")
            self.prior_discriminator.build((None, self.y_dim))
        if self.occlusion:
            occlusion_lib.check_image_size(*encoder.input_shape[1:3])
        self.less_global_network = None
        if self.num_globals:
            local_blocks.check_grid(*shapes["local"][1:3])
            # The encoder's own fc -> Y head shape: hidden as wide as its fc, output of Y's size (one critic).
            self.less_global_network = local_blocks.LessGlobalNetwork(
                shapes["fc"][-1], self.y_dim, name="less_global_network")
            self.less_global_network.build((None, local_blocks.BLOCK, local_blocks.BLOCK, shapes["local"][-1]))
            self.less_global_mi_tracker = keras.metrics.Mean(name="less_global_mi")
        self.coordinate_predictors = {}
        self.coordinate_trackers = {}
        tasks = {"absolute": ("absolute",), "relative": ("relative",),
                 "both": ("absolute", "relative")}.get(coordinate_prediction, ())
        height, width, channels = shapes["local"][1:]
        for task in tasks:
            classes = (height, width) if task == "absolute" else (2 * height - 1, 2 * width - 1)
            predictor = coordinates_lib.CoordinatePredictor(*classes, name=f"{task}_coordinate_predictor")
            inputs = self.y_dim + channels * (1 if task == "absolute" else 2)
            predictor.build((None, inputs))
            self.coordinate_predictors[task] = predictor
            self.coordinate_trackers[task] = keras.metrics.Mean(name=f"{task}_coordinate_accuracy")
        if tasks:
            self.coordinate_loss_tracker = keras.metrics.Mean(name="coordinate_loss")

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.global_mi_tracker = keras.metrics.Mean(name="global_mi")
        self.local_mi_tracker = keras.metrics.Mean(name="local_mi")
        self.prior_loss_tracker = keras.metrics.Mean(name="prior_loss")
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.discriminator_accuracy_tracker = keras.metrics.Mean(name="discriminator_accuracy")
        # Every sub-network is built from the encoder's output shapes above.
        self.built = True

    # ----------------------------------------------------------------- API
    @property
    def metrics(self):
        trackers = [self.loss_tracker]
        if self.global_critic is not None:
            trackers.append(self.global_mi_tracker)
        if self.local_critic is not None:
            trackers.append(self.local_mi_tracker)
        if self.less_global_network is not None:
            trackers.append(self.less_global_mi_tracker)
        if self.prior_discriminator is not None:
            trackers += [self.prior_loss_tracker, self.discriminator_loss_tracker,
                         self.discriminator_accuracy_tracker]
        if self.coordinate_predictors:
            trackers += [self.coordinate_loss_tracker] + list(self.coordinate_trackers.values())
        return trackers

    @property
    def representation_variables(self):
        """Variables moved by the MI + prior (+ coordinate) loss: encoder, MI critics and
        coordinate predictors.

        The prior discriminator's variables are not among them."""
        variables = list(self.encoder.trainable_variables)
        for critic in (self.global_critic, self.local_critic):
            if critic is not None:
                variables += critic.trainable_variables
        for predictor in self.coordinate_predictors.values():
            variables += predictor.trainable_variables
        if self.less_global_network is not None:
            variables += self.less_global_network.trainable_variables
        return variables

    def get_config(self):
        return {
            "name": self.name,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
            "estimator": self.estimator, "local_critic": self.local_critic_name,
            "embedding_dim": self.embedding_dim, "prior": self.prior,
            "prior_gradient_penalty": self.prior_gradient_penalty,
            "local_samples": self.local_samples, "score_clip": self.score_clip,
            "global_layer_norm": self.global_layer_norm, "score_scale": self.score_scale,
            "score_penalty": self.score_penalty, "occlusion": self.occlusion,
            "coordinate_prediction": self.coordinate_prediction, "coordinate_weight": self.coordinate_weight,
            "negatives": self.negatives,
            "num_globals": self.num_globals,
            "views": self.views,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

    # --------------------------------------------------------- objective
    def _scores(self, critic, y, features, training, penalties):
        """Scaled, optionally soft-clipped float32 scores; appends ``mean(score^2)``
        of the unclipped scores to ``penalties`` when ``score_penalty`` is on."""
        scores = critic(y, features, training=training)
        scores = ops.cast(scores, "float32")
        if self.score_scale != 1.0:
            scores = scores * self.score_scale
        if self.score_penalty > 0:
            penalties.append(ops.mean(ops.square(scores)))
        if self.score_clip:
            scores = self.score_clip * ops.tanh(scores / self.score_clip)
        return scores

    def local_scores(self, y, local, training=False):
        """The local objective's score tensor ``[B, B, M*M]`` of ``y`` against the local map ``local``
        (every location), as the estimator sees it: scaled and soft-clipped like in training."""
        return self._scores(self.local_critic, y, local, training, [])

    def _subsample_locations(self, local):
        """Keeps ``local_samples`` random locations of a [B, H, W, C] map."""
        shape = ops.shape(local)
        flat = ops.reshape(local, (shape[0], -1, shape[3]))
        n_locations = local.shape[1] * local.shape[2]
        if self.local_samples is None or self.local_samples >= n_locations:
            return flat
        noise = keras.random.uniform((n_locations,), seed=self.seed_generator)
        keep = ops.argsort(noise)[: self.local_samples]
        return ops.take(flat, keep, axis=1)

    def _negative_mask(self, y):
        """The step's ``[B, B]`` negative mask under ``negatives`` (App. A.3, Fig. 9), or None: all other
        images (no ``negatives``, or a static batch of at most ``negatives + 1``)."""
        batch = y.shape[0]
        if self.negatives is None or (batch is not None and self.negatives >= batch - 1):
            return None
        if batch is None:
            batch = ops.shape(y)[0]  # a dynamic TF batch: the sampler keeps all when it is small
        return estimators_lib.sample_negative_mask(batch, self.negatives, self.seed_generator)

    def mi_terms(self, features, training=False):
        """The global and local MI bounds (nats) of a forward pass."""
        y = features["y"]
        terms = {}
        penalties = []
        negative_mask = self._negative_mask(y)
        if self.global_critic is not None:
            terms["global_mi"] = self._bound(
                self._scores(self.global_critic, y, features["conv"], training, penalties),
                negative_mask=negative_mask)
        if self.local_critic is not None:
            local = self._subsample_locations(features["local"])
            terms["local_mi"] = self._bound(
                self._scores(self.local_critic, y, local, training, penalties), negative_mask=negative_mask)
            if self.less_global_network is not None:
                less_global, _ = self.less_global_features(features["local"], training)
                bounds = [self._bound(self._scores(self.local_critic, less_global[:, k], local, training,
                                                   penalties), negative_mask=negative_mask)
                          for k in range(self.num_globals)]
                terms["less_global_mi"] = sum(bounds) / self.num_globals
                # Sec. 4.2 "adds" the less-global features to DIM(L), with one estimator for all blocks:
                # Y keeps its term (the representation evaluated is still Y, and without its term only the
                # prior would train Y's head), and every global, full or less, weighs the same.
                terms["local_mi"] = (terms["local_mi"] + sum(bounds)) / (self.num_globals + 1)
        if penalties:
            terms["score_penalty"] = sum(penalties)
        return terms

    def less_global_features(self, local, training=False):
        """Multiple globals (Sec. 4.2): ``(less_global, corners)``, the ``[B, K, y_dim]`` less-global
        features of the ``[B, H, W, C]`` local map and the ``[B, K, 2]`` top-left corners of their 3 x 3
        blocks, drawn with ``seed_generator`` (:func:`dim_keras.local_blocks.sample_block_corners`)."""
        corners = local_blocks.sample_block_corners(ops.shape(local)[0], self.num_globals, local.shape[1],
                                                    local.shape[2], self.seed_generator)
        return local_blocks.less_global_features(self.less_global_network, local, corners, training), corners

    def features(self, images, training=False, global_images=None):
        """The features the objective reads: the encoder's, with Y from ``global_images`` (another view of
        the same images, ``views=2``) when given, and from an occluded copy (of those, or of ``images``)
        when ``occlusion`` is on (local, conv and fc stay those of ``images``, Sec. 4.3)."""
        features = self.encoder(images, training=training)
        if global_images is None and not self.occlusion:
            return features
        source = images if global_images is None else global_images
        if self.occlusion:
            # The occluded pass normalises with its own batch statistics, but it must not move the moving
            # statistics that inference (exports, probes, the monitor) uses: those describe whole images.
            statistics = self.encoder.non_trainable_variables
            saved = [ops.copy(v.value) for v in statistics] if training else ()
            y = self.encoder(occlusion_lib.occlude(source, self.seed_generator), training=training)["y"]
            for variable, value in zip(statistics, saved):
                variable.assign(value)
        else:  # another augmentation of whole images: its statistics are as good as the first view's
            y = self.encoder(source, training=training)["y"]
        return dict(features, y=y)

    def coordinate_terms(self, features, training, terms):
        """The summed cross-entropy of the coordinate tasks (A.7); writes each task's accuracy of
        predicting both coordinates to ``terms[f"{task}_coordinate_accuracy"]``."""
        y, local = features["y"], features["local"]
        total = 0.0
        for task, predictor in self.coordinate_predictors.items():
            if task == "absolute":
                inputs, rows, cols = coordinates_lib.absolute_inputs(y, local)
            else:  # one random source location per image (A.7), every location a target
                locations = local.shape[1] * local.shape[2]
                source = keras.random.randint((ops.shape(local)[0],), 0, locations, seed=self.seed_generator)
                inputs, rows, cols = coordinates_lib.relative_inputs(y, local, source)
            row_logits, col_logits = predictor(inputs, training=training)
            task_loss, accuracy = coordinates_lib.coordinate_loss(row_logits, col_logits, rows, cols)
            terms[f"{task}_coordinate_accuracy"] = accuracy
            total += task_loss
        return total

    def _representation_loss(self, features, training):
        terms = self.mi_terms(features, training)
        loss = 0.0
        if "global_mi" in terms:
            loss -= self.alpha * terms["global_mi"]
        if "local_mi" in terms:
            loss -= self.beta * terms["local_mi"]
        if "score_penalty" in terms:
            loss += self.score_penalty * terms["score_penalty"]
        if self.coordinate_predictors:
            coordinate_losses = self.coordinate_terms(features, training, terms)
            terms["coordinate_loss"] = coordinate_losses
            loss += self.coordinate_weight * coordinate_losses
        prior_y = None
        if self.prior_discriminator is not None:
            prior_y = priors_lib.match_to_prior_space(features["y"], self.prior)
            fake_logits = self.prior_discriminator(prior_y)
            terms["prior_loss"] = priors_lib.encoder_prior_loss(fake_logits)
            loss += self.gamma * terms["prior_loss"]
        return loss, terms, prior_y

    def _discriminator_loss(self, prior_y):
        """The prior discriminator's loss (Table 10, eq. 7) and accuracy on prior samples vs ``prior_y``."""
        batch = ops.shape(prior_y)[0]
        real = priors_lib.sample_prior(self.prior, batch, self.y_dim, seed=self.seed_generator)
        fake = ops.stop_gradient(prior_y)
        if self.prior_gradient_penalty > 0:
            real_logits, grad_real = _with_input_gradient(self.prior_discriminator, real)
            fake_logits, grad_fake = _with_input_gradient(self.prior_discriminator, fake)
        else:
            real_logits = self.prior_discriminator(real)
            fake_logits = self.prior_discriminator(fake)
        loss = priors_lib.discriminator_loss(real_logits, fake_logits)
        if self.prior_gradient_penalty > 0:
            penalty = (ops.mean(ops.sum(ops.square(grad_real), axis=-1))
                       + ops.mean(ops.sum(ops.square(grad_fake), axis=-1)))
            loss += self.prior_gradient_penalty * penalty
        accuracy = priors_lib.discriminator_accuracy(real_logits, fake_logits)
        return loss, accuracy

    def _update_trackers(self, loss, terms, d_loss=None, d_accuracy=None):
        self.loss_tracker.update_state(loss)
        if "global_mi" in terms:
            self.global_mi_tracker.update_state(terms["global_mi"])
        if "local_mi" in terms:
            self.local_mi_tracker.update_state(terms["local_mi"])
        if "less_global_mi" in terms:
            self.less_global_mi_tracker.update_state(terms["less_global_mi"])
        if "prior_loss" in terms:
            self.prior_loss_tracker.update_state(terms["prior_loss"])
        if d_loss is not None:
            self.discriminator_loss_tracker.update_state(d_loss)
            self.discriminator_accuracy_tracker.update_state(d_accuracy)
        if "coordinate_loss" in terms:
            self.coordinate_loss_tracker.update_state(terms["coordinate_loss"])
            for task, tracker in self.coordinate_trackers.items():
                tracker.update_state(terms[f"{task}_coordinate_accuracy"])

    # ------------------------------------------ the two objectives (TwoObjectiveModel)
    @property
    def discriminator_variables(self):
        """The prior discriminator's variables (none without a prior term)."""
        return self.prior_discriminator.trainable_variables if self.prior_discriminator is not None else []

    def _check_batch(self, batch):
        _check_batch_size(batch)

    def _representation_objective(self, images, extra, training):
        """Eq. 8 on a batch: ``(loss, terms, prior_y)``, ``prior_y`` the discriminator's fake samples.  With
        ``views=2`` a training batch's ``extra`` is ``(other_view,)``, whose Y the terms read."""
        global_images = None
        if self.views == 2:
            if extra:
                global_images = as_unit_floats(extra[0])
            elif training:
                raise ValueError("views=2 trains on (view, other_view) batches: build the dataset with "
                                 "dim_keras.data.make_dataset(..., views=2)")
        features = self.features(images, training=training, global_images=global_images)
        return self._representation_loss(features, training=training)

    def _discriminator_objective(self, prior_y, training):
        """The prior discriminator's ``(loss, accuracy)`` (eq. 7, Table 10)."""
        return self._discriminator_loss(prior_y)
