"""The Mutual Information Machine, asymmetric form A-MIM (Livne, Swersky & Fleet 2019, arXiv:1910.03175).

MIM learns a joint model of images ``x`` and codes ``z`` from two factorisations that share parameters: the
*encoding* distribution ``M^q_S(x, z) = P(x) q_theta(z|x)`` (``P(x)``: the data, the anchor of ``x``) and the
*decoding* distribution ``M^p_S(x, z) = P(z) p_theta(x|z)``.  Its objective, the Jensen-Shannon divergence
between the two plus their joint entropy, is bounded above by a cross-entropy to the model's own
factorisations ``p_theta(x|z) p_theta(z)`` and ``q_theta(z|x) q_theta(x)``, with *learned* marginals
``p_theta(z)`` and ``q_theta(x)`` (the paper's cross-entropy bound of the MIM objective).  When sampling
the decoder is costly (the paper's image models have auto-regressive PixelCNN decoders), the asymmetric
A-MIM takes the expectation under the encoding distribution only::

    L_A-MIM = -1/2 E_{x ~ P(x), z ~ q_theta(z|x)} [ log p_theta(x|z) + log p_theta(z)
                                                     + log q_theta(z|x) + log q_theta(x) ]

(:func:`a_mim_loss`; the authors' code: ``src/cond_pixelcnn/models/PixelHVAE_2level.py``, ``MIM.calculate_loss``
of github.com/seraphlabs-ca/MIM, ``loss = -0.5 * (log_p_x_given_z + log_p_z + log_q_z_given_x + log_q_x)``,
``AsymMIM`` = no decoder-sampling step.  The paper's section and equation numbers are not quoted: only its
abstract and the authors' code could be read for this port, so every choice below cites the code).

The two learned marginals, as the authors' image experiments set them (``vae-as-mim-image.py`` defaults
``--prior vampprior --number_components 500 --q_x_prior marginal``):

- ``p_theta(z)``: a VampPrior (Tomczak & Welling 2018), ``1/K sum_k q_theta(z | u_k)`` over ``K`` learned
  pseudo-images ``u_k`` (:func:`vamp_prior_log_density`): the encoder's own mixture, so the prior tracks the
  aggregate posterior ``q_theta(z)``, which is the consistency MIM asks of encoder and decoder.
- ``q_theta(x)``: the marginal of the decoding model, ``p_theta(x) = E_{p_theta(z)} p_theta(x|z)``, estimated
  by importance sampling with ``q_theta(z|x)`` as the proposal and the same single sample ``z``
  (:func:`decoder_marginal_log_density`; the code's "q(x) is marginal of p(x, z)":
  ``log_q_x = log_p_x_given_z + log_p_z - log_q_z_given_x``).  This estimate is the one-sample ELBO, and
  substituting it the loss becomes ``-(log p_theta(x|z) + log p_theta(z))``: the VAE loss *plus* the
  encoder's conditional entropy ``H(z|x)``, which A-MIM therefore lowers where the VAE raises it: sharper
  posteriors, high mutual information, no posterior collapse (the paper's contrast of MIM with VAEs).

Networks and likelihoods, shared with the other comparison models: the encoder of :mod:`dim_keras.encoders`
with the Gaussian posterior head of :class:`~dim_keras.baselines.base.BaselineModel` (``y``, the posterior
mean, is the exported code), the decoder of :mod:`dim_keras.baselines.decoders` for the same encoder family,
and a Bernoulli likelihood on [0, 1] intensities (the authors' ``input_type='binary'``, ``log_Bernoulli``;
:func:`dim_keras.baselines.distributions.bernoulli_log_likelihood`).  One reparameterised sample of ``z`` per
image (the authors' ``reparameterize``).

Hyper-parameters and their sources: ``K = 500`` pseudo-inputs (``--number_components`` default and the
``K_500`` runs of the authors' README); the posterior log-variance is kept in ``[-6, 2]`` (the VampPrior
code's ``Hardtanh(min_val=-6, max_val=2)`` on every ``q`` log-variance, which the MIM code keeps); the
pseudo-images are kept in [0, 1] (the VampPrior code's ``Hardtanh(0, 1)`` on the pseudo-inputs).
Deviations: (1) the pseudo-images start at ``N(0.5, 0.01^2)`` per pixel, not at training images
(``--use_training_data_init``, the authors' runs; ``build`` sees no data) nor at the code's default
``N(-0.05, 0.01^2)``, which ``Hardtanh(0, 1)`` clips to black, where no gradient reaches them; the code's
std, a mid-grey mean; (2) the pseudo-images go through
the encoder in inference mode: the encoders have batch normalisation, and in training mode the ``K``
pseudo-images would set the batch statistics and the moving averages of the exported encoder (the
authors' encoders have none), so the prior's components use the moving statistics, which lag the batch's
early in training; (3) no warm-up of the prior/posterior weight (the authors' 100-epoch ``--warmup``), as
the VAE of this package has none, so both train alike; (4) the authors' image models are two-level
hierarchical VAEs with PixelCNN decoders; here one latent layer and the convolutional decoder of the
encoder's family, as every comparison model of issue 15 uses.

Cost: the prior runs the encoder (forward, and backward into the encoder and the pseudo-images) on ``K``
pseudo-images every step; measured on CPU, the DCGAN encoder at 32x32 with batch 64 takes 1.5 s a step
with ``K = 500`` against 0.53 s with ``K = 1``.
"""

