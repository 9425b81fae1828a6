"""The model ``apps/train.py`` trains, built without importing TensorFlow.

:func:`build_model` makes the encoder and :class:`dim_keras.models.DeepInfoMax` of a
:class:`dim_keras.config.TrainConfig` (the recipe's model settings, Adam as the authors set it,
:func:`dim_keras.models.default_optimizer`) and compiles it; :func:`set_precision` sets the Keras
dtype policy of ``--mixed_precision``.  They live apart from :mod:`dim_keras.runs.train` (which needs
TensorFlow for its strategies, checkpoints and SavedModel export) so that the benchmark builds the very
same model on the JAX backend on a machine without TensorFlow (the GPU machines of issue 17): this
module imports only Keras and the TF-free library modules.
"""

import keras

from dim_keras import encoders as encoders_lib
from dim_keras.errors import UsageError

# --mixed_precision -> Keras dtype policy (compute in float16 / bfloat16, variables in float32).
PRECISION_POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def set_precision(mixed_precision):
    """Sets the global Keras dtype policy of ``--mixed_precision`` (off, float16, bfloat16)."""
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[mixed_precision])


def resolved_encoder_name(config, input_shape):
    """The encoder architecture ``config.encoder`` means for images of ``input_shape`` ("auto": by size)."""
    if config.encoder == "auto":
        return encoders_lib.auto_encoder_name(min(input_shape[:2]))
    return config.encoder


def recipe_model_settings(config):
    """The ``DeepInfoMax`` keyword arguments of ``config``'s recipe (docs/RESULTS.md)."""
    recipe = config.recipe_settings()
    return {name: recipe[name] for name in ("global_layer_norm", "score_scale", "score_penalty", "score_clip",
                                            "views")}


def learning_rate(config, steps_per_epoch=None):
    """Adam's learning rate for ``config``: ``--learning_rate`` (default: the recipe's), and with the
    recipe's cosine schedule a ``CosineDecay`` to 0 over the run's ``epochs x steps_per_epoch`` steps (a
    constant rate when ``steps_per_epoch`` is None).  The schedule reads the optimizer's step counter, so a
    resumed run continues where it stopped."""
    rate = config.resolved_learning_rate()
    if config.recipe_settings()["lr_schedule"] == "cosine" and steps_per_epoch:
        return keras.optimizers.schedules.CosineDecay(rate, config.resolved_epochs() * steps_per_epoch)
    return rate


def jit_compile(config):
    """Whether the training step is XLA-compiled: ``--jit_compile`` on TensorFlow with one device (XLA and
    MirroredStrategy do not mix in Keras 3: "Trying to access resource ... replica_1"); always on JAX,
    whose trainer jits the stateless step (DataParallel included) and whose eager step would be far slower."""
    if keras.backend.backend() == "jax":
        return True
    if config.method == "nat":  # its Hungarian re-assignment is a host call (tf.numpy_function), which XLA cannot
        return False            # compile (dim_keras.baselines.nat)
    return config.jit_compile and config.strategy == "default"


def negatives_of(config):
    """``DeepInfoMax(negatives=...)`` of ``--negatives``: None (all other images) when unset or when it is at
    least ``--batch_size - 1``, the negatives a batch has anyway."""
    if config.negatives is None or config.negatives >= config.batch_size - 1:
        return None
    return config.negatives


def _initialise_and_compile(model, config, steps_per_epoch, **optimizers):
    """The recipe's layer defaults (torch's init and BN settings for ``paper``) on ``model``, then ``compile``
    with Adam (:func:`dim_keras.models.default_optimizer` at the recipe's rate and schedule) for every
    optimizer ``model`` takes (``optimizers``: each name -> whether the model needs it)."""
    from dim_keras.models import default_optimizer

    if config.recipe_settings()["layer_defaults"] == "torch":
        from dim_keras.initializers import apply_torch_layer_defaults
        apply_torch_layer_defaults(model, seed=config.seed)
    optimizer = default_optimizer(learning_rate(config, steps_per_epoch))  # created first, as before
    extra = {name: default_optimizer(learning_rate(config, steps_per_epoch)) if needed else None
             for name, needed in optimizers.items()}
    model.compile(optimizer=optimizer, **extra, jit_compile=jit_compile(config))
    return model


