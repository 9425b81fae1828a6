"""Occlusion and coordinate prediction (DIM Sec. 4.3, App. A.7): known answers on both backends."""
import math

import keras
import numpy as np
import pytest

import dim_keras as dk
from dim_keras import coordinates, occlusion

pytestmark = pytest.mark.backends


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _has_block(region, block):
    """Whether the boolean [H, W] ``region`` contains a fully true ``block x block`` square."""
    windows = np.lib.stride_tricks.sliding_window_view(region, (block, block))
    return bool(windows.all(axis=(-2, -1)).any())


@pytest.mark.parametrize("side,count", [(32, 400), (64, 100)])
def test_every_mask_keeps_one_block_visible_and_one_occluded(side, count):
    block = occlusion.occlusion_block(side, side)
    assert block == {32: 10, 64: 20}[side]  # A.7's 10 x 10 on 32 x 32, scaled with the image
    masks = _numpy(occlusion.occlusion_masks(count, side, side, keras.random.SeedGenerator(1)))
    assert masks.shape == (count, side, side, 1)
    assert set(np.unique(masks)) == {0.0, 1.0}
    for mask in masks[..., 0]:
        assert _has_block(mask == 1, block) and _has_block(mask == 0, block)
    # No favoured orientation: the guaranteed visible band runs along the rows or along the columns.
    def band(mask, axis):  # a band of `block` fully visible full rows (axis=1) or full columns (axis=0)
        lines = (mask == 1).all(axis=axis)
        return _has_block(np.broadcast_to(lines, (block, lines.size)), block)
    rows = np.mean([band(m[..., 0], 1) for m in masks])
    cols = np.mean([band(m[..., 0], 0) for m in masks])
    assert 0.4 < rows < 1 and 0.4 < cols < 1, (rows, cols)
    # Not one fixed pattern: the occluded fraction varies from image to image.
    assert np.unique(masks.mean(axis=(1, 2, 3))).size > 20


def test_occlusion_refuses_images_too_small_for_two_blocks():
    with pytest.raises(ValueError, match="at least 6 x 6 pixels"):
        occlusion.occlusion_masks(2, 5, 5, seed=0, block=3)
    assert occlusion.check_image_size(8, 8) == 3  # 10 * 8 / 32 = 2.5, halves rounded up
    assert occlusion.occlusion_block(40, 40) == 13  # 12.5


