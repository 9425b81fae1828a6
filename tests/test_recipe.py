"""--recipe (issue 12): what each recipe sets, and the pad-crop-flip augmentation it adds."""
import numpy as np
import pytest

from dim_keras.config import RECIPES, TrainConfig
from dim_keras.data import dataset_defaults, make_dataset
from dim_keras.errors import DataError
from dim_keras.runs.train import augmentation, build_model, learning_rate


def _windows(padded, size):
    """Every size x size window of every padded image, and their horizontal mirrors."""
    n, height, width, _ = padded.shape
    out = [padded[i, r:r + size, c:c + size] for i in range(n)
           for r in range(height - size + 1) for c in range(width - size + 1)]
    return out + [w[:, ::-1] for w in out]


def test_pad_crop_flip_gives_windows_of_the_reflect_padded_images():
    images = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    windows = [w.astype(np.float32) / 255 for w in _windows(padded, 6)]
    seen_shifted = False
    for batch in make_dataset(images, batch_size=4, training=True, seed=3, pad=2, flip=True).take(5):
        for image in batch.numpy():
            assert any(np.array_equal(image, w) for w in windows)
            seen_shifted |= not any(np.array_equal(image, im.astype(np.float32) / 255) for im in images)
    assert seen_shifted  # 20 random windows out of 25 positions x 2 flips: not all the identity
    # Evaluation pipelines ignore pad: the images themselves, in order.
    evaluation = np.concatenate([b.numpy() for b in make_dataset(images, batch_size=3, training=False, pad=2)])
    np.testing.assert_array_equal(evaluation, images.astype(np.float32) / 255)
    with pytest.raises(DataError, match="pad 6 must be smaller"):
        make_dataset(images, batch_size=2, training=True, pad=6)
    with pytest.raises(DataError, match="pad must be"):
        make_dataset(images, batch_size=2, training=True, pad=-1)


def test_recipes_set_the_model_and_the_augmentation():
    paper, improved = TrainConfig(recipe="paper"), TrainConfig(recipe="improved")
    assert paper.recipe == TrainConfig().recipe == "paper"  # the default stays faithful to the paper
    assert RECIPES["paper"] == {"estimator": "jsd", "global_layer_norm": True, "score_scale": 1.0,
                                "score_penalty": 0.0, "score_clip": None, "pad_crop_flip": False, "colour_jitter": False, "views": 1,
                                "learning_rate": 1e-4, "lr_schedule": "constant", "layer_defaults": "torch"}
    cifar, stl = dataset_defaults("cifar10"), dataset_defaults("stl10")
    assert augmentation(paper, cifar, (32, 32, 3)) == {}
    assert augmentation(improved, cifar, (32, 32, 3)) == {"pad": 4, "flip": True}
    # STL-10 keeps the paper's 64x64 random crops + flips under both recipes.
    assert augmentation(improved, stl, (64, 64, 3)) == augmentation(paper, stl, (64, 64, 3)) == {
        "crop_size": 64, "flip": True}
    model = build_model(TrainConfig(dataset="digits", recipe="improved", embedding_dim=16, gamma=0.0),
                        (8, 8, 3))
    settings = TrainConfig(recipe="improved", embedding_dim=16).recipe_settings()
    assert model.score_scale == settings["score_scale"] == 0.25  # 1 / sqrt(16), AMDIM's scale
    assert model.score_penalty == settings["score_penalty"]
    assert model.score_clip == settings["score_clip"]
    assert model.global_layer_norm == settings["global_layer_norm"]
    # The estimator: the paper's DIM(L) runs use JSD, the improved recipe infoNCE; a flag wins over both.
    assert model.estimator == "infonce" and build_model(TrainConfig(dataset="digits", embedding_dim=16),
                                                        (8, 8, 3)).estimator == "jsd"
    assert TrainConfig(recipe="improved", estimator="jsd").resolved_estimator() == "jsd"
    assert TrainConfig(recipe="improved").objective_name().startswith("infonce-")


