"""The adversarial auto-encoder and BiGAN of dim_keras.baselines (issue 15): each step moves exactly its own
variables, the losses are the papers' formulas on known logits, BiGAN's discriminator sees (x, E(x)) and
(G(z), z) pairs only, and both models round-trip through a .keras file.

Tests marked ``backends`` also run on JAX (``KERAS_BACKEND=jax python -m pytest -m backends``)."""
import math

import keras
import numpy as np
import pytest

from backend_testing import to_numpy
from dim_keras.baselines.aae import AdversarialAutoEncoder
from dim_keras.baselines.aae import build as build_aae
from dim_keras.baselines.bigan import BiGAN, JointDiscriminator, discriminator_widths
from dim_keras.baselines.bigan import build as build_bigan
from dim_keras.baselines.decoders import build_decoder
from dim_keras.config import TrainConfig
from dim_keras.encoders import build_encoder

SHAPE, LATENT, SEED = (8, 8, 3), 8, 5


def tiny_encoder():
    return build_encoder("small", SHAPE, y_dim=LATENT, widths=(8, 8, 8), fc_units=16)


def tiny_decoder(name="decoder"):
    return build_decoder("small", SHAPE, LATENT, fc_units=(16,), widths=(8, 8, 8), name=name)


def tiny_model(method, **kwargs):
    if method == "aae":
        return AdversarialAutoEncoder(tiny_encoder(), tiny_decoder(), discriminator_units=(16, 8), seed=SEED,
                                      **kwargs)
    return BiGAN(tiny_encoder(), tiny_decoder("generator"), discriminator_widths=(8, 8), discriminator_x_units=16,
                 discriminator_z_units=16, discriminator_joint_units=(16,), seed=SEED, **kwargs)


def images(n=6, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE)).astype(np.float32)


def softplus(x):
    return np.logaddexp(0.0, x)


def _snapshot(variables):
    return [to_numpy(v).copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, to_numpy(v)) for b, v in zip(before, variables)]


def _first_prior_draw(batch):
    """What the model's first prior draw is: a N(0, I) sample from a fresh SeedGenerator(SEED)."""
    return to_numpy(keras.random.normal((batch, LATENT), seed=keras.random.SeedGenerator(SEED)))


@pytest.mark.backends
@pytest.mark.parametrize("method", ["aae", "bigan"])
def test_each_update_moves_exactly_its_own_variables(method):
    """Representation lr 0: only D moves; D's lr 0: only E (+ decoder / G) move; both on: all move; one step
    of each optimizer either way (the separation test of DIM's prior, tests/test_models.py)."""
    x = images()
    for rep_lr, d_lr in ((0.0, 0.1), (0.1, 0.0), (0.1, 0.1)):
        model = tiny_model(method)
        model.compile(optimizer=keras.optimizers.SGD(rep_lr), discriminator_optimizer=keras.optimizers.SGD(d_lr))
        rep, disc = model.representation_variables, model.discriminator_variables
        assert disc and not {id(v) for v in rep} & {id(v) for v in disc}
        assert {id(v) for v in rep} | {id(v) for v in disc} == {id(v) for v in model.trainable_variables}
        # E and the decoder (AAE) / generator (BiGAN) are the representation's, D is not.
        assert {id(v) for v in model.encoder.trainable_variables + model.decoder.trainable_variables} == \
            {id(v) for v in rep}
        rep_before, disc_before = _snapshot(rep), _snapshot(disc)
        model.train_on_batch(x)
        assert _changed(rep_before, rep) == [rep_lr > 0] * len(rep), (rep_lr, d_lr)
        assert _changed(disc_before, disc) == [d_lr > 0] * len(disc), (rep_lr, d_lr)
        assert int(to_numpy(model.representation_optimizer().iterations)) == 1
        assert int(to_numpy(model.discriminator_optimizer.iterations)) == 1


