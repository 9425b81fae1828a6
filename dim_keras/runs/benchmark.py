"""Throughput benchmark of DeepInfoMax training steps (images/s, step time, peak memory, FLOPs).

:func:`benchmark` takes a :class:`dim_keras.config.BenchmarkConfig` and runs
one of its modes; :func:`summary` formats the result for the terminal.

- ``training``: times whole training steps of the model ``apps/train.py``
  trains (:func:`dim_keras.runs.model_setup.build_model` with the config's
  :class:`TrainConfig`) on random uint8 images after a warm-up, on the process's
  Keras backend: TensorFlow, or JAX (``KERAS_BACKEND=jax``), which needs no
  TensorFlow installed (the GPU machines of issue 17 have none).  ``model.fit``
  runs over the same few batches again and again (TensorFlow: a cached
  ``tf.data`` dataset; JAX: a generator of arrays already on the device) and a
  Keras callback stamps the wall clock at the end of every batch.  The callback
  is not ``async_safe``, so Keras converts each step's logs to Python floats
  before calling it: the host waits for the step to finish and asynchronous
  dispatch cannot hide device time.  Per-step times are the differences of
  these stamps; images/s is ``batch_size / median step time``.  Peak memory:
  the GPU allocator's peak (TensorFlow: over the timed steps; JAX:
  ``peak_bytes_in_use`` of the whole run, which JAX cannot reset), on the CPU
  the process's peak RSS.  Besides the times it reports an analytic FLOP count
  per training image (forward FLOPs of encoder, critics and prior
  discriminator from their layer shapes, training ~ 3x forward) and the
  achieved GFLOP/s.  ``compare_torch`` also times ``apps/torch_reference.py``
  (:mod:`dim_keras.runs.torch_reference`, the authors' DIM(L) step in PyTorch)
  in a fresh process with the same batch size and thread count.
  ``backends`` runs the training benchmark on each listed Keras backend in a
  fresh process per backend and round (and the torch step with
  ``compare_torch``), in interleaved rounds, and reports the same-round ratios.
- ``sweep``: one ``training`` benchmark per combination of the ``sweep_*``
  lists, each in a fresh ``apps/benchmark.py`` process (so process peak memory
  and the dtype policy start clean) on the parent's backend; :func:`summary`
  makes a markdown table and names the batch that saturates the device.
- ``data_pipeline``: the ``tf.data`` input pipeline alone (``pipeline_source``: random arrays in memory, or
  generated PNG / JPEG files or TFRecords of ``apps/prepare_data.py`` streamed from disk, decoded in tf.data).
- ``matmul_peak``: the GFLOP/s of the critic's dominant GEMM shape and the
  images/s ceiling it implies (TensorFlow or JAX).

TensorFlow is imported by the modes that need it on the TensorFlow backend, not by this module.
"""

import dataclasses
import functools
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time

from dim_keras import cli
from dim_keras.config import TorchReferenceConfig, validate
from dim_keras.errors import UsageError, first_line
from dim_keras.runs import timing

APPS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "apps")
MATMUL_CHAIN = 8
MATMUL_ROWS = 4096  # 64 images x 64 locations: the local embedding's rows at batch 64
PRECISION_DTYPES = {"off": "float32", "float16": "float16", "bfloat16": "bfloat16"}
SWEEP_COLUMNS = ("estimator", "critic", "local samples", "batch", "images/s", "step ms (median)",
                 "step ms (p90)", "peak MB", "GFLOP/img", "GFLOP/s", "CIFAR-10 epoch s")


def benchmark(config):
    """Runs the benchmark ``config.mode`` describes; returns its result dict (JSON-ready).

    Raises UsageError for settings the model cannot take (an image size its encoder cannot read).
    """
    validate(config)
    if config.mode == "sweep":
        return {"mode": "sweep", "rows": run_sweep(config)}
    if config.backends:
        return run_backends(config)
    if config.compare_torch and keras_backend() == "jax":
        # JAX keeps the GPU memory it preallocates (75 %) until its process ends: the torch step would run
        # beside it, so both run in processes of their own, one after the other.
        return run_backends(dataclasses.replace(config, backends=("jax",)))
    if config.mode == "data_pipeline":
        if importlib.util.find_spec("tensorflow") is None:
            raise UsageError("--mode=data_pipeline times the tf.data input pipeline: it needs TensorFlow")
        return benchmark_data_pipeline(config)
    if config.mode == "matmul_peak":
        return benchmark_matmul_peak(config)
    result = benchmark_training(config)
    if config.compare_torch:
        result["torch"] = benchmark_torch(config)
    return result


# --------------------------------------------------------------------------- settings
def _value(config, path):
    return functools.reduce(getattr, path, config)


def settings(config):
    """The command-line settings of ``config`` as one flat dict, flag name -> value."""
    return {path[-1]: _value(config, path) for _, path, _ in cli.flag_fields(type(config))}


def _recorded_settings(config):
    """The settings a single measurement records: all but the output format, the sweep's lists and the
    backend comparison's (the backend is recorded as ``backend``)."""
    recorded = {name: value for name, value in settings(config).items()
                if name not in ("json", "backends", "rounds") and not name.startswith("sweep_")}
    recorded["estimator"] = config.model.resolved_estimator()  # --estimator left to the recipe: its estimator
    return recorded