def _tiny_model(**kwargs):
    encoder = dk.build_encoder("dcgan", (32, 32, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    return dk.DeepInfoMax(encoder, embedding_dim=16, **kwargs)


def test_occluded_run_takes_local_features_from_the_full_image_and_y_from_the_occluded_one():
    model = _tiny_model(occlusion=True, gamma=0.0, seed=5)
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    features = model.features(images, training=False)
    full = model.encoder(images, training=False)
    for name in ("local", "conv", "fc"):
        np.testing.assert_array_equal(_numpy(features[name]), _numpy(full[name]))
    # The model's first masks are those of a fresh generator with its seed.
    occluded = _numpy(occlusion.occlude(images, keras.random.SeedGenerator(5)))
    assert (occluded == 0).mean() > 0.05
    np.testing.assert_allclose(_numpy(features["y"]), _numpy(model.encoder(occluded, training=False)["y"]),
                               rtol=1e-5, atol=1e-6)
    assert np.abs(_numpy(features["y"]) - _numpy(full["y"])).max() > 1e-3


def test_coordinate_inputs_and_targets_by_hand():
    # 2 images, a 2 x 3 local map whose channel holds the location index, Y = the image index.
    local = np.arange(6, dtype="float32").reshape(1, 2, 3, 1).repeat(2, axis=0)
    y = np.array([[10.0], [20.0]], dtype="float32")
    inputs, rows, cols = (_numpy(t) for t in coordinates.absolute_inputs(y, local))
    np.testing.assert_array_equal(inputs[:6], [[10, 0], [10, 1], [10, 2], [10, 3], [10, 4], [10, 5]])
    np.testing.assert_array_equal(inputs[6:, 0], [20] * 6)
    np.testing.assert_array_equal(rows, [0, 0, 0, 1, 1, 1] * 2)
    np.testing.assert_array_equal(cols, [0, 1, 2, 0, 1, 2] * 2)
    inputs, rows, cols = (_numpy(t) for t in coordinates.relative_inputs(y, local, np.array([4, 0])))
    # Image 0: source (1, 1) = location 4 against every target; image 1: source (0, 0).
    np.testing.assert_array_equal(inputs[:6, :2], [[10, 4]] * 6)
    np.testing.assert_array_equal(inputs[:6, 2], np.arange(6))
    np.testing.assert_array_equal(rows[:6], [1 - 0 + 1, 2, 2, 1 - 1 + 1, 1, 1])  # i - i' + (H - 1)
    np.testing.assert_array_equal(cols[:6], [1 - 0 + 2, 1 - 1 + 2, 1 - 2 + 2, 3, 2, 1])  # j - j' + (W - 1)
    np.testing.assert_array_equal(rows[6:], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(cols[6:], [2, 1, 0, 2, 1, 0])


def _train_predictor(task, local, draws=150):
    """Fits a CoordinatePredictor (App. A.7's MLP, narrower) alone on ``local`` features [B, H, W, C] with
    Keras's fit on the task's two cross-entropies; returns its (loss, accuracy) on one fresh draw."""
    batch, height, width, channels = local.shape
    y = np.zeros((batch, 2), "float32")
    classes = (height, width) if task == "absolute" else (2 * height - 1, 2 * width - 1)
    sources = np.random.default_rng(0).integers(0, height * width, (draws + 1, batch))

    def task_inputs(draw):
        if task == "absolute":
            return [_numpy(t) for t in coordinates.absolute_inputs(y, local)]
        return [_numpy(t) for t in coordinates.relative_inputs(y, local, sources[draw])]

    x, rows, cols = (np.concatenate(parts) for parts in zip(*(task_inputs(d) for d in range(draws))))
    predictor = coordinates.CoordinatePredictor(*classes, hidden_units=(64, 64))
    inputs = keras.Input((x.shape[-1],))
    model = keras.Model(inputs, predictor(inputs))
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=[cross_entropy, cross_entropy], jit_compile=True)
    model.fit(x, (rows, cols), batch_size=256, epochs=4, verbose=0)
    x, rows, cols = task_inputs(draws)
    loss, accuracy = coordinates.coordinate_loss(*predictor(x, training=False), rows, cols)
    return float(loss), float(accuracy)


@pytest.mark.parametrize("task", ["absolute", "relative"])
def test_predictor_reads_visible_positions_and_falls_to_chance_without_them(task):
    height = width = 4
    locations = height * width
    # Position trivially visible: each local feature is the one-hot code of its location.
    one_hot = np.eye(locations, dtype="float32").reshape(1, height, width, locations).repeat(8, axis=0)
    loss, accuracy = _train_predictor(task, one_hot)
    assert accuracy > 0.97, (task, accuracy)
    # Constant features: every location looks the same, so the prediction is one class for all of
    # them.  Absolute: exactly one of the 16 locations is right, and the cross-entropy cannot fall below
    # log 4 + log 4 (uniform targets).
    constant = np.ones((8, height, width, locations), dtype="float32")
    loss, accuracy = _train_predictor(task, constant)
    if task == "absolute":
        assert accuracy == pytest.approx(1 / locations)
        # (Batch norm's moving statistics, not the batch's, serve the final prediction: close, not equal.)
        assert math.log(height) + math.log(width) - 1e-4 <= loss < math.log(height) + math.log(width) + 0.15
    else:  # the most frequent offset (0, 0) at best: 1 in 16 pairs
        assert accuracy <= 1 / locations + 1e-6


def test_dim_trains_with_occlusion_and_both_coordinate_tasks(tmp_path):
    model = _tiny_model(occlusion=True, coordinate_prediction="both", coordinate_weight=0.5, gamma=0.1, seed=0)
    model.compile()
    predictors = [v for p in model.coordinate_predictors.values() for v in p.trainable_variables]
    assert {id(v) for v in predictors} <= {id(v) for v in model.representation_variables}
    before = [np.array(v.numpy()) for v in predictors]
    images = (np.random.default_rng(0).random((16, 32, 32, 3)) * 255).astype("uint8")
    history = model.fit(images, batch_size=8, epochs=1, verbose=0)
    for name in ("coordinate_loss", "absolute_coordinate_accuracy", "relative_coordinate_accuracy", "local_mi"):
        assert np.isfinite(history.history[name][0]), name
    # Both tasks start near chance: 1 / 64 (8 x 8 locations) and about 1 / 225 (15 x 15 offsets).
    assert history.history["absolute_coordinate_accuracy"][0] < 0.5
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, predictors))
    path = tmp_path / "coord.keras"
    model.save(path)
    restored = dk.load_model(path)
    assert restored.get_config()["coordinate_prediction"] == "both" and restored.occlusion
    np.testing.assert_array_equal(_numpy(restored(images[:2])["y"]), _numpy(model(images[:2])["y"]))
    with pytest.raises(ValueError, match="unknown coordinate_prediction"):
        _tiny_model(coordinate_prediction="diagonal")


def test_the_occluded_pass_leaves_the_moving_statistics_to_the_whole_images():
    """Batch norm's moving statistics (what exports and probes normalise with) move exactly as in a run
    without occlusion: the occluded pass uses its batch statistics but does not update them."""
    images = (np.random.default_rng(1).random((8, 32, 32, 3)) * 255).astype("uint8")
    statistics = []
    for occluded in (False, True):
        keras.utils.set_random_seed(0)
        model = _tiny_model(occlusion=occluded, gamma=0.0, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.0))  # only the statistics can move
        before = [np.array(v.numpy()) for v in model.encoder.non_trainable_variables]
        model.train_on_batch(images)
        statistics.append([np.array(v.numpy()) for v in model.encoder.non_trainable_variables])
    assert any(not np.array_equal(b, a) for b, a in zip(before, statistics[0]))  # the step moved them
    for whole, with_occlusion in zip(*statistics):
        np.testing.assert_allclose(with_occlusion, whole, rtol=1e-6, atol=1e-7)
