"""apps/train.py on the JAX backend (issue 17): TensorFlow serves the export with the JAX model's features,
checkpoints resume, DataParallel over two virtual CPU devices, and one-line refusals.

The Keras backend is fixed per process, so the runs are JAX subprocesses (``KERAS_BACKEND=jax``); this
process (TensorFlow, or JAX on CI's second leg) loads what they wrote.  The checkpoint unit tests at the
bottom are backend-free and marked ``backends``: they run in-process on both legs.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from dim_keras.callbacks import ArrayEpochCheckpoint, checkpoint_backend, training_state

from app_testing import assert_usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(ROOT, "apps", "train.py")]
# Small and fast: 2 steps of 16 digits per epoch; no probe or monitor (tests/test_train_app.py covers them).
QUICK = ["--embedding_dim=32", "--y_dim=16", "--batch_size=16", "--steps_per_epoch=2", "--verbose=2",
         "--noprobe", "--monitor_every=0", "--seed=3"]
STEPS = 2
FEATURE_TOLERANCE = 1e-4  # issue 17: the TF-served features equal the JAX model's to 1e-4

# In a JAX process: the features of the run's model.keras (its encoder after training) on the given images,
# and the epoch checkpoint restored into a model built afresh from config.json, compared with model.keras.
JAX_SIDE = """
import json, sys
import numpy as np, keras
from dim_keras import load_model
from dim_keras.callbacks import ArrayEpochCheckpoint
from dim_keras.config import load_run_config
from dim_keras.export import encoder_features
from dim_keras.runs.train import build_model
out, images, result = sys.argv[1:]
assert keras.backend.backend() == "jax", keras.backend.backend()
trained = load_model(out + "/model.keras")
np.savez(result + ".npz", **encoder_features(trained.encoder, np.load(images)))
config, record = load_run_config(out)
model = build_model(config, tuple(record["resolved"]["input_shape"]))


def difference():
    return max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), trained.get_weights()))


fresh = difference()
epochs = ArrayEpochCheckpoint(out + "/checkpoints").attach(model).restore()
with open(result + ".json", "w") as handle:
    json.dump({"epochs_done": epochs, "encoder_variables": len(trained.encoder.variables),
               "fresh_difference": fresh, "restored_difference": difference()}, handle)