def command_line(config):
    """The flags that give ``config`` (those of its settings that differ from the defaults)."""
    args = []
    for field, path, default in cli.flag_fields(type(config)):
        value = _value(config, path)
        if value == default:
            continue
        if isinstance(value, bool):
            args.append(f"--{field.name}" if value else f"--no{field.name}")
        elif isinstance(value, (tuple, list)):
            args.append(f"--{field.name}={','.join(map(str, value))}")
        else:
            args.append(f"--{field.name}={value}")
    return args


def _run_app(name, args, env=None):
    """Runs ``apps/<name> args`` in a fresh Python (with ``env`` added to the environment); the JSON object of
    its last stdout line, else ``{"error": <its last stderr line>}``."""
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, os.path.join(APPS_DIR, name), *args], capture_output=True,
                               text=True, env=None if env is None else {**os.environ, **env})
    process_s = time.perf_counter() - start  # start-up and compilation included: for planning device time
    if completed.returncode == 0:
        try:
            return {**json.loads(completed.stdout.strip().splitlines()[-1]), "process_s": process_s}
        except (IndexError, ValueError):
            pass
    lines = completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"]
    return {"error": lines[-1][:200], "process_s": process_s}


# --------------------------------------------------------------------------- FLOPs
def _conv_flops(layer):
    """2 * H_out * W_out * k_h * k_w * C_in * C_out / groups for one image."""
    _, h_out, w_out, c_out = layer.output.shape
    c_in = layer.input.shape[-1]
    k_h, k_w = layer.kernel_size
    return 2 * h_out * w_out * k_h * k_w * c_in * c_out // layer.groups


def _dense_flops(layer):
    """2 * in * out per row, times the rows one image contributes."""
    rows = 1
    for dim in layer.input.shape[1:-1]:
        rows *= dim
    return 2 * rows * layer.input.shape[-1] * layer.units


def encoder_forward_flops(encoder):
    """Forward FLOPs of one image through a functional encoder (conv and dense layers; elementwise
    work such as BN and ReLU is a few FLOPs per activation and left out)."""
    import keras
    total = 0
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.Conv2D):
            total += _conv_flops(layer)
        elif isinstance(layer, keras.layers.Dense):
            total += _dense_flops(layer)
    return total


def critic_forward_flops(critic, global_dim, local_dim, locations, batch_size):
    """Forward FLOPs per image of one critic scoring a batch: the embedding networks on this image's
    global vector and ``locations`` local vectors, plus its share (1/B) of the B x B x L pair scores."""
    from dim_keras import critics as critics_lib

    def mlp(widths):
        return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))

    pairs = batch_size * locations  # score entries per image: every location of every image of the batch
    if isinstance(critic, critics_lib.EncodeAndDotCritic):
        d = critic.embedding_dim
        residual = lambda n_in: 2 * (n_in * d + d * d + n_in * d)  # hidden + out + shortcut  # noqa: E731
        return residual(global_dim) + locations * residual(local_dim) + 2 * pairs * d
    if isinstance(critic, critics_lib.BilinearCritic):
        return 2 * global_dim * local_dim + 2 * pairs * local_dim
    if isinstance(critic, critics_lib.SeparableCritic):
        hidden = list(critic.hidden_units)
        e = critic.embedding_dim
        return (mlp([global_dim, *hidden, e]) + locations * mlp([local_dim, *hidden, e]) + 2 * pairs * e)
    if isinstance(critic, critics_lib.ConcatAndConvolveCritic):  # GlobalCritic too (locations = 1)
        units = list(critic.hidden_units)
        first = units[0]
        per_pair = mlp([*units, 1])  # the layers after the split first layer run on every pair
        return 2 * global_dim * first + locations * 2 * local_dim * first + pairs * per_pair
    return 0


def training_flops_per_image(model, batch_size):
    """Analytic FLOPs per training image: ``{"forward": ..., "training": ..., "parts": {...}}``.

    Forward = encoder + critics + prior discriminator (on Y, and on the real and fake batch of its
    own step); training ~ 3 x forward (the backward pass costs about two forward passes).  The
    pair-score matmul is ``2 * B * B * L * D`` for the batch, i.e. ``2 * B * L * D`` per image.
    """
    features = {k: tuple(v.shape) for k, v in model.encoder.output.items()}
    parts = {"encoder": encoder_forward_flops(model.encoder)}
    y_dim = features["y"][-1]
    if model.global_critic is not None:
        conv = features["conv"]
        parts["global_critic"] = critic_forward_flops(
            model.global_critic, y_dim, conv[1] * conv[2] * conv[3], 1, batch_size)
    if model.local_critic is not None:
        local = features["local"]
        locations = local[1] * local[2]
        if model.local_samples:
            locations = min(locations, model.local_samples)
        parts["local_critic"] = critic_forward_flops(
            model.local_critic, y_dim, local[3], locations, batch_size)
    if model.prior_discriminator is not None:
        widths = [y_dim, *model.prior_discriminator.hidden_units, 1]
        one = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
        parts["prior_discriminator"] = 3 * one  # fake logits for the encoder + real and fake for D
    forward = sum(parts.values())
    return {"forward": forward, "training": 3 * forward, "parts": parts}


