"""One DeepInfoMax step, the same weights, TensorFlow vs JAX (issue 17's cross-backend equality).

The backend is fixed per process, so tests/backend_step.py runs the steps once per backend from the
same ``.weights.h5`` file, images and prior samples, and the test compares the losses, every updated
weight (encoder, critics, batch-norm statistics, prior discriminator), the optimizers' step counts and
the features afterwards.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")

SCRIPT = os.path.join(os.path.dirname(__file__), "backend_step.py")


def _run(backend, directory):
    """Every case of CASES in one process of ``backend`` (TensorFlow first: it writes the start weights)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, SCRIPT, json.dumps(CASES), str(directory)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


# Full eq. 8 (global + local + prior with its gradient penalty, plus the absolute coordinate task of Sec. 4.3,
# which draws no random numbers) under SGD, where a weight's change is
# its gradient times the rate, so the weights compare the gradients themselves; and the paper's
# DIM(L) + prior under Adam for two steps (moments, bias correction, both optimizers' counters).
CASES = {
    "eq8_sgd": {"alpha": 0.5, "beta": 1.0, "gamma": 0.1, "estimator": "jsd", "prior_gradient_penalty": 1.0,
                "coordinate_prediction": "absolute", "optimizer": "sgd", "steps": 1},
    "dim_l_adam": {"alpha": 0.0, "beta": 1.0, "gamma": 0.1, "estimator": "infonce", "optimizer": "adam",
                   "steps": 2, "score_scale": 0.25, "score_penalty": 0.05, "score_clip": 20.0},
}


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    """The directory where both backends took every case's steps from the same inputs."""
    directory = tmp_path_factory.mktemp("backend_steps")
    rng = np.random.RandomState(0)
    np.save(directory / "images.npy", rng.randint(0, 256, (6, 16, 16, 3)).astype("uint8"))
    np.save(directory / "prior.npy", rng.uniform(0, 1, (6, 8)).astype("float32"))
    _run("tensorflow", directory)  # also writes each case's start weights
    _run("jax", directory)
    return directory


@pytest.mark.parametrize("name", sorted(CASES))
def test_tensorflow_and_jax_take_the_same_step(name, stepped):
    case = CASES[name]
    tf_out = dict(np.load(stepped / f"{name}.tensorflow.npz"))
    jax_out = dict(np.load(stepped / f"{name}.jax.npz"))
    start = _start_weights(case, stepped / f"{name}.weights.h5")
    assert list(tf_out["names"]) == list(jax_out["names"])
    assert int(tf_out["iterations"]) == int(jax_out["iterations"]) == case["steps"]
    if "d_iterations" in tf_out:
        assert int(tf_out["d_iterations"]) == int(jax_out["d_iterations"]) == case["steps"]
    for key in tf_out:
        if key.startswith("log_"):
            np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=1e-4, atol=1e-5, err_msg=key)
    moved = 0
    for k, path in enumerate(tf_out["names"]):
        before, after_tf, after_jax = start[k], tf_out[f"w{k}"], jax_out[f"w{k}"]
        step = np.abs(after_tf - before).max()
        moved += step > 0
        # The update itself agrees to 1e-3 of its size (float32 XLA on both sides; Adam divides by
        # sqrt(v), so its steps are compared at an absolute 1e-6 against a rate of 1e-4).
        tolerance = 1e-3 * step + (1e-6 if case["optimizer"] == "adam" else 1e-7)
        assert np.abs(after_jax - after_tf).max() <= tolerance, (path, np.abs(after_jax - after_tf).max(), step)
    assert moved >= len(tf_out["names"]) // 2  # the step moved the network, it was not a no-op
    np.testing.assert_allclose(jax_out["features_y"], tf_out["features_y"], rtol=1e-4, atol=1e-4)


def _start_weights(case, weights_path):
    """The starting weights, in ``model.weights`` order (read back through Keras on this process's backend)."""
    sys.path.insert(0, os.path.dirname(__file__))
    import backend_step  # noqa: E402

    model = backend_step.build(case)
    model.load_weights(weights_path)
    return [np.asarray(w) for w in model.get_weights()]
