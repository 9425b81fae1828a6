"""apps/mi_lab.py critics, target_mi, encoders and negatives (Tschannen et al. Sec. 3.2, 3.3, 4, App. C, E):
the paper's critics, App. E's sampler and true MI, the target loss, I_NCE as log K minus the K-pair loss."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from dim_keras import critics, estimators, multiview, simulation
from dim_keras.runs.mi_lab import critics as critics_run
from dim_keras.runs.mi_lab import negatives
from official_formats import WITHOUT_TENSORFLOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "mi_lab.py")


def test_mlp_critic_is_one_hidden_layer_on_the_concatenation():
    # Sec. 3.2's MLP critic: f(x, y) = w^T relu(A [x; y] + b) + c with 200 hidden units, for every pair.
    keras.utils.set_random_seed(0)
    critic = critics_run.build_critic("mlp")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    critic.build(x.shape, y.shape)
    scores = np.asarray(critic(x, y))
    assert scores.shape == (3, 3, 1)
    a = np.concatenate([critic.global_projection.kernel.numpy(), critic.local_projection.kernel.numpy()])  # [9, 200]
    b = critic.local_projection.bias.numpy()
    w, c = critic.score.kernel.numpy(), critic.score.bias.numpy()
    assert a.shape == (9, 200)
    for i in range(3):
        for j in range(3):
            expected = np.maximum(np.concatenate([x[i], y[j]]) @ a + b, 0.0) @ w + c
            np.testing.assert_allclose(scores[i, j], expected, rtol=1e-5, atol=1e-5)


def test_critics_have_the_papers_sizes_on_100_dim_features():
    # Sec. 3.2: separable and MLP critics "comprising 40k parameters"; bilinear: W is 100 x 100.
    sizes = {}
    for name in ("bilinear", "separable", "mlp"):
        critic = critics_run.build_critic(name)
        critic.build((None, 100), (None, 100))
        sizes[name] = critic.count_params()
    assert sizes == {"bilinear": 100 * 100,
                     "separable": 2 * (100 * 100 + 100 + 100 * 100 + 100),
                     "mlp": 200 * 200 + 200 + 200 + 1}
    with pytest.raises(ValueError, match="unknown critic 'dot'"):
        critics_run.build_critic("dot")


def test_app_e_true_mi_matches_the_entropy_decomposition():
    # I = H(X) + H(Y) - H(X, Y), H of a d-dim Gaussian = 1/2 log((2 pi e)^d det S), S = Sigma_Z + Sigma_e.
    s = np.array([[2.0, 0.4], [0.4, 2.0]])
    entropy = lambda cov: 0.5 * math.log((2 * math.pi * math.e) ** len(cov) * np.linalg.det(cov))  # noqa: E731
    expected = entropy(s[:1, :1]) + entropy(s[1:, 1:]) - entropy(s)
    assert expected == pytest.approx(0.5 * math.log(4.0 / 3.84), abs=1e-12)
    assert negatives.true_mi() == pytest.approx(expected, abs=1e-12)
    assert simulation.gaussian_pair_mi([[1.0, 0.0], [0.0, 3.0]]) == 0.0
    with pytest.raises(ValueError, match="positive definite"):
        simulation.gaussian_pair_mi([[1.0, 1.0], [1.0, 1.0]])


def _batches(count, size, shared):
    seed = keras.random.SeedGenerator(3)
    pairs = [simulation.sample_shared_offset_pairs(size, seed, shared=shared) for _ in range(count)]
    return np.stack([np.concatenate([np.asarray(x), np.asarray(y)], axis=1) for x, y in pairs])  # [count, size, 2]


def test_non_iid_batches_share_one_offset():
    sigma_z, sigma_e = np.array(simulation.APP_E_SIGMA_Z), np.array(simulation.APP_E_SIGMA_E)
    # Within one big batch the pairs scatter around the batch's Z with covariance Sigma_e (shared Z) or
    # Sigma_Z + Sigma_e (i.i.d.); the batch means move with Z (variance ~1) or barely (variance 2 / size).
    shared, iid = _batches(1, 20000, True)[0], _batches(1, 20000, False)[0]
    np.testing.assert_allclose(np.cov(shared.T), sigma_e, atol=0.06)
    np.testing.assert_allclose(np.cov(iid.T), sigma_z + sigma_e, atol=0.1)
    means_shared = _batches(300, 64, True).mean(axis=1)
    means_iid = _batches(300, 64, False).mean(axis=1)
    np.testing.assert_allclose(np.cov(means_shared.T), sigma_z + sigma_e / 64, atol=0.25)
    assert np.all(means_iid.var(axis=0) < 0.1)


def test_target_loss_gradient_flips_across_the_target():
    views = multiview.load_views("digits", "test")
    top, bottom = views.top[:16], views.bottom[:16]

    def loss_and_gradient(target):
        keras.utils.set_random_seed(0)
        model = multiview.TwoViewInfoMax(multiview.build_view_encoder("mlp", 32),
                                         multiview.build_view_encoder("mlp", 32), critics.BilinearCritic(),
                                         "infonce", target_mi=target)
        model.build(((None, 32), (None, 32)))
        with tf.GradientTape() as tape:
            loss, estimate = model.objective(top, bottom)
        return float(loss), float(estimate), tape.gradient(loss, model.critic.trainable_variables)[0].numpy()

    _, estimate, _ = loss_and_gradient(None)
    above_loss, _, above = loss_and_gradient(estimate + 1.0)
    below_loss, _, below = loss_and_gradient(estimate - 1.0)
    assert above_loss == pytest.approx(1.0, abs=1e-5) and below_loss == pytest.approx(1.0, abs=1e-5)
    assert np.abs(above).max() > 0
    np.testing.assert_allclose(above, -below, rtol=1e-5, atol=1e-8)  # d|I - t| = sign(I - t) dI


def test_kpair_triplet_loss_by_hand():
    scores = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]], np.float32)[:, :, None]
    rows = [math.log(1 + math.exp(-2) + math.exp(-1)), math.log(1 + 2 * math.exp(-1)),
            math.log(1 + 2 * math.exp(-2))]
    loss = float(estimators.kpair_triplet_loss(scores))
    assert loss == pytest.approx(sum(rows) / 3, abs=1e-6)
    assert float(estimators.infonce_lower_bound(scores)) == pytest.approx(math.log(3) - loss, abs=1e-6)


def test_infonce_is_log_k_minus_the_kpair_loss():
    # App. C for any scores, also with L locations (K = 1 + (B - 1) L candidates) and huge score gaps.
    scores = np.random.default_rng(0).normal(scale=5.0, size=(6, 6, 3)).astype(np.float32)
    scores[0, 0, 0] = 1e4
    k = 1 + 5 * 3
    assert float(estimators.infonce_lower_bound(scores)) == pytest.approx(
        math.log(k) - float(estimators.kpair_triplet_loss(scores)), abs=1e-4)


def test_fit_critic_rows_and_fresh_evaluations():
    rows, evaluation, critic = negatives.fit_critic("infonce", True, steps=6, eval_every=4, batch_size=8,
                                                    learning_rate=1e-3, seed=0, eval_batches=2)
    assert [row["step"] for row in rows] == [4, 6]
    assert set(evaluation) == {"iid", "non_iid"}
    assert all(-1.0 < v <= math.log(8) for v in [*evaluation.values(), *(row["estimate"] for row in rows)])
    nce, kpair = negatives.triplet_identity(critic, 8, seed=1)
    assert nce == pytest.approx(kpair, abs=1e-5)


def test_critics_app_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, APP, "critics", "--steps=2", "--eval_every=1", "--seeds=1", "--critics=mlp",
         "--estimators=nwj", f"--output_dir={tmp_path}", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "critics.json").read_text())
    assert printed == {key: value for key, value in saved.items() if key != "summary_lines"}
    assert set(saved["runs"]) == {"mlp, I_NWJ"} and saved["steps"] == 2
    rows = saved["runs"]["mlp, I_NWJ"][0]
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert {"accuracy", "test_mi", "test_nwj", "test_infonce", "test_dv"} <= set(rows[-1])
    assert set(saved["final"]["nwj"]["mlp"]) == {"accuracy", "test_infonce", "test_nwj", "test_dv"}
    # the pixel baseline is scikit-learn's logistic regression on the standardised raw top halves
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train, test = multiview.load_views("digits", "train"), multiview.load_views("digits", "test")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train.top, train.labels)
    assert saved["pixel_baseline"] == pytest.approx(probe.score(test.top, test.labels), abs=1e-9)
    assert saved["summary_lines"][0].startswith("critics (Sec. 3.2) on digits, 2 steps x 1 seeds")
    assert (tmp_path / "critics.png").read_bytes()[:4] == b"\x89PNG"
    assert "I_NWJ        mlp" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["critics", "--critics=foo"], "--critics: unknown value 'foo'"),
    (["critics", "--critics=mlp,mlp"], "--critics lists a value twice"),
    (["encoders", "--encoders=lstm"], "--encoders: unknown value 'lstm'"),
    (["target_mi", "--targets=2,5"], "--targets=5 is out of reach of I_NCE"),
    (["encoders", "--targets=0"], "--targets"),
])
def test_bad_flags_are_one_line(args, message):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, *args],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
