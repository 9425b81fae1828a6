"""Streaming input end to end (docs/DISTRIBUTED.md, README "Data larger than memory"): two loopback workers
reading their own files of a streamed folder, the app trained on a streamed folder, and the peak memory of a
streamed run that does not grow with the folder.

Image identity: every generated image encodes its number in its top-left pixel (tests/streaming_folders.py), so
a worker's batches say which files it read.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

import streaming_folders
import worker_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
TRAIN = [sys.executable, os.path.join(ROOT, "apps", "train.py")]
TINY = ["--embedding_dim=16", "--y_dim=8", "--nojit_compile", "--verbose=0"]


def write_numbered_folder(directory, count):
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(streaming_folders.image(index)).save(directory / f"{index:04d}.png")
    return directory


def run_workers(script, args, timeout=300):
    """Two processes of ``script`` under one TF_CONFIG cluster on loopback: ``[(code, stdout, stderr)]``."""
    procs = worker_processes.start([[sys.executable, *script, *args[index]] for index in range(2)],
                                   env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    return worker_processes.finish(procs, timeout)


# Each worker builds the training input exactly as dim_keras.runs.train does (input_shard, pretraining_dataset)
# and distributes it as Keras' model.fit does (experimental_distribute_dataset), then records the image numbers
# of its own replica's batches for two epochs of steps.
READER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    import numpy as np
    from dim_keras.config import TrainConfig
    from dim_keras.runs.train import (input_shard, load_pretraining_data, make_strategy, pretraining_dataset,
                                      worker_role)
    strategy = make_strategy("multi_worker")  # first, before TensorFlow starts
    import streaming_folders
    config = TrainConfig(dataset="folder", data_dir=sys.argv[1], streaming="on", batch_size=16, seed=7)
    split, defaults, input_shape = load_pretraining_data(config)
    shard = input_shard(strategy, worker_role(strategy))
    import keras
    keras.utils.set_random_seed(config.seed)  # as dim_keras.runs.train._train, before the pipeline
    dataset = pretraining_dataset(config, split, defaults, input_shape, config.seed, *shard)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    epochs = []
    for epoch in range(2):
        seen = []
        for step in range(len(split) // config.batch_size):
            for part in strategy.experimental_local_results(next(iterator)):
                pixels = np.round(part.numpy() * 255).astype(np.uint8)
                seen += [streaming_folders.index_of(image) for image in pixels]
        epochs.append(seen)
    print("REPORT " + json.dumps({{"shard": list(shard), "epochs": epochs}}))
""").format(root=ROOT, tests=TESTS)


def test_two_workers_read_every_file_of_an_epoch_exactly_once(tmp_path):
    from dim_keras.config import TrainConfig
    from dim_keras.data import load_split
    from dim_keras.runs.train import load_pretraining_data, pretraining_dataset

    folder = write_numbered_folder(tmp_path / "images", 80)  # pretraining = the folder's train split: 64 files
    script = tmp_path / "reader.py"
    script.write_text(READER)
    results = run_workers([str(script)], [[str(folder)], [str(folder)]])
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    reports = [json.loads(next(line for line in stdout.splitlines() if line.startswith("REPORT "))[7:])
               for _, stdout, _ in results]
    assert sorted(tuple(r["shard"]) for r in reports) == [(2, 0), (2, 1)]

    epoch_files = sorted(streaming_folders.index_of(image)
                         for image in load_split("folder", "pretrain", folder, streaming="on").read_all()[0])
    assert len(epoch_files) == 64
    for epoch in range(2):
        first, second = (set(r["epochs"][epoch]) for r in reports)
        assert all(len(r["epochs"][epoch]) == 32 for r in reports)  # 4 steps of 8 images (16 / 2 workers)
        assert not first & second  # no file read by both workers
        assert sorted(first | second) == epoch_files  # together, every file of the epoch, once
    # Each pass splits the shuffled files anew: the workers' shares of epoch 1 and 2 differ.
    assert set(reports[0]["epochs"][0]) != set(reports[0]["epochs"][1])

    # Deterministic under --seed: each worker read exactly the sequence its shard of the seeded pipeline gives
    # in this process.
    import keras
    config = TrainConfig(dataset="folder", data_dir=str(folder), streaming="on", batch_size=16, seed=7)
    split, defaults, input_shape = load_pretraining_data(config)
    for report in reports:
        keras.utils.set_random_seed(config.seed)
        dataset = pretraining_dataset(config, split, defaults, input_shape, config.seed, *report["shard"])
        expected = [streaming_folders.index_of(image)
                    for batch in dataset.take(4) for image in np.round(batch.numpy() * 255).astype(np.uint8)]
        assert report["epochs"][0] + report["epochs"][1] == expected


def test_two_workers_train_with_the_app_on_a_streamed_folder(tmp_path):
    folder = write_numbered_folder(tmp_path / "images", 80)
    (folder / "9999.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # skipped by whichever worker reads it
    common = ["--strategy=multi_worker", "--dataset=folder", f"--data_dir={folder}", "--streaming=on",
              "--image_size=32", "--batch_size=16", "--steps_per_epoch=2", "--epochs=2", *TINY[:-1], "--verbose=2"]
    results = run_workers([os.path.join(ROOT, "apps", "train.py")],
                          [common + [f"--output_dir={tmp_path / f'w{index}'}"] for index in range(2)])
    for index, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"worker {index}: {stderr[-3000:]}"
        assert stderr.strip() == "", stderr[-3000:]
        assert "streaming 65 images from disk" in stdout  # the train split: 64 images and the broken file
    assert (tmp_path / "w0" / "encoder").is_dir() and os.listdir(tmp_path / "w1") == ["checkpoints"]


PEAK_RSS = textwrap.dedent("""
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stderr.write(done.stderr[-3000:])
""")


def peak_rss_mb(command):
    """Peak resident set of ``command`` (its own process), through a fresh parent whose only child it is."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    code, rss_kb = done.stdout.split()
    assert int(code) == 0, done.stderr
    return int(rss_kb) / 1024


def test_streaming_peak_memory_does_not_grow_with_the_folder(tmp_path):
    """Issue 16's must-show: one epoch (3 steps) on 50,000 PNGs of 64x64 (614 MB decoded, 491 MB in the train
    split) peaks at most 400 MB above the same command on 500 of them.  Measured: +12 MB streamed; the same
    command with --streaming=off peaks 719 MB higher (docs/BENCHMARKS.md)."""
    peaks = {}
    for count in (500, 50000):
        folder = streaming_folders.png_folder(count)  # cached under the temp dir after the first run
        peaks[count] = peak_rss_mb([*TRAIN, "--dataset=folder", f"--data_dir={folder}", "--streaming=on",
                                    "--encoder=dcgan", "--batch_size=32", "--epochs=1", "--steps_per_epoch=3",
                                    *TINY, f"--output_dir={tmp_path / str(count)}"])
    assert peaks[50000] - peaks[500] <= 400, peaks


def test_a_folder_without_readable_images_is_one_line_and_exit_2_before_training(tmp_path):
    for k in range(20):
        (tmp_path / f"{k:02d}.png").write_bytes(b"<html>not a picture</html>")
    done = subprocess.run([*TRAIN, "--dataset=folder", f"--data_dir={tmp_path}", "--streaming=on", "--image_size=16",
                           f"--output_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "train.py: error: folder: none of the first 16 images of the pretrain split can be read"), done.stderr
    assert not (tmp_path / "run").exists()  # nothing written: it stopped before training
