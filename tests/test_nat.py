"""Noise As Targets (dim_keras.baselines.nat, Bojanowski & Joulin 2017; issue 15's "NAT's assignment is a
permutation and lowers the matching cost"): the batch re-matching by hand and against brute force, the targets,
one training step, the every-k-epochs schedule, evaluation without indices and the .keras round trip.

Most tests use an encoder whose code is its (one-pixel) image itself at initialisation (a bias-free Dense with an
identity kernel), so a test chooses the normalised features exactly; the training-step test uses the small DIM
encoder.  Training batches are ``(images, indices)``: ``train_on_batch(images, indices)``.
"""
import itertools
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
from dim_keras.baselines import nat  # noqa: E402
from dim_keras.baselines.nat import NoiseAsTargets  # noqa: E402


def _np(x):
    return np.asarray(to_numpy(x))


def _pixel_encoder(dim):
    """Images of shape (1, 1, dim) -> y = the pixel vector itself (until a training step moves the kernel)."""
    inputs = keras.Input((1, 1, dim), name="images")
    fc = layers.Flatten(name="flatten")(inputs)
    y = layers.Dense(dim, use_bias=False, kernel_initializer="identity", name="y")(fc)
    return keras.Model(inputs, {"local": inputs, "conv": inputs, "fc": fc, "y": y})


def _pixel_model(num_examples, dim, steps_per_epoch=None, reassign_every=3, seed=0):
    model = NoiseAsTargets(_pixel_encoder(dim), num_examples=num_examples, steps_per_epoch=steps_per_epoch,
                           reassign_every=reassign_every, seed=seed)
    model.compile()
    return model


def _images(vectors):
    return np.asarray(vectors, dtype="float32")[:, None, None, :]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _cost(features, targets):
    """The matching cost: sum_i ||z_i - c_i||^2."""
    return float(np.sum((features - targets) ** 2))


# --------------------------------------------------------------------- the constructed case, by hand
# Six orthonormal targets (one-hot), a non-identity starting assignment; the batch's images are the one-hot
# vectors of a derangement of the batch's own targets, so every current match costs ||e_a - e_b||^2 = 2 and the
# optimal re-match costs 0.
ONE_HOT = np.eye(6, dtype="float32")
START = np.array([5, 3, 0, 2, 1, 4], dtype="int32")  # image i -> target START[i]
BATCH = np.array([3, 0, 4, 1])                        # current targets START[BATCH] = [2, 5, 1, 3]
WANTED = np.array([5, 1, 3, 2])                       # the targets the batch's images are equal to
AFTER = np.array([1, 2, 0, 5, 3, 4], dtype="int32")  # START with image 3 -> 5, 0 -> 1, 4 -> 3, 1 -> 2


def _constructed_model(**kwargs):
    model = _pixel_model(6, 6, **kwargs)
    model.targets.assign(ONE_HOT)
    model.assignment.assign(START)
    return model


@pytest.mark.backends
def test_rematching_a_badly_assigned_batch_gives_the_hand_computed_permutation():
    model = _constructed_model()
    logs = model.train_on_batch(_images(ONE_HOT[WANTED]), BATCH, return_dict=True)
    np.testing.assert_array_equal(_np(model.assignment), AFTER)
    # Every image of the batch changed target; each one's squared distance fell from 2 to 0.
    assert logs["reassigned"] == 1.0
    np.testing.assert_allclose(logs["cost_gain"], 2.0, atol=1e-6)
    np.testing.assert_allclose([logs["loss"], logs["target_loss"]], [0.0, 0.0], atol=1e-6)


@pytest.mark.backends
def test_a_batch_holding_an_image_twice_keeps_its_assignment():
    """Re-matching a batch that holds one image (so one target) twice would give two images one target."""
    model = _constructed_model()
    logs = model.train_on_batch(_images(ONE_HOT[[5, 1, 3, 2]]), np.array([3, 3, 4, 1]), return_dict=True)
    np.testing.assert_array_equal(_np(model.assignment), START)
    assert logs["reassigned"] == 0.0


# ------------------------------------------------------------------------ against brute force
def test_the_host_hungarian_solver_finds_the_brute_force_optimum():
    cost = np.random.default_rng(3).normal(size=(5, 5))
    best = min(itertools.permutations(range(5)), key=lambda p: cost[range(5), list(p)].sum())
    permutation = nat._optimal_permutation(cost)
    assert permutation.dtype == np.int32
    np.testing.assert_array_equal(permutation, best)


