"""The auto-encoders of DIM's comparison (Tables 1, 2; issue 15): VAE, beta-VAE and the deterministic AE.

- **VAE** (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"): a Gaussian posterior
  ``q(z|x) = N(mean(x), diag(exp(log_variance(x))))`` (the encoder's ``y`` and a log-variance head,
  :meth:`~dim_keras.baselines.base.BaselineModel._add_gaussian_posterior`), the prior ``p(z) = N(0, I)`` and a
  decoder ``p(x|z)`` (:func:`~dim_keras.baselines.decoders.build_decoder`, mirroring the encoder).  The loss is
  the negative evidence lower bound (eq. 3: ``ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))``) per image,
  averaged over the batch, estimated as their estimator B (eq. 7 of arXiv v10; the VAE case eq. 10): the KL
  in closed form (App. B) and the reconstruction term from one reparameterised sample (``L = 1``, Sec. 5).
- **beta-VAE** (Higgins et al. 2017, eq. 4): the same with the KL weighted by ``beta`` (``--vae_beta``,
  :class:`dim_keras.config.TrainConfig`'s default 4; ``beta > 1`` trades reconstruction for a more factorised
  code).  The VAE is ``beta = 1``.
- **AE**: the deterministic auto-encoder, ``z = y`` and the reconstruction term alone (no posterior head, no
  KL), with the same likelihood so that its ``reconstruction`` reads in the same nats as the VAEs'.

The pixel likelihood is Bernoulli on [0, 1] intensities (``bernoulli``, the default): the decoder's output
are logits and ``x`` is used as the Bernoulli mean (Kingma & Welling's MNIST setting, App. C.1).  This is
the common choice for the image VAEs that DIM is compared with; for continuous pixels it is *not* a
normalised density (its value is a cross-entropy, not a log-likelihood in nats of a distribution over
[0, 1]), so only differences between models sharing it mean anything.  ``gaussian``: a Gaussian of the
decoder's output as mean and a *fixed* scalar variance ``exp(observation_log_variance)`` (default 1; not
learned), a normalised density (the linear-Gaussian known-answer test of ``tests/test_vae.py`` uses it).

Every model exports the encoder as it is: ``y`` is the code, the posterior *mean* for the VAEs.  The
objectives are the pure functions :func:`reconstruction_nll` and :func:`negative_elbo` (``keras.ops`` only);
the training steps are :class:`dim_keras.models.TwoObjectiveModel`'s (one optimizer, no adversary).
Hyper-parameters: the optimizer is DIM's (Adam, lr 1e-4, beta_1 0.5, ``dim_keras.runs.model_setup``), not
Kingma & Welling's Adagrad, so that every method of the comparison trains alike; the latent size is
``--y_dim`` (DIM's 64), one sample per image (Kingma & Welling's ``L = 1``), ``beta`` as above.
"""

import keras
from keras import ops

from dim_keras.baselines import distributions
from dim_keras.baselines.base import BaselineModel
from dim_keras.baselines.decoders import build_decoder
from dim_keras.models import as_unit_floats

LIKELIHOODS = ("bernoulli", "gaussian")


def reconstruction_nll(images, decoder_output, likelihood="bernoulli", observation_log_variance=0.0):
    """``-log p(x|z)`` per image ([B], nats summed over pixels) of ``images`` under the decoder's output.

    ``bernoulli``: ``decoder_output`` are logits, ``images`` in [0, 1] the Bernoulli means (the cross-entropy
    of Kingma & Welling's MNIST decoder, App. C.1).  ``gaussian``: ``decoder_output`` is the mean of a
    Gaussian of fixed variance ``exp(observation_log_variance)`` per pixel.
    """
    images = ops.cast(images, "float32")
    decoder_output = ops.cast(decoder_output, "float32")
    if likelihood == "bernoulli":
        return -distributions.bernoulli_log_likelihood(decoder_output, images)
    if likelihood == "gaussian":
        log_variance = ops.full(ops.shape(decoder_output), observation_log_variance, dtype="float32")
        return -distributions.gaussian_log_density(images, decoder_output, log_variance)
    raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")


def negative_elbo(images, decoder_output, mean, log_variance, beta=1.0, likelihood="bernoulli",
                  observation_log_variance=0.0):
    """The (beta-)VAE loss of a batch and its terms (Kingma & Welling 2014, eq. 3 and estimator B, eq. 7;
    Higgins et al. 2017, eq. 4).

    ``decoder_output`` is the decoder on one reparameterised sample ``z ~ q(z|x) = N(mean, diag(exp(
    log_variance)))`` per image, so ``reconstruction = -log p(x|z)`` is an unbiased one-sample estimate of
    ``E_q[-log p(x|z)]``; ``kl = KL(q(z|x) || N(0, I))`` in closed form (App. B).  Returns ``(loss, terms)``:
    ``loss = mean over images of reconstruction + beta * kl``, and ``terms`` the batch means of
    ``reconstruction``, ``kl`` and ``elbo = -(reconstruction + kl)`` (the bound itself, whatever ``beta``;
    nats per image).
    """
    reconstruction = reconstruction_nll(images, decoder_output, likelihood, observation_log_variance)
    kl = distributions.gaussian_kl_to_standard_normal(ops.cast(mean, "float32"), ops.cast(log_variance, "float32"))
    loss = ops.mean(reconstruction + beta * kl)
    terms = {"reconstruction": ops.mean(reconstruction), "kl": ops.mean(kl), "elbo": -ops.mean(reconstruction + kl)}
    return loss, terms


