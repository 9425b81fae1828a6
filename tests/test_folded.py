"""Strided-crop ("folded") encoders, the CIFAR ResNets and multiple globals (DIM Sec. 4.2, Table 3).

Known answers: every crop is the hand-cut slice, every local feature the crop network applied to its
slice, every less-global feature the shared network applied to the numpy-cut 3 x 3 block at the sampled
corner, and the local MI term of a multiple-globals step the mean of the bounds recomputed from those.
Tests marked ``backends`` run on TensorFlow and on JAX (CI's second leg); the train.py ones on TensorFlow.
"""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import dim_keras as dk
from dim_keras import encoders, local_blocks
from backend_testing import to_numpy
from official_formats import WITHOUT_TENSORFLOW, write_folder
from app_testing import assert_usage_error

backends = pytest.mark.backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--embedding_dim=16", "--y_dim=8", "--batch_size=8", "--steps_per_epoch=2", "--nojit_compile",
         "--verbose=2", "--noprobe", "--monitor_every=0"]


def _numpy(x):
    return to_numpy(x)  # tensors and keras.Variables alike, without NumPy's __array__ warning


def _shapes(model):
    return {k: tuple(v.shape[1:]) for k, v in model.output.items()}


def _tiny_folded(side=32, **kwargs):
    return encoders.build_encoder("folded", (side, side, 3), widths=(4, 8, 8), fc_units=16, y_dim=8, **kwargs)


# ------------------------------------------------------------------ folded encoder
@backends
@pytest.mark.parametrize("height,width,crop,stride", [(32, 32, (8, 8), (4, 4)), (64, 64, (16, 16), (8, 8)),
                                                      (32, 48, (8, 12), (4, 6))])
def test_strided_crops_equal_hand_cut_slices(height, width, crop, stride):
    """Sec. 4.2: crops of 25 % of the side at a stride of 12.5 %, 7 x 7 of them, image-major then row-major."""
    assert encoders.crop_geometry(height, width) == (crop, stride, (7, 7))
    images = np.random.default_rng(0).random((2, height, width, 3)).astype("float32")
    crops = _numpy(encoders.StridedCrops(crop, stride, (7, 7))(images))
    assert crops.shape == (2 * 49, *crop, 3)
    for b in range(2):
        for i in range(7):
            for j in range(7):
                expected = images[b, i * stride[0]:i * stride[0] + crop[0], j * stride[1]:j * stride[1] + crop[1]]
                np.testing.assert_array_equal(crops[b * 49 + i * 7 + j], expected)
    # The last crop ends exactly at the image's far corner: the grid covers the whole image.
    assert 6 * stride[0] + crop[0] == height and 6 * stride[1] + crop[1] == width


@backends
def test_each_local_feature_is_the_crop_network_on_its_slice():
    model = _tiny_folded()
    assert _shapes(model) == {"local": (7, 7, 8), "conv": (7, 7, 8), "fc": (16,), "y": (8,)}
    assert model.output["conv"] is model.output["local"]
    # The crop network alone: from the crops (already in [-1, 1]) to the pooled vector.
    crop_net = keras.Model(model.get_layer("crops").output, model.get_layer("crop_pool").output)
    images = np.random.default_rng(1).random((3, 32, 32, 3)).astype("float32")
    local = _numpy(model(images, training=False)["local"])
    for i, j in [(0, 0), (0, 6), (3, 2), (6, 6)]:
        piece = 2.0 * images[:, 4 * i:4 * i + 8, 4 * j:4 * j + 8] - 1.0
        np.testing.assert_allclose(local[:, i, j], _numpy(crop_net(piece, training=False)), rtol=1e-5, atol=1e-6)
    # The local features are averages of a ReLU map: non-negative (A.2: taken after BN + ReLU).
    assert local.min() >= 0


@backends
@pytest.mark.parametrize("crop_encoder", ["resnet18", "resnet50"])
def test_folded_encoder_with_a_resnet_crop_network(crop_encoder):
    model = encoders.build_encoder("folded", (64, 64, 3), crop_encoder=crop_encoder, widths=(2, 2, 4, 4),
                                   blocks=(1, 1, 1, 1), fc_units=8, y_dim=4)
    channels = 4 * (4 if crop_encoder == "resnet50" else 1)
    assert _shapes(model) == {"local": (7, 7, channels), "conv": (7, 7, channels), "fc": (8,), "y": (4,)}
    assert model.get_layer("crops").crop == (16, 16)
    assert model.get_layer("crop_stage4_block1_add") is not None


@backends
@pytest.mark.parametrize("shape", [(24, 24, 3), (36, 36, 3), (32, 32, 1)])
def test_sizes_the_folded_encoder_cannot_take(shape):
    with pytest.raises(ValueError):
        encoders.build_encoder("folded", shape)


