"""The VAE, beta-VAE and AE of dim_keras.baselines.vae (issue 15): the ELBO against the closed form of a
linear-Gaussian model (the issue's "VAE's ELBO on a linear-Gaussian toy equals the analytic log-likelihood
bound"), the Bernoulli term by hand, beta's weighting, one training step, the .keras round trip, and a short
run that learns."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from keras import layers  # noqa: E402

from backend_testing import to_numpy  # noqa: E402
from dim_keras import encoders  # noqa: E402
from dim_keras.baselines import distributions  # noqa: E402
from dim_keras.baselines.decoders import build_decoder  # noqa: E402
from dim_keras.baselines.vae import (AutoEncoder, VariationalAutoEncoder, build, negative_elbo,  # noqa: E402
                                     reconstruction_nll)

SHAPE = (8, 8, 3)


def _np(x):
    return np.asarray(to_numpy(x))


def _tiny(kind="vae", beta=1.0, seed=3):
    keras.utils.set_random_seed(0)
    encoder = encoders.build_encoder("small", SHAPE, y_dim=8, widths=(8, 8, 8), fc_units=16)
    decoder = build_decoder("small", SHAPE, 8, fc_units=(16,), widths=(8, 8, 8))
    if kind == "ae":
        return AutoEncoder(encoder, decoder, seed=seed)
    return VariationalAutoEncoder(encoder, decoder, beta=beta, seed=seed)


def _images(n=4, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n,) + SHAPE).astype("uint8")


# ------------------------------------------------------------------------ the linear-Gaussian toy
# p(z) = N(0, I_2), p(x|z) = N(W z + b, s2 I_3).  Then p(x) = N(b, W W^T + s2 I) and the posterior is
# N(A (x - b), S) with S = (I + W^T W / s2)^-1, A = S W^T / s2.  W has orthogonal columns, so S is diagonal
# and the VAE's diagonal Gaussian q can equal the true posterior exactly.
Q = np.linalg.qr(np.random.RandomState(7).normal(size=(3, 2)))[0]
W = Q @ np.diag([1.5, 0.6])
B = np.array([0.2, -0.4, 0.1])
S2 = 0.25
S = np.linalg.inv(np.eye(2) + W.T @ W / S2)
A = S @ W.T / S2
X = np.array([0.3, -0.7, 1.1])


def _log_marginal(x):
    """log N(x; b, W W^T + s2 I), the exact log-likelihood."""
    cov = W @ W.T + S2 * np.eye(3)
    diff = x - B
    return -0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + diff @ np.linalg.solve(cov, diff))


def _posterior(x):
    return A @ (x - B), np.diag(S).copy()


def _kl_diagonal(m_q, v_q, m_p, v_p):
    """KL(N(m_q, diag v_q) || N(m_p, diag v_p))."""
    return 0.5 * np.sum(v_q / v_p + (m_p - m_q) ** 2 / v_p - 1.0 + np.log(v_p) - np.log(v_q))


# q(z|x): the true posterior, and one off it in mean and variance (its ELBO is KL(q || posterior) lower).
CASES = {"q is the posterior": (0.0, 0.0), "q is off the posterior": (0.4, 0.7)}


@pytest.mark.backends
@pytest.mark.parametrize("case", CASES)
def test_negative_elbo_on_a_linear_gaussian_toy_is_the_closed_form_bound_exactly(case):
    """The ELBO's identity log p(x) - KL(q(z|x) || p(z|x)), exactly: ``negative_elbo`` on the 2K sigma points
    m +- sqrt(K v_i) e_i of q (their average of the quadratic log p(x|z) is its expectation under q), so no
    Monte-Carlo error; a wrong KL sign, 1/2, log 2 pi or variance factor is off by at least 0.1 nats."""
    shift, log_scale = CASES[case]
    m_post, v_post = _posterior(X)
    m_q, v_q = m_post + shift, v_post * math.exp(log_scale)
    k = 2
    offsets = np.concatenate([np.diag(np.sqrt(k * v_q)), -np.diag(np.sqrt(k * v_q))])  # [2K, K]
    z = m_q + offsets
    decoder_output = (z @ W.T + B).astype("float32")
    batch = len(z)
    images = np.tile(X, (batch, 1)).astype("float32")
    mean = np.tile(m_q, (batch, 1)).astype("float32")
    log_variance = np.tile(np.log(v_q), (batch, 1)).astype("float32")
    loss, terms = negative_elbo(images, decoder_output, mean, log_variance, beta=1.0, likelihood="gaussian",
                                observation_log_variance=math.log(S2))
    bound = _log_marginal(X) - _kl_diagonal(m_q, v_q, m_post, v_post)
    np.testing.assert_allclose(-float(_np(loss)), bound, rtol=0, atol=2e-5)
    np.testing.assert_allclose(float(_np(terms["elbo"])), bound, rtol=0, atol=2e-5)
    np.testing.assert_allclose(float(_np(terms["kl"])), _kl_diagonal(m_q, v_q, np.zeros(2), np.ones(2)), atol=1e-5)
    if case == "q is the posterior":
        np.testing.assert_allclose(-float(_np(loss)), _log_marginal(X), atol=2e-5)
    else:
        assert _kl_diagonal(m_q, v_q, m_post, v_post) > 0.3  # the off-posterior case really is off


def _linear_gaussian_vae(log_variance_offset=0.0, mean_offset=0.0):
    """A VAE whose encoder, log-variance head and decoder are the linear maps of the toy, set by hand."""
    inputs = keras.Input((3,), name="x")
    fc = layers.Identity(name="fc")(inputs)
    y = layers.Dense(2, name="y")(fc)
    encoder = keras.Model(inputs, {"local": fc, "conv": fc, "fc": fc, "y": y})
    latent = keras.Input((2,), name="latent")
    decoder = keras.Model(latent, layers.Dense(3, name="linear")(latent))
    model = VariationalAutoEncoder(encoder, decoder, likelihood="gaussian", observation_log_variance=math.log(S2),
                                   seed=11)
    encoder.get_layer("y").set_weights([A.T, -A @ B + mean_offset])
    model.log_variance_head.set_weights([np.zeros((3, 2)), np.log(np.diag(S)) + log_variance_offset])
    decoder.get_layer("linear").set_weights([W.T, B])
    return model


@pytest.mark.backends
@pytest.mark.parametrize("case", CASES)
def test_the_models_elbo_on_the_linear_gaussian_toy_is_the_analytic_bound(case):
    """The model's own path (encoder -> posterior head -> reparameterised sample from its seed generator ->
    decoder -> likelihood): its per-image ELBO, averaged over 100000 samples, is log p(x) when q is the true
    posterior and log p(x) - KL(q || p(z|x)) when not, to 4 standard errors (each under 0.01 nats)."""
    shift, log_scale = CASES[case]
    model = _linear_gaussian_vae(log_variance_offset=log_scale, mean_offset=shift)
    m_post, v_post = _posterior(X)
    bound = _log_marginal(X) - _kl_diagonal(m_post + shift, v_post * math.exp(log_scale), m_post, v_post)
    elbos = _np(model.elbo(np.tile(X, (100000, 1)).astype("float32"))).astype(np.float64)
    error = elbos.std() / math.sqrt(len(elbos))
    assert error < 0.01
    assert abs(elbos.mean() - bound) < 4 * error, (elbos.mean(), bound, error)
    # The reconstruction is the decoder's mean at the posterior mean: W A (x - b) + b (the Gaussian likelihood).
    np.testing.assert_allclose(_np(model.reconstruct(X[None].astype("float32")))[0], W @ (m_post + shift) + B,
                               atol=1e-5)


@pytest.mark.backends
def test_the_bernoulli_reconstruction_term_by_hand():
    # logits 0: every pixel costs log 2 whatever its intensity; logit log 3 is p = 0.75.
    images = np.array([[0.0, 1.0, 0.25], [1.0, 0.5, 0.0]], dtype="float32")
    np.testing.assert_allclose(_np(reconstruction_nll(images, np.zeros((2, 3), "float32"))), [3 * math.log(2)] * 2,
                               rtol=1e-6)
    logits = np.full((2, 3), math.log(3.0), dtype="float32")
    by_hand = [-(math.log(0.25) + math.log(0.75) + 0.25 * math.log(0.75) + 0.75 * math.log(0.25)),
               -(math.log(0.75) + 0.5 * math.log(0.75) + 0.5 * math.log(0.25) + math.log(0.25))]
    np.testing.assert_allclose(_np(reconstruction_nll(images, logits)), by_hand, rtol=1e-6)


@pytest.mark.backends
def test_the_models_loss_is_negative_elbo_of_its_own_sample():
    """The model's training objective is ``negative_elbo`` (Bernoulli) of its posterior and of the decoder on
    ``sample_gaussian(mean, log_variance, model.seed_generator)``: replayed from the same seed state."""
    model = _tiny(beta=2.0)
    images = _images().astype("float32") / 255
    state = _np(model.seed_generator.state)
    loss, terms, _ = model._representation_objective(images, (), training=False)
    model.seed_generator.state.assign(state)
    _, mean, log_variance = model.posterior(images)
    z = distributions.sample_gaussian(mean, log_variance, model.seed_generator)
    expected, expected_terms = negative_elbo(images, model.decoder(z), mean, log_variance, beta=2.0)
    np.testing.assert_allclose(float(_np(loss)), float(_np(expected)), rtol=1e-6)
    for name in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(float(_np(terms[name])), float(_np(expected_terms[name])), rtol=1e-6)
    # a different seed state gives a different sample, so the replay above is what made them equal
    loss_again, _, _ = model._representation_objective(images, (), training=False)
    assert float(_np(loss_again)) != float(_np(loss))


@pytest.mark.backends
def test_beta_scales_exactly_the_kl_term():
    model = _tiny(beta=1.0)
    # a posterior far from the prior (log-variances near 1), so that the KL term weighs a few nats
    kernel, bias = model.log_variance_head.get_weights()
    model.log_variance_head.set_weights([kernel, bias + 1.0])
    images = _images().astype("float32") / 255
    state = _np(model.seed_generator.state)
    loss1, terms1, _ = model._representation_objective(images, (), training=False)
    model.seed_generator.state.assign(state)
    model.beta = 4.0
    loss4, terms4, _ = model._representation_objective(images, (), training=False)
    kl, reconstruction = float(_np(terms1["kl"])), float(_np(terms1["reconstruction"]))
    assert kl > 1.0
    np.testing.assert_allclose(float(_np(terms4["kl"])), kl, rtol=1e-6)
    np.testing.assert_allclose(float(_np(terms4["reconstruction"])), reconstruction, rtol=1e-6)
    np.testing.assert_allclose(float(_np(loss1)), reconstruction + kl, rtol=1e-6)
    np.testing.assert_allclose(float(_np(loss4)) - float(_np(loss1)), 3 * kl, rtol=1e-4)
    # the logged ELBO is the bound itself, the same for every beta
    np.testing.assert_allclose(float(_np(terms4["elbo"])), -(reconstruction + kl), rtol=1e-6)


@pytest.mark.backends
def test_the_autoencoder_is_deterministic_reconstruction_of_its_code():
    """AE: z = y, loss = the Bernoulli reconstruction of decoder(y) alone; no sample, so no seed moves."""
    model = _tiny("ae")
    images = _images().astype("float32") / 255
    state = _np(model.seed_generator.state)
    loss, terms, _ = model._representation_objective(images, (), training=False)
    logits = model.decoder(model.encoder(images)["y"])
    np.testing.assert_allclose(float(_np(loss)), float(np.mean(_np(reconstruction_nll(images, logits)))), rtol=1e-6)
    assert set(terms) == {"reconstruction"}
    np.testing.assert_array_equal(_np(model.seed_generator.state), state)
    np.testing.assert_allclose(_np(model.reconstruct(images)), _np(keras.ops.sigmoid(logits)), rtol=1e-6)


def test_build_maps_each_method_to_its_model():
    from dim_keras.config import TrainConfig

    encoder = encoders.build_encoder("small", SHAPE, y_dim=8, widths=(8, 8, 8), fc_units=16)
    vae = build(TrainConfig(method="vae", y_dim=8), encoder, "small", SHAPE)
    beta_vae = build(TrainConfig(method="beta_vae", vae_beta=2.5, y_dim=8), encoder, "small", SHAPE)
    ae = build(TrainConfig(method="ae", y_dim=8), encoder, "small", SHAPE)
    assert type(vae) is VariationalAutoEncoder and vae.beta == 1.0 and vae.likelihood == "bernoulli"
    assert type(beta_vae) is VariationalAutoEncoder and beta_vae.beta == 2.5
    assert type(ae) is AutoEncoder and ae.log_variance_head is None
    assert tuple(vae.decoder.output_shape[1:]) == SHAPE and vae.decoder.input_shape[1:] == (8,)


# ------------------------------------------------------------------------------------- training
@pytest.mark.backends
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_one_training_step_moves_the_encoder_posterior_head_and_decoder_and_nothing_else(kind):
    model = _tiny(kind)
    model.compile()
    groups = {"encoder": model.encoder.trainable_variables, "decoder": model.decoder.trainable_variables}
    if kind == "vae":
        groups["log-variance head"] = model.log_variance_head.trainable_variables
    else:
        assert model.log_variance_head is None
    owned = [id(v) for variables in groups.values() for v in variables]
    assert sorted(owned) == sorted(id(v) for v in model.trainable_variables)  # no other variable exists
    before = {id(v): _np(v).copy() for v in model.trainable_variables}
    logs = model.train_on_batch(_images(), return_dict=True)
    assert set(logs) == ({"loss", "reconstruction", "kl", "elbo"} if kind == "vae" else {"loss", "reconstruction"})
    for name, variables in groups.items():
        assert variables and all(np.abs(_np(v) - before[id(v)]).max() > 0 for v in variables), name
    assert int(_np(model.optimizer.iterations)) == 1


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_a_short_run_on_a_learnable_set_reduces_the_reconstruction(kind):
    """64 images, each one of 4 fixed binary patterns; 30 Adam steps (lr 1e-2).  A decoder that ignores its
    code can at best output each pixel's mean over the set, costing the summed Bernoulli entropies of those
    means (about 104 nats here); the trained model's reconstruction term (logged per step) falls below that,
    so its code carries which pattern an image is (and far below its start, about 192 log 2 = 133 nats)."""
    model = _tiny(kind)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    patterns = np.random.RandomState(1).randint(0, 2, (4,) + SHAPE).astype("float32")
    images = patterns[np.arange(64) % 4]
    means = np.clip(images.mean(axis=0, dtype=np.float64), 1e-12, 1 - 1e-12)
    without_code = float(np.sum(-(means * np.log(means) + (1 - means) * np.log(1 - means))))
    history = []
    for _ in range(30):
        model.reset_metrics()
        history.append(float(model.train_on_batch(images, return_dict=True)["reconstruction"]))
    assert history[0] > without_code + 20  # it starts above the code-free optimum ...
    assert history[-1] < without_code - 15, (without_code, history)  # ... and ends well below it


# --------------------------------------------------------------------------------- saving
@pytest.mark.backends
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_model_keras_round_trip(tmp_path, kind):
    import dim_keras

    model = _tiny(kind, beta=2.0)
    model.compile()
    model.train_on_batch(_images(), return_dict=True)  # optimizer state, moved seed and batch-norm statistics
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = dim_keras.load_model(path)
    assert type(loaded) is type(model)
    nested = ("encoder", "decoder")
    assert ({k: v for k, v in loaded.get_config().items() if k not in nested}
            == {k: v for k, v in model.get_config().items() if k not in nested})
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for a, b in zip(loaded.weights, model.weights):  # the trained weights and batch-norm statistics
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=a.path)
    assert loaded.compiled and int(_np(loaded.optimizer.iterations)) == 1
    # Keras's .keras format does not store a SeedGenerator's state (the step's draws restart from the seed):
    # give the reloaded model the same state, so both draw the same posterior sample.
    loaded.seed_generator.state.assign(_np(model.seed_generator.state))
    images = _images(seed=2).astype("float32") / 255
    expected, _, _ = model._representation_objective(images, (), training=False)
    got, _, _ = loaded._representation_objective(images, (), training=False)
    np.testing.assert_allclose(float(_np(got)), float(_np(expected)), rtol=1e-6)


def test_a_term_without_a_tracker_is_an_error_not_silently_dropped():
    model = _tiny("ae")
    images = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    loss, terms, aux = model._representation_objective(images, (), training=False)
    model._update_trackers(loss, terms)  # every term the model computes has a tracker
    with pytest.raises(ValueError, match="AutoEncoder has no tracker for mystery"):
        model._update_trackers(loss, dict(terms, mystery=loss))
