"""SavedModel export round-trip: uint8 in, float32 features out."""
import os

import numpy as np
import pytest
import tensorflow as tf

import dim_keras as dk


def test_saved_model_matches_in_memory_encoder(tmp_path):
    encoder = dk.build_encoder("dcgan", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    path = dk.export_encoder(encoder, str(tmp_path / "encoder"))
    assert os.listdir(tmp_path) == ["encoder"]  # no temporary left beside it
    # Readable by other users (a model server): the permissions of a new directory, not mkdtemp's 0700.
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(path):
        assert os.stat(root).st_mode & 0o777 == 0o777 & ~umask, root
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o666 & ~umask, name
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for n in (1, 3, 17):
        images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        out = serve(images=tf.constant(images))
        assert {"local", "conv", "fc", "y"} <= set(out)
        assert all(v.dtype == tf.float32 for v in out.values())
        expected = encoder(images.astype(np.float32) / 255.0, training=False)["y"].numpy()
        np.testing.assert_allclose(out["y"].numpy(), expected, atol=1e-5)
    helper = dk.load_encoder(path, batch_size=4)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(helper(images)["y"],
                               encoder(images / 255.0, training=False)["y"].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        helper(images.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        helper(np.zeros((2, 8, 8, 3), np.uint8))


def test_load_encoder_missing_path(tmp_path):
    with pytest.raises(ValueError, match="no SavedModel"):
        dk.load_encoder(str(tmp_path / "nothing"))


def saved_variables(path):
    """``{key: shape}`` of the values in a SavedModel's variables checkpoint (the object graph left out)."""
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    return {k: v for k, v in reader.get_variable_to_shape_map().items() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def weight_bytes(model):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.variables)


@pytest.mark.parametrize("kind", ["encoder", "generator"])
def test_saved_model_stores_every_variable_once(tmp_path, kind):
    # ExportArchive.track lists the Keras variables, the endpoint captures the tf.Variables inside them;
    # both used to be saved (variables/N and _all_variables/N): 2x the weights on disk.
    if kind == "encoder":
        model = dk.build_encoder("dcgan", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
        path = dk.export_encoder(model, str(tmp_path / kind))
    else:
        from dim_keras.generation.export import export_generator
        from dim_keras.generation.networks import build_dcgan_generator
        model = build_dcgan_generator((16, 16, 3), z_dim=8, base_filters=8)
        path = export_generator(model, str(tmp_path / kind))
    stored = saved_variables(path)
    # Known answer: one stored value per variable, and their sizes add up to the weights exactly.
    assert len(stored) == len(model.variables)
    assert sum(int(np.prod(shape)) * 4 for shape in stored.values()) == weight_bytes(model)
    assert not any(key.startswith("_all_variables") for key in stored)
    data = os.path.getsize(os.path.join(path, "variables", "variables.data-00000-of-00001"))
    assert weight_bytes(model) <= data < 1.2 * weight_bytes(model)
    # The revived object still lists them (no duplicates), and serving is unchanged.
    loaded = tf.saved_model.load(path)
    assert len(loaded.variables) == len(model.variables)
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    assert len(loaded.non_trainable_variables) == len(model.non_trainable_variables)
    if kind == "encoder":
        images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
        np.testing.assert_allclose(dk.load_encoder(path)(images)["y"],
                                   model(images / 255.0, training=False)["y"].numpy(), atol=1e-5)
    else:
        from dim_keras.generation.export import load_generator
        z = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
        expected = np.round(np.clip(model(z, training=False).numpy(), 0, 1) * 255).astype(np.uint8)
        assert np.abs(load_generator(path)(z).astype(int) - expected).max() <= 1


MIRRORED_EXPORT = """
import json, os, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import dim_keras as dk
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    encoder = dk.build_encoder("dcgan", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
path = dk.export_encoder(encoder, sys.argv[1])
images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
error = np.abs(dk.load_encoder(path)(images)["y"] - encoder(images / 255.0, training=False)["y"].numpy()).max()
weights = sum(int(np.prod(v.shape)) * 4 for v in encoder.variables)
print(json.dumps({"error": float(error), "weights": weights,
                  "data": os.path.getsize(os.path.join(path, "variables", "variables.data-00000-of-00001"))}))
"""


def test_encoder_built_under_mirrored_strategy_is_exported_once(tmp_path):
    # There the endpoint captures each MirroredVariable's primary component: still one copy on disk.
    import json
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", MIRRORED_EXPORT, str(tmp_path / "encoder")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["error"] < 1e-5
    assert report["weights"] <= report["data"] < 1.2 * report["weights"]


def test_loaded_encoder_says_what_it_takes(tmp_path):
    encoder = dk.build_encoder("small", (8, 8, 3), y_dim=4)
    helper = dk.load_encoder(dk.export_encoder(encoder, str(tmp_path / "encoder")))
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"takes uint8 images \(0-255; it scales them to \[0, 1\] itself\), got "
                                         r"float32 \(floats in \[0, 1\]: pass np.round\(images \* 255\)"):
        helper(images / np.float32(255))
    with pytest.raises(ValueError, match=r"of shape \[N, 8, 8, 3\], got \[8, 8, 3\] \(one image: pass images\[None\]"):
        helper(images[0])
    with pytest.raises(ValueError, match=r"of shape \[N, 8, 8, 3\], got \[2, 8, 8, 1\]$"):
        helper(images[..., :1])
    assert helper(tf.constant(images))["y"].shape == (2, 4)  # a uint8 tensor is fine too
