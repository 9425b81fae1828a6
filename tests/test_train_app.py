"""apps/train.py end to end: bad input, SIGKILL + resume, export, probe."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from app_testing import assert_usage_error
from official_formats import WITHOUT_TENSORFLOW, write_cifar10, write_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [sys.executable, os.path.join(ROOT, "apps", "train.py")]
QUICK = ["--embedding_dim=32", "--y_dim=16", "--batch_size=16", "--steps_per_epoch=2",
         "--nojit_compile", "--verbose=2", "--probe_max_train=300"]


def run(args, timeout=600):
    return subprocess.run(TRAIN + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)




def run_without_tensorflow(app, args):
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, os.path.join(ROOT, *app)] + args,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("args,fragment", [
    (["--dataset=imagenet"], "--dataset: unknown value 'imagenet'"),
    (["--estimator=kl"], "--estimator: unknown value 'kl'"),
    (["--local_critic=mlp"], "--local_critic: unknown value 'mlp'"),
    (["--batch_size=0"], "--batch_size must be >= 2"),
    (["--batch_size=-3"], "--batch_size must be >= 2"),
    (["--epochs=0"], "--epochs must be >= 1"),
    (["--epochs=-1"], "--epochs must be >= 1"),
    (["--alpha=0", "--beta=0"], "both 0"),
    (["--learning_rate=nan"], "--learning_rate must be a finite number"),
    (["--learning_rate=inf"], "--learning_rate must be a finite number"),
    (["--epochs=two"], "--epochs"),
    (["--epoch=3"], "Did you mean: epochs"),
    (["--data_dir=/nonexistent/dim"], "does not exist"),
    (["--dataset=cifar10", "--data_dir=/nonexistent/dim"], "does not exist"),
    (["--resume"], "--output_dir"),
    (["--resume", "--output_dir=/tmp"], "holds no run to resume"),
    (["positional"], "unexpected"),
])
def test_bad_flags_exit_2_with_one_line_before_tensorflow(args, fragment):
    assert_usage_error(run_without_tensorflow(("apps", "train.py"), args), fragment)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_without_tensorflow(("apps", "train.py"), QUICK + ["--epochs=1", f"--output_dir={blocker}/run"])
    assert_usage_error(result, f"{blocker} is a file, not a directory")
    result = run_without_tensorflow(("apps", "train.py"), QUICK + ["--epochs=1", f"--data_dir={blocker}"])
    assert_usage_error(result, "is a file, not a directory")


def test_missing_and_corrupt_data(tmp_path):
    result = run(["--dataset=cifar10", f"--data_dir={tmp_path}", f"--output_dir={tmp_path}/out"])
    assert_usage_error(result, "cifar-10-batches-py")
    assert not (tmp_path / "out").exists()
    write_cifar10(str(tmp_path), n_per_batch=4, rng=np.random.default_rng(0))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated
    result = run(["--dataset=cifar10", f"--data_dir={tmp_path}", f"--output_dir={tmp_path}/out"])
    assert_usage_error(result, "truncated")  # one line: no TensorFlow start-up noise either
    assert not (tmp_path / "out").exists()


def test_image_size_the_encoder_cannot_take(tmp_path):
    write_folder(str(tmp_path / "images"), np.random.default_rng(0), n_per_class=10, size=(12, 12))
    out = tmp_path / "out"
    result = run(QUICK + ["--dataset=folder", f"--data_dir={tmp_path / 'images'}",
                          "--encoder=alexnet", "--batch_size=4", f"--output_dir={out}"])
    assert_usage_error(result, "alexnet")
    assert not (out / "encoder").exists()


def _wait_for_checkpoint(out, proc, epochs, limit=400):
    start = time.time()
    while time.time() - start < limit:
        metrics = out / "metrics.json"
        if metrics.exists():
            try:
                done = len(json.loads(metrics.read_text()))
            except ValueError:
                done = 0
            if done >= epochs:
                return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared in time")


def test_sigkill_then_resume_completes_without_starting_over(tmp_path):
    out = tmp_path / "run"
    args = QUICK + ["--epochs=6", f"--output_dir={out}", "--seed=3"]
    proc = subprocess.Popen(TRAIN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        _wait_for_checkpoint(out, proc, epochs=2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "encoder").exists()
    done_before = len(json.loads((out / "metrics.json").read_text()))
    result = run(args + ["--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_after = int(result.stdout.split("resuming")[1].split("after epoch")[1].split()[0])
    assert resumed_after >= done_before - 1 >= 1  # at most one epoch lost
    epochs = [r["epoch"] for r in json.loads((out / "metrics.json").read_text())]
    assert epochs == [1, 2, 3, 4, 5, 6]
    # Export and probe.
    assert (out / "encoder" / "saved_model.pb").exists()
    assert (out / "model.keras").exists()
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe) == {"random_init", "trained"}
    assert all(set(probe[which]) == {"y", "fc", "conv"} for which in probe)
    assert "| y |" in result.stdout and "random init" in result.stdout
    assert any(name.startswith("events") for name in os.listdir(out / "logs" / "train"))
    # A finished run refuses to be overwritten without --resume.
    assert_usage_error(run(args), "--resume")


def _files_of(directory):
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_resume_keeps_the_runs_settings_and_refuses_a_changed_model(tmp_path):
    out = tmp_path / "run"
    umask = os.umask(0o022)  # the usual umask: every output must then be readable by others
    try:
        first = run(QUICK + ["--epochs=1", "--noprobe", f"--output_dir={out}", "--estimator=jsd"])
    finally:
        os.umask(umask)
    assert first.returncode == 0, first.stderr[-2000:]
    for path in [out, *out.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    assert f"output directory: {out}" in first.stdout and f"everything is in {out}" in first.stdout
    before = _files_of(out)
    for flag in ("--estimator=dv", "--local_critic=concat", "--embedding_dim=64", "--dataset=cifar10"):
        result = run_without_tensorflow(("apps", "train.py"), ["--resume", f"--output_dir={out}", flag])
        assert_usage_error(result, f"{flag} differs from the run's", "drop")
    # float16 wraps the optimizers in a LossScaleOptimizer (other state): off -> float16 is refused.
    result = run_without_tensorflow(("apps", "train.py"), ["--resume", f"--output_dir={out}",
                                                           "--mixed_precision=float16"])
    assert_usage_error(result, "--mixed_precision=float16 differs from the run's mixed_precision=off", "loss scale")
    assert _files_of(out) == before  # refused before anything was written
    # Only the flags given change; the others come from config.json (embedding_dim=32, y_dim=16, ...).
    # off -> bfloat16 keeps the optimizers' state (float32 variables either way): it resumes.
    result = run(["--resume", f"--output_dir={out}", "--epochs=2", "--mixed_precision=bfloat16"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["embedding_dim"], saved["estimator"]) == (2, 32, "jsd")
    assert saved["resolved"]["encoder"] == "dcgan"  # "auto" on 32x32 digits
    assert [entry["changed"] for entry in saved["history"]] == [
        {}, {"epochs": {"from": 1, "to": 2}, "mixed_precision": {"from": "off", "to": "bfloat16"}}]
    # and bfloat16 -> float16 is refused as well.
    result = run_without_tensorflow(("apps", "train.py"), ["--resume", f"--output_dir={out}", "--epochs=3",
                                                           "--mixed_precision=float16"])
    assert_usage_error(result, "--mixed_precision=float16 differs from the run's mixed_precision=bfloat16")


@pytest.mark.parametrize("saved,new,allowed", [("off", "bfloat16", True), ("bfloat16", "off", True),
                                               ("off", "float16", False), ("float16", "off", False),
                                               ("float16", "bfloat16", False), ("bfloat16", "float16", False)])
def test_a_resume_may_switch_precision_only_between_off_and_bfloat16(saved, new, allowed):
    from dim_keras.config import TrainConfig, check_resumable
    from dim_keras.errors import UsageError
    old_config, new_config = TrainConfig(mixed_precision=saved), TrainConfig(mixed_precision=new, resume=True)
    if allowed:
        check_resumable(old_config, new_config)
    else:
        with pytest.raises(UsageError, match=f"--mixed_precision={new} differs .* mixed_precision={saved}.*loss scale"):
            check_resumable(old_config, new_config)


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_interrupt_saves_the_state_says_how_to_continue_and_resume_completes(tmp_path, signum, code, word):
    out = tmp_path / "run"
    args = QUICK + ["--noprobe", f"--output_dir={out}"]
    # The app is started with SIGINT at its default disposition, as from a terminal: a process started in the
    # background by a non-interactive shell (e.g. `bash .ci/run &`) inherits SIGINT *ignored*, and Python then
    # installs no KeyboardInterrupt handler, so Ctrl-C would never reach the app.
    proc = subprocess.Popen(TRAIN + args + ["--epochs=1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_checkpoint(out, proc, epochs=1)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr[-2000:]
    assert stderr.strip().splitlines() == [
        f"train.py: error: {word}; the training state is saved: rerun with --resume to continue"]
    assert "training state saved to" in stdout
    done = len(json.loads((out / "metrics.json").read_text()))
    result = run(["--resume", f"--output_dir={out}", f"--epochs={done + 1}"])
    assert result.returncode == 0, result.stderr[-2000:]
    resumed_after = int(result.stdout.split("resuming")[1].split("after epoch")[1].split()[0])
    assert resumed_after in (done - 1, done)  # the checkpoint never runs ahead of metrics.json
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == list(range(1, done + 2))
    assert (out / "encoder" / "saved_model.pb").exists()


@pytest.mark.parametrize("method,label", [("dim", "DIM"), ("cpc", "CPC")])
def test_the_probe_table_labels_the_trained_columns_by_method(method, label):
    from dim_keras.runs.train import SCARCE_LABELS_PER_CLASS, probe_table
    scarce = f"{SCARCE_LABELS_PER_CLASS}_labels_per_class"
    probe = {"random_init": {"y": {"all_labels": 0.1, scarce: 0.1}},
             "trained": {"y": {"all_labels": 0.5, scarce: 0.25}}}
    header, _, row = probe_table(probe, method).splitlines()
    assert header == (f"| features | random init | {label} | random init, {SCARCE_LABELS_PER_CLASS} labels/class | "
                      f"{label}, {SCARCE_LABELS_PER_CLASS} labels/class |")
    assert row == "| y | 10.00 % | 50.00 % | 10.00 % | 25.00 % |"