def build_cpc(config, encoder, encoder_name, steps_per_epoch=None):
    """``--method=cpc``: :class:`dim_keras.cpc.ContrastivePredictiveCoding` on ``encoder``, compiled with one
    Adam (:func:`dim_keras.models.default_optimizer`, the recipe's rate and schedule).  The recipe's Y-embedding
    layer norm and score scale apply to its encode-and-dot predictors; UsageError for a local grid of fewer
    rows than CPC predicts ahead + 1."""
    from dim_keras.cpc import ContrastivePredictiveCoding, check_grid

    try:
        check_grid(*encoder.output["local"].shape[1:3])
    except ValueError as err:
        raise UsageError(f"--method=cpc with the {encoder_name} encoder: {err}") from None
    recipe = recipe_model_settings(config)
    model = ContrastivePredictiveCoding(encoder, embedding_dim=config.embedding_dim,
                                        global_layer_norm=recipe["global_layer_norm"],
                                        score_scale=recipe["score_scale"])
    return _initialise_and_compile(model, config, steps_per_epoch)


def build_baseline(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """A comparison model of issue 15 (``--method`` in ``choices.BASELINE_METHODS``, :mod:`dim_keras.baselines`)
    on ``encoder``, compiled with Adam (:func:`dim_keras.models.default_optimizer`, the recipe's rate and
    schedule) for the representation and, for the adversarial methods, a second one for the adversary."""
    from dim_keras.baselines import build_baseline as build

    try:
        model = build(config, encoder, encoder_name, input_shape, steps_per_epoch=steps_per_epoch,
                      num_examples=num_examples)
    except ValueError as err:
        raise UsageError(f"--method={config.method} with the {encoder_name} encoder: {err}") from None
    return _initialise_and_compile(model, config, steps_per_epoch,
                                   discriminator_optimizer=bool(model.discriminator_variables))


def build_model(config, input_shape, steps_per_epoch=None, num_examples=None):
    """The encoder + DeepInfoMax model of ``config`` (``--method=cpc``: :func:`build_cpc`; the comparison
    models: :func:`build_baseline`), compiled (call in the strategy scope); ``steps_per_epoch`` sets the
    horizon of a recipe's learning-rate schedule (:func:`learning_rate`), ``num_examples`` is the training
    split's size (NAT keeps one target per image).  UsageError for an input shape the encoder cannot take."""
    from dim_keras.models import DeepInfoMax

    encoder_name = resolved_encoder_name(config, input_shape)
    try:
        encoder = encoders_lib.build_encoder(
            encoder_name, input_shape, y_dim=config.y_dim, synchronized_bn=config.synchronized_bn,
            crop_encoder=config.crop_encoder if encoder_name == "folded" else None)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.method == "cpc":
        return build_cpc(config, encoder, encoder_name, steps_per_epoch)
    if config.method != "dim":
        return build_baseline(config, encoder, encoder_name, input_shape, steps_per_epoch, num_examples)
    if config.num_globals:
        from dim_keras.local_blocks import check_grid
        try:
            check_grid(*encoder.output["local"].shape[1:3])
        except ValueError as err:
            raise UsageError(f"--num_globals with the {encoder_name} encoder: {err}") from None
    if config.occlusion:
        from dim_keras.occlusion import check_image_size
        try:
            check_image_size(*input_shape[:2])
        except ValueError as err:
            raise UsageError(f"--occlusion: {err}") from None
    model = DeepInfoMax(
        encoder, alpha=config.alpha, beta=config.beta, gamma=config.gamma,
        estimator=config.resolved_estimator(), local_critic=config.local_critic,
        embedding_dim=config.embedding_dim, prior=config.prior,
        local_samples=config.local_samples, prior_gradient_penalty=config.prior_gradient_penalty,
        occlusion=config.occlusion, coordinate_prediction=config.coordinate_prediction,
        coordinate_weight=config.coordinate_weight, negatives=negatives_of(config),
        num_globals=config.num_globals, seed=config.seed,
        **recipe_model_settings(config))
    return _initialise_and_compile(model, config, steps_per_epoch, discriminator_optimizer=True)