def test_folded_encoder_refuses_what_does_not_apply():
    with pytest.raises(ValueError, match="local_layer does not apply"):
        encoders.build_encoder("folded", (32, 32, 3), local_layer=2)
    with pytest.raises(ValueError, match="folded encoder only"):
        encoders.build_encoder("dcgan", (32, 32, 3), crop_encoder="conv")
    with pytest.raises(ValueError, match="unknown crop_encoder"):
        encoders.build_encoder("folded", (32, 32, 3), crop_encoder="vgg")


# ------------------------------------------------------------------ ResNets
@backends
@pytest.mark.parametrize("name,expansion", [("resnet18", 1), ("resnet50", 4)])
def test_resnet_taps_and_shapes(name, expansion):
    model = encoders.build_encoder(name, (32, 32, 3), widths=(2, 4, 4, 8), blocks=(1, 2, 1, 1), y_dim=4)
    assert _shapes(model) == {"local": (8, 8, 4 * expansion), "conv": (4, 4, 8 * expansion),
                              "fc": (8 * expansion,), "y": (4,)}
    # CIFAR stem: one 3x3 stride-1 conv, no max-pool.
    stem = model.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    assert model.output["local"] is model.get_layer("stage3_block1_relu").output  # after BN + ReLU
    assert model.output["conv"] is model.get_layer("stage4_block1_relu").output
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Add)]) == 5
    assert any(layer.name.endswith("_c_conv") for layer in model.layers) == (expansion == 4)
    images = np.random.default_rng(2).random((2, 32, 32, 3)).astype("float32")
    out = model(images, training=False)
    np.testing.assert_allclose(_numpy(out["fc"]), _numpy(out["conv"]).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert model.get_layer("y").activation.__name__ == "linear"


@pytest.mark.parametrize("name,torchvision_params,features", [("resnet18", 11_689_512, 512),
                                                                ("resnet50", 25_557_032, 2048)])
def test_full_resnets_have_torchvisions_weights_but_the_stem_and_head(name, torchvision_params, features):
    """Known answer: torchvision's ResNet-18/50 trainable parameter counts, less its 7x7 stem conv (3x3 here)
    and its 1000-way classifier (a 64-d linear Y here): the blocks are the same."""
    model = encoders.build_encoder(name, (32, 32, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    stem_difference = 7 * 7 * 3 * 64 - 3 * 3 * 3 * 64
    expected = torchvision_params - stem_difference - (features * 1000 + 1000) + (features * 64 + 64)
    assert trainable == expected


# ------------------------------------------------------------------ multiple globals
@backends
def test_block_corners_cover_every_position_and_blocks_are_hand_cut_slices():
    corners = _numpy(local_blocks.sample_block_corners(200, 3, 7, 7, keras.random.SeedGenerator(0)))
    assert corners.shape == (200, 3, 2) and corners.min() == 0 and corners.max() == 4
    assert len({tuple(c) for c in corners.reshape(-1, 2)}) == 25  # all 5 x 5 block positions of a 7 x 7 grid
    local = np.random.default_rng(3).random((4, 7, 6, 5)).astype("float32")
    corners = np.array([[[0, 0], [4, 3]], [[2, 1], [2, 1]], [[4, 0], [0, 3]], [[1, 2], [3, 3]]], "int32")
    blocks = _numpy(local_blocks.cut_blocks(local, corners))
    assert blocks.shape == (4, 2, 3, 3, 5)
    for b in range(4):
        for k in range(2):
            i, j = corners[b, k]
            np.testing.assert_array_equal(blocks[b, k], local[b, i:i + 3, j:j + 3])


def _multiple_globals_model(num_globals=3, seed=5):
    return dk.DeepInfoMax(_tiny_folded(), embedding_dim=16, gamma=0.0, num_globals=num_globals, seed=seed)


@backends
def test_less_global_features_are_the_shared_network_on_the_sampled_blocks():
    model = _multiple_globals_model()
    local = np.random.default_rng(4).random((4, 7, 7, 8)).astype("float32")
    less_global, corners = model.less_global_features(local)
    less_global, corners = _numpy(less_global), _numpy(corners)
    # The model draws its blocks from its own seed generator: a fresh one with its seed draws the same.
    np.testing.assert_array_equal(corners, _numpy(local_blocks.sample_block_corners(
        4, 3, 7, 7, keras.random.SeedGenerator(5))))
    assert less_global.shape == (4, 3, 8)
    for b in range(4):
        for k in range(3):
            i, j = corners[b, k]
            block = local[b:b + 1, i:i + 3, j:j + 3]
            np.testing.assert_allclose(less_global[b, k], _numpy(model.less_global_network(block))[0],
                                       rtol=1e-5, atol=1e-6)


@backends
def test_a_multiple_globals_step_scores_the_sampled_blocks_against_all_local_features():
    """The local term of ``num_globals=K`` is the mean of K + 1 bounds, Y's and the K less-global features',
    each against every local feature with the one critic; recomputed by hand from the blocks the model
    samples (its first draw, the same as a fresh generator's with its seed)."""
    model = _multiple_globals_model()
    images = np.random.default_rng(5).random((6, 32, 32, 3)).astype("float32")
    features = model.encoder(images, training=False)
    terms = {k: float(_numpy(v)) for k, v in model.mi_terms(features, training=False).items()}
    local = _numpy(features["local"])
    corners = _numpy(local_blocks.sample_block_corners(6, 3, 7, 7, keras.random.SeedGenerator(5)))
    bound = dk.jsd_lower_bound
    critic = model.local_critic
    single = float(_numpy(bound(critic(features["y"], local))))
    blocks = np.stack([[local[b, i:i + 3, j:j + 3] for i, j in corners[b]] for b in range(6)])  # [B, K, 3, 3, C]
    less = [float(_numpy(bound(critic(model.less_global_network(blocks[:, k]), local)))) for k in range(3)]
    np.testing.assert_allclose(terms["less_global_mi"], np.mean(less), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms["local_mi"], (single + sum(less)) / 4, rtol=1e-5, atol=1e-6)
    assert abs(terms["local_mi"] - single) > 1e-4  # the less-global features changed the term


@backends
def test_multiple_globals_train_save_and_validate(tmp_path):
    model = _multiple_globals_model(num_globals=2)
    network_variables = {id(v) for v in model.less_global_network.trainable_variables}
    assert network_variables <= {id(v) for v in model.representation_variables}
    model.compile()
    images = np.random.default_rng(6).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    before = [_numpy(v) for v in model.less_global_network.trainable_variables]
    logs = model.train_on_batch(images, return_dict=True)
    assert {"local_mi", "less_global_mi"} <= set(logs)
    assert all(np.abs(_numpy(v) - b).max() > 0
               for v, b in zip(model.less_global_network.trainable_variables, before))
    assert model.get_config()["num_globals"] == 2
    model.save(tmp_path / "model.keras")
    loaded = dk.load_model(tmp_path / "model.keras")
    assert loaded.num_globals == 2
    np.testing.assert_allclose(_numpy(loaded.encoder(images[:2] / 255)["y"]),
                               _numpy(model.encoder(images[:2] / 255)["y"]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="beta > 0"):
        dk.DeepInfoMax(_tiny_folded(), alpha=1.0, beta=0.0, num_globals=1)
    with pytest.raises(ValueError, match="at least 3x3"):  # the small encoder's 3rd conv on 8x8: a 2x2 map
        dk.DeepInfoMax(encoders.build_encoder("small", (8, 8, 3), widths=(4, 4, 4), fc_units=8, y_dim=4,
                                              local_layer=3), num_globals=1)
    with pytest.raises(ValueError, match="integer >= 0"):
        _multiple_globals_model(num_globals=-1)


# ------------------------------------------------------------------ apps/train.py
def _run_train(args, without_tensorflow=False):
    train = os.path.join(ROOT, "apps", "train.py")
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, train] if without_tensorflow else [sys.executable, train]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_BACKEND", None)  # the TensorFlow leg
    return subprocess.run(command + args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_train_app_folded_encoder_with_multiple_globals(tmp_path):
    out = tmp_path / "run"
    result = _run_train(QUICK + ["--encoder=folded", "--num_globals=2", "--epochs=1", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (epoch,) = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(epoch["less_global_mi"]) and np.isfinite(epoch["local_mi"])
    saved = json.loads((out / "config.json").read_text())
    assert (saved["encoder"], saved["num_globals"], saved["crop_encoder"]) == ("folded", 2, "conv")
    assert (out / "encoder" / "saved_model.pb").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--num_globals=-1"], "--num_globals must be >= 0"),
    (["--num_globals=two"], "--num_globals"),
    (["--encoder=foldd"], "--encoder: unknown value 'foldd'"),
    (["--crop_encoder=vgg"], "--crop_encoder: unknown value 'vgg'"),
    (["--crop_encoder=resnet18"], "applies to --encoder=folded only"),
    (["--num_globals=2", "--alpha=1", "--beta=0"], "--num_globals needs the local MI term"),
])
def test_bad_values_exit_2_with_one_line_before_tensorflow(args, fragment):
    assert_usage_error(_run_train(args, without_tensorflow=True), fragment)


def test_images_too_small_for_the_folded_encoder_or_multiple_globals(tmp_path):
    write_folder(str(tmp_path / "images"), np.random.default_rng(0), n_per_class=10, size=(8, 8))
    data = ["--dataset=folder", f"--data_dir={tmp_path / 'images'}", "--batch_size=4"]
    result = _run_train(QUICK + data + ["--encoder=folded", f"--output_dir={tmp_path / 'a'}"])
    assert_usage_error(result, "the folded encoder needs sides that are multiples of 8 and >= 32")
    # A ResNet's stage 3 on 8x8 images is a 2x2 map: no 3x3 block.
    result = _run_train(QUICK + data + ["--encoder=resnet18", "--num_globals=1", f"--output_dir={tmp_path / 'b'}"])
    assert_usage_error(result, "--num_globals with the resnet18 encoder")
