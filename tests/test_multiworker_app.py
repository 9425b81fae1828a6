"""apps/train.py --strategy=multi_worker end to end: two worker processes on loopback (docs/DISTRIBUTED.md).

Each test starts two ``apps/train.py`` processes with a ``TF_CONFIG`` naming two free local ports:
worker 0 is the chief.  Tiny model (embedding 16, Y 8), a few steps of digits, no XLA.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from official_formats import WITHOUT_TENSORFLOW
from worker_processes import finish, start
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(ROOT, "apps", "train.py")]
TINY = ["--strategy=multi_worker", "--embedding_dim=16", "--y_dim=8", "--batch_size=32", "--steps_per_epoch=2",
        "--nojit_compile", "--verbose=2"]
CHIEF_ONLY = {"config.json", "metrics.json", "logs", "encoder", "model.keras", "probe.json"}


def start_workers(out, args):
    """Starts worker 0 (the chief) and worker 1, each with its own --output_dir under ``out``."""
    return start([TRAIN + args + [f"--output_dir={out / f'w{index}'}"] for index in range(2)])


def assert_clean_exit(results):
    for index, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"worker {index}: {stderr[-3000:]}"
        assert stderr.strip() == "", f"worker {index} wrote to stderr: {stderr[-3000:]}"


def assert_same_checkpoints(out, epoch):
    """The newest checkpoints of both workers hold the same values, ``epoch`` epochs done."""
    readers = [tf.train.load_checkpoint(str(out / f"w{index}" / "checkpoints")) for index in range(2)]
    names = [set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"} for reader in readers]
    assert names[0] == names[1]
    assert any("moving_variance" in name for name in names[0])  # batch-norm statistics are compared too
    different = [name for name in sorted(names[0])
                 if not np.array_equal(readers[0].get_tensor(name), readers[1].get_tensor(name))]
    assert different == []
    assert int(readers[0].get_tensor("epochs_done/.ATTRIBUTES/VARIABLE_VALUE")) == epoch


def assert_chief_outputs(out, epochs):
    chief, other = out / "w0", out / "w1"
    assert CHIEF_ONLY - {"probe.json"} <= set(os.listdir(chief))
    assert os.listdir(other) == ["checkpoints"]  # the other worker writes its checkpoints only
    assert [row["epoch"] for row in json.loads((chief / "metrics.json").read_text())] == list(range(1, epochs + 1))
    serve = tf.saved_model.load(str(chief / "encoder")).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    features = serve(images=tf.zeros([3, *spec.shape[1:]], tf.uint8))
    assert features["y"].shape == (3, 8) and np.all(np.isfinite(features["y"].numpy()))


def test_two_workers_train_one_run(tmp_path):
    results = finish(start_workers(tmp_path, TINY + ["--epochs=2", "--probe_max_train=300"]))
    assert_clean_exit(results)
    assert "worker 0 of 2 workers (the chief)" in results[0][1]
    assert "| y |" in results[0][1] and "| y |" not in results[1][1]  # the probe runs on the chief only
    assert_chief_outputs(tmp_path, epochs=2)
    assert (tmp_path / "w0" / "probe.json").exists()
    assert_same_checkpoints(tmp_path, epoch=2)


def _wait_for_both_checkpoints(out, procs, limit=300):
    start = time.time()
    while time.time() - start < limit:
        if all((out / f"w{index}" / "checkpoints" / "checkpoint").exists() for index in range(2)):
            return
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a worker ended early: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.parametrize("victim", [1, 0], ids=["worker_killed", "chief_killed"])
def test_a_killed_worker_stops_the_other_with_one_line_and_resume_completes(tmp_path, victim):
    args = TINY + ["--epochs=20", "--noprobe"]
    procs = start_workers(tmp_path, args)
    try:
        _wait_for_both_checkpoints(tmp_path, procs)
    except BaseException:
        finish(procs, timeout=1)
        raise
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.time()
    survivor = procs[1 - victim]
    (code, _, stderr), = finish([survivor], timeout=120)
    finish([procs[victim]])
    assert time.time() - killed < 90  # a lost peer is noticed within seconds (heartbeats), not a hang
    assert code == 1, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert re.match(rf"train\.py: error: lost (worker {victim}|another worker) of the multi-worker run ",
                    lines[0]), lines[0]
    assert "--resume" in lines[0]
    assert not (tmp_path / "w0" / "encoder").exists()

    results = finish(start_workers(tmp_path, args + ["--resume"]))
    assert_clean_exit(results)
    for _, stdout, _ in results:
        assert "resuming" in stdout
    assert_chief_outputs(tmp_path, epochs=20)
    assert_same_checkpoints(tmp_path, epoch=20)


def test_the_ablation_refuses_multi_worker_with_one_line_before_tensorflow():
    # TensorFlow and Keras made unimportable: the refusal comes before TensorFlow would start.
    code = WITHOUT_TENSORFLOW
    result = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tuning", "ablation.py"),
                             "--strategy=multi_worker"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablation.py: error: --strategy=multi_worker"), result.stderr
