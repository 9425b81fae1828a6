"""The DeepInfoMax model: eq. 8 objective, separate updates, Keras integration.

Tests marked ``backends`` run on TensorFlow and on JAX (CI's second leg, ``KERAS_BACKEND=jax``);
the others use TensorFlow itself (tapes, tf.data, tf.distribute)."""
import numpy as np
import pytest
import tensorflow as tf
import keras

import dim_keras as dk
from dim_keras import estimators


def tiny_encoder(size=16, y_dim=8):
    return dk.build_encoder("dcgan", (size, size, 3), y_dim=y_dim,
                            widths=(8, 16, 16), fc_units=32)


def tiny_model(**kwargs):
    kwargs.setdefault("embedding_dim", 16)
    return dk.DeepInfoMax(tiny_encoder(), **kwargs)


def images(n=8, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


@pytest.mark.backends
def test_prior_discriminator_step_leaves_encoder_unchanged_and_vice_versa():
    x = images()
    # Encoder optimizer frozen (lr 0): only the discriminator update can move anything.
    model = tiny_model(alpha=0.5, beta=1.0, gamma=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  discriminator_optimizer=keras.optimizers.SGD(0.1))
    enc, disc = model.representation_variables, model.prior_discriminator.trainable_variables
    assert not {id(v) for v in enc} & {id(v) for v in disc}
    enc_before, disc_before = _snapshot(enc), _snapshot(disc)
    model.train_on_batch(x)
    assert not any(_changed(enc_before, enc))
    assert all(_changed(disc_before, disc))
    # Discriminator frozen: the encoder's (MI + prior) update moves the encoder and
    # critics but never the discriminator, though the prior loss flows through it.
    model = tiny_model(alpha=0.5, beta=1.0, gamma=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  discriminator_optimizer=keras.optimizers.SGD(0.0))
    enc, disc = model.representation_variables, model.prior_discriminator.trainable_variables
    enc_before, disc_before = _snapshot(enc), _snapshot(disc)
    model.train_on_batch(x)
    assert not any(_changed(disc_before, disc))
    assert sum(_changed(enc_before, enc)) >= len(enc) - 2


def test_discriminator_sees_stop_gradient_y():
    model = tiny_model(gamma=1.0)
    model.compile()
    x = images()
    with tf.GradientTape() as tape:
        features = model.encoder(x, training=True)
        _, _, prior_y = model._representation_loss(features, training=True)
        d_loss, _ = model._discriminator_loss(prior_y)
    grads = tape.gradient(d_loss, model.encoder.trainable_variables)
    assert all(g is None for g in grads)


@pytest.mark.backends
def test_objective_is_eq8_weighted_sum():
    model = tiny_model(alpha=0.3, beta=0.7, gamma=0.2, estimator="dv")
    model.compile()
    x = images()
    features = model.encoder(x, training=False)
    loss, terms, _ = model._representation_loss(features, training=False)
    expected = -0.3 * terms["global_mi"] - 0.7 * terms["local_mi"] + 0.2 * terms["prior_loss"]
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)
    # The local term is the estimator on the full [B, B, M*M] local score tensor.
    scores = model.local_critic(features["y"], features["local"], training=False)
    assert scores.shape == (8, 8, 4 * 4)
    assert float(terms["local_mi"]) == pytest.approx(float(estimators.dv_lower_bound(scores)), abs=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize("estimator,jit", [("jsd", True), ("infonce", True), ("dv", False), ("nwj", False)])
def test_fit_reports_every_term(estimator, jit):
    if keras.backend.backend() == "jax":
        jit = True  # an eager JAX step re-dispatches every op (seconds per step on CPU); the JAX trainer jits
    model = tiny_model(alpha=0.5, beta=1.0, gamma=0.1, estimator=estimator)
    model.compile(jit_compile=jit)
    history = model.fit(images(32), batch_size=8, epochs=2, verbose=0,
                        validation_data=(images(16, seed=1),))
    for name in ("loss", "global_mi", "local_mi", "prior_loss", "discriminator_loss",
                 "discriminator_accuracy", "val_local_mi"):
        assert name in history.history, name
        assert np.all(np.isfinite(history.history[name]))


def test_batch_of_one_raises_a_clear_error():
    model = tiny_model(gamma=0.1)
    model.compile()
    one = images(1)
    message = "at least 2 images per batch: the negatives are the other images"
    with pytest.raises(ValueError, match=message):
        model.train_on_batch(one)
    with pytest.raises(ValueError, match=message):
        model.test_on_batch(one)
    # A static batch dimension of 1 inside fit (drop_remainder) fails at trace time.
    static_ones = tf.data.Dataset.from_tensor_slices(images(2)).batch(1, drop_remainder=True)
    with pytest.raises(ValueError, match=message):
        model.fit(static_ones, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_fit_skips_a_trailing_batch_of_one_exactly():
    """9 images, batch 8, under XLA and with the prior discriminator's own
    optimizer: the first batch trains, the last (dynamic) batch of 1 changes no
    weight, batch-norm statistic, optimizer iteration or metric."""
    model = tiny_model(alpha=0.5, gamma=0.1)
    model.compile(jit_compile=True)
    start = _snapshot(model.variables)
    after_batch = {}
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: after_batch.setdefault(batch, _snapshot(model.variables)))
    history = model.fit(images(9), batch_size=8, epochs=1, verbose=0, callbacks=[record],
                        validation_data=(images(9, seed=1),), validation_batch_size=8)
    assert sorted(after_batch) == [0, 1]
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)
    assert sum(_changed(start, model.variables)) >= len(start) - 2
    # Every variable (seed state included) after the batch of 1 == after batch 0.
    for before, after in zip(after_batch[0], after_batch[1]):
        np.testing.assert_array_equal(before, after)
    assert int(model.optimizer.iterations) == 1
    assert int(model.discriminator_optimizer.iterations) == 1
    assert float(model.loss_tracker.count) == 1  # the metrics saw one batch
    # Validation skips its trailing batch of one too instead of logging NaN.
    assert np.isfinite(history.history["val_local_mi"][0])


