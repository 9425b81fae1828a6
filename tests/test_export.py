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