@pytest.mark.backends
def test_aae_losses_on_hand_set_logits_are_the_non_saturating_formulas():
    """With D's logit layer set to the constant b, the encoder's prior loss is -log sigmoid(b) = softplus(-b),
    D's loss softplus(-b) + softplus(b), and D is right on exactly the prior samples (accuracy 1/2); the
    reconstruction is the Bernoulli NLL of the decoder's logits, summed per image, averaged over the batch;
    the loss is that NLL per pixel plus the weighted prior loss."""
    x = images()
    for b, weight in ((0.3, 1.0), (-0.7, 0.25)):
        model = tiny_model("aae", adversarial_weight=weight)
        logit = model.discriminator.logit
        logit.kernel.assign(np.zeros(logit.kernel.shape, "float32"))
        logit.bias.assign(np.array([b], "float32"))
        loss, terms, aux = model._representation_objective(x, (), training=False)
        d_loss, d_terms = model._discriminator_objective(aux, training=False)
        assert math.isclose(float(to_numpy(terms["prior_loss"])), math.log1p(math.exp(-b)), rel_tol=1e-6)
        assert math.isclose(float(to_numpy(d_loss)), math.log1p(math.exp(-b)) + math.log1p(math.exp(b)),
                            rel_tol=1e-6)
        assert float(to_numpy(d_terms["discriminator_accuracy"])) == 0.5
        # the code is the encoder's linear y (Gaussian prior: no squashing), gradient stopped
        y = to_numpy(model.encoder(x, training=False)["y"])
        np.testing.assert_allclose(to_numpy(aux), y, rtol=1e-6, atol=1e-6)
        logits = to_numpy(model.decoder(y, training=False)).astype(np.float64)
        nll = np.mean(np.sum(x * softplus(-logits) + (1 - x) * softplus(logits), axis=(1, 2, 3)))
        assert math.isclose(float(to_numpy(terms["reconstruction"])), nll, rel_tol=1e-5)
        # the loss weighs the reconstruction per pixel (the authors' balance; aae.py's docstring)
        assert math.isclose(float(to_numpy(loss)), nll / x[0].size + weight * math.log1p(math.exp(-b)), rel_tol=1e-5)


@pytest.mark.backends
def test_aae_discriminator_objective_is_dim_priors_on_prior_samples_against_the_codes():
    """With its own (random) weights, D's loss and accuracy are eq. 7's on the model's first N(0, I) draw
    (real) against the encoder's codes (fake), computed here from D's outputs by hand."""
    x = images()
    model = tiny_model("aae")
    loss, terms, aux = model._representation_objective(x, (), training=False)
    d_loss, d_terms = model._discriminator_objective(aux, training=False)
    real = _first_prior_draw(len(x))
    real_logits = to_numpy(model.discriminator(real)).astype(np.float64)
    fake_logits = to_numpy(model.discriminator(to_numpy(model.encoder(x)["y"]))).astype(np.float64)
    assert math.isclose(float(to_numpy(terms["prior_loss"])), np.mean(softplus(-fake_logits)), rel_tol=1e-5)
    assert math.isclose(float(to_numpy(d_loss)), np.mean(softplus(-real_logits)) + np.mean(softplus(fake_logits)),
                        rel_tol=1e-5)
    accuracy = (np.sum(real_logits > 0) + np.sum(fake_logits <= 0)) / (2 * len(x))
    assert float(to_numpy(d_terms["discriminator_accuracy"])) == pytest.approx(accuracy, abs=1e-7)


def _recording(discriminator, calls):
    """Makes ``discriminator`` append the NumPy ``(x, z)`` of every call to ``calls``."""
    call = discriminator.call

    def recorded(inputs, *args, **kwargs):
        calls.append(tuple(to_numpy(t).astype(np.float64) for t in inputs))
        return call(inputs, *args, **kwargs)

    object.__setattr__(discriminator, "call", recorded)


