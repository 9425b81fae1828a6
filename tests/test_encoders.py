"""Encoders: the paper's feature taps and shapes (App. A.2)."""
import pytest

import dim_keras as dk
from dim_keras import encoders


def shapes(model):
    return {k: tuple(v.shape[1:]) for k, v in model.output.items()}


def test_dcgan_32x32_matches_table1_encoder():
    model = dk.build_encoder("dcgan", (32, 32, 3))
    assert shapes(model) == {"local": (8, 8, 128), "conv": (4, 4, 256), "fc": (1024,), "y": (64,)}
    conv1 = model.get_layer("conv1_conv")
    assert conv1.kernel_size == (4, 4) and conv1.strides == (2, 2)
    # The local map is taken after BN + ReLU.
    assert model.output["local"] is model.get_layer("conv2_relu").output
    assert model.get_layer("y").activation.__name__ == "linear"


def test_alexnet_64x64_matches_table2_encoder():
    model = dk.build_encoder("alexnet", (64, 64, 3))
    assert shapes(model) == {"local": (15, 15, 384), "conv": (7, 7, 192), "fc": (4096,), "y": (64,)}
    assert model.get_layer("conv1_conv").kernel_size == (3, 3)
    assert model.get_layer("fc2_dense").units == 4096


def test_small_encoder_and_auto_selection():
    assert shapes(dk.build_encoder("auto", (28, 28, 3)))["local"] == (14, 14, 64)
    assert dk.build_encoder("auto", (8, 8, 3)).output["y"].shape[-1] == 64
    assert encoders.auto_encoder_name(32) == "dcgan"
    assert encoders.auto_encoder_name(64) == "alexnet"


def test_configurable_widths_y_and_local_layer():
    model = dk.build_encoder("dcgan", (32, 32, 3), y_dim=16, widths=(8, 16, 32),
                             fc_units=64, local_layer=1)
    assert shapes(model) == {"local": (16, 16, 8), "conv": (4, 4, 32), "fc": (64,), "y": (16,)}


@pytest.mark.parametrize("name,shape", [("dcgan", (30, 30, 3)), ("dcgan", (8, 8, 3)),
                                        ("alexnet", (16, 16, 3)), ("small", (64, 64, 3)),
                                        ("dcgan", (32, 32, 1))])
def test_sizes_an_encoder_cannot_take(name, shape):
    with pytest.raises(ValueError):
        dk.build_encoder(name, shape)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"):
        dk.build_encoder("resnet", (32, 32, 3))