@pytest.mark.backends
def test_the_assignment_stays_a_permutation_and_the_batch_cost_becomes_the_brute_force_optimum():
    rng = np.random.default_rng(1)
    count, dim = 9, 4
    model = _pixel_model(count, dim)
    start = rng.permutation(count).astype("int32")
    model.assignment.assign(start)
    targets = _np(model.targets).astype(np.float64)
    batch = np.array([7, 2, 5, 0, 8])
    pixels = rng.uniform(0.05, 1.0, size=(5, dim)).astype("float32")
    features = _unit(pixels)  # the code is the image before the step

    logs = model.train_on_batch(_images(pixels), batch, return_dict=True)
    after = _np(model.assignment)
    np.testing.assert_array_equal(np.sort(after), np.arange(count))            # a permutation of 0..N-1
    others = np.setdiff1d(np.arange(count), batch)
    np.testing.assert_array_equal(after[others], start[others])                # only the batch's images moved,
    assert sorted(after[batch]) == sorted(start[batch])                        # among the batch's own targets
    before_cost = _cost(features, targets[start[batch]])
    best_cost = min(_cost(features, targets[list(p)]) for p in itertools.permutations(start[batch]))
    after_cost = _cost(features, targets[after[batch]])
    np.testing.assert_allclose(after_cost, best_cost, rtol=1e-5)
    assert best_cost < before_cost - 1e-3  # this draw's starting match is not already optimal
    # The loss is taken on the new targets; cost_gain is the drop of the mean squared distance.
    np.testing.assert_allclose(logs["loss"], after_cost / 5, rtol=1e-5)
    np.testing.assert_allclose(logs["cost_gain"], (before_cost - after_cost) / 5, rtol=1e-4)
    np.testing.assert_allclose(logs["reassigned"], np.mean(after[batch] != start[batch]))