@pytest.mark.backends
def test_a_trailing_batch_of_one_trains_like_no_batch_at_all():
    """Backend-free form of the test above: fit on 9 images in batches of 8 (a trailing batch of one)
    ends in exactly the state of fit on the first 8 alone, prior discriminator and metrics included."""
    x, runs = images(9), []
    for data in (x, x[:8]):
        keras.utils.set_random_seed(0)
        model = tiny_model(alpha=0.5, gamma=0.1, seed=0)
        model.compile()
        history = model.fit(data, batch_size=8, epochs=1, verbose=0, shuffle=False)
        runs.append((_snapshot(model.variables), history.history, int(model.optimizer.iterations),
                     int(model.discriminator_optimizer.iterations)))
    (state, logs, steps, d_steps), (state_8, logs_8, steps_8, d_steps_8) = runs
    assert steps == steps_8 == 1 and d_steps == d_steps_8 == 1
    # Equal up to float rounding: TensorFlow traces 9 images with a dynamic batch dimension and 8 with a
    # static one.  A step on the batch of one would move every weight by ~1e-4 (Adam's rate).
    assert logs.keys() == logs_8.keys()
    for name in logs:
        assert logs[name] == pytest.approx(logs_8[name], rel=1e-5), name
    for a, b in zip(state, state_8):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.backends
def test_partial_batch_of_three_gives_its_exact_bound():
    """A dynamic batch of 3 (fit with batch_size 8) trains on the bounds of
    those 3 images: its logged terms equal the bounds computed directly."""
    model = tiny_model(alpha=0.5, beta=1.0, gamma=0.0, estimator="dv")
    model.compile()
    x = images(3)
    features = model.encoder(x, training=True)
    expected = {
        "global_mi": estimators.dv_lower_bound(model.global_critic(features["y"], features["conv"], training=True)),
        "local_mi": estimators.dv_lower_bound(model.local_critic(features["y"], features["local"], training=True)),
    }
    history = model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for name, value in expected.items():
        assert history.history[name][0] == pytest.approx(float(value), abs=1e-5), name
    assert int(model.optimizer.iterations) == 1