@pytest.mark.backends
def test_bigan_discriminator_sees_x_with_e_of_x_and_g_of_z_with_z_only():
    """The must-show of issue 15: in both objectives D is called exactly twice, on (x, E(x)) and on (G(z), z),
    z the model's first N(0, I) draw: no (x, z), (G(z), E(x)) or any other pairing reaches it.  The losses are
    D's cross-entropy (pairs labelled 1, 0) and E/G's with the labels flipped, on D's logits of those pairs."""
    x = images()
    model = tiny_model("bigan")
    calls = []
    _recording(model.discriminator, calls)
    loss, terms, pairs = model._representation_objective(x, (), training=True)
    d_loss, d_terms = model._discriminator_objective(pairs, training=True)
    del model.discriminator.call  # back to the class's call
    z = _first_prior_draw(len(x))
    e_of_x = to_numpy(model.encoder(x, training=True)["y"])  # batch statistics: the same batch, the same output
    g_of_z = to_numpy(keras.ops.sigmoid(model.decoder(z, training=True)))
    expected = [(x, e_of_x), (g_of_z, z)] * 2  # representation objective, then discriminator objective
    assert len(calls) == 4
    for (seen_x, seen_z), (want_x, want_z) in zip(calls, expected):
        np.testing.assert_allclose(seen_x, want_x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen_z, want_z, rtol=1e-5, atol=1e-6)
    # aux is those very pairs (stop-gradient copies), so D's update recomputes on nothing else
    for got, want in zip([t for pair in pairs for t in pair], [x, e_of_x, g_of_z, z]):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6)
    real = to_numpy(model.discriminator((x, e_of_x))).astype(np.float64)
    fake = to_numpy(model.discriminator((g_of_z, z))).astype(np.float64)
    assert not np.allclose(real, fake)  # so a swapped label would show
    flipped = np.mean(softplus(real)) + np.mean(softplus(-fake))  # (x, E(x)) labelled 0, (G(z), z) labelled 1
    assert math.isclose(float(to_numpy(loss)), flipped, rel_tol=1e-5)
    assert math.isclose(float(to_numpy(terms["generator_loss"])), flipped, rel_tol=1e-5)
    assert math.isclose(float(to_numpy(d_loss)), np.mean(softplus(-real)) + np.mean(softplus(fake)), rel_tol=1e-5)
    accuracy = (np.sum(real > 0) + np.sum(fake <= 0)) / (2 * len(x))
    assert float(to_numpy(d_terms["discriminator_accuracy"])) == pytest.approx(accuracy, abs=1e-7)


def test_the_discriminator_updates_see_stop_gradient_inputs():
    """D's loss has no gradient path into E or the decoder / G: their aux is stop-gradient'ed."""
    import tensorflow as tf

    x = images()
    for method in ("aae", "bigan"):
        model = tiny_model(method)
        with tf.GradientTape() as tape:
            _, _, aux = model._representation_objective(x, (), training=True)
            d_loss, _ = model._discriminator_objective(aux, training=True)
        grads = tape.gradient(d_loss, model.representation_variables + model.discriminator_variables)
        rep = len(model.representation_variables)
        assert all(g is None for g in grads[:rep]), method
        assert all(g is not None for g in grads[rep:]), method


@pytest.mark.backends
@pytest.mark.parametrize("method", ["aae", "bigan"])
def test_keras_file_round_trip(tmp_path, method):
    model = tiny_model(method)
    model.compile()
    model.fit(images(8), batch_size=4, epochs=1, verbose=0)
    path = tmp_path / f"{method}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    config, restored_config = model.get_config(), restored.get_config()
    for key in set(config) - {"encoder", "decoder"}:
        assert restored_config[key] == config[key], key
    assert len(restored.weights) == len(model.weights)
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    for optimizer in ("representation_optimizer", "discriminator_optimizer"):
        get = (lambda m: m.representation_optimizer()) if optimizer == "representation_optimizer" else \
            (lambda m: m.discriminator_optimizer)
        assert int(to_numpy(get(restored).iterations)) == int(to_numpy(get(model).iterations)) == 2
        for a, b in zip(get(restored).variables, get(model).variables):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    x = images(4, seed=3)
    np.testing.assert_allclose(to_numpy(restored(x)["y"]), to_numpy(model(x)["y"]), atol=1e-6)
    restored.fit(images(8), batch_size=4, epochs=1, verbose=0)  # trains on


def test_build_from_the_training_config_mirrors_the_encoder_family():
    encoder = build_encoder("small", SHAPE, y_dim=LATENT)
    aae = build_aae(TrainConfig(method="aae", y_dim=LATENT, seed=7), encoder, "small", SHAPE)
    assert isinstance(aae, AdversarialAutoEncoder) and aae.seed == 7 and aae.prior == "gaussian"
    assert aae.adversarial_weight == 1.0 and aae.discriminator_units == (1000, 200)  # DIM's Table 10
    assert aae.decoder.output_shape == (None, *SHAPE) and aae.decoder.input_shape == (None, LATENT)
    bigan = build_bigan(TrainConfig(method="bigan", y_dim=LATENT, seed=7), build_encoder("small", SHAPE, y_dim=LATENT),
                        "small", SHAPE)
    assert isinstance(bigan, BiGAN) and bigan.seed == 7 and isinstance(bigan.discriminator, JointDiscriminator)
    # the small family's convolutions are 32-64-128; an 8-pixel image has room for two stride-2 steps
    assert bigan.discriminator.conv_widths == (32, 64)
    assert discriminator_widths("small", (28, 28, 3)) == (32, 64, 128)
    assert discriminator_widths("dcgan", (32, 32, 3)) == (64, 128, 256)