def test_learning_rate_follows_the_recipe_unless_given():
    paper = TrainConfig(recipe="paper", epochs=3)
    assert learning_rate(paper, steps_per_epoch=10) == 1e-4  # constant, as the paper
    assert learning_rate(TrainConfig(recipe="paper", learning_rate=3e-4), 10) == 3e-4
    improved = TrainConfig(recipe="improved", epochs=3)
    schedule = learning_rate(improved, steps_per_epoch=10)
    # Cosine decay from the recipe's 5e-4 to 0 over epochs x steps = 30 steps: 5e-4 * (1 + cos(pi t / 30)) / 2.
    for step, expected in ((0, 5e-4), (15, 2.5e-4), (30, 0.0), (10, 5e-4 * (1 + np.cos(np.pi / 3)) / 2)):
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-9)
    assert learning_rate(TrainConfig(recipe="improved", learning_rate=1e-3), None) == 1e-3  # no horizon: constant


def test_recipe_knob_flags_override_the_recipe():
    settings = TrainConfig(recipe="improved", augment="none", score_clip=0.0, global_layer_norm=False,
                           lr_schedule="constant").recipe_settings()
    assert settings["pad_crop_flip"] is False and settings["score_clip"] is None
    assert settings["global_layer_norm"] is False and settings["lr_schedule"] == "constant"
    assert settings["score_scale"] == 2048 ** -0.5  # not given: the recipe's 1/sqrt(--embedding_dim)
    paper = TrainConfig(recipe="paper", augment="pad_crop_flip", score_scale=0.5).recipe_settings()
    assert paper["pad_crop_flip"] is True and paper["score_scale"] == 0.5
    assert augmentation(TrainConfig(recipe="paper", augment="pad_crop_flip"), dataset_defaults("cifar10"),
                        (32, 32, 3)) == {"pad": 4, "flip": True}


def test_a_run_saved_before_recipes_resumes_with_its_own_critic(tmp_path):
    """config.json files written before --recipe existed have no "recipe" key; their critic had no layer norm
    on Y, so resuming them must not switch it on (the checkpoint would not fit the model)."""
    import json

    from dim_keras.config import load_run_config
    old_record = {k: v for k, v in TrainConfig(dataset="digits", output_dir=str(tmp_path)).__dict__.items()
                  if k not in ("recipe", "global_layer_norm", "score_scale", "score_penalty", "score_clip",
                               "augment", "lr_schedule")}
    old_record["learning_rate"] = 1e-4
    (tmp_path / "config.json").write_text(json.dumps(old_record))
    saved, _ = load_run_config(str(tmp_path))
    assert saved.recipe == "paper" and saved.recipe_settings()["global_layer_norm"] is False
    assert saved.resolved_learning_rate() == 1e-4
    new_record = dict(old_record, recipe="paper")
    (tmp_path / "config.json").write_text(json.dumps(new_record))
    assert load_run_config(str(tmp_path))[0].recipe_settings()["global_layer_norm"] is True


def test_a_cosine_run_refuses_a_changed_horizon_on_resume():
    from dim_keras.config import check_resumable
    from dim_keras.errors import UsageError
    saved = TrainConfig(recipe="improved", epochs=10)
    check_resumable(saved, TrainConfig(recipe="improved", epochs=10, verbose=2))  # run-only change: fine
    with pytest.raises(UsageError, match="--epochs=20 differs .* cosine learning-rate decay"):
        check_resumable(saved, TrainConfig(recipe="improved", epochs=20))
    with pytest.raises(UsageError, match="--steps_per_epoch=5 differs"):
        check_resumable(saved, TrainConfig(recipe="improved", epochs=10, steps_per_epoch=5))
    check_resumable(TrainConfig(epochs=10), TrainConfig(epochs=20))  # constant rate: more epochs are fine