@keras.saving.register_keras_serializable(package="dim_keras")
class AutoEncoder(BaselineModel):
    """The deterministic auto-encoder: ``z = y(x)``, loss ``mean over images of -log p(x | decoder(y))``
    (:func:`reconstruction_nll`), logged as ``reconstruction`` (nats per image).

    Args:
        encoder: a ``keras.Model`` of :mod:`dim_keras.encoders` (``y``: the code, exported as it is).
        decoder: a ``keras.Model`` ``[B, latent_dim] -> [B, H, W, C]`` of pre-activation outputs
            (:func:`~dim_keras.baselines.decoders.build_decoder`).
        likelihood: ``bernoulli`` (logits; the default, see the module docstring) or ``gaussian`` (means of
            fixed variance ``exp(observation_log_variance)``).
        observation_log_variance: the ``gaussian`` likelihood's fixed log-variance per pixel (0: unit variance).
        seed: seeds the model's random draws.
    """

    def __init__(self, encoder, decoder, likelihood="bernoulli", observation_log_variance=0.0, seed=None,
                 **kwargs):
        super().__init__(encoder, seed=seed, **kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        self._set_decoder(decoder)
        self.likelihood = likelihood
        self.observation_log_variance = float(observation_log_variance)
        self._init_posterior()
        self._finish_init(self._term_names())

    def _init_posterior(self):
        """Nothing: the AE's code is the encoder's ``y`` itself."""

    def _term_names(self):
        return ["reconstruction"]

    def _reconstruction_nll(self, images, decoder_output):
        return reconstruction_nll(images, decoder_output, self.likelihood, self.observation_log_variance)

    def _representation_objective(self, images, extra, training):
        code = self.reconstruction_code(images, training=training)
        reconstruction = ops.mean(self._reconstruction_nll(images, self.decoder(code, training=training)))
        return reconstruction, {"reconstruction": reconstruction}, None

    def reconstruct(self, images):
        """The decoder's image of the code of uint8 or [0, 1] float ``images`` (the posterior mean for the
        VAEs; evaluation mode): ``sigmoid`` of the logits (``bernoulli``) or the mean (``gaussian``)."""
        if self.likelihood == "bernoulli":
            return super().reconstruct(images)
        return ops.cast(self.decoder(self.reconstruction_code(as_unit_floats(images)), training=False), "float32")

    def get_config(self):
        return {**super().get_config(), "decoder": keras.saving.serialize_keras_object(self.decoder),
                "likelihood": self.likelihood, "observation_log_variance": self.observation_log_variance}


@keras.saving.register_keras_serializable(package="dim_keras")
class VariationalAutoEncoder(AutoEncoder):
    """The VAE (``beta = 1``, Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017): loss
    :func:`negative_elbo`, one reparameterised sample per image from ``seed_generator``; logs
    ``reconstruction``, ``kl`` and ``elbo`` (nats per image).

    Args:
        encoder, decoder, likelihood, observation_log_variance, seed: as :class:`AutoEncoder`.
        beta: the KL term's weight (Higgins et al. 2017, eq. 4).
    """

    def __init__(self, encoder, decoder, beta=1.0, **kwargs):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        super().__init__(encoder, decoder, **kwargs)
        self.beta = float(beta)

    def _init_posterior(self):
        self._add_gaussian_posterior()

    def _term_names(self):
        return ["reconstruction", "kl", "elbo"]

    def _representation_objective(self, images, extra, training):
        _, mean, log_variance = self.posterior(images, training=training)
        z = distributions.sample_gaussian(mean, log_variance, self.seed_generator)
        loss, terms = negative_elbo(images, self.decoder(z, training=training), mean, log_variance, self.beta,
                                    self.likelihood, self.observation_log_variance)
        return loss, terms, None

    def elbo(self, images):
        """The per-image ELBO ([B], nats; ``beta`` plays no part) of uint8 or [0, 1] float ``images`` in
        evaluation mode: one reparameterised sample per image (moves ``seed_generator``)."""
        images = as_unit_floats(images)
        _, mean, log_variance = self.posterior(images, training=False)
        z = distributions.sample_gaussian(mean, log_variance, self.seed_generator)
        reconstruction = self._reconstruction_nll(images, self.decoder(z, training=False))
        return -(reconstruction + distributions.gaussian_kl_to_standard_normal(mean, log_variance))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


def build(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """``--method=vae`` (beta 1), ``beta_vae`` (``config.vae_beta``) or ``ae`` on ``encoder``, with the decoder
    mirroring ``encoder_name`` (:func:`~dim_keras.baselines.decoders.build_decoder`) and the Bernoulli pixel
    likelihood; uncompiled (``dim_keras.runs.model_setup.build_baseline`` compiles it)."""
    decoder = build_decoder(encoder_name, input_shape, config.y_dim)
    if config.method == "ae":
        return AutoEncoder(encoder, decoder, seed=config.seed, name="ae")
    betas = {"vae": 1.0, "beta_vae": config.vae_beta}
    if config.method not in betas:
        raise ValueError(f"dim_keras.baselines.vae builds vae, beta_vae and ae, not {config.method!r}")
    return VariationalAutoEncoder(encoder, decoder, beta=betas[config.method], seed=config.seed, name=config.method)