@pytest.mark.backends
def test_dim_l_defaults_and_validation():
    model = dk.DeepInfoMax(tiny_encoder())
    assert (model.alpha, model.beta, model.gamma) == (0.0, 1.0, 0.1)
    assert model.estimator == "jsd" and model.prior == "uniform" and model.embedding_dim == 2048
    assert model.global_critic is None
    opt = dk.default_optimizer()
    assert float(opt.learning_rate) == pytest.approx(1e-4) and opt.beta_1 == 0.5
    with pytest.raises(ValueError, match="both 0"):
        dk.DeepInfoMax(tiny_encoder(), alpha=0, beta=0)
    with pytest.raises(ValueError, match="unknown estimator"):
        dk.DeepInfoMax(tiny_encoder(), estimator="kl")
    with pytest.raises(ValueError, match="unknown prior"):
        dk.DeepInfoMax(tiny_encoder(), prior="laplace")


@pytest.mark.backends
def test_local_location_subsampling():
    model = tiny_model(estimator="infonce", local_samples=5)
    model.compile()
    features = model.encoder(images(), training=False)
    assert model._subsample_locations(features["local"]).shape == (8, 5, 16)
    model.fit(images(16), batch_size=8, epochs=1, verbose=0)


@pytest.mark.backends
def test_mixed_precision_step_is_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_model(alpha=0.5, gamma=0.1, estimator="infonce", score_clip=20.0)
    model.compile()
    assert isinstance(model.representation_optimizer(), keras.optimizers.LossScaleOptimizer)
    logs = model.train_on_batch(images(), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert model.encoder.output["local"].dtype == "float16"


@pytest.mark.backends
def test_keras_file_round_trip(tmp_path):
    model = tiny_model(alpha=0.5, gamma=0.1, estimator="nwj", local_critic="concat")
    model.compile()
    model.fit(images(16), batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "dim.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored, dk.DeepInfoMax)
    assert restored.get_config()["estimator"] == "nwj"
    x = images(4, seed=3)
    np.testing.assert_allclose(restored(x)["y"], model(x)["y"], atol=1e-6)
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restored.compiled
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations)
    restored.fit(images(16), batch_size=8, epochs=1, verbose=0)  # trains on


@pytest.mark.backends
def test_encoder_is_standalone_model():
    model = tiny_model()
    encoder = model.encoder
    assert isinstance(encoder, keras.Model)
    features = encoder(images(2))
    assert set(features) == {"local", "conv", "fc", "y"}
    clone = keras.Model.from_config(encoder.get_config())
    assert set(clone.output) == {"local", "conv", "fc", "y"}


@pytest.mark.backends
def test_uint8_images_give_exactly_what_their_float_scaling_gives():
    raw = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    runs = []
    for x in (raw, raw.astype(np.float32) / 255.0):  # the export's scaling, x / 255
        keras.utils.set_random_seed(0)
        model = tiny_model(gamma=0.5, seed=0)
        model.compile(jit_compile=False)
        features = _numpy(model(x)["y"])
        evaluated = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
        trained = model.train_on_batch(x, return_dict=True)
        runs.append((features, evaluated, trained, _snapshot(model.trainable_variables)))
    (features, evaluated, trained, weights), (features_f, evaluated_f, trained_f, weights_f) = runs
    np.testing.assert_array_equal(features, features_f)
    assert evaluated == evaluated_f and trained == trained_f
    for a, b in zip(weights, weights_f):
        np.testing.assert_array_equal(a, b)
    assert evaluated["local_mi"] > -5  # not the -72.9 of unscaled 0..255 inputs
    with pytest.raises(ValueError, match=r"uint8 images \(scaled by 1/255\) or float images in \[0, 1\], got int32"):
        model(raw.astype(np.int32))


@pytest.mark.backends
def test_amdim_score_stabilisers_are_scale_then_penalty_then_clip():
    """score_scale multiplies the critic's scores, the penalty is 0.05 * mean(scaled^2) of the unclipped
    scores, and the estimator sees c * tanh(scaled / c) (AMDIM, Bachman et al. 2019)."""
    model = tiny_model(alpha=0.0, beta=1.0, gamma=0.0, estimator="jsd",
                       score_scale=0.25, score_penalty=0.05, score_clip=2.0)
    model.compile()
    x = images()
    features = model.encoder(x, training=False)
    loss, terms, _ = model._representation_loss(features, training=False)
    raw = _numpy(model.local_critic(features["y"], features["local"], training=False))
    scaled = 0.25 * raw
    clipped = 2.0 * np.tanh(scaled / 2.0)
    expected_bound = float(estimators.jsd_lower_bound(clipped))
    assert float(terms["local_mi"]) == pytest.approx(expected_bound, abs=1e-5)
    assert float(terms["score_penalty"]) == pytest.approx(float(np.mean(scaled ** 2)), rel=1e-5)
    assert float(loss) == pytest.approx(-expected_bound + 0.05 * float(np.mean(scaled ** 2)), abs=1e-5)
    with pytest.raises(ValueError, match="score_scale"):
        tiny_model(score_scale=0.0)
    with pytest.raises(ValueError, match="score_penalty"):
        tiny_model(score_penalty=-1.0)


@pytest.mark.backends
def test_global_layer_norm_normalises_the_y_embedding_and_round_trips(tmp_path):
    """With global_layer_norm the critic's Y embedding is layer-normed like the local one (the authors'
    LocalDIM embeds Y with MI1x1ConvNet): at init (scale 1, offset 0) each row is (h - mean) / sqrt(var + eps)
    of the residual block's output h."""
    model = tiny_model(global_layer_norm=True, gamma=0.0)
    features = model.encoder(images(), training=False)
    embedding = model.local_critic.global_embedding
    g = _numpy(embedding(features["y"], training=False))
    y = features["y"]
    h = _numpy(embedding.out(keras.ops.relu(embedding.norm(embedding.hidden(y), training=False)))
               + embedding.shortcut(y))
    expected = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + embedding.ln.epsilon)
    np.testing.assert_allclose(g, expected, atol=1e-4)
    plain = _numpy(tiny_model(gamma=0.0).local_critic.global_embedding(features["y"], training=False))
    assert np.abs(plain.mean(axis=-1)).max() > 1e-2  # no layer norm by default
    model.compile()
    path = tmp_path / "gln.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert restored.local_critic.global_layer_norm is True
    assert restored.get_config()["global_layer_norm"] is True


