"""apps/compare_quality.py (dim_keras.runs.compare_quality) and the PyTorch re-implementation of the authors'
LocalDIM it trains (dim_keras.runs.torch_reference): bad settings, the summary against numpy, the per-seed values
against each run's probe.json, the figure from metrics.json, and the torch module's layer norm, JSD loss,
training loop and features."""
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from official_formats import WITHOUT_TENSORFLOW
from dim_keras import config
from dim_keras.errors import UsageError
from dim_keras.runs import compare_quality as cq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "apps", "compare_quality.py")


# ----------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("changes,message", [
    ({"arms": ("paper", "nosuch")}, "--arms: unknown value 'nosuch'; choose one of paper, improved, torch, "
                                    "random_init"),
    ({"seeds": ()}, "--seeds needs at least 1 value"),
    ({"seeds": (0, 0)}, "--seeds lists a value twice"),
    ({"train": config.TrainConfig(dataset="celeb_a")}, "needs class labels"),
    ({"train": config.TrainConfig(dataset="stl10")}, "--arms=torch is the authors' CIFAR encoder"),
])
def test_bad_settings_are_one_line_usage_errors(changes, message):
    with pytest.raises(UsageError, match=message):
        config.validate(dataclasses.replace(config.CompareQualityConfig(), **changes))


def test_torch_arm_without_torch_is_a_usage_error(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    with pytest.raises(UsageError, match=r"--arms=torch needs PyTorch \(pip install torch"):
        config.validate(config.CompareQualityConfig())
    config.validate(config.CompareQualityConfig(arms=("paper", "random_init")))  # no torch arm: fine


def test_app_reports_a_bad_arm_before_tensorflow_starts():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, APP, "--arms=paper,torhc"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "compare_quality.py: error: --arms: unknown value 'torhc'; choose one of paper, improved, torch, random_init"]


def test_mean_std_known_answer():
    assert cq.mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(math.sqrt(0.02)))  # ddof = 1
    assert cq.mean_std([0.25]) == (0.25, None)


