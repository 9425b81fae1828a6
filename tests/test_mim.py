"""A-MIM (dim_keras.baselines.mim, Livne et al. 2019): the loss on a tiny case by hand, the model's loss from
its own tensors, one training step, the model.keras round trip and a training property of the paper."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from backend_testing import to_numpy  # noqa: E402
from dim_keras import encoders  # noqa: E402
from dim_keras.baselines import distributions  # noqa: E402
from dim_keras.baselines import mim  # noqa: E402
from dim_keras.baselines.decoders import build_decoder  # noqa: E402

LOG_2PI = math.log(2 * math.pi)


def _np(x):
    return np.asarray(to_numpy(x), dtype=np.float64)


def _tiny_model(num_components=3, seed=1):
    keras.utils.set_random_seed(0)
    encoder = encoders.build_encoder("small", (8, 8, 3), y_dim=8, widths=(8, 8, 8), fc_units=16)
    decoder = build_decoder("small", (8, 8, 3), 8, fc_units=(16,), widths=(8, 8, 8))
    return mim.MutualInformationMachine(encoder, decoder, num_components=num_components, seed=seed)


def _images(n=4, seed=0):
    return np.random.RandomState(seed).uniform(0, 1, (n, 8, 8, 3)).astype("float32")


# ------------------------------------------------------------------------ numpy references
def _np_gauss(z, mean, log_var):
    """log N(z; mean, diag exp(log_var)) over the last axis, written out."""
    return np.sum(-0.5 * (LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var)), axis=-1)


def _np_bernoulli(logits, x):
    """sum x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)), written out."""
    p = 1.0 / (1.0 + np.exp(-logits))
    return np.sum((x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1), axis=-1)


def _np_vamp(z, means, log_vars):
    """log 1/K sum_k N(z; m_k, v_k), as a plain sum of densities (no log-sum-exp)."""
    dens = np.stack([np.exp(_np_gauss(z, means[k], log_vars[k])) for k in range(len(means))], axis=-1)
    return np.log(dens.mean(axis=-1))


def _np_a_mim(x, z, mean, log_var, logits, prior_means, prior_log_vars):
    log_px_z = _np_bernoulli(logits, x)
    log_pz = _np_vamp(z, prior_means, prior_log_vars)
    log_qz_x = _np_gauss(z, mean, log_var)
    log_qx = log_px_z + log_pz - log_qz_x  # q(x): the decoder's marginal, one importance sample
    return -0.5 * np.mean(log_px_z + log_pz + log_qz_x + log_qx), (log_px_z, log_pz, log_qz_x, log_qx)


# ------------------------------------------------------------------------------- the loss
@pytest.mark.backends
def test_the_a_mim_loss_on_a_tiny_case_equals_a_hand_computation():
    # 2 images of 2 pixels, a 1-d latent; every distribution fixed by hand.
    x = np.array([[0.0, 1.0], [0.25, 0.75]])
    mean, log_var = np.array([[0.5], [-1.0]]), np.array([[math.log(0.25)], [0.0]])
    eps = np.array([[1.0], [-0.5]])
    z = mean + np.exp(log_var / 2) * eps  # [[1.0], [-1.5]]
    np.testing.assert_allclose(z, [[1.0], [-1.5]])
    w, b = np.array([2.0, -1.0]), np.array([0.0, 0.5])
    logits = z * w + b  # a linear "decoder": [[2, -0.5], [-3, 2]]
    prior_means, prior_log_vars = np.array([[0.0], [-1.0]]), np.array([[0.0], [math.log(4.0)]])

    # The terms written out per example (image 0): Bernoulli, Gaussian, the 2-component mixture.
    s = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    log_px_z0 = 0 * math.log(s(2)) + 1 * math.log(1 - s(2)) + 1 * math.log(s(-0.5))
    log_qz_x0 = -0.5 * (LOG_2PI + math.log(0.25) + (1.0 - 0.5) ** 2 / 0.25)
    log_pz0 = math.log(0.5 * math.exp(-0.5 * (LOG_2PI + 1.0)) + 0.5 * math.exp(-0.5 * (LOG_2PI + math.log(4) + 4 / 4)))
    expected, (lpxz, lpz, lqzx, lqx) = _np_a_mim(x, z, mean, log_var, logits, prior_means, prior_log_vars)
    np.testing.assert_allclose([lpxz[0], lqzx[0], lpz[0]], [log_px_z0, log_qz_x0, log_pz0], rtol=1e-12)

    f = lambda a: ops.convert_to_tensor(np.asarray(a, "float32"))  # noqa: E731
    got_pxz = distributions.bernoulli_log_likelihood(f(logits), f(x))
    got_pz = mim.vamp_prior_log_density(f(z), f(prior_means), f(prior_log_vars))
    got_qzx = distributions.gaussian_log_density(f(z), f(mean), f(log_var))
    got_qx = mim.decoder_marginal_log_density(got_pxz, got_pz, got_qzx)
    loss = mim.a_mim_loss(got_pxz, got_pz, got_qzx, got_qx)
    for got, want in ((got_pxz, lpxz), (got_pz, lpz), (got_qzx, lqzx), (got_qx, lqx)):
        np.testing.assert_allclose(_np(got), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(_np(loss)), expected, rtol=1e-5, atol=1e-5)
    # With q(x) the decoder's importance-sampled marginal, log q(z|x) cancels: L = -mean[log p(x|z) + log p(z)].
    np.testing.assert_allclose(float(_np(loss)), -np.mean(lpxz + lpz), rtol=1e-5, atol=1e-5)
    # The pure loss takes any four log-densities: -1/2 the batch mean of their sum.
    np.testing.assert_allclose(float(_np(mim.a_mim_loss(f([1, 2]), f([3, 4]), f([5, 6]), f([7, -8])))),
                               -0.5 * (16 + 4) / 2, rtol=1e-6)


@pytest.mark.backends
def test_the_batch_mutual_information_estimate_by_hand():
    z, mean, log_var = np.array([[0.0], [2.0]]), np.array([[0.0], [1.0]]), np.array([[0.0], [math.log(4.0)]])
    q = np.exp([[_np_gauss(z[i], mean[j], log_var[j]) for j in range(2)] for i in range(2)])  # q(z_i | x_j)
    expected = np.mean([math.log(q[i, i] / q[i].mean()) for i in range(2)])
    got = mim.batch_mutual_information(*(ops.convert_to_tensor(a.astype("float32")) for a in (z, mean, log_var)))
    np.testing.assert_allclose(float(_np(got)), expected, rtol=1e-5)
    # Identical posteriors carry no information about which image: the estimate is 0.
    same = mim.batch_mutual_information(*(ops.convert_to_tensor(a.astype("float32"))
                                          for a in (z, np.zeros_like(mean), np.zeros_like(log_var))))
    np.testing.assert_allclose(float(_np(same)), 0.0, atol=1e-6)


# ---------------------------------------------------------------------------- the wiring
@pytest.mark.backends
def test_the_models_loss_is_the_a_mim_loss_of_its_own_tensors():
    model = _tiny_model()
    images = _images()
    state = _np(model.seed_generator.state).astype("uint32")
    loss, terms, _ = model._representation_objective(ops.convert_to_tensor(images), (), training=False)
    model.seed_generator.state.assign(state)
    t = {k: _np(v) for k, v in model.forward_terms(ops.convert_to_tensor(images), training=False).items()}

    # Each intermediate recomputed from the networks themselves, not taken from the model's pass:
    features = model.encoder(images, training=False)
    mean = _np(features["y"])
    log_var = np.clip(_np(model.log_variance_head(features["fc"])), -6.0, 2.0)
    np.testing.assert_allclose(t["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["log_variance"], log_var, rtol=1e-5, atol=1e-6)
    model.seed_generator.state.assign(state)  # the same draw: z is one reparameterised sample
    eps = _np(keras.random.normal(mean.shape, seed=model.seed_generator))
    np.testing.assert_allclose(t["z"], mean + np.exp(log_var / 2) * eps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t["logits"], _np(model.decoder(t["z"].astype("float32"), training=False)),
                               rtol=1e-5, atol=1e-5)
    pseudo = np.clip(_np(model.pseudo_inputs), 0, 1).astype("float32")
    prior_features = model.encoder(pseudo, training=False)
    np.testing.assert_allclose(t["prior_means"], _np(prior_features["y"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["prior_log_variances"],
                               np.clip(_np(model.log_variance_head(prior_features["fc"])), -6.0, 2.0),
                               rtol=1e-5, atol=1e-6)

    expected, (lpxz, lpz, lqzx, lqx) = _np_a_mim(images.astype(np.float64), t["z"], mean, log_var, t["logits"],
                                                 t["prior_means"], t["prior_log_variances"])
    np.testing.assert_allclose(float(_np(loss)), expected, rtol=1e-4)
    np.testing.assert_allclose(float(_np(terms["reconstruction"])), -np.mean(lpxz), rtol=1e-4)
    np.testing.assert_allclose(float(_np(terms["log_prior"])), np.mean(lpz), rtol=1e-4)
    np.testing.assert_allclose(float(_np(terms["log_posterior"])), np.mean(lqzx), rtol=1e-4)
    np.testing.assert_allclose(float(_np(terms["log_marginal"])), np.mean(lqx), rtol=1e-4)
    # The y the encoder exports is the posterior mean.
    np.testing.assert_allclose(_np(model(images)["y"]), mean, rtol=1e-6)


# -------------------------------------------------------------------------------- training
@pytest.mark.backends
def test_one_training_step_moves_the_encoder_decoder_and_prior_and_nothing_else():
    model = _tiny_model()
    model.compile()
    images = (_images(4) * 255).astype("uint8")
    trainable = model.trainable_variables
    before = {id(v): _np(v).copy() for v in model.variables}
    logs = model.train_on_batch(images, return_dict=True)
    assert set(logs) == {"loss", *mim.MutualInformationMachine.TERMS} and np.isfinite(logs["loss"])
    moved = {id(v) for v in model.variables if np.abs(_np(v) - before[id(v)]).max() > 0}
    groups = {"encoder": model.encoder.trainable_variables,
              "log-variance head": model.log_variance_head.trainable_variables,
              "decoder": model.decoder.trainable_variables,
              "prior's pseudo-images": [model.pseudo_inputs]}
    for name, variables in groups.items():
        assert variables and all(id(v) in moved for v in variables), name
    # Those groups are every trainable variable, and nothing else trainable exists to move.
    assert sorted(id(v) for vs in groups.values() for v in vs) == sorted(id(v) for v in trainable)
    # Non-trainable: only the batch-norm moving statistics (of the encoder and decoder, from the batch) and the
    # seed generator (one posterior draw) change.
    other = [v for v in model.variables if id(v) in moved and id(v) not in {id(w) for w in trainable}]
    assert other and all(v.path.endswith(("moving_mean", "moving_variance", "seed_generator_state"))
                         for v in other), [v.path for v in other]
    assert int(_np(model.optimizer.iterations)) == 1
    assert model.discriminator_variables == []


def test_model_keras_round_trip(tmp_path):
    model = _tiny_model()
    model.compile()
    images = _images(4)
    model.train_on_batch(images)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, mim.MutualInformationMachine) and restored.num_components == 3
    state = _np(model.seed_generator.state).astype("uint32")
    losses = []
    for m in (model, restored):
        m.seed_generator.state.assign(state)
        loss, _, _ = m._representation_objective(ops.convert_to_tensor(images), (), training=False)
        losses.append(float(_np(loss)))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    np.testing.assert_allclose(_np(restored.pseudo_inputs), _np(model.pseudo_inputs))
    np.testing.assert_allclose(_np(restored.reconstruct(images)), _np(model.reconstruct(images)), rtol=1e-5, atol=1e-6)
    assert int(_np(restored.optimizer.iterations)) == 1


@pytest.mark.backends
def test_thirty_steps_lower_the_loss_and_sharpen_the_posteriors():
    """The paper's contrast with VAEs: A-MIM has no entropy bonus for q(z|x) (the log q(z|x) terms cancel), so
    on a fixed batch training lowers the loss, raises the learned prior's log-density of the codes, and shrinks
    the posterior variances (a VAE's -ELBO rewards their entropy instead)."""
    model = _tiny_model(num_components=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images = _images(8, seed=3)
    state = _np(model.seed_generator.state).astype("uint32")

    def evaluate():
        model.seed_generator.state.assign(state)
        t = model.forward_terms(ops.convert_to_tensor(images), training=True)
        loss = mim.a_mim_loss(t["log_p_x_given_z"], t["log_p_z"], t["log_q_z_given_x"], t["log_q_x"])
        return float(_np(loss)), float(np.mean(_np(t["log_variance"]))), float(np.mean(_np(t["log_p_z"])))

    loss0, log_var0, log_pz0 = evaluate()
    for _ in range(30):
        model.train_on_batch(images)
    loss1, log_var1, log_pz1 = evaluate()
    assert loss1 < loss0 - 1.0, (loss0, loss1)
    assert log_var1 < log_var0 - 0.5, (log_var0, log_var1)
    assert log_pz1 > log_pz0 + 1.0, (log_pz0, log_pz1)


def test_build_gives_the_recipe_model_and_checks_its_decoder():
    from dim_keras.config import TrainConfig

    encoder = encoders.build_encoder("small", (8, 8, 3), y_dim=8, widths=(8, 8, 8), fc_units=16)
    model = mim.build(TrainConfig(method="mim", y_dim=8, seed=5), encoder, "small", (8, 8, 3))
    assert model.num_components == mim.NUM_COMPONENTS == 500 and model.seed == 5
    assert tuple(model.pseudo_inputs.shape) == (500, 8, 8, 3) and not model.compiled
    wrong = build_decoder("small", (16, 16, 3), 8, fc_units=(16,), widths=(8, 8, 8))
    with pytest.raises(ValueError, match="the decoder maps"):
        mim.MutualInformationMachine(encoder, wrong)
