"""Two views and colour distortion (issue 12's improved recipe, beyond the paper): AMDIM's independent views
(Y from one augmentation of an image, the local features from another) and SimCLR's colour distortion."""
import numpy as np
import pytest

import dim_keras as dk
from dim_keras.config import TrainConfig
from dim_keras.data import dataset_defaults, make_dataset
from dim_keras.data import pipeline
from dim_keras.errors import DataError, UsageError
from dim_keras.runs.train import augmentation

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _randoms(uniforms):
    """int64 randoms whose pipeline uniforms (24-bit) are exactly ``uniforms`` (multiples of 2^-24)."""
    return np.round(np.asarray(uniforms, np.float64) * 2**24).astype(np.int64) + 7 * 2**24  # high bits ignored


def _torchvision_colour(image, brightness, contrast, saturation):
    """torchvision's adjust_brightness, adjust_contrast, adjust_saturation in that order, on [0, 1] floats."""
    out = np.clip(image * brightness, 0, 1)
    mean = (out @ LUMA).mean()
    out = np.clip((out - mean) * contrast + mean, 0, 1)
    grey = (out @ LUMA)[..., None]
    return np.clip(grey + (out - grey) * saturation, 0, 1)


def test_colour_distortion_is_torchvisions_formula_with_the_drawn_factors():
    images = np.random.default_rng(0).random((3, 5, 5, 3)).astype(np.float32)
    # Image 0: distorted (u0 < 0.8) with factors 0.6 + 0.8 u; image 1: untouched (u0 >= 0.8);
    # image 2: distorted, then grey (u4 < 0.2).
    uniforms = [[0.25, 0.0, 0.5, 1.0 - 2**-24, 0.5], [0.875, 0.1, 0.2, 0.3, 0.5], [0.5, 0.75, 0.25, 0.5, 0.125]]
    out = pipeline._distort_colour(images, _randoms(uniforms)).numpy()
    factors = [[0.6 + 0.8 * u for u in row[1:4]] for row in uniforms]
    np.testing.assert_allclose(out[0], _torchvision_colour(images[0], *factors[0]), atol=1e-6)
    np.testing.assert_array_equal(out[1], images[1])
    grey = _torchvision_colour(images[2], *factors[2]) @ LUMA
    np.testing.assert_allclose(out[2], np.repeat(grey[..., None], 3, axis=-1), atol=1e-6)


def test_two_views_are_independent_augmentations_of_the_same_images():
    images = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")

    def source_of(view):
        """The index of the image ``view`` is a window (or mirrored window) of."""
        found = {i for i in range(len(images)) for r in range(3) for c in range(3)
                 for window in (padded[i, r:r + 8, c:c + 8], padded[i, r:r + 8, c:c + 8][:, ::-1])
                 if np.array_equal(view, window.astype(np.float32) / 255)}
        assert len(found) == 1
        return found.pop()

    differ = 0
    for first, second in make_dataset(images, batch_size=3, training=True, seed=4, pad=1, flip=True,
                                      views=2).take(4):
        for a, b in zip(first.numpy(), second.numpy()):
            assert source_of(a) == source_of(b)
            differ += not np.array_equal(a, b)
    assert differ >= 6  # 12 pairs, each the same window and flip with probability 1/18
    # One view is the pipeline it always was: the first three randoms of an image are its crop and flip.
    one = next(iter(make_dataset(images, batch_size=3, training=True, seed=4, pad=1, flip=True))).numpy()
    assert one.shape == (3, 8, 8, 3)
    with pytest.raises(DataError, match="views=2"):
        make_dataset(images, np.arange(6), batch_size=3, training=True, views=2)
    with pytest.raises(DataError, match="views must be"):
        make_dataset(images, batch_size=3, training=True, views=3)


def test_y_comes_from_the_second_view_and_everything_else_from_the_first():
    encoder = dk.build_encoder("dcgan", (32, 32, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    model = dk.DeepInfoMax(encoder, embedding_dim=16, gamma=0.0, views=2, seed=0)
    rng = np.random.default_rng(2)
    first, second = (rng.random((4, 32, 32, 3)).astype(np.float32) for _ in range(2))
    loss, terms, _ = model._representation_objective(first, (second,), training=False)
    features = dict(encoder(first, training=False), y=encoder(second, training=False)["y"])
    expected = model.mi_terms(features)
    np.testing.assert_allclose(float(terms["local_mi"]), float(expected["local_mi"]), rtol=1e-6)
    np.testing.assert_allclose(float(loss), -float(expected["local_mi"]), rtol=1e-6)
    same_view = model.mi_terms(encoder(first, training=False))
    assert abs(float(same_view["local_mi"]) - float(expected["local_mi"])) > 1e-4
    # Evaluation batches have one view: every feature from it.
    _, terms, _ = model._representation_objective(first, (), training=False)
    np.testing.assert_allclose(float(terms["local_mi"]), float(same_view["local_mi"]), rtol=1e-6)
    with pytest.raises(ValueError, match="views=2 trains on"):
        model._representation_objective(first, (), training=True)
    assert dk.DeepInfoMax.from_config(model.get_config()).views == 2
    # A fit on two-view batches trains.
    model.compile()
    data = make_dataset((rng.random((16, 32, 32, 3)) * 255).astype(np.uint8), batch_size=8, training=True,
                        seed=0, pad=4, flip=True, colour=True, views=2)
    history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["local_mi"][0])


def test_views_and_colour_flags():
    cifar = dataset_defaults("cifar10")
    two = TrainConfig(dataset="cifar10", views=2, augment="pad_crop_flip_colour")
    assert augmentation(two, cifar, (32, 32, 3)) == {"pad": 4, "flip": True, "colour": True, "views": 2}
    stl = TrainConfig(dataset="stl10", views=2)
    stl.check()  # STL-10's own crops and flips make two different views
    assert augmentation(stl, dataset_defaults("stl10"), (64, 64, 3)) == {"crop_size": 64, "flip": True, "views": 2}
    with pytest.raises(UsageError, match="--views=2 needs augmentation"):
        TrainConfig(dataset="cifar10", views=2).check()
    # TFRecords pass the check (their source may have augmentation); the run refuses those whose has none.
    tfrecord = TrainConfig(dataset="tfrecord", data_dir="shards", views=2)
    with pytest.raises(UsageError, match="--views=2 needs augmentation.*tfrecord has none"):
        augmentation(tfrecord, {"pretrain_crop": None, "pretrain_flip": False}, (32, 32, 3))
    with pytest.raises(UsageError, match="--views is a setting of DIM's objective"):
        TrainConfig(method="vae", views=2, augment="pad_crop_flip").check()
