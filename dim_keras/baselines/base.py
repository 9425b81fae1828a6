"""What the comparison models of :mod:`dim_keras.baselines` share: :class:`BaselineModel`.

The training steps (TensorFlow and JAX, one or two optimizers) are :class:`dim_keras.models.TwoObjectiveModel`'s,
the same code that trains :class:`~dim_keras.models.DeepInfoMax`; this class adds the parts every baseline
has: the encoder of :mod:`dim_keras.encoders` (exported as it is, so ``apps/evaluate.py`` reads every method
alike: ``y`` is the code, the latent *mean* of the probabilistic models), a seed generator, one
``keras.metrics.Mean`` per logged term, and the Gaussian posterior head of the probabilistic models.
"""

import keras
from keras import layers, ops

from dim_keras import encoders as _encoders  # noqa: F401  registers the folded encoder's layers
from dim_keras.models import TwoObjectiveModel, _check_batch_size, as_unit_floats
from dim_keras.priors import PRIORS


class BaselineModel(TwoObjectiveModel):
    """Base of the comparison models: an encoder (dict outputs ``local``, ``conv``, ``fc``, ``y``) plus
    whatever networks the subclass adds, trained by :class:`~dim_keras.models.TwoObjectiveModel`'s steps.

    A subclass sets its networks up in ``__init__`` (after ``super().__init__``), then calls
    :meth:`_finish_init` with the names of the terms it logs (``loss`` is always logged, and
    ``discriminator_loss`` with an adversary); it implements ``_representation_objective`` (and with an
    adversary ``discriminator_variables`` and ``_discriminator_objective``) returning term dicts keyed by
    those names, and extends ``get_config`` (nested Keras objects are serialised with
    ``keras.saving.serialize_keras_object``; :meth:`from_config` deserialises every dict that carries a
    ``class_name``).

    Args:
        encoder: a ``keras.Model`` of :mod:`dim_keras.encoders`; its ``y`` width is the latent size.
        seed: seeds the model's random draws (posterior samples, prior samples, noise).
    """

    def __init__(self, encoder, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.image_shape = tuple(int(d) for d in encoder.input_shape[1:])
        self.latent_dim = int(encoder.output["y"].shape[-1])
        self.log_variance_head = None

    def _check_batch(self, batch):
        _check_batch_size(batch, type(self).__name__, "batch normalisation needs two")

    def _set_decoder(self, decoder):
        """Sets ``self.decoder`` (a ``keras.Model`` ``[B, latent_dim] -> [B, H, W, C]`` of pre-activation
        outputs, :func:`~dim_keras.baselines.decoders.build_decoder`); ValueError unless it maps this encoder's
        code back to its images."""
        inputs = tuple(decoder.input_shape[1:])
        outputs = tuple(int(d) for d in decoder.output_shape[1:])
        if inputs != (self.latent_dim,) or outputs != self.image_shape:
            raise ValueError(f"the decoder maps {inputs} to {outputs}; the encoder needs ({self.latent_dim},) -> "
                             f"{self.image_shape}")
        self.decoder = decoder

    @staticmethod
    def _check_prior(prior):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
        return prior

    def reconstruction_code(self, images, training=False):
        """The code the decoder reads without sampling: ``y`` (the posterior mean), float32."""
        return ops.cast(self.encoder(images, training=training)["y"], "float32")

    def reconstruct(self, images):
        """``sigmoid(decoder(code))``: [0, 1] reconstructions of uint8 or [0, 1] float ``images`` in evaluation
        mode (the code: :meth:`reconstruction_code`); what ``apps/compare.py``'s reconstruction MSE reads.
        Only for the models with a decoder."""
        code = self.reconstruction_code(as_unit_floats(images))
        return ops.sigmoid(ops.cast(self.decoder(code, training=False), "float32"))

    def _add_gaussian_posterior(self):
        """Adds ``q(z|x) = N(y(x), diag(exp(log_variance(x))))``: the encoder's linear ``y`` is the mean
        and a linear layer on its ``fc`` features (the layer ``y`` reads) the log-variance, as Kingma &
        Welling (2014, App. C.2) put two linear heads on the last hidden layer."""
        self.log_variance_head = layers.Dense(self.latent_dim, name="log_variance")
        self.log_variance_head.build(tuple(self.encoder.output["fc"].shape))

    def posterior(self, images, training=False):
        """``(features, mean, log_variance)`` of [0, 1] ``images`` (the Gaussian posterior; float32)."""
        features = self.encoder(images, training=training)
        mean = keras.ops.cast(features["y"], "float32")
        log_variance = keras.ops.cast(self.log_variance_head(features["fc"]), "float32")
        return features, mean, log_variance

    def _finish_init(self, term_names):
        names = ["loss", *term_names]
        if self.discriminator_variables:
            names.append("discriminator_loss")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in dict.fromkeys(names)}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def representation_variables(self):
        """Every trainable variable but the adversary's."""
        adversary = {id(v) for v in self.discriminator_variables}
        return [v for v in self.trainable_variables if id(v) not in adversary]

    def _update_trackers(self, loss, terms, d_loss=None, d_terms=None):
        values = {**terms, **(d_terms or {})}
        if d_loss is not None:
            values["discriminator_loss"] = d_loss
        untracked = sorted(set(values) - set(self.trackers))
        if untracked:  # a term the model computes but would never show: a bug of the model, not of the data
            raise ValueError(f"{type(self).__name__} has no tracker for {', '.join(untracked)}: list every term "
                             "in _finish_init(term_names)")
        self.trackers["loss"].update_state(loss)
        for name, value in values.items():
            self.trackers[name].update_state(value)

    def get_config(self):
        return {"name": self.name, "encoder": keras.saving.serialize_keras_object(self.encoder), "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = {key: keras.saving.deserialize_keras_object(value)
                  if isinstance(value, dict) and "class_name" in value else value
                  for key, value in config.items()}
        return cls(**config)