import keras
from keras import ops

from dim_keras.baselines import distributions
from dim_keras.baselines.base import BaselineModel

# The VampPrior code's Hardtanh(min_val=-6, max_val=2) on the posterior log-variance (kept by the MIM code).
LOG_VARIANCE_BOUNDS = (-6.0, 2.0)
# --number_components default of the authors' vae-as-mim-image.py and the K_500 runs of their README.
NUM_COMPONENTS = 500
# Pseudo-images start at N(0.5, 0.01^2): the code's std, mid-grey (its default mean -0.05 is clipped to black).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.5, 0.01


# ------------------------------------------------------------------------------- pure functions
def a_mim_loss(log_p_x_given_z, log_p_z, log_q_z_given_x, log_q_x):
    """The A-MIM loss: ``-1/2 mean_batch [log p(x|z) + log p(z) + log q(z|x) + log q(x)]`` (nats per image),
    each argument a ``[B]`` tensor of log-densities at ``x ~ P(x)``, ``z ~ q(z|x)`` (one sample per image,
    the Monte-Carlo estimate of the expectation under the encoding distribution)."""
    return -0.5 * ops.mean(log_p_x_given_z + log_p_z + log_q_z_given_x + log_q_x)


def decoder_marginal_log_density(log_p_x_given_z, log_p_z, log_q_z_given_x):
    """``log q_theta(x)`` as the authors estimate it: the decoder's marginal ``p_theta(x)`` by importance
    sampling with ``q_theta(z|x)`` as proposal, one sample: ``log p(x|z) + log p(z) - log q(z|x)`` (``[B]``;
    the single-sample ELBO)."""
    return log_p_x_given_z + log_p_z - log_q_z_given_x


def pairwise_gaussian_log_density(z, means, log_variances):
    """``[B, K]``: ``log N(z_b; means_k, diag(exp(log_variances_k)))`` for every pair (``z`` ``[B, D]``, the
    components ``[K, D]``)."""
    z = ops.expand_dims(z, 1)
    means = ops.expand_dims(means, 0)
    log_variances = ops.expand_dims(log_variances, 0)
    return -0.5 * ops.sum(distributions.LOG_2PI + log_variances + ops.square(z - means) * ops.exp(-log_variances),
                          axis=-1)


def vamp_prior_log_density(z, component_means, component_log_variances):
    """The VampPrior ``log p(z) = log 1/K sum_k N(z; m_k, diag(v_k))`` per example (``[B]``), the ``K``
    components being the posteriors of the pseudo-images (Tomczak & Welling 2018's VampPrior; a stable
    log-sum-exp as the ``log_p_z2`` of the authors' code)."""
    components = pairwise_gaussian_log_density(z, component_means, component_log_variances)
    num_components = ops.cast(ops.shape(component_means)[0], z.dtype)
    return ops.logsumexp(components, axis=-1) - ops.log(num_components)


def batch_mutual_information(z, means, log_variances):
    """A minibatch estimate of ``I(x; z)`` under the encoding distribution,
    ``mean_i [log q(z_i|x_i) - log 1/B sum_j q(z_i|x_j)]``, the aggregate posterior ``q(z)`` replaced by
    the batch's mixture (as He et al. 2019 measure posterior collapse).  Never above ``log B``; for
    monitoring only (the issue's MI measurement is MINE's, in the evaluation)."""
    pairs = pairwise_gaussian_log_density(z, means, log_variances)  # [B, B]: q(z_i | x_j)
    batch = ops.cast(ops.shape(z)[0], z.dtype)
    own = ops.diagonal(pairs)
    return ops.mean(own - (ops.logsumexp(pairs, axis=-1) - ops.log(batch)))