# ----------------------------------------------------------------------------------------- end to end
def test_harness_on_digits_matches_numpy_and_the_runs_probe_json(tmp_path):
    train = config.TrainConfig(dataset="digits", epochs=1, batch_size=16, steps_per_epoch=2, probe_max_train=100,
                               monitor_every=0, jit_compile=False, verbose=0)
    harness = config.CompareQualityConfig(arms=("paper", "random_init"), seeds=(0, 1), output_dir=str(tmp_path),
                                          train=train)
    result = cq.compare_quality(harness, log=lambda *a: None)
    with open(tmp_path / cq.RESULTS_JSON) as handle:
        written = json.load(handle)
    assert written["arms"].keys() == {"paper", "random_init"} and written["seeds"] == [0, 1]
    for seed_index, seed in enumerate((0, 1)):
        with open(tmp_path / f"paper-seed{seed}" / "probe.json") as handle:
            probe = json.load(handle)
        with open(tmp_path / f"paper-seed{seed}" / "config.json") as handle:
            run = json.load(handle)
        # the training app's run: the paper recipe, DIM(L) without the prior, the seed and the epochs
        assert (run["recipe"], run["gamma"], run["seed"], run["epochs"]) == ("paper", 0.0, seed, 1)
        for arm, column in (("paper", "trained"), ("random_init", "random_init")):
            for name in ("conv", "fc", "y"):
                assert written["arms"][arm]["features"][name]["per_seed"][seed_index] == probe[column][name]["all_labels"]
        # the record's label-scarce entry holds both of probe.json's columns at 20 labels per class
        with open(tmp_path / f"paper-seed{seed}" / cq.ARM_RESULT) as handle:
            scarce = json.load(handle)["scarce_labels"]
        assert scarce["column"] == "20_labels_per_class"
        for key, column in (("probe", "trained"), ("random_init_probe", "random_init")):
            assert scarce[key] == {name: probe[column][name][scarce["column"]] for name in ("conv", "fc", "y")}
    for arm in ("paper", "random_init"):
        summary = written["arms"][arm]
        assert summary["epochs"] == (1 if arm == "paper" else 0)
        for name in ("conv", "fc", "y"):
            values = np.array(summary["features"][name]["per_seed"])
            assert summary["features"][name]["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert summary["features"][name]["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert all(wall > 0 for wall in written["arms"]["paper"]["wall_s"]["per_seed"])
    # no probe monitor: the figure is skipped with a note naming the runs
    assert written["figure"] is None and "no probe_linear_* in the metrics.json" in written["figure_note"]
    table = cq.table(result).splitlines()
    assert table[2].startswith("| paper | ") and table[3].startswith("| random_init | ")
    # A rerun with the same settings reuses the finished runs (no training) and gives the same numbers.
    again = cq.compare_quality(harness, log=lambda *a: None)
    assert all(record["reused"] for record in again["arms"]["paper"]["runs"])
    assert again["arms"]["paper"]["features"] == result["arms"]["paper"]["features"]
    # Without a recipe arm, random_init is probed alone, as train() probes it: the same numbers.
    alone = cq.compare_quality(dataclasses.replace(harness, arms=("random_init",), seeds=(0,),
                                                   output_dir=str(tmp_path / "alone")), log=lambda *a: None)
    assert alone["arms"]["random_init"]["runs"][0]["probe"] == result["arms"]["random_init"]["runs"][0]["probe"]
    with pytest.raises(UsageError, match="holds a finished run with other settings \\(epochs, steps_per_epoch\\)"):
        cq.compare_quality(dataclasses.replace(harness, train=dataclasses.replace(train, epochs=2, steps_per_epoch=1)),
                           log=lambda *a: None)


def test_the_record_keeps_the_c_a_cross_validated_probe_chose():
    fixed = {name: {"all_labels": 0.5} for name in ("conv", "fc", "y")}
    assert cq._chosen_c(fixed) is None
    chosen = {"conv": {"all_labels": 1e-3, "20_labels_per_class": 1e-2}, "fc": {"all_labels": 1e-4},
              "y": {"all_labels": 0.1}}
    cross_validated = {name: {"all_labels": 0.5, "chosen_C": chosen[name]} for name in ("conv", "fc", "y")}
    assert cq._chosen_c(cross_validated) == chosen


def _write_run(path, rows):
    os.makedirs(path)
    with open(os.path.join(path, "metrics.json"), "w") as handle:
        json.dump(rows, handle)


def test_monitor_curves_average_the_seeds_metrics_json(tmp_path):
    rows = {0: [{"epoch": 1, "loss": 1.0, "probe_linear_conv": 0.2, "probe_linear_fc": 0.3, "probe_linear_y": 0.1},
                {"epoch": 2, "loss": 0.5, "probe_linear_conv": 0.4, "probe_linear_fc": 0.5, "probe_linear_y": 0.3}],
            1: [{"epoch": 1, "loss": 1.0, "probe_linear_conv": 0.4, "probe_linear_fc": 0.5, "probe_linear_y": 0.3},
                {"epoch": 2, "loss": 0.5}]}  # seed 1 has no measure of epoch 2: the mean covers epoch 1 only
    records = []
    for seed, seed_rows in rows.items():
        _write_run(tmp_path / f"paper-seed{seed}", seed_rows)
        records.append({"output_dir": str(tmp_path / f"paper-seed{seed}"), "seed": seed})
    curves, missing = cq._monitor_curves(records)
    assert missing == []
    epochs, mean, std = curves["conv"]
    assert epochs == [1] and mean == pytest.approx([0.3]) and std == pytest.approx([np.std([0.2, 0.4], ddof=1)])
    _write_run(tmp_path / "improved-seed0", [{"epoch": 1, "loss": 1.0}])
    result = {"dataset": "digits", "arms": {
        "paper": {"runs": records},
        "improved": {"runs": [{"output_dir": str(tmp_path / "improved-seed0"), "seed": 0}]},
        "random_init": {"epochs": 0, "features": {n: {"mean": 0.25, "std": None} for n in cq.FEATURES}}}}
    path, note = cq.plot(result, str(tmp_path / "figure.png"))
    assert path == str(tmp_path / "figure.png") and os.path.getsize(path) > 0
    assert note == f"no probe_linear_* in the metrics.json of {tmp_path / 'improved-seed0'}"


# ----------------------------------------------------------------------------------------- torch
def test_torch_global_embedding_is_the_layer_normed_1x1_block():
    """LocalDIM.build embeds Y with MI1x1ConvNet as a 1x1 map, whose output is layer-normed over channels."""
    torch = pytest.importorskip("torch")
    from dim_keras.runs import torch_reference as tr
    torch.manual_seed(0)
    _, local_net, global_net, _ = tr.build_networks(torch, 32, embedding_dim=256, y_dim=64)
    assert type(global_net) is type(local_net)
    y = 3.0 * torch.randn(8, 64) + 1.0
    with torch.no_grad():
        embedding = global_net(y[:, :, None, None])[:, :, 0, 0]  # [8, 256]
        before_norm = global_net.block_nonlinear(y[:, :, None, None]) + global_net.linear_shortcut(y[:, :, None, None])
    assert embedding.shape == (8, 256)
    np.testing.assert_allclose(embedding.mean(1).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(embedding.var(1, unbiased=False).numpy(), 1.0, atol=1e-3)
    assert before_norm[:, :, 0, 0].var(1).min() > 2.0  # the layer norm, not the input, makes it so
    # The shortcut starts as a noisy identity: Y's 64 units pass to the first 64 channels.
    weight = global_net.linear_shortcut.weight[:, :, 0, 0]
    assert torch.equal(torch.diagonal(weight[:64]), torch.ones(64)) and weight[64:].abs().max() <= 0.01


def test_torch_jsd_loss_equals_dim_keras_bound():
    torch = pytest.importorskip("torch")
    from dim_keras import estimators
    from dim_keras.runs import torch_reference as tr
    # Hand-computed: B = 2, one location; positives 1 and 3, negatives -2 and 0.5.
    u = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)[:, :, None, None]
    softplus = lambda t: math.log1p(math.exp(t))  # noqa: E731
    e_pos = ((math.log(2) - softplus(-1.0)) + (math.log(2) - softplus(-3.0))) / 2
    e_neg = ((softplus(-2.0) - math.log(2)) + (softplus(0.5) - math.log(2))) / 2
    assert float(tr.fenchel_dual_loss_from_scores(torch, u)) == pytest.approx(e_neg - e_pos, abs=1e-12)
    assert float(estimators.jsd_lower_bound(u[..., 0].numpy().astype(np.float32))) == pytest.approx(
        e_pos - e_neg, abs=1e-6)
    # Random embeddings through the authors' matmul layout: their loss is minus dim_keras's bound.
    rng = np.random.default_rng(0)
    l = rng.normal(size=(5, 16, 9)).astype(np.float32)  # [N, units, locations]
    m = rng.normal(size=(5, 16, 1)).astype(np.float32)  # [N, units, 1 global]
    scores = np.einsum("iu,jul->ijl", m[:, :, 0], l)  # scores[i, j, l] = T(global i, local l of image j)
    loss = float(tr.fenchel_dual_loss(torch, torch.from_numpy(l), torch.from_numpy(m)))
    assert loss == pytest.approx(-float(estimators.jsd_lower_bound(scores)), abs=1e-5)


def test_torch_training_is_seeded_and_the_encoder_fn_has_the_taps():
    torch = pytest.importorskip("torch")
    from dim_keras.runs import torch_reference as tr
    images = np.random.default_rng(1).integers(0, 256, size=(21, 16, 16, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        runs = [tr.train_torch_dim(images, epochs=2, seed=3, batch_size=8, threads=1, embedding_dim=32)
                for _ in range(2)]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    first = runs[0]
    assert [h["steps"] for h in first["history"]] == [2, 2]  # 21 // 8: the partial batch is dropped
    assert first["threads"] == 1
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in runs[1]["history"]]  # seeded
    assert all(math.isfinite(h["loss"]) for h in first["history"])
    encoder_fn = tr.torch_encoder_fn(first["model"])
    features = encoder_fn(images[:6])
    assert {k: v.shape for k, v in features.items()} == {"conv": (6, 256 * 2 * 2), "fc": (6, 1024), "y": (6, 64)}
    assert all(v.dtype == np.float32 for v in features.values())
    assert (features["conv"] >= 0).all() and (features["fc"] >= 0).all()  # after ReLU
    # Inference mode: an image's features do not depend on its batch; the encoder is left training.
    np.testing.assert_allclose(encoder_fn(images[:2])["y"], features["y"][:2], rtol=1e-5, atol=1e-6)
    assert first["model"].encoder.training
    with pytest.raises(UsageError, match="multiple of 8"):
        tr.train_torch_dim(images[:, :12, :12], epochs=1)


def test_the_torch_step_saved_and_loaded_gives_the_same_features(tmp_path):
    """Round trip: a trained TorchDIM's networks (weights and BN running statistics) written by ``save`` and
    read by ``load`` into a differently seeded one give the same inference-mode features, bit for bit."""
    torch = pytest.importorskip("torch")
    from dim_keras.runs import torch_reference as tr
    images = np.random.default_rng(2).integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    trained = tr.train_torch_dim(images, epochs=1, seed=5, batch_size=8, threads=1, embedding_dim=32)["model"]
    path = tmp_path / "torch_dim.pt"
    trained.save(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torch_dim.pt"]  # no temporary left behind
    torch.manual_seed(6)
    fresh = tr.TorchDIM(torch, "cpu", image_size=16, embedding_dim=32)
    before = tr.torch_encoder_fn(fresh)(images)
    assert not np.array_equal(before["y"], tr.torch_encoder_fn(trained)(images)["y"])
    loaded = tr.torch_encoder_fn(fresh.load(str(path)))(images)
    expected = tr.torch_encoder_fn(trained)(images)
    for name in ("conv", "fc", "y"):
        np.testing.assert_array_equal(loaded[name], expected[name])


def test_a_finished_run_is_reused_however_its_data_dir_is_spelled(tmp_path, monkeypatch):
    """A record made with an absolute --data_dir matches a command line giving the same directory relatively
    (and a recipe default spelled out matches it left out); another directory is another run."""
    data = tmp_path / "data"
    data.mkdir()
    settings = {"dataset": "cifar10", "data_dir": str(data), "epochs": 10, "recipe": "paper"}
    run = tmp_path / "paper-seed0"
    run.mkdir()
    (run / cq.ARM_RESULT).write_text(json.dumps({"arm": "paper", "settings": dict(settings, learning_rate=1e-4)}))
    monkeypatch.chdir(tmp_path)
    assert cq._reusable(str(run), dict(settings, data_dir="./data/../data"))["reused"] is True
    (tmp_path / "other").mkdir()
    with pytest.raises(UsageError, match=r"other settings \(data_dir\)"):
        cq._reusable(str(run), dict(settings, data_dir="other"))
