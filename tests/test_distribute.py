"""DeepInfoMax under tf.distribute (see docs/DISTRIBUTED.md).

Each test runs its TensorFlow work in a fresh subprocess: logical CPU devices
and TF_CONFIG must be set before TensorFlow initialises its devices, which
pytest's process has already done.
"""
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from official_formats import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {root!r})
    import numpy as np
    import tensorflow as tf
""").format(root=ROOT)

MIRRORED_SCRIPT = COMMON + textwrap.dedent("""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from dim_keras import build_encoder
    from dim_keras.models import DeepInfoMax

    GLOBAL_BATCH, REPLICAS = 16, 2
    images = np.random.default_rng(0).uniform(size=(GLOBAL_BATCH, 16, 16, 3)).astype("float32")

    def make_model(synchronized_bn, gamma=0.0):
        keras.utils.set_random_seed(1)
        encoder = build_encoder("dcgan", (16, 16, 3), widths=(8, 16, 16), fc_units=32, y_dim=8,
                                synchronized_bn=synchronized_bn)
        model = DeepInfoMax(encoder, alpha=0.5, beta=1.0, gamma=gamma, embedding_dim=16, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      discriminator_optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        return model

    # One strategy for the whole process: a second MirroredStrategy reuses
    # collective instance keys and its collectives clash with the first's.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def mirrored_step(synchronized_bn, initial):
        assert strategy.num_replicas_in_sync == REPLICAS
        with strategy.scope():
            model = make_model(synchronized_bn)
            model.set_weights(initial)
        data = tf.data.Dataset.from_tensor_slices(images).batch(GLOBAL_BATCH)
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return model

    def reference_step(synchronized_bn, initial, per_replica):
        # One device, the same global batch.  per_replica=True reproduces the
        # replicated semantics: the loss is the mean of the two half-batch
        # losses (negatives only within each half); batch-norm statistics are
        # those of each half (plain BN) or of the whole batch (synchronized BN).
        model = make_model(synchronized_bn)
        model.set_weights(initial)
        variables = model.representation_variables
        halves = np.split(images, REPLICAS)
        with tf.GradientTape() as tape:
            if per_replica and not synchronized_bn:
                features = [model.encoder(h, training=True) for h in halves]
            else:
                full = model.encoder(images, training=True)
                features = ([{k: v[i * 8:(i + 1) * 8] for k, v in full.items()} for i in range(REPLICAS)]
                            if per_replica else [full])
            loss = tf.add_n([model._representation_loss(f, True)[0] for f in features]) / len(features)
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return model

    def trainable(model):
        return [v.numpy() for v in model.representation_variables]

    def max_relative_difference(a_model, b_model, start):
        worst = 0.0
        for a, b, s in zip(trainable(a_model), trainable(b_model), start):
            update = np.abs(b - s).max()
            worst = max(worst, float(np.abs(a - b).max() / max(update, 1e-12)))
        return worst

    report = {}
    for synchronized_bn in (False, True):
        initial = make_model(synchronized_bn).get_weights()
        start = trainable(make_model(synchronized_bn))
        mirrored = mirrored_step(synchronized_bn, initial)
        same = reference_step(synchronized_bn, initial, per_replica=True)
        global_negatives = reference_step(synchronized_bn, initial, per_replica=False)
        key = "sync_bn" if synchronized_bn else "plain_bn"
        report[key] = {
            # |w_mirrored - w_reference| relative to the largest update of each variable
            "vs_per_replica_reference": max_relative_difference(mirrored, same, start),
            "vs_global_batch_negatives": max_relative_difference(mirrored, global_negatives, start),
            "update_norm": float(sum(np.sum((a - s) ** 2) for a, s in zip(trainable(same), start)) ** 0.5),
        }

    # The prior discriminator (own optimizer, built in compile() inside the scope) under 2 replicas.
    with strategy.scope():
        model = make_model(False, gamma=0.1)
    before = [v.numpy() for v in model.prior_discriminator.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(GLOBAL_BATCH).repeat(),
                        epochs=1, steps_per_epoch=2, verbose=0).history
    after = [v.numpy() for v in model.prior_discriminator.trainable_variables]
    report["prior"] = {
        "finite": bool(all(np.isfinite(v[-1]) for v in history.values())),
        "discriminator_moved": float(max(np.abs(a - b).max() for a, b in zip(after, before))),
        "keys": sorted(history),
    }

    # 18 images in global batches of 16: the trailing batch of 2 gives each
    # replica a batch of one, so every replica skips it (no NaN, no update).
    with strategy.scope():
        model = make_model(False, gamma=0.1)
    after_batch = {}
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: after_batch.setdefault(
        batch, [v.numpy().copy() for v in model.variables]))
    model.fit(np.concatenate([images, images[:2]]), batch_size=GLOBAL_BATCH, shuffle=False, verbose=0,
              callbacks=[record])
    report["trailing_batch_of_one_per_replica"] = {
        "batches": sorted(after_batch),
        "finite": bool(all(np.all(np.isfinite(v)) for v in after_batch[1])),
        "unchanged": bool(all(np.array_equal(a, b) for a, b in zip(after_batch[0], after_batch[1]))),
        "iterations": int(model.optimizer.iterations.numpy()),
        "discriminator_iterations": int(model.discriminator_optimizer.iterations.numpy()),
    }
    print("REPORT " + json.dumps(report))