"""


def jax_env(devices=1):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_jax(args, devices=1, timeout=300):
    return subprocess.run(TRAIN + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=jax_env(devices))


def run_tensorflow(args, timeout=300):
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    return subprocess.run(TRAIN + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def metrics(out):
    return json.loads((out / "metrics.json").read_text())


def checkpoint_values(path, word):
    """``{path: value}`` of the variables of an ArrayEpochCheckpoint file whose path contains ``word``."""
    with np.load(path) as saved:
        manifest = json.loads(saved["manifest"].tobytes().decode("utf-8"))
        return {entry["path"]: saved[str(i)] for i, entry in enumerate(manifest["variables"]) if word in entry["path"]}


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """One epoch of ``KERAS_BACKEND=jax apps/train.py`` on digits, on one device."""
    out = tmp_path_factory.mktemp("jax") / "run"
    result = run_jax(QUICK + ["--epochs=1", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_jax_run_exports_an_encoder_tensorflow_serves_with_the_jax_features(jax_run, tmp_path):
    import tensorflow as tf

    from dim_keras.export import load_encoder
    out, result = jax_run
    assert "training on the jax backend on one device" in result.stdout
    saved = json.loads((out / "config.json").read_text())
    assert (saved["resolved"]["backend"], saved["resolved"]["devices"], saved["resolved"]["jit_compile"]) == (
        "jax", 1, True)
    assert checkpoint_backend(str(out / "checkpoints")) == "jax"
    # The JAX model's own features, from the saved weights, in a JAX process.
    images = np.random.default_rng(7).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    side = subprocess.run([sys.executable, "-c", JAX_SIDE, str(out), str(tmp_path / "images.npy"),
                           str(tmp_path / "jax")], capture_output=True, text=True, timeout=300, env=jax_env())
    assert side.returncode == 0, side.stderr[-3000:]
    report = json.loads((tmp_path / "jax.json").read_text())
    expected = dict(np.load(tmp_path / "jax.npz"))
    # TensorFlow's serving_default signature, as TF Serving would call it.
    module = tf.saved_model.load(str(out / "encoder"))
    serve = module.signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    served = {name: value.numpy() for name, value in serve(images=tf.constant(images)).items()}
    assert set(served) == {"local", "conv", "fc", "y"} == set(expected)
    for name, value in served.items():
        assert value.dtype == np.float32 and value.shape == expected[name].shape, name
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=FEATURE_TOLERANCE, err_msg=name)
    assert max(float(np.abs(v).max()) for v in served.values()) > 1e-2  # not all zeros: the check has teeth
    np.testing.assert_allclose(load_encoder(str(out / "encoder"))(images)["y"], expected["y"], atol=FEATURE_TOLERANCE)
    # The same SavedModel as a TensorFlow run writes: plain TF ops (no jax2tf XlaCallModule), each weight once.
    graph = serve.graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert "Conv2D" in ops and "XlaCallModule" not in ops
    assert len(module.variables) == report["encoder_variables"]
    reader = tf.train.load_checkpoint(str(out / "encoder" / "variables" / "variables"))
    stored = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(stored) == report["encoder_variables"]
    # The epoch-1 checkpoint holds the weights the run ended with (model.keras): restored into a model built
    # afresh from config.json, they replace its own.
    assert report["epochs_done"] == 1
    assert report["fresh_difference"] > 0 and report["restored_difference"] == 0.0


def test_jax_resume_continues_after_the_saved_epoch_with_its_state(jax_run, tmp_path):
    source, _ = jax_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    before = checkpoint_values(out / "checkpoints" / "ckpt-1.npz", "")
    assert [int(v) for k, v in before.items() if k.endswith("iteration")] == [STEPS, STEPS]  # both optimizers
    result = run_jax(["--resume", f"--output_dir={out}", "--epochs=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {out} after epoch 1" in result.stdout
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == metrics(source)[0]
    assert json.loads((out / "checkpoints" / "checkpoint").read_text())["checkpoints"] == ["ckpt-2.npz"]
    after = checkpoint_values(out / "checkpoints" / "ckpt-2.npz", "")
    assert list(after) == list(before)
    # Adam's step counters went on from the checkpoint's (2 + 2), not from 0; the seed generator's state too.
    assert [int(v) for k, v in after.items() if k.endswith("iteration")] == [2 * STEPS, 2 * STEPS]
    seeds = [k for k in after if "seed_generator_state" in k]
    assert seeds and all(not np.array_equal(before[k], after[k]) for k in seeds)
    # A TensorFlow process refuses to resume this JAX run, in one line and before writing anything.
    files = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert_usage_error(run_tensorflow(["--resume", f"--output_dir={out}", "--epochs=3"]),
                       "written on the jax backend", "KERAS_BACKEND=jax")
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == files


def test_jax_mirrored_is_data_parallel_over_two_devices_with_the_one_device_loss(jax_run, tmp_path):
    source, _ = jax_run
    out = tmp_path / "run"
    result = run_jax(QUICK + ["--epochs=1", "--strategy=mirrored", f"--output_dir={out}"], devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keras.distribution.DataParallel over 2 devices" in result.stdout
    # Not a DataParallel in name only: every variable of the training state (weights, optimizers' slots, seed
    # states) is a JAX array whose sharding spans both devices (KerasDistribution.layout).
    assert "each lie on 2 of the 2 devices" in result.stdout, result.stdout[-2000:]
    assert json.loads((out / "config.json").read_text())["resolved"]["devices"] == 2
    assert (out / "encoder" / "saved_model.pb").exists()
    # One SPMD program over the global batch (docs/DISTRIBUTED.md): the same losses as one device, up to the
    # order of the cross-device sums.
    two, one = metrics(out)[0], metrics(source)[0]
    assert set(two) == set(one)
    for name in one:
        assert math.isclose(two[name], one[name], rel_tol=1e-4, abs_tol=1e-5), (name, two[name], one[name])


def test_jax_multi_worker_is_a_one_line_usage_error(tmp_path):
    result = run_jax(QUICK + ["--epochs=1", "--strategy=multi_worker", f"--output_dir={tmp_path / 'run'}"])
    assert_usage_error(result, "--strategy=multi_worker", "--strategy=mirrored", "KERAS_BACKEND=tensorflow")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------ the backend-free checkpoint, in this process
def _model(seed):
    """A small compiled model with a seed generator (Dropout) and a second optimizer beside ``optimizer``."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=seed)(keras.layers.Dense(3)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.discriminator_optimizer = keras.optimizers.Adam(1e-3)
    model.discriminator_optimizer.build(model.trainable_variables[:2])
    return model


def _values(variables):
    if keras.backend.backend() == "jax":  # (Variable.numpy and convert_to_numpy of a tf.Variable warn in numpy 2)
        return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]
    return [np.array(v.numpy()) for v in variables]