# ------------------------------------------------------------------------------------ targets
@pytest.mark.backends
def test_targets_are_unit_gaussian_directions_fixed_by_the_seed():
    model = _pixel_model(7, 5, seed=11)
    targets = _np(model.targets)
    noise = np.random.default_rng(11).standard_normal((7, 5))
    np.testing.assert_allclose(targets, noise / np.linalg.norm(noise, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(_np(_pixel_model(7, 5, seed=11).targets), targets)
    assert np.abs(_np(_pixel_model(7, 5, seed=12).targets) - targets).max() > 0.1
    np.testing.assert_array_equal(_np(model.assignment), np.arange(7))  # the identity to start with
    images = _images(np.random.default_rng(0).uniform(size=(3, 5)))
    for _ in range(2):
        model.train_on_batch(images, np.array([6, 1, 3]))
    np.testing.assert_array_equal(_np(model.targets), targets)  # never trained


# ------------------------------------------------------------------------------- a training step
@pytest.mark.backends
def test_one_training_step_moves_the_encoder_only_and_its_loss_is_the_distance_to_the_new_targets():
    keras.utils.set_random_seed(0)
    encoder = encoders.build_encoder("small", (8, 8, 3), y_dim=8, widths=(8, 8, 8), fc_units=16)
    model = NoiseAsTargets(encoder, num_examples=10, seed=0)
    model.compile(jit_compile=True)
    if keras.backend.backend() == "tensorflow":
        assert model.jit_compile is False  # tf.numpy_function has no XLA kernel
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in encoder.trainable_variables}
    assert {"targets", "assignment"} <= {v.name for v in model.non_trainable_variables}
    images = np.random.RandomState(0).uniform(size=(4, 8, 8, 3)).astype("float32")
    batch = np.array([7, 2, 9, 4])
    y = _np(model.encoder(images, training=True)["y"]).astype(np.float64)  # the step's forward pass (batch norm)
    features = _unit(y)
    before = {id(v): _np(v).copy() for v in model.weights}

    logs = model.train_on_batch(images, batch, return_dict=True)
    targets = _np(model.targets).astype(np.float64)
    after = _np(model.assignment)
    np.testing.assert_allclose(logs["loss"], _cost(features, targets[after[batch]]) / 4, rtol=1e-4)
    best = min(_cost(features, targets[list(p)]) for p in itertools.permutations(batch))  # started at identity
    np.testing.assert_allclose(_cost(features, targets[after[batch]]), best, rtol=1e-4)
    for v in model.trainable_variables:
        assert np.abs(_np(v) - before[id(v)]).max() > 0, v.path
    np.testing.assert_array_equal(_np(model.targets), before[id(model.targets)])
    assert int(_np(model.optimizer.iterations)) == 1


# ------------------------------------------------------------------------------------ the schedule
@pytest.mark.backends
def test_the_assignment_is_rematched_only_in_epochs_that_are_multiples_of_reassign_every():
    """Two steps per epoch, every 3 epochs: iterations 3 (epoch 1) and 5 (epoch 2) keep the assignment,
    iteration 7 (epoch 3) re-matches (a schedule read off the step count itself would do the opposite)."""
    model = _constructed_model(steps_per_epoch=2, reassign_every=3)
    images = _images(ONE_HOT[WANTED])
    for iteration in (3, 5):
        model.optimizer.iterations.assign(iteration)
        logs = model.train_on_batch(images, BATCH, return_dict=True)
        np.testing.assert_array_equal(_np(model.assignment), START)
        assert logs["reassigned"] == 0.0
        np.testing.assert_allclose(logs["loss"], 2.0, atol=1e-3)  # each image still 2 away from its target
    model.optimizer.iterations.assign(7)
    logs = model.train_on_batch(images, BATCH, return_dict=True)
    np.testing.assert_array_equal(_np(model.assignment), AFTER)
    assert logs["reassigned"] == 1.0


def test_epoch_zero_rematches():
    model = _constructed_model(steps_per_epoch=2, reassign_every=3)
    model.train_on_batch(_images(ONE_HOT[WANTED]), BATCH)
    np.testing.assert_array_equal(_np(model.assignment), AFTER)


# ------------------------------------------------------------------------- evaluation, misuse
@pytest.mark.backends
def test_evaluation_without_indices_scores_the_nearest_target():
    model = _constructed_model()
    # features e0 (on a target: 0) and (e1 + e2) / sqrt 2 (nearest targets e1, e2: 2 - 2 / sqrt 2)
    logs = model.test_on_batch(_images([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]]), return_dict=True)
    np.testing.assert_allclose(logs["target_loss"], (2 - np.sqrt(2)) / 2, rtol=1e-5)
    np.testing.assert_array_equal(_np(model.assignment), START)
    with pytest.raises(ValueError, match="indices"):
        model.train_on_batch(_images(ONE_HOT[WANTED]))


def test_build_needs_the_training_split_size_and_reads_the_config():
    from dim_keras.config import TrainConfig

    config = TrainConfig(method="nat", y_dim=6, nat_reassign_every=2, seed=4)
    with pytest.raises(ValueError, match="num_examples") as error:
        nat.build(config, _pixel_encoder(6), "pixel", (1, 1, 6), steps_per_epoch=3)
    assert "\n" not in str(error.value)
    model = nat.build(config, _pixel_encoder(6), "pixel", (1, 1, 6), steps_per_epoch=3, num_examples=8)
    assert (model.num_examples, model.reassign_every, model.steps_per_epoch) == (8, 2, 3)
    np.testing.assert_array_equal(_np(model.targets), nat.unit_sphere_targets(8, 6, 4))


# ------------------------------------------------------------------------------------ saving
@pytest.mark.backends
def test_model_keras_round_trip_keeps_targets_and_assignment(tmp_path):
    model = _constructed_model(steps_per_epoch=5)
    model.train_on_batch(_images(ONE_HOT[WANTED]), BATCH)
    changed = ONE_HOT[::-1].copy()  # not what the seed draws: the file must carry the targets themselves
    model.targets.assign(changed)
    path = str(tmp_path / "nat.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NoiseAsTargets)
    assert (loaded.num_examples, loaded.reassign_every, loaded.steps_per_epoch) == (6, 3, 5)
    np.testing.assert_array_equal(_np(loaded.targets), changed)
    np.testing.assert_array_equal(_np(loaded.assignment), AFTER)
    assert int(_np(loaded.optimizer.iterations)) == 1