""")

WORKER_SCRIPT = COMMON + textwrap.dedent("""
    import keras
    from dim_keras import build_encoder
    from dim_keras.models import DeepInfoMax

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder = build_encoder("dcgan", (16, 16, 3), widths=(8, 16, 16), fc_units=32, y_dim=8)
        model = DeepInfoMax(encoder, alpha=0.5, beta=1.0, gamma=0.1, embedding_dim=16, seed=0)
        model.compile(optimizer="adam", discriminator_optimizer="adam", jit_compile=False)
    images = np.random.default_rng(0).uniform(size=(64, 16, 16, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(images).batch(16).repeat()
    history = model.fit(data, epochs=1, steps_per_epoch=3, verbose=0).history
    weights = float(sum(np.sum(np.abs(v.numpy())) for v in model.trainable_variables))
    print("REPORT " + json.dumps({"loss": history["loss"][-1], "weight_sum": weights}))
""")


def _report(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, stdout
    return json.loads(lines[-1][len("REPORT "):])


@pytest.fixture(scope="module")
def mirrored_report(tmp_path_factory):
    script = tmp_path_factory.mktemp("mirrored") / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _report(proc.stdout)


@pytest.mark.parametrize("bn", ["plain_bn", "sync_bn"])
def test_mirrored_step_equals_one_device_step_on_the_global_batch(mirrored_report, bn):
    result = mirrored_report[bn]
    assert result["update_norm"] > 1e-3  # the step moves the weights
    # Same update as one device on the global batch whose loss averages the
    # per-replica losses (negatives within each replica's half batch).
    assert result["vs_per_replica_reference"] < 1e-4
    # ...which is not the update of one loss over the whole batch (negatives
    # from all 16 images): the comparison above can tell them apart.
    assert result["vs_global_batch_negatives"] > 1e-3


def test_prior_discriminator_trains_under_two_replicas(mirrored_report):
    prior = mirrored_report["prior"]
    assert prior["finite"]
    assert prior["discriminator_moved"] > 0
    assert {"discriminator_loss", "prior_loss", "local_mi", "global_mi"} <= set(prior["keys"])


def test_trailing_batch_of_one_per_replica_is_skipped(mirrored_report):
    result = mirrored_report["trailing_batch_of_one_per_replica"]
    assert result["batches"] == [0, 1]
    assert result["finite"] and result["unchanged"]
    assert result["iterations"] == result["discriminator_iterations"] == 1


def test_two_local_workers_train_under_multi_worker_mirrored_strategy(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    reports = [_report(stdout) for stdout, _ in outputs]
    for report in reports:
        assert math.isfinite(report["loss"]) and math.isfinite(report["weight_sum"])
    # Keras reduces the logs across workers: both report the same loss.
    assert reports[0]["loss"] == pytest.approx(reports[1]["loss"], rel=1e-6)
    # Both workers apply the same all-reduced updates: identical weights.
    assert reports[0]["weight_sum"] == pytest.approx(reports[1]["weight_sum"], rel=1e-6)
