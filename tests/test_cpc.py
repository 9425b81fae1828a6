"""Contrastive Predictive Coding (dim_keras.cpc, DIM Sec. 4.2 / Table 3's baseline): causality of the summary,
the score tensor by hand, one training step, TensorFlow vs JAX, and apps/train.py --method=cpc end to end.

Run as a script (``python tests/test_cpc.py WEIGHTS IMAGES OUT_NPZ``) it takes the training steps of the
cross-backend test on the backend of its process (``KERAS_BACKEND``), as tests/backend_step.py does for DIM.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # backend_testing, also when run as a script

import keras  # noqa: E402
from keras import layers  # noqa: E402

from backend_testing import to_numpy  # noqa: E402
from dim_keras import encoders  # noqa: E402
from dim_keras.cpc import ContrastivePredictiveCoding, RowGRU  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _np(x):
    """A tensor or variable as a NumPy array (backend_testing.to_numpy: no __array__ warning)."""
    return to_numpy(x)


def _tiny_model():
    """A small encoder on 16x16 images: an 8x8 local grid of 16 channels; 16-wide predictors."""
    keras.utils.set_random_seed(0)
    encoder = encoders.build_encoder("small", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    return ContrastivePredictiveCoding(encoder, embedding_dim=16)


def _grid_encoder(height, width, channels):
    """An encoder whose local grid is its input itself, so a test sets the grid exactly."""
    inputs = keras.Input((height, width, channels), name="images")
    local = layers.Identity(name="grid")(inputs)
    fc = layers.Flatten(name="flatten")(local)
    return keras.Model(inputs, {"local": local, "conv": local, "fc": fc, "y": layers.Dense(2, name="y")(fc)})


def _logsumexp(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return (np.log(np.exp(x - top).sum(axis=axis, keepdims=True)) + top).squeeze(axis)


# ------------------------------------------------------------------------------------------- causality
@pytest.mark.backends
def test_the_context_at_row_i_is_unchanged_when_later_rows_of_the_grid_change():
    rng = np.random.default_rng(0)
    network = RowGRU(6)
    grid = rng.normal(size=(3, 6, 4, 5)).astype("float32")
    network.build(grid.shape)
    context = _np(network(grid))
    assert context.shape == (3, 6, 4, 6)
    for i in range(grid.shape[1]):
        changed = grid.copy()
        changed[:, i + 1:] = rng.normal(size=changed[:, i + 1:].shape) * 5.0
        after = _np(network(changed))
        # Rows <= i see only rows <= i: bit-identical, not merely close.
        np.testing.assert_array_equal(after[:, : i + 1], context[:, : i + 1])
        if i + 1 < grid.shape[1]:  # and the test can fail: the later rows do move
            assert np.abs(after[:, i + 1:] - context[:, i + 1:]).min(axis=(0, 2, 3)).max() > 0
        # Row i itself (the whole row, every column) is part of row i's context.
        current = grid.copy()
        current[:, i, 0] += 1.0
        assert np.abs(_np(network(current))[:, i] - context[:, i]).max() > 1e-4


@pytest.mark.backends
def test_a_prediction_for_row_i_plus_k_reads_only_the_context_at_row_i():
    """Every query's scores depend on its own context vector only (no batch norm couples the queries), and
    that context sees the grid's rows <= i only, so task k's prediction for row i + k reads rows <= i."""
    height, width, channels = 5, 3, 4
    model = ContrastivePredictiveCoding(_grid_encoder(height, width, channels), embedding_dim=8)
    rng = np.random.default_rng(1)
    local = rng.normal(size=(2, height, width, channels)).astype("float32")
    context = _np(model.context(local))
    for k in (1, 2, 3):
        scores = _np(model.task_scores(context, local, k, training=True))
        rows = height - k
        assert scores.shape == (2 * rows * width, 2 * rows * width, 1)
        for b, i, j in ((0, 0, 0), (1, rows - 1, 2), (1, 1, 1)):
            moved = context.copy()
            moved[b, i, j] += rng.normal(size=moved.shape[-1]).astype("float32")
            delta = np.abs(_np(model.task_scores(moved, local, k, training=True)) - scores).max(axis=(1, 2))
            query = (b * rows + i) * width + j
            assert delta[query] > 1e-5
            assert np.all(np.delete(delta, query) == 0.0), k
        # End to end: the grid's rows below i change -> the embedded predictions of rows <= i do not.
        i = 1
        changed = local.copy()
        changed[:, i + 1:] += 3.0
        predictor = model.predictors[k - 1]
        before = _np(predictor.global_embedding(context[:, : i + 1].reshape(-1, context.shape[-1]), training=True))
        after_context = _np(model.context(changed))
        after = _np(predictor.global_embedding(after_context[:, : i + 1].reshape(-1, context.shape[-1]),
                                               training=True))
        np.testing.assert_array_equal(after, before)


# ------------------------------------------------------------------------------- the score tensor
@pytest.mark.backends
def test_the_score_tensor_and_infonce_by_hand_on_a_tiny_grid():
    batch, height, width, channels = 2, 4, 2, 3
    model = ContrastivePredictiveCoding(_grid_encoder(height, width, channels), embedding_dim=5)
    rng = np.random.default_rng(2)
    images = rng.normal(size=(batch, height, width, channels)).astype("float32")
    local = images  # the grid encoder's local features are its input
    context = _np(model.context(local))
    loss, bounds = model.objective(images, training=True)
    expected_bounds = []
    for k in (1, 2, 3):
        # Queries and their candidates enumerated position by position, not by reshaping.
        positions = [(b, i, j) for b in range(batch) for i in range(height - k) for j in range(width)]
        queries = np.stack([context[b, i, j] for b, i, j in positions])
        candidates = np.stack([local[b, i + k, j] for b, i, j in positions])
        predictor = model.predictors[k - 1]
        g = _np(predictor.global_embedding(queries, training=True))
        z = _np(predictor.local_embedding(candidates, training=True))
        hand = g @ z.T  # hand[q, t] = T_k(c_q, z_t)
        scores = _np(model.task_scores(context, local, k, training=True))[:, :, 0]
        np.testing.assert_allclose(scores, hand, rtol=1e-5, atol=1e-5)
        # The positive of query (b, i, j) is z[b, i + k, j] (the diagonal); its negatives are the N - 1 other
        # targets: other columns and rows of its own image and every position of the other image, but not
        # the top k rows, which no prediction of task k targets.
        n = len(positions)
        assert n == batch * (height - k) * width
        candidate_rows = {(b, i + k, j) for b, i, j in positions}
        assert candidate_rows == {(b, r, j) for b in range(batch) for r in range(k, height) for j in range(width)}
        # infoNCE (eq. 5 / Oord et al. eq. 4): log N + mean_q log softmax_t(scores[q, t]) at t = q.
        expected_bounds.append(np.log(n) + np.mean(np.diag(hand) - _logsumexp(hand, axis=1)))
        np.testing.assert_allclose(float(_np(bounds[k - 1])), expected_bounds[-1], rtol=1e-5, atol=1e-5)
        assert expected_bounds[-1] <= np.log(n)
    np.testing.assert_allclose(float(_np(loss)), -np.mean(expected_bounds), rtol=1e-5, atol=1e-5)


@pytest.mark.backends
def test_a_grid_too_short_for_three_rows_ahead_is_refused():
    with pytest.raises(ValueError, match="at least 4 rows, got 3x5"):
        ContrastivePredictiveCoding(_grid_encoder(3, 5, 2))
    ContrastivePredictiveCoding(_grid_encoder(2, 5, 2), prediction_steps=1)  # one row ahead needs 2 rows


# --------------------------------------------------------------------------------- training
@pytest.mark.backends
def test_one_training_step_moves_the_encoder_context_and_predictors_and_nothing_else():
    model = _tiny_model()
    model.compile()
    images = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3)).astype("uint8")
    before = {id(v): np.array(_np(v)) for v in model.trainable_variables}
    logs = model.train_on_batch(images, return_dict=True)
    assert np.isfinite(logs["loss"]) and np.isclose(logs["cpc_mi"], -logs["loss"])
    np.testing.assert_allclose(np.mean([logs[f"row{k}_mi"] for k in (1, 2, 3)]), logs["cpc_mi"], rtol=1e-5)
    moved = {id(v) for v in model.trainable_variables if np.abs(_np(v) - before[id(v)]).max() > 0}
    groups = {"encoder up to its local grid": [v for v in model.representation_variables
                                               if any(v is w for w in model.encoder.trainable_variables)],
              "context network": model.context_network.trainable_variables,
              **{p.name: p.trainable_variables for p in model.predictors}}
    for name, variables in groups.items():
        assert variables and all(id(v) in moved for v in variables), name
    # The fc and Y heads (and the conv after the local grid) get no gradient from CPC.
    untouched = [v for v in model.trainable_variables if id(v) not in {id(w) for w in model.representation_variables}]
    assert {v.path.split("/")[0] for v in untouched} >= {"y", "fc1_dense"}
    assert not any(id(v) in moved for v in untouched)
    assert int(_np(model.optimizer.iterations)) == 1
    with pytest.raises(ValueError, match="at least 2 images"):
        model.train_on_batch(images[:1])


def test_model_keras_round_trip(tmp_path):
    import dim_keras

    model = _tiny_model()
    model.compile()
    path = str(tmp_path / "cpc.keras")
    model.save(path)
    loaded = dim_keras.load_model(path)
    assert isinstance(loaded, ContrastivePredictiveCoding)
    settings = {k: v for k, v in model.get_config().items() if k != "encoder"}
    assert {k: v for k, v in loaded.get_config().items() if k != "encoder"} == settings
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    assert loaded.compiled and len(loaded.optimizer.variables) == len(model.optimizer.variables)
    images = np.random.RandomState(1).randint(0, 256, (4, 16, 16, 3)).astype("uint8")
    np.testing.assert_allclose(_np(loaded.objective(images / 255.0)[0]), _np(model.objective(images / 255.0)[0]),
                               rtol=1e-6)


# ------------------------------------------------------------------------ TensorFlow vs JAX
STEPS = 2


def _steps(model, images):
    """``STEPS`` Adam steps on ``images``; the logs, weights and step count as arrays."""
    model.compile()
    logs = [model.train_on_batch(images, return_dict=True) for _ in range(STEPS)]
    arrays = {f"w{k}": np.asarray(_np(v)) for k, v in enumerate(model.weights)}
    arrays["names"] = np.array([v.path for v in model.weights])
    for name in logs[0]:
        arrays[f"log_{name}"] = np.array([float(step[name]) for step in logs])
    arrays["iterations"] = np.array(int(_np(model.optimizer.iterations)))
    return arrays


def test_tensorflow_and_jax_take_the_same_steps(tmp_path):
    """Two Adam steps from the same weights on TensorFlow (this process) and JAX (a child process):
    the same losses, the same updated weights and batch-norm statistics."""
    pytest.importorskip("jax")
    images = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3)).astype("uint8")
    np.save(tmp_path / "images.npy", images)
    model = _tiny_model()
    weights = str(tmp_path / "start.weights.h5")
    model.save_weights(weights)
    start = [np.array(_np(v)) for v in model.weights]
    tf_out = _steps(model, images)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, os.path.abspath(__file__), weights, str(tmp_path / "images.npy"),
                             str(tmp_path / "jax.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_out = dict(np.load(tmp_path / "jax.npz"))
    assert list(jax_out["names"]) == list(tf_out["names"])
    assert int(jax_out["iterations"]) == int(tf_out["iterations"]) == STEPS
    for key in tf_out:
        if key.startswith("log_"):
            np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=1e-4, atol=1e-5, err_msg=key)
    moved = 0
    for k, path in enumerate(tf_out["names"]):
        step = np.abs(tf_out[f"w{k}"] - start[k]).max()
        moved += step > 0
        # Adam's update compared at an absolute 1e-6 against its rate of 1e-4 (as tests/test_backends.py).
        assert np.abs(jax_out[f"w{k}"] - tf_out[f"w{k}"]).max() <= 1e-3 * step + 1e-6, path
    assert moved >= len(tf_out["names"]) // 2


# ------------------------------------------------------------------------------ apps/train.py
def _app(args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "apps", "train.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_train_app_method_cpc_trains_checkpoints_and_exports_an_encoder_evaluate_accepts(tmp_path):
    from dim_keras.runs.evaluate import open_encoder

    out = tmp_path / "run"
    result = _app(["--method=cpc", "--epochs=1", "--steps_per_epoch=2", "--embedding_dim=32", "--y_dim=16",
                   "--batch_size=16", "--nojit_compile", "--verbose=2", "--noprobe", "--monitor_every=0",
                   f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpc_mi" in result.stdout and "row3_mi" in result.stdout
    assert (out / "checkpoints" / "checkpoint").exists() and (out / "model.keras").exists()
    encoder_fn, _, (height, width) = open_encoder(str(out / "encoder"))  # what apps/evaluate.py opens
    images = np.random.RandomState(0).randint(0, 256, (3, height, width, 3)).astype("uint8")
    features = encoder_fn(images)
    assert {"conv", "fc", "y"} <= set(features) and features["y"].shape == (3, 16)


def test_cpc_flags_refused_with_one_line(tmp_path):
    from dim_keras.config import TrainConfig, validate
    from dim_keras.errors import UsageError
    from dim_keras.runs.model_setup import build_model

    for flags, fragment in (({"alpha": 1.0}, "--alpha is a setting of DIM's objective"),
                            ({"num_globals": 2}, "--num_globals"), ({"occlusion": True}, "--occlusion"),
                            ({"estimator": "dv"}, "--estimator=dv: --method=cpc scores")):
        with pytest.raises(UsageError, match=fragment):
            validate(TrainConfig(method="cpc", **flags))
    validate(TrainConfig(method="cpc", estimator="infonce"))
    assert TrainConfig(method="cpc").objective_name() == "cpc"
    # A resnet18's local grid on 8x8 digits is 2x2: fewer rows than 3 ahead + 1.
    with pytest.raises(UsageError, match="--method=cpc with the resnet18 encoder: .* at least 4 rows, got 2x2"):
        build_model(TrainConfig(method="cpc", encoder="resnet18"), (8, 8, 3))
    result = _app(["--method=cpc", "--gamma=1", f"--output_dir={tmp_path / 'x'}"], timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "train.py: error: --gamma is a setting of DIM's objective" in result.stderr


if __name__ == "__main__":  # the JAX side of test_tensorflow_and_jax_take_the_same_steps
    weights_in, images_path, out_path = sys.argv[1:]
    model = _tiny_model()
    model.load_weights(weights_in)
    np.savez(out_path, **_steps(model, np.load(images_path)))