@pytest.mark.backends
def test_array_checkpoint_keeps_n_skips_non_finite_epochs_and_restores_the_whole_state(tmp_path):
    model = _model(0)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    directory = str(tmp_path / "checkpoints")
    checkpoint = ArrayEpochCheckpoint(directory, max_to_keep=2).attach(model)
    state = training_state(model)
    # model.variables (with the Dropout's seed state) and both optimizers' variables, each once.
    assert any("seed_generator_state" in v.path for v in state)
    assert len(state) == (len(model.variables) + len(model.optimizer.variables)
                          + len(model.discriminator_optimizer.variables))
    assert checkpoint.latest is None and checkpoint.restore() == 0 and checkpoint_backend(directory) is None
    saved = {}
    for epoch in range(4):
        model.fit(x, x[:, :2], epochs=1, verbose=0)
        loss = float("nan") if epoch == 2 else 1.0
        checkpoint.on_epoch_end(epoch, {"loss": loss})
        saved[epoch + 1] = _values(state)
    assert sorted(os.listdir(directory)) == ["checkpoint", "ckpt-2.npz", "ckpt-4.npz"]  # epoch 3: NaN, not saved
    assert checkpoint.latest == os.path.join(directory, "ckpt-4.npz")
    assert checkpoint_backend(directory) == keras.backend.backend()
    # A fresh model (other initial weights) takes the newest state back exactly: weights, Adam's slots and
    # step counters, the seed generator's state.
    fresh = _model(1)
    assert any(not np.array_equal(a, b) for a, b in zip(_values(training_state(fresh)), saved[4]))
    restored = ArrayEpochCheckpoint(directory, max_to_keep=2).attach(fresh)
    assert restored.restore() == 4 and restored.finished_epochs() == 4
    for value, expected in zip(_values(training_state(fresh)), saved[4]):
        np.testing.assert_array_equal(value, expected)
    # Mid-epoch state goes under the last finished epoch's number; the index still keeps two.
    model.fit(x, x[:, :2], epochs=1, verbose=0)
    assert checkpoint.save_interrupted() == os.path.join(directory, "ckpt-4.npz")
    assert sorted(os.listdir(directory)) == ["checkpoint", "ckpt-2.npz", "ckpt-4.npz"]
    # Another architecture is refused, not half-restored.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    other.compile(optimizer="adam", loss="mse")
    other.optimizer.build(other.trainable_variables)
    from dim_keras.errors import UsageError
    with pytest.raises(UsageError, match="does not hold this model's training state"):
        ArrayEpochCheckpoint(directory).attach(other).restore()


@pytest.mark.backends
def test_resuming_another_backends_checkpoints_is_a_usage_error(tmp_path):
    from dim_keras.callbacks import check_checkpoint_backend
    from dim_keras.errors import UsageError
    directory = tmp_path / "checkpoints"
    check_checkpoint_backend(str(directory))  # no checkpoints: nothing to refuse
    directory.mkdir()
    ours, other = keras.backend.backend(), "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    indexes = {"tensorflow": 'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n',
               "jax": json.dumps({"format": ArrayEpochCheckpoint.FORMAT, "backend": "jax",
                                  "checkpoints": ["ckpt-2.npz"]})}
    (directory / "checkpoint").write_text(indexes[ours])
    check_checkpoint_backend(str(directory))
    (directory / "checkpoint").write_text(indexes[other])
    with pytest.raises(UsageError, match=f"written on the {other} backend and this process runs {ours}: "
                                         f"resume with KERAS_BACKEND={other}"):
        check_checkpoint_backend(str(directory))


def test_a_data_parallel_batch_must_split_over_the_devices():
    from dim_keras.config import TrainConfig
    from dim_keras.errors import UsageError
    from dim_keras.runs.train import KerasDistribution, check_batch_split
    two = KerasDistribution(["cpu:0", "cpu:1"])
    check_batch_split(TrainConfig(batch_size=16), two)
    check_batch_split(TrainConfig(batch_size=15), KerasDistribution(["cpu:0"]))
    with pytest.raises(UsageError, match="--batch_size=15 does not split evenly over the 2 devices.*multiple of 2"):
        check_batch_split(TrainConfig(batch_size=15), two)


def test_tensorflow_checkpoints_are_told_apart(tmp_path):
    from dim_keras.callbacks import EpochCheckpoint, epoch_checkpoint
    model = _model(0)
    assert isinstance(epoch_checkpoint(str(tmp_path / "c")), EpochCheckpoint)  # this process runs TensorFlow
    checkpoint = EpochCheckpoint(str(tmp_path / "c")).attach(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert checkpoint.finished_epochs() == 1
    assert checkpoint_backend(str(tmp_path / "c")) == "tensorflow"
    # A TensorFlow checkpoint of another architecture is refused in one line too.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    other.compile(optimizer="adam", loss="mse")
    other.optimizer.build(other.trainable_variables)
    from dim_keras.errors import UsageError
    with pytest.raises(UsageError, match="does not hold this model's training state"):
        EpochCheckpoint(str(tmp_path / "c")).attach(other).restore()