def test_resume_compares_what_settings_mean_not_how_they_are_spelled(tmp_path, monkeypatch):
    """A run saved with the recipe's values spelled out resumes under a command line that leaves them to the
    recipe, and a data directory resumes however its path is written; a real change is still refused."""
    from dim_keras.config import check_resumable
    from dim_keras.errors import UsageError
    spelled = TrainConfig(recipe="paper", learning_rate=1e-4, layer_defaults="torch", augment="none", views=1,
                          data_dir=str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    check_resumable(spelled, TrainConfig(recipe="paper", data_dir=f"./{tmp_path.name}"))
    with pytest.raises(UsageError, match="--learning_rate=0.0005 differs"):
        check_resumable(spelled, TrainConfig(recipe="paper", learning_rate=5e-4, data_dir=str(tmp_path)))
    with pytest.raises(UsageError, match="--augment=pad_crop_flip_colour differs"):
        check_resumable(TrainConfig(augment="pad_crop_flip"), TrainConfig(augment="pad_crop_flip_colour"))


def test_torch_layer_defaults_draw_like_torch_and_keep_the_identity_shortcut():
    """kaiming_uniform(a=sqrt(5)) is U(+-1/sqrt(fan_in)) (variance bound^2 / 3), biases alike; BN momentum 0.9
    (torch's 0.1 for the new statistic), eps 1e-5; the critic's noisy-identity shortcut is left alone."""
    import keras

    from dim_keras.initializers import apply_torch_layer_defaults
    paper = build_model(TrainConfig(dataset="digits", recipe="paper", embedding_dim=64, gamma=0.0, seed=1),
                        (32, 32, 3))
    improved = build_model(TrainConfig(dataset="digits", recipe="improved", embedding_dim=64, gamma=0.0),
                           (32, 32, 3))
    conv2 = paper.encoder.get_layer("conv2_conv").kernel.numpy()  # 4x4x64 -> 128: fan_in 1024
    bound = 1 / np.sqrt(4 * 4 * 64)
    assert np.abs(conv2).max() <= bound
    assert np.var(conv2) == pytest.approx(bound ** 2 / 3, rel=0.02)  # 131,072 draws
    y_bias = paper.encoder.get_layer("y").bias.numpy()
    assert np.abs(y_bias).max() <= 1 / np.sqrt(1024) and np.abs(y_bias).max() > 0  # torch: not zeros
    bns = [l for l in paper._flatten_layers(recursive=True) if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.momentum == 0.9 and l.epsilon == 1e-5 for l in bns)
    assert all(l.get_config()["momentum"] == 0.9 for l in bns)  # saved with the model
    keras_bns = [l for l in improved._flatten_layers(recursive=True)
                 if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.momentum == 0.99 and l.epsilon == 1e-3 for l in keras_bns)  # improved keeps Keras's
    shortcut = paper.local_critic.local_embedding.shortcut.kernel.numpy()
    np.testing.assert_array_equal(np.diag(shortcut), 1.0)  # the noisy identity survives
    # Seeded: the same seed draws the same weights.
    again = build_model(TrainConfig(dataset="digits", recipe="paper", embedding_dim=64, gamma=0.0, seed=1),
                        (32, 32, 3))
    np.testing.assert_array_equal(again.encoder.get_layer("conv2_conv").kernel.numpy(), conv2)
    assert apply_torch_layer_defaults(again, seed=1) is again


@pytest.mark.parametrize("flags", [{"recipe": "paper"}, {"recipe": "improved"},
                                   {"recipe": "improved", "score_clip": 0.0, "augment": "none", "estimator": "dv"},
                                   {"recipe": "paper", "views": 2, "augment": "pad_crop_flip_colour"}])
def test_spelled_out_configs_mean_the_same_under_either_recipe(flags):
    """A spelled-out config (what finished-run records store) resolves to the same run whatever its recipe's
    defaults are: every recipe-dependent setting is explicit."""
    import dataclasses
    config = TrainConfig(**flags)
    explicit = config.spelled_out()
    for recipe in RECIPES:
        other = dataclasses.replace(explicit, recipe=recipe)
        knobs = [{k: v for k, v in c.recipe_settings().items() if k != "learning_rate"} for c in (other, config)]
        assert knobs[0] == knobs[1]  # (the recipe's own rate is in there; the rate the run uses is below)
        assert other.resolved_learning_rate() == config.resolved_learning_rate()
        assert other.resolved_estimator() == config.resolved_estimator()