# ------------------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="dim_keras")
class MutualInformationMachine(BaselineModel):
    """A-MIM (module docstring): Gaussian posterior on the encoder, ``decoder`` (a ``keras.Model`` from
    ``[B, latent_dim]`` codes to ``[B, H, W, C]`` logits, :func:`dim_keras.baselines.decoders.build_decoder`),
    a Bernoulli likelihood, a VampPrior of ``num_components`` learned pseudo-images and ``q(x)`` the decoder's
    importance-sampled marginal.

    Logged terms (batch means, nats per image): ``reconstruction`` (``-log p(x|z)``), ``log_prior``
    (``log p(z)``), ``log_posterior`` (``log q(z|x)``), ``log_marginal`` (the ``log q(x)`` estimate, i.e.
    the one-sample ELBO), ``mutual_information`` (:func:`batch_mutual_information`), and ``loss``, the
    A-MIM loss.
    """

    TERMS = ("reconstruction", "log_prior", "log_posterior", "log_marginal", "mutual_information")

    def __init__(self, encoder, decoder, num_components=NUM_COMPONENTS, seed=None, **kwargs):
        super().__init__(encoder, seed=seed, **kwargs)
        self._set_decoder(decoder)
        self.num_components = int(num_components)
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self._add_gaussian_posterior()
        self.pseudo_inputs = self.add_weight(
            shape=(self.num_components, *self.image_shape), name="pseudo_inputs",
            initializer=keras.initializers.RandomNormal(PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD, seed=seed))
        self._finish_init(self.TERMS)

    # ------------------------------------------------------------------ distributions
    def bounded_posterior(self, images, training=False):
        """``(features, mean, log_variance)`` with the log-variance clipped to :data:`LOG_VARIANCE_BOUNDS`."""
        features, mean, log_variance = self.posterior(images, training=training)
        return features, mean, ops.clip(log_variance, *LOG_VARIANCE_BOUNDS)

    def prior_components(self):
        """``(means, log_variances)``, ``[K, D]`` each: the posteriors of the pseudo-images (kept in [0, 1]),
        the encoder in inference mode (module docstring, deviation 2)."""
        _, means, log_variances = self.bounded_posterior(ops.clip(self.pseudo_inputs, 0.0, 1.0), training=False)
        return means, log_variances

    def log_prior(self, z):
        """``log p_theta(z)`` of ``[B, D]`` codes under the VampPrior (``[B]``)."""
        return vamp_prior_log_density(z, *self.prior_components())

    def forward_terms(self, images, training=False):
        """Everything the loss is made of, for a batch of [0, 1] float images: ``mean``, ``log_variance``,
        ``z`` (one reparameterised sample from ``self.seed_generator``), ``logits`` (the decoder's at ``z``),
        ``prior_means``, ``prior_log_variances`` and the four log-densities ``log_p_x_given_z``, ``log_p_z``,
        ``log_q_z_given_x``, ``log_q_x`` (``[B]`` each)."""
        _, mean, log_variance = self.bounded_posterior(images, training=training)
        z = distributions.sample_gaussian(mean, log_variance, self.seed_generator)
        logits = ops.cast(self.decoder(z, training=training), "float32")
        prior_means, prior_log_variances = self.prior_components()
        log_p_x_given_z = distributions.bernoulli_log_likelihood(logits, ops.cast(images, "float32"))
        log_p_z = vamp_prior_log_density(z, prior_means, prior_log_variances)
        log_q_z_given_x = distributions.gaussian_log_density(z, mean, log_variance)
        log_q_x = decoder_marginal_log_density(log_p_x_given_z, log_p_z, log_q_z_given_x)
        return {"mean": mean, "log_variance": log_variance, "z": z, "logits": logits,
                "prior_means": prior_means, "prior_log_variances": prior_log_variances,
                "log_p_x_given_z": log_p_x_given_z, "log_p_z": log_p_z,
                "log_q_z_given_x": log_q_z_given_x, "log_q_x": log_q_x}

    def _representation_objective(self, images, extra, training):
        t = self.forward_terms(images, training=training)
        loss = a_mim_loss(t["log_p_x_given_z"], t["log_p_z"], t["log_q_z_given_x"], t["log_q_x"])
        terms = {"reconstruction": -ops.mean(t["log_p_x_given_z"]),
                 "log_prior": ops.mean(t["log_p_z"]),
                 "log_posterior": ops.mean(t["log_q_z_given_x"]),
                 "log_marginal": ops.mean(t["log_q_x"]),
                 # monitoring only: no gradient needed through the O(B^2) estimate
                 "mutual_information": batch_mutual_information(*(ops.stop_gradient(t[k])
                                                                 for k in ("z", "mean", "log_variance")))}
        return loss, terms, None

    def get_config(self):
        return {**super().get_config(), "decoder": keras.saving.serialize_keras_object(self.decoder),
                "num_components": self.num_components}


def build(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """``--method=mim``: A-MIM around ``encoder`` with the decoder of its family (uncompiled)."""
    from dim_keras.baselines.decoders import build_decoder

    latent_dim = int(encoder.output["y"].shape[-1])
    decoder = build_decoder(encoder_name, tuple(input_shape), latent_dim)
    return MutualInformationMachine(encoder, decoder, num_components=NUM_COMPONENTS, seed=config.seed,
                                    name="mim")