@pytest.mark.backends
def test_recompiling_with_the_models_own_optimizers_and_the_keras_file_layout(tmp_path):
    """``compile(optimizer=model.optimizer, ...)`` works on every backend (on JAX model.optimizer is the pair
    of both optimizers), and the .keras file holds each optimizer once, under the names TensorFlow uses, so a
    file saved on one backend loads with its optimizer state on the other."""
    import io
    import zipfile

    import h5py

    model = tiny_model(gamma=0.1)
    model.compile()
    model.fit(images(16), batch_size=8, epochs=1, verbose=0)
    model.compile(optimizer=model.optimizer, discriminator_optimizer=model.discriminator_optimizer)
    model.fit(images(16), batch_size=8, epochs=1, verbose=0)
    assert int(model.representation_optimizer().iterations) == 4
    path = tmp_path / "recompiled.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        optimizers = sorted(name for name in weights if "optimizer" in name)
        assert optimizers == ["discriminator_optimizer", "optimizer"]
        assert len(weights["optimizer"]["vars"]) == len(model.representation_optimizer().variables)
        assert len(weights["discriminator_optimizer"]["vars"]) == len(model.discriminator_optimizer.variables)
        assert list(weights["optimizer"]) == ["vars"]  # no nested copy of a part
    restored = dk.load_model(path)
    assert int(restored.representation_optimizer().iterations) == 4
    assert int(restored.discriminator_optimizer.iterations) == 4
