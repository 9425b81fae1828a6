"""What a run leaves on disk: one checkpoint, model.keras without optimizer state, ablation trials without
models (unless asked).  The SavedModel's size is checked in tests/test_export.py."""
import io
import os
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf

import dim_keras as dk
from dim_keras.config import AblationConfig, TrainConfig
from dim_keras.runs import ablation
from dim_keras.runs.train import train

OPTIMIZERS = ("optimizer", "discriminator_optimizer")
EPOCHS, STEPS = 3, 2


def tiny_train_config(output_dir, **kwargs):
    return TrainConfig(embedding_dim=32, y_dim=16, batch_size=16, steps_per_epoch=STEPS, epochs=EPOCHS,
                       jit_compile=False, probe=False, verbose=0, output_dir=str(output_dir), **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of 3 epochs: the defaults, and --keep_checkpoints=2 --keras_optimizer_state."""
    root = tmp_path_factory.mktemp("disk")
    return {"default": train(tiny_train_config(root / "default"), log=lambda *a: None),
            "kept": train(tiny_train_config(root / "kept", keep_checkpoints=2, keras_optimizer_state=True),
                          log=lambda *a: None)}


def checkpoints(run):
    directory = os.path.join(run["output_dir"], "checkpoints")
    state = tf.train.get_checkpoint_state(directory)
    on_disk = sorted({name.split(".")[0] for name in os.listdir(directory) if name.startswith("ckpt-")})
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths], on_disk


def weight_groups(path):
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        return set(h5.keys())


def test_only_the_newest_checkpoints_are_kept(runs):
    assert checkpoints(runs["default"]) == ([f"ckpt-{EPOCHS}"], [f"ckpt-{EPOCHS}"])
    assert checkpoints(runs["kept"]) == ([f"ckpt-{EPOCHS - 1}", f"ckpt-{EPOCHS}"],
                                         [f"ckpt-{EPOCHS - 1}", f"ckpt-{EPOCHS}"])


def test_model_keras_has_no_optimizer_state_unless_asked(runs):
    default, kept = runs["default"]["model"], runs["kept"]["model"]
    assert "encoder" in weight_groups(default) and not set(OPTIMIZERS) & weight_groups(default)
    assert set(OPTIMIZERS) <= weight_groups(kept)
    # Adam keeps two slots per weight: the optimizer state is about twice the weights.
    assert os.path.getsize(kept) > 2.5 * os.path.getsize(default)

    restored = dk.load_model(default)
    assert isinstance(restored, dk.DeepInfoMax) and not restored.compiled
    restored_with_state = dk.load_model(kept)
    assert restored_with_state.compiled
    assert int(restored_with_state.optimizer.iterations) == EPOCHS * STEPS


@pytest.mark.parametrize("which", ["default", "kept"])
def test_model_keras_encoder_gives_the_exported_encoders_features(runs, which):
    encoder = dk.load_model(runs[which]["model"]).encoder
    exported = dk.load_encoder(runs[which]["encoder"])
    images = np.random.default_rng(0).integers(0, 256, (6,) + exported.input_shape, dtype=np.uint8)
    expected = exported(images)
    features = encoder(images.astype(np.float32) / 255.0, training=False)
    for name in ("local", "conv", "fc", "y"):
        np.testing.assert_allclose(features[name].numpy(), expected[name], atol=1e-5, err_msg=name)


def test_ablation_trials_keep_only_what_their_results_need(tmp_path):
    train_config = TrainConfig(embedding_dim=32, y_dim=16, batch_size=32, steps_per_epoch=2, epochs=1,
                               jit_compile=False, probe=False, verbose=0)
    config = AblationConfig(search_dir=str(tmp_path), alphas=(1.0,), betas=(1.0,), gammas=(0.1,),
                            eval_max_train=400, train=train_config)
    rows = ablation.search(config)["rows"]
    assert [r["status"] for r in rows] == ["COMPLETED"]
    trial_dir = tmp_path / "trials" / rows[0]["trial_id"]
    assert sorted(os.listdir(trial_dir)) == ["config.json", "encoder", "logs", "measures.json", "metrics.json"]
    assert len(dk.load_encoder(str(trial_dir / "encoder")).input_shape) == 3  # the export stays usable

    # A trial killed after writing measures.json, before keras-tuner recorded it, is retried with the same
    # id: its measures are reused, not retrained (its checkpoints are gone).
    tuner = ablation.make_tuner(config)
    assert tuner.run_trial(tuner.oracle.trials[rows[0]["trial_id"]]) == {
        k: v for k, v in rows[0].items() if k == "probe_accuracy"}
    assert tuner.trainings_run == 0

    # --keep_trial_models keeps them.
    for name in ("checkpoints", "model.keras"):
        (trial_dir / name).mkdir()
    ablation.make_tuner(AblationConfig(search_dir=str(tmp_path), alphas=(1.0,), betas=(1.0,), gammas=(0.1,),
                                       keep_trial_models=True, train=train_config)).remove_models(str(trial_dir))
    assert {"checkpoints", "model.keras"} <= set(os.listdir(trial_dir))
    tuner.remove_models(str(trial_dir))
    assert not {"checkpoints", "model.keras"} & set(os.listdir(trial_dir))