# --------------------------------------------------------------------------- backends and devices
def keras_backend():
    """The Keras backend of this process (``KERAS_BACKEND``, else Keras' config; importing Keras picks it)."""
    import keras
    return keras.backend.backend()


def _device_description(tf):
    """``(description, on_gpu)`` of where TensorFlow computes."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "GPU:0 " + details.get("device_name", "unknown GPU"), True
    return timing.cpu_description(), False


def _jax_device_description():
    """``(description, on_gpu)`` of JAX's first local device (where Keras' JAX backend computes)."""
    import jax
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return timing.cpu_description(), False
    return f"{device.platform.upper()}:0 {device.device_kind}", True


def _jax_peak_mb():
    """JAX's allocator peak on its first device (``memory_stats()['peak_bytes_in_use']``) in MiB, or None
    where the device keeps no statistics (the CPU)."""
    import jax
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def configure_threads(tf, threads):
    """Sets TF's intra-op threads (0 = all cores; the inter-op pool keeps its default); returns the count.

    Only possible before TensorFlow executes anything: in a process where it already has, the
    current count is kept, and a different explicit ``threads`` is a UsageError.
    """
    wanted = threads or os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if threads and current != threads:
            raise UsageError(f"--threads={threads}: TensorFlow already runs in this process with "
                             f"{current or 'all'} intra-op threads; benchmark in a fresh process") from None
        wanted = current or os.cpu_count()
    return wanted


def _jax_threads(threads):
    """JAX's CPU client sizes its thread pool to the cores it sees when it starts and has no setting for it,
    so only ``--threads=0`` (all cores) or the core count is honoured; returns that count."""
    if threads not in (0, os.cpu_count()):
        raise UsageError(f"--threads={threads}: on the JAX backend the CPU thread pool uses every core it is "
                         f"given; restrict the cores with taskset instead (e.g. taskset -c 0-{threads - 1})")
    return os.cpu_count()


def build_benchmark_model(config):
    """The model ``apps/train.py`` trains with ``config.model``, for ``config.image_size`` images.

    :func:`dim_keras.runs.model_setup.build_model` (seeded with ``config.model.seed``), running
    ``config.steps_per_execution`` training steps per compiled call.  Returns ``(model, encoder name)``.
    TensorFlow-free: on the JAX backend this runs where TensorFlow is not installed.
    """
    import keras

    from dim_keras import encoders
    from dim_keras.runs.model_setup import build_model

    size = config.image_size
    encoder_name = config.model.encoder
    if encoder_name == "auto":
        encoder_name = encoders.auto_encoder_name(size)
    keras.utils.set_random_seed(config.model.seed)
    try:
        model = build_model(config.model, (size, size, 3))
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(first_line(error)) from None
    model.steps_per_execution = config.steps_per_execution
    return model, encoder_name


def random_images(count, size, seed):
    """``count`` random uint8 images ``[count, size, size, 3]`` (numpy; the model scales uint8 by 1/255 inside
    its step, as it does the data pipeline's images)."""
    import numpy as np
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def training_input(images, batch_size, backend):
    """What ``model.fit`` reads: the same few batches of ``images`` again and again, so that no input cost falls
    inside the timed steps.  TensorFlow: a cached, repeated, prefetched ``tf.data`` dataset in host memory (as
    ``apps/train.py`` feeds it).  JAX: a Python generator of ``(batch,)`` already on the device (Keras' JAX
    trainer passes device arrays through), which needs no TensorFlow."""
    if backend == "tensorflow":
        import tensorflow as tf
        return (tf.data.Dataset.from_tensor_slices(images).batch(batch_size, drop_remainder=True)
                .cache().repeat().prefetch(tf.data.AUTOTUNE))
    import jax
    batches = [jax.device_put(images[start:start + batch_size])
               for start in range(0, len(images) - batch_size + 1, batch_size)]

    def forever():
        while True:
            for batch in batches:
                yield (batch,)

    return forever()


# --------------------------------------------------------------------------- training
def benchmark_training(config):
    """Times training steps of ``config`` on this process's Keras backend (TensorFlow or JAX); returns the
    result dict."""
    import keras

    from dim_keras.runs.model_setup import jit_compile, set_precision

    backend = keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf
        threads = configure_threads(tf, config.threads)
        device, on_gpu = _device_description(tf)
        versions = {"tensorflow": tf.__version__}
    elif backend == "jax":
        import jax
        threads = _jax_threads(config.threads)
        device, on_gpu = _jax_device_description()
        versions = {"jax": jax.__version__}
    else:
        raise UsageError(f"the benchmark runs on the tensorflow and jax Keras backends, not {backend} "
                         f"(set KERAS_BACKEND)")
    set_precision(config.model.mixed_precision)
    baseline_mb = timing.max_rss_mb()
    model, encoder_name = build_benchmark_model(config)

    batch = config.model.batch_size
    per_execution = config.steps_per_execution
    warmup_calls = math.ceil(config.warmup / per_execution)
    timed_calls = math.ceil(config.steps / per_execution)
    # A few distinct batches held in memory and repeated: no input cost inside the timed steps.
    data = training_input(random_images(4 * batch, config.image_size, config.model.seed), batch, backend)
    reset_gpu_peak = on_gpu and backend == "tensorflow"  # JAX has no reset: its peak covers the whole run

    class StepTimer(keras.callbacks.Callback):
        """Wall-clock and CPU stamps at the end of every compiled call.  Not async-safe on purpose: Keras
        then pulls the step's logs to the host before calling us (on both backends), so each stamp marks a
        finished step."""

        def __init__(self):
            super().__init__()
            self.stamps = []
            self.cpu_stamps = []
            self.losses = {}

        def _stamp(self):
            self.stamps.append(time.perf_counter())
            self.cpu_stamps.append(time.process_time())

        def on_train_batch_begin(self, batch_index, logs=None):
            if not self.stamps:
                self._stamp()

        def on_train_batch_end(self, batch_index, logs=None):
            self.losses = logs  # already Python floats: the host has synchronised with the device
            self._stamp()
            if len(self.stamps) == warmup_calls + 1 and reset_gpu_peak:
                tf.config.experimental.reset_memory_stats("GPU:0")

    timer = StepTimer()
    load_before = timing.load_average()
    model.fit(data, epochs=1, steps_per_epoch=(warmup_calls + timed_calls) * per_execution,
              callbacks=[timer], shuffle=False, verbose=0)
    load_after = timing.load_average()

    def per_step(stamps):
        return [(b - a) / per_execution for a, b in zip(stamps[:-1], stamps[1:])][warmup_calls:]

    step_s, cpu_step_s = per_step(timer.stamps), per_step(timer.cpu_stamps)
    peak_mb, memory_kind = timing.max_rss_mb(), "process max RSS"
    if on_gpu and backend == "tensorflow":
        peak_mb = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        memory_kind = "GPU allocator peak over the timed steps"
    elif on_gpu and backend == "jax" and _jax_peak_mb() is not None:
        peak_mb = _jax_peak_mb()
        memory_kind = "GPU allocator peak of the whole run (JAX peak_bytes_in_use)"
    flops = training_flops_per_image(model, batch)
    result = {"mode": "training", "backend": backend, **timing.step_stats(step_s, batch)}
    result.update(timing.flop_fields(flops["training"], result["images_per_s"]))
    result.update({
        "peak_memory_mb": peak_mb,
        "memory_kind": memory_kind,
        "gflop_per_image_forward": flops["forward"] / 1e9,
        "gflop_parts_forward": {k: v / 1e9 for k, v in flops["parts"].items()},
        "device": device,
        "threads": threads,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "final_loss": float(timer.losses.get("loss", math.nan)),
        "versions": {**versions, "keras": keras.__version__},
        # jit_compile as compiled: always on under JAX (dim_keras.runs.model_setup.jit_compile)
        "config": dict(_recorded_settings(config), encoder=encoder_name, jit_compile=jit_compile(config.model)),
    })
    if not on_gpu:
        result["baseline_memory_mb"] = baseline_mb
        result.update(timing.cpu_time_fields(cpu_step_s, batch, threads, flops["training"]))
    return result


# --------------------------------------------------------------------------- data pipeline
def benchmark_data_pipeline(config):
    """Images/s of the tf.data input pipeline alone, as ``apps/train.py`` builds it (`make_dataset`: random
    crop + flip, uint8 -> float32).  ``arrays``: random uint8 images (padded by 1/8 of the side) held in
    memory; ``png`` / ``jpeg`` / ``tfrecord``: ``pipeline_images`` random images of ``image_size`` written to a
    temporary directory and streamed from it (read, decoded, reflect-padded by 1/8 and cropped back, flipped:
    the improved recipe's augmentation)."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from dim_keras.data import make_dataset

    threads = configure_threads(tf, config.threads)
    size, batch, seed = config.image_size, config.model.batch_size, config.model.seed
    source = config.pipeline_source
    with tempfile.TemporaryDirectory(prefix="dim_keras-pipeline-") as root:
        if source == "arrays":
            padded = size + max(1, size // 8)
            images = np.random.default_rng(seed).integers(0, 256, size=(max(8 * batch, 2048), padded, padded, 3),
                                                          dtype=np.uint8)
            dataset = make_dataset(images, batch_size=batch, training=True, seed=seed, crop_size=size, flip=True)
            source_bytes = images.nbytes
        else:
            padded = size
            stream, source_bytes = _pipeline_stream(config, root)
            dataset = make_dataset(stream, batch_size=batch, training=True, seed=seed, flip=True,
                                   pad=max(1, size // 8))
        iterator = iter(dataset.repeat())
        load_before = timing.load_average()
        step_s, cpu_step_s = timing.time_steps(lambda: next(iterator).numpy(), config.steps, config.warmup)
    result = {
        "mode": "data_pipeline",
        "source": "dim_keras.data.make_dataset" + ("" if source == "arrays" else f" streaming {source}"),
        **timing.step_stats(step_s, batch),
        "cpu_ms_per_batch_median": 1000 * statistics.median(cpu_step_s),
        "source_bytes": source_bytes,
        "peak_memory_mb": timing.max_rss_mb(),
        "device": timing.cpu_description(),
        "threads": threads,
        "load_average_before": load_before,
        "config": dict(_recorded_settings(config), source_image_size=padded),
    }
    return result


def _pipeline_stream(config, root):
    """``(ImageStream, bytes on disk)`` of ``config.pipeline_images`` random images written under ``root``:
    PNG or JPEG files (quality 90), or TFRecords written from the PNGs by apps/prepare_data.py's run."""
    import numpy as np
    from PIL import Image

    from dim_keras.config import PrepareDataConfig
    from dim_keras.data import load_split

    size, rng = config.image_size, np.random.default_rng(config.model.seed)
    folder = os.path.join(root, "images")
    os.makedirs(folder)
    extension = ".jpg" if config.pipeline_source == "jpeg" else ".png"
    for index in range(config.pipeline_images):
        image = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
        image.save(os.path.join(folder, f"{index:07d}{extension}"), **({"quality": 90} if extension == ".jpg" else {}))
    data_dir, name = folder, "folder"
    if config.pipeline_source == "tfrecord":
        from dim_keras.runs.prepare_data import prepare_data
        data_dir, name = os.path.join(root, "records"), "tfrecord"
        prepare_data(PrepareDataConfig(dataset="folder", data_dir=folder, output=data_dir, splits=("pretrain",),
                                       verbose=0), log=lambda line: None)
    on_disk = sum(os.path.getsize(os.path.join(data_dir, entry)) for entry in os.listdir(data_dir))
    return load_split(name, "pretrain", data_dir, streaming="on"), on_disk


# --------------------------------------------------------------------------- matmul peak
def benchmark_matmul_peak(config):
    """GFLOP/s of the configuration's dominant GEMM shape, and the images/s ceiling it implies.

    A chain of ``MATMUL_CHAIN`` dependent ``[4096, D] x [D, D]`` products (D = ``embedding_dim``) in the
    ``--mixed_precision`` dtype.  TensorFlow: one ``tf.function`` without XLA, so that neither XLA's algebraic
    simplifier nor launch overhead shortens it, and only one scalar returns to the host.  JAX: one jitted
    function whose whole result is waited for (``block_until_ready``), so XLA cannot drop any of the chain.
    float32 matmuls run as TF32 on Ampere/Hopper GPUs by both frameworks' default (``tensor_float_32`` says so
    for TF; JAX's default matmul precision allows it).
    """
    import numpy as np

    backend = keras_backend()
    dtype_name = PRECISION_DTYPES[config.model.mixed_precision]
    d, rows, seed = config.model.embedding_dim, MATMUL_ROWS, config.model.seed
    rng = np.random.default_rng(seed)
    # Entries of variance 1/D keep the chain's values O(1) (no overflow in float16).
    x_host = rng.standard_normal((rows, d), dtype=np.float32)
    w_host = (rng.standard_normal((d, d), dtype=np.float32) / math.sqrt(d)).astype(np.float32)
    extra = {}
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        threads = _jax_threads(config.threads)
        device, on_gpu = _jax_device_description()
        x, w = jnp.asarray(x_host, dtype_name), jnp.asarray(w_host, dtype_name)

        @jax.jit
        def chain(x, w):
            for _ in range(MATMUL_CHAIN):
                x = jnp.matmul(x, w)
            return x

        step = lambda: chain(x, w).block_until_ready()  # noqa: E731
        if on_gpu:
            extra["matmul_precision"] = str(jax.config.jax_default_matmul_precision or "default (TF32 allowed)")
    else:
        import tensorflow as tf
        threads = configure_threads(tf, config.threads)
        device, on_gpu = _device_description(tf)
        x, w = tf.cast(x_host, dtype_name), tf.cast(w_host, dtype_name)

        @tf.function
        def chain(x, w):
            for _ in range(MATMUL_CHAIN):
                x = tf.matmul(x, w)
            return x[0, 0]

        step = lambda: chain(x, w).numpy()  # noqa: E731
        if on_gpu:
            extra["tensor_float_32"] = tf.config.experimental.tensor_float_32_execution_enabled()

    load_before = timing.load_average()
    step_s, cpu_step_s = timing.time_steps(step, config.steps, config.warmup)
    flop = 2 * rows * d * d * MATMUL_CHAIN
    median = statistics.median(step_s)
    result = {
        "mode": "matmul_peak",
        "backend": backend,
        "gemm": f"{MATMUL_CHAIN} x [{rows}, {d}] x [{d}, {d}] {dtype_name}",
        "gflop_per_s": flop / median / 1e9,
        "gflop_per_s_best": flop / min(step_s) / 1e9,
        "device": device,
        "threads": threads,
        "load_average": load_before,
        "config": _recorded_settings(config),
        **extra,
    }
    if not on_gpu:
        result["gflop_per_cpu_s"] = flop / statistics.median(cpu_step_s) / 1e9
    model, _ = build_benchmark_model(config)
    gflop_per_image = training_flops_per_image(model, config.model.batch_size)["training"] / 1e9
    result["gflop_per_image"] = gflop_per_image
    result["images_per_s_ceiling"] = result["gflop_per_s"] / gflop_per_image
    if not on_gpu:
        result["images_per_s_ceiling_idle"] = result["gflop_per_cpu_s"] * threads / gflop_per_image
    return result


# --------------------------------------------------------------------------- torch comparison
def torch_config(config):
    """The :class:`TorchReferenceConfig` of the authors' step on the settings of ``config``."""
    model = config.model
    return TorchReferenceConfig(
        estimator=model.resolved_estimator(), batch_size=model.batch_size, image_size=config.image_size, steps=config.steps,
        warmup=config.warmup, embedding_dim=model.embedding_dim, y_dim=model.y_dim, gamma=model.gamma,
        prior_gradient_penalty=model.prior_gradient_penalty, threads=config.threads, seed=model.seed, json=True)


def benchmark_torch(config):
    """Times ``apps/torch_reference.py`` on the settings of ``config`` in a fresh process.

    Returns its JSON result, ``{"error": ...}`` if it failed, or None when torch is not installed.
    """
    if importlib.util.find_spec("torch") is None:
        return None
    return _run_app("torch_reference.py", command_line(torch_config(config)))


# --------------------------------------------------------------------------- backends comparison
BACKEND_COLUMNS = ("arm", "images/s per round", "images/s (median)", "x first (paired)", "step ms (median)",
                   "peak MB", "CIFAR-10 epoch s", "idle-machine images/s", "x first, idle (paired)")
SATURATION_FRACTION = 0.95  # a batch "saturates" the device from where images/s is within 5 % of the best


def backend_arms(config):
    """``(name, app, flags, environment)`` of each process a round of ``--backends`` runs: one
    ``apps/benchmark.py`` per backend with ``KERAS_BACKEND`` set, then (``--compare_torch``) the authors' step."""
    single = dataclasses.replace(config, backends=(), rounds=1, compare_torch=False, json=True)
    arms = [(backend, "benchmark.py", command_line(single), {"KERAS_BACKEND": backend})
            for backend in config.backends]
    if config.compare_torch:
        arms.append(("torch", "torch_reference.py", command_line(torch_config(config)), None))
    return arms


def run_backends(config):
    """``--rounds`` rounds of every arm of :func:`backend_arms`, each a fresh process (no framework shares a
    process, an allocator or a thread pool with another), one after the other.  The order alternates between
    rounds (A B, B A, A B, ...) so that a drift of the machine's load over the run favours no arm; the
    comparison (:func:`compare_rounds`) pairs the arms of the same round."""
    arms = backend_arms(config)
    names = [name for name, *_ in arms]
    rounds = []
    for index in range(config.rounds):
        outcomes = {}
        for name, app, args, env in (arms if index % 2 == 0 else arms[::-1]):
            outcomes[name] = _run_app(app, args, env)
        rounds.append({name: outcomes[name] for name in names})
    return {"mode": "backends", "arms": names, "rounds": rounds, "comparison": compare_rounds(rounds, names),
            "config": settings(config)}


def _paired_ratios(rounds, arm, first, key):
    """``arm``'s ``key`` over ``first``'s in each round where both ran and report it."""
    return [r[arm][key] / r[first][key] for r in rounds
            if key in r[arm] and key in r[first] and r[first][key] > 0]


def compare_rounds(rounds, arms):
    """Per arm: its images/s in every round and their median, the median step time, the largest peak memory, the
    CIFAR-10 epoch time at the median images/s, and its ratio to the first arm: the median over rounds of the
    same-round ratios (paired, so a machine that is busier in one round than another cancels out).  On the CPU
    the same for ``images_per_s_idle_estimate`` (CPU time per step, less sensitive to other processes).  Rounds
    where an arm failed are left out of its figures and listed under ``errors``."""
    first = arms[0]
    comparison = {}
    for arm in arms:
        ran = [r[arm] for r in rounds if "error" not in r[arm]]
        entry = {"images_per_s": [r["images_per_s"] for r in ran],
                 "errors": [r[arm]["error"] for r in rounds if "error" in r[arm]]}
        if ran:
            entry["images_per_s_median"] = statistics.median(entry["images_per_s"])
            entry["step_ms_median"] = statistics.median(r["step_ms_median"] for r in ran)
            entry["peak_memory_mb"] = max(r["peak_memory_mb"] for r in ran)
            entry["cifar10_epoch_s"] = timing.CIFAR10_TRAIN_IMAGES / entry["images_per_s_median"]
            entry["device"] = ran[0]["device"]
            idle = [r["images_per_s_idle_estimate"] for r in ran if "images_per_s_idle_estimate" in r]
            if idle:
                entry["images_per_s_idle_estimate_median"] = statistics.median(idle)
        for key, name in (("images_per_s", "ratio_to_first"), ("images_per_s_idle_estimate", "idle_ratio_to_first")):
            paired = _paired_ratios(rounds, arm, first, key)
            if paired:
                entry[name] = statistics.median(paired)
                entry[name + "_rounds"] = paired
        comparison[arm] = entry
    return comparison


def _cell(value, spec):
    return "" if value is None else format(value, spec)


def backends_table(result):
    """Markdown table of a ``--backends`` result, and one line per arm with its ratio to the first."""
    arms, comparison = result["arms"], result["comparison"]
    lines = ["| " + " | ".join(BACKEND_COLUMNS) + " |", "|" + "|".join("---" for _ in BACKEND_COLUMNS) + "|"]
    for arm in arms:
        e = comparison[arm]
        label = "torch (authors' step)" if arm == "torch" else arm
        if "images_per_s_median" not in e:
            lines.append("| " + " | ".join([label, "failed: " + e["errors"][0].replace("|", "/")]
                                           + [""] * (len(BACKEND_COLUMNS) - 2)) + " |")
            continue
        cells = [label, ", ".join(f"{v:.1f}" for v in e["images_per_s"]), f"{e['images_per_s_median']:.1f}",
                 _cell(e.get("ratio_to_first"), ".2f"), f"{e['step_ms_median']:.1f}", f"{e['peak_memory_mb']:.0f}",
                 f"{e['cifar10_epoch_s']:.1f}", _cell(e.get("images_per_s_idle_estimate_median"), ".1f"),
                 _cell(e.get("idle_ratio_to_first"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    c = result["config"]
    precision = "fp32" if c["mixed_precision"] == "off" else c["mixed_precision"]
    first = comparison[arms[0]]
    # XLA as each backend compiled the step (always on under JAX, whatever --jit_compile says)
    xla = {arm: r[arm]["config"]["jit_compile"] for r in result["rounds"] for arm in arms
           if "jit_compile" in r[arm].get("config", {})}
    lines.append(f"DeepInfoMax {c['estimator']}/{c['local_critic']} {c['image_size']}px batch {c['batch_size']} "
                 f"{precision}, xla {', '.join(f'{arm}={on}' for arm, on in xla.items()) or c['jit_compile']}, "
                 f"{len(result['rounds'])} round(s), order alternating, on {first.get('device', 'unknown device')}")
    for arm in arms[1:]:
        e = comparison[arm]
        if "ratio_to_first" in e:
            rounds = ", ".join(f"{v:.2f}" for v in e["ratio_to_first_rounds"])
            line = f"{arm} / {arms[0]} = {e['ratio_to_first']:.2f}x images/s (median of paired rounds: {rounds})"
            if "idle_ratio_to_first" in e:
                line += f"; idle-machine estimate {e['idle_ratio_to_first']:.2f}x"
            lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- sweep
def sweep_configs(config):
    """``(row, config)`` of every training run of ``--mode=sweep``."""
    for estimator in config.sweep_estimators:
        for critic in config.sweep_critics:
            for samples in config.sweep_local_samples:
                for batch in config.sweep_batch_sizes:
                    model = dataclasses.replace(config.model, estimator=estimator, local_critic=critic,
                                                local_samples=samples or None, batch_size=batch)
                    run = dataclasses.replace(config, mode="training", json=True, compare_torch=False, model=model)
                    yield {"estimator": estimator, "critic": critic, "local_samples": samples,
                           "batch_size": batch}, run


def run_sweep(config):
    """One fresh ``apps/benchmark.py`` process per configuration (process peak memory and the dtype
    policy start clean); a row per run, with its ``result`` or its ``error``."""
    rows = []
    for row, run in sweep_configs(config):
        outcome = _run_app("benchmark.py", command_line(run))
        row.update({"error": outcome["error"]} if "error" in outcome else {"result": outcome})
        rows.append(row)
    return rows


def sweep_table(rows):
    """Markdown table of sweep rows, then where each configuration's throughput saturates
    (:func:`saturation`) and what ran where."""
    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "|".join("---" for _ in SWEEP_COLUMNS) + "|"]
    for row in rows:
        cells = [row["estimator"], row["critic"], str(row["local_samples"] or "all"), str(row["batch_size"])]
        if "result" in row:
            r = row["result"]
            cells += [f"{r['images_per_s']:.1f}", f"{r['step_ms_median']:.1f}", f"{r['step_ms_p90']:.1f}",
                      f"{r['peak_memory_mb']:.0f}", f"{r['gflop_per_image']:.3f}", f"{r['achieved_gflop_per_s']:.1f}",
                      f"{r['cifar10_epoch_s']:.1f}"]
        else:
            cells += ["failed: " + row["error"].replace("|", "/")] + [""] * (len(SWEEP_COLUMNS) - 5)
        lines.append("| " + " | ".join(cells) + " |")
    for (estimator, critic, samples), found in saturation(rows).items():
        lines.append(f"{estimator}/{critic}, {samples or 'all'} locations: best {found['images_per_s']:.1f} images/s "
                     f"at batch {found['best_batch_size']} (CIFAR-10 epoch {found['cifar10_epoch_s']:.1f} s); "
                     f"within {100 * (1 - SATURATION_FRACTION):.0f} % of it from batch "
                     f"{found['saturating_batch_size']}")
    ran = next((row["result"] for row in rows if "result" in row), None)
    if ran is not None:
        c = ran["config"]
        precision = "fp32" if c["mixed_precision"] == "off" else c["mixed_precision"]
        lines.append(f"{c['encoder']} encoder, {c['image_size']}px, {precision}, xla={c['jit_compile']}, "
                     f"{ran.get('backend', 'tensorflow')} on {ran['device']}")
    return "\n".join(lines)


def saturation(rows):
    """Per (estimator, critic, local samples) swept over two or more batch sizes: the best images/s, its batch,
    and the smallest batch within ``SATURATION_FRACTION`` of it, i.e. the batch that saturates the device."""
    groups = {}
    for row in rows:
        if "result" in row:
            key = (row["estimator"], row["critic"], row["local_samples"])
            groups.setdefault(key, []).append((row["batch_size"], row["result"]["images_per_s"]))
    found = {}
    for key, runs in groups.items():
        if len(runs) < 2:
            continue
        best_batch, best = max(runs, key=lambda run: run[1])
        saturating = min(batch for batch, rate in runs if rate >= SATURATION_FRACTION * best)
        found[key] = {"images_per_s": best, "best_batch_size": best_batch, "saturating_batch_size": saturating,
                      "cifar10_epoch_s": timing.CIFAR10_TRAIN_IMAGES / best}
    return found


# --------------------------------------------------------------------------- reporting
def summary(result):
    """What the app prints for ``result``: one line per measurement, or the sweep's markdown table."""
    if result["mode"] == "sweep":
        return sweep_table(result["rows"])
    if result["mode"] == "backends":
        return backends_table(result)
    if result["mode"] == "matmul_peak":
        return _matmul_line(result)
    if result["mode"] == "data_pipeline":
        return (f"data pipeline ({result['source']}), batch {result['config']['batch_size']}, "
                f"{result['config']['source_image_size']} -> {result['config']['image_size']} px: "
                f"{result['images_per_s']:.0f} images/s ({result['step_ms_median']:.2f} ms/batch median; "
                f"{result['images_per_s_mean']:.0f} images/s over all timed batches; "
                f"{result['cpu_ms_per_batch_median']:.1f} CPU-ms per batch)")
    lines = [_training_line(result)]
    if "torch" in result:
        lines.append(_torch_line(result, result["torch"]))
    return "\n".join(lines)


def _matmul_line(result):
    return (f"matmul peak ({result['gemm']}, {result.get('backend', 'tensorflow')}) on {result['device']}: "
            f"{result['gflop_per_s']:.1f} GFLOP/s median "
            f"({result['gflop_per_s_best']:.1f} best)"
            + (f", {result['gflop_per_cpu_s']:.1f} GFLOP per CPU-s" if "gflop_per_cpu_s" in result else "")
            + f" -> ceiling {result['images_per_s_ceiling']:.1f} images/s at {result['gflop_per_image']:.3f} "
            f"GFLOP/training image"
            + (f" ({result['images_per_s_ceiling_idle']:.1f} on an idle machine)"
               if "images_per_s_ceiling_idle" in result else ""))


def _training_line(result):
    c = result["config"]
    precision = "fp32" if c["mixed_precision"] == "off" else c["mixed_precision"]
    return (f"DeepInfoMax {c['estimator']}/{c['local_critic']} {c['encoder']} {c['image_size']}px batch "
            f"{c['batch_size']} {precision} xla={c['jit_compile']} ({result.get('backend', 'tensorflow')}) on "
            f"{result['device']}: "
            f"{result['images_per_s']:.1f} images/s | step {result['step_ms_median']:.1f} ms median, "
            f"{result['step_ms_p90']:.1f} ms p90 | peak memory {result['peak_memory_mb']:.0f} MB "
            f"({result['memory_kind']}) | {result['gflop_per_image']:.3f} GFLOP/training image -> "
            f"{result['achieved_gflop_per_s']:.1f} GFLOP/s | CIFAR-10 epoch {result['cifar10_epoch_s']:.0f} s"
            + (f" | CPU {result['cpu_ms_per_step_median']:.0f} ms/step -> {result['gflop_per_cpu_s']:.1f} GFLOP per "
               f"CPU-s, idle-machine estimate {result['images_per_s_idle_estimate']:.1f} images/s"
               if "cpu_ms_per_step_median" in result else ""))


def _torch_line(result, t):
    if t is None:
        return "torch reference skipped: torch is not installed (pip install torch)"
    if "error" in t:
        return f"torch reference failed: {t['error']}"
    line = (f"torch reference (authors' step, PyTorch {t['torch_version']}): "
            f"{t['images_per_s']:.1f} images/s | step {t['step_ms_median']:.1f} ms median, "
            f"{t['step_ms_p90']:.1f} ms p90 | peak memory {t['peak_memory_mb']:.0f} MB | "
            f"dim_keras / torch = {result['images_per_s'] / t['images_per_s']:.2f}x")
    if "cpu_ms_per_step_median" in t and "cpu_ms_per_step_median" in result:
        line += (f" | CPU {t['cpu_ms_per_step_median']:.0f} ms/step, idle-machine estimate "
                 f"{t['images_per_s_idle_estimate']:.1f} images/s (dim_keras / torch = "
                 f"{result['images_per_s_idle_estimate'] / t['images_per_s_idle_estimate']:.2f}x)")
    return line
