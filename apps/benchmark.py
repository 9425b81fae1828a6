"""Throughput benchmark of DeepInfoMax training steps (images/s, step time, peak memory, FLOPs).

Times whole training steps of one configuration on random data after a
warm-up: ``model.fit`` runs over a repeated in-memory ``tf.data`` dataset and a
Keras callback stamps the wall clock at the end of every batch.  The callback
is not ``async_safe``, so Keras converts each step's logs to Python floats
before calling it: the host waits for the step to finish and asynchronous
dispatch cannot hide device time.  Per-step times are the differences of these
stamps; images/s is ``batch_size / median step time``.

    python apps/benchmark.py --estimator=jsd --batch_size=64 --json
    python apps/benchmark.py --sweep --sweep_batch_sizes=32,64,128 --sweep_estimators=jsd,infonce
    python apps/benchmark.py --data_pipeline --batch_size=64
    python apps/benchmark.py --compare_torch --estimator=infonce

Besides the times it prints an analytic FLOP count per training image (forward
FLOPs of encoder, critics and prior discriminator from their layer shapes,
training ~ 3x forward) and the achieved GFLOP/s.  ``--compare_torch`` also
times ``apps/torch_reference.py`` (the authors' DIM(L) step re-implemented in
PyTorch) in a subprocess with the same batch size and thread count.  Bad flag
values print one line on stderr and exit with status 2.
"""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

# Choices are spelled out here (and checked against the library at run time,
# and in tests/test_benchmark.py) so that flags are parsed, and a bad value
# rejected in one line, before TensorFlow is imported and starts logging.
ESTIMATORS = ("jsd", "dv", "infonce", "nwj")
CRITICS = ("dot", "concat", "bilinear", "separable")
ENCODERS = ("auto", "small", "dcgan", "alexnet")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")
# apps/train.py spells the same policies off/float16/bfloat16: both spellings are accepted.
PRECISION_ALIASES = {"off": "none", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
CIFAR10_TRAIN_IMAGES = 50000

FLAGS = flags.FLAGS
flags.DEFINE_enum("estimator", "jsd", ESTIMATORS, "MI estimator of the global and local terms.")
flags.DEFINE_enum("local_critic", "dot", CRITICS,
                  "Local critic: dot (encode-and-dot, the paper's), concat, bilinear or separable.")
flags.DEFINE_enum("encoder", "auto", ENCODERS,
                  "Encoder: auto picks small (<= 28 px), dcgan (32 px, Table 1) or alexnet (>= 64 px, Table 2).")
flags.DEFINE_integer("image_size", 32, "Side of the square random images.", lower_bound=8)
flags.DEFINE_integer("batch_size", 64, "Images per training step.", lower_bound=2)
flags.DEFINE_integer("steps", 20, "Timed training steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, XLA compilation, allocator warm-up).",
                     lower_bound=1)
flags.DEFINE_enum("mixed_precision", "none", PRECISIONS + tuple(PRECISION_ALIASES),
                  "Keras dtype policy: none (float32), mixed_float16 or mixed_bfloat16 (also spelled off, float16, "
                  "bfloat16 as in apps/train.py). GPU only: both are slower on a CPU without AVX-512/AMX.")
flags.DEFINE_boolean("jit_compile", True,
                     "Compile the train step with XLA (Keras' 'auto' would turn XLA off on CPU).")
flags.DEFINE_integer("steps_per_execution", 1,
                     "Training steps per compiled call (>1 cuts Python overhead per step on fast GPUs).",
                     lower_bound=1)
flags.DEFINE_integer("embedding_dim", 2048, "Width of the encode-and-dot embedding (2048 in the paper).",
                     lower_bound=1)
flags.DEFINE_float("alpha", 0.0, "Weight of the global MI term (DIM(L): 0, DIM(G): 1).", lower_bound=0.0)
flags.DEFINE_float("beta", 1.0, "Weight of the local MI term (DIM(L): 1, DIM(G): 0).", lower_bound=0.0)
flags.DEFINE_float("gamma", 0.1, "Weight of the prior-matching term (0 switches the discriminator off).",
                   lower_bound=0.0)
flags.DEFINE_float("prior_gradient_penalty", 0.0,
                   "Gradient penalty on the prior discriminator's inputs (authors' code; off in the paper).",
                   lower_bound=0.0)
flags.DEFINE_integer("local_samples", 0,
                     "Score only this many random locations of the local map per step (0 = all).", lower_bound=0)
flags.DEFINE_integer("threads", 0, "TF (and torch) intra-op threads; 0 = all cores.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the weights and the random images.")
flags.DEFINE_boolean("json", False, "Print a JSON object with the results as the last line.")
flags.DEFINE_boolean("sweep", False,
                     "Benchmark every combination of --sweep_batch_sizes x --sweep_critics x --sweep_estimators x "
                     "--sweep_local_samples (each in a fresh subprocess) and print a markdown table.")
flags.DEFINE_list("sweep_batch_sizes", ["16", "32", "64", "128"], "Batch sizes of --sweep.")
flags.DEFINE_list("sweep_critics", ["dot", "bilinear"], "Local critics of --sweep.")
flags.DEFINE_list("sweep_estimators", ["jsd", "infonce"], "Estimators of --sweep.")
flags.DEFINE_list("sweep_local_samples", ["0"], "--local_samples values of --sweep (0 = all locations).")
flags.DEFINE_boolean("data_pipeline", False,
                     "Time the tf.data input pipeline alone (uint8 -> float, random crop + flip) instead of training.")
flags.DEFINE_boolean("matmul_peak", False,
                     "Time a chain of [4096, D] x [D, D] matmuls (D = --embedding_dim, the critic's dominant GEMM) in "
                     "the --mixed_precision dtype: the hardware's practical GFLOP/s and the implied images/s "
                     "ceiling of the configuration.")
flags.DEFINE_boolean("compare_torch", False,
                     "Also time apps/torch_reference.py (the authors' DIM(L) step in PyTorch) on the same batch size "
                     "and threads; skipped with a warning when torch is not installed.")


class UsageError(ValueError):
    """A bad flag value or combination: reported in one line, exit status 2."""


# --------------------------------------------------------------------------- helpers
def _percentile(values, q):
    """Linear-interpolated percentile (numpy's default) without numpy."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _int_list(name, values, lower_bound):
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{name} must be a comma-separated list of integers, got {','.join(values)}") from None
    if not numbers or min(numbers) < lower_bound:
        raise UsageError(f"--{name} needs integers >= {lower_bound}, got {','.join(values)}")
    return numbers


def _choice_list(name, values, choices):
    bad = [v for v in values if v not in choices]
    if not values or bad:
        raise UsageError(f"--{name} takes values from {', '.join(choices)}, got {','.join(values) or 'nothing'}")
    return list(values)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def max_rss_mb():
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process image.  (``ru_maxrss``
    survives ``exec``, so a subprocess started by a big parent would report the parent's peak.)
    Elsewhere ``resource.getrusage`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def config_from_flags():
    """The configuration dict of one benchmark run (recorded in the JSON output)."""
    names = ("estimator", "local_critic", "encoder", "image_size", "batch_size", "steps", "warmup",
             "mixed_precision", "jit_compile", "steps_per_execution", "embedding_dim", "alpha", "beta", "gamma",
             "prior_gradient_penalty", "local_samples", "threads", "seed")
    config = {name: FLAGS[name].value for name in names}
    config["mixed_precision"] = PRECISION_ALIASES.get(config["mixed_precision"], config["mixed_precision"])
    return config


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


# --------------------------------------------------------------------------- training benchmark
def _device_description(tf):
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "GPU:0 " + details.get("device_name", "unknown GPU"), True
    return f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)", False


def _configure_threads(tf, threads):
    threads = threads or os.cpu_count()
    # Must run before TF executes anything; the inter-op pool is left at its default (also all cores).
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    return threads


def build_model(config):
    """The DeepInfoMax model of ``config``, compiled like the training app (Adam 1e-4, betas 0.5/0.999)."""
    import keras

    from dim_keras import encoders as encoders_lib
    from dim_keras.models import DeepInfoMax

    size = config["image_size"]
    encoder_name = config["encoder"]
    if encoder_name == "auto":
        encoder_name = encoders_lib.auto_encoder_name(size)
    encoders_lib.check_input_shape(encoder_name, (size, size, 3))
    keras.utils.set_random_seed(config["seed"])
    encoder = encoders_lib.build_encoder(encoder_name, (size, size, 3))
    model = DeepInfoMax(
        encoder, alpha=config["alpha"], beta=config["beta"], gamma=config["gamma"],
        estimator=config["estimator"], local_critic=config["local_critic"],
        embedding_dim=config["embedding_dim"], prior_gradient_penalty=config["prior_gradient_penalty"],
        local_samples=config["local_samples"] or None, seed=config["seed"])
    model.compile(jit_compile=config["jit_compile"], steps_per_execution=config["steps_per_execution"])
    return model, encoder_name


def _random_images(tf, count, size, seed):
    """Random uint8 images as float32 in [0, 1] (like the data pipeline's output), in host memory
    where tf.data runs."""
    with tf.device("/CPU:0"):
        pixels = tf.random.stateless_uniform([count, size, size, 3], seed=[seed, 0], maxval=256,
                                             dtype=tf.int32)
        return tf.cast(pixels, tf.float32) / 255.0


def benchmark_training(config):
    """Times training steps of ``config``; returns the result dict."""
    import keras
    import tensorflow as tf

    _check_library_choices()
    threads = _configure_threads(tf, config["threads"])
    device, on_gpu = _device_description(tf)
    if config["mixed_precision"] != "none":
        keras.mixed_precision.set_global_policy(config["mixed_precision"])
    baseline_mb = max_rss_mb()
    try:
        model, encoder_name = build_model(config)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None

    batch = config["batch_size"]
    per_execution = config["steps_per_execution"]
    warmup_calls = math.ceil(config["warmup"] / per_execution)
    timed_calls = math.ceil(config["steps"] / per_execution)
    # A few distinct batches cached in memory and repeated: no input cost inside the timed steps.
    images = _random_images(tf, 4 * batch, config["image_size"], config["seed"])
    dataset = (tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True)
               .cache().repeat().prefetch(tf.data.AUTOTUNE))

    class StepTimer(keras.callbacks.Callback):
        """Wall-clock stamp at the end of every compiled call.  Not async-safe on purpose: Keras then
        pulls the step's logs to the host before calling us, so each stamp marks a finished step."""

        def __init__(self):
            super().__init__()
            self.stamps = []
            self.cpu_stamps = []

        def _stamp(self):
            self.stamps.append(time.perf_counter())
            self.cpu_stamps.append(time.process_time())

        def on_train_batch_begin(self, batch_index, logs=None):
            if not self.stamps:
                self._stamp()

        def on_train_batch_end(self, batch_index, logs=None):
            self.losses = logs  # already Python floats: the host has synchronised with the device
            self._stamp()
            if len(self.stamps) == warmup_calls + 1 and on_gpu:
                tf.config.experimental.reset_memory_stats("GPU:0")

    timer = StepTimer()
    load_before = os.getloadavg()
    model.fit(dataset, epochs=1, steps_per_epoch=(warmup_calls + timed_calls) * per_execution,
              callbacks=[timer], shuffle=False, verbose=0)
    load_after = os.getloadavg()
    call_s = [b - a for a, b in zip(timer.stamps[:-1], timer.stamps[1:])][warmup_calls:]
    step_s = [t / per_execution for t in call_s]
    cpu_call_s = [b - a for a, b in zip(timer.cpu_stamps[:-1], timer.cpu_stamps[1:])][warmup_calls:]
    cpu_step_s = [t / per_execution for t in cpu_call_s]
    if on_gpu:
        peak_mb = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak_mb = max_rss_mb()
    flops = training_flops_per_image(model, batch)
    median = statistics.median(step_s)
    images_per_s = batch / median
    result = {
        "mode": "train",
        "images_per_s": images_per_s,
        "images_per_s_mean": batch * len(step_s) / sum(step_s),
        "step_ms_median": 1e3 * median,
        "step_ms_p90": 1e3 * _percentile(step_s, 90),
        "step_ms_min": 1e3 * min(step_s),
        "peak_memory_mb": peak_mb,
        "memory_kind": "GPU allocator peak over the timed steps" if on_gpu else "process max RSS",
        "gflop_per_image": flops["training"] / 1e9,
        "gflop_per_image_forward": flops["forward"] / 1e9,
        "gflop_parts_forward": {k: v / 1e9 for k, v in flops["parts"].items()},
        "achieved_gflop_per_s": flops["training"] / 1e9 * images_per_s,
        "cifar10_epoch_s": CIFAR10_TRAIN_IMAGES / images_per_s,
        "device": device,
        "threads": threads,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "final_loss": float(timer.losses["loss"]),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "config": dict(config, encoder=encoder_name),
    }
    if not on_gpu:
        result["baseline_memory_mb"] = baseline_mb
        result.update(_cpu_time_fields(cpu_step_s, batch, threads, flops["training"]))
    return result


def _cpu_time_fields(cpu_step_s, batch, threads, training_flops):
    """CPU-seconds per step (all threads of this process), far less sensitive than wall time to other
    processes competing for the cores.  ``images_per_s_idle_estimate`` = batch * threads / CPU-seconds
    per step: what the step would reach with every core to itself.  Under contention CPU time per step
    grows too (cache sharing, spinning worker threads), so the estimate errs low, never high: on this
    2-core machine 2.2 CPU-s/step idle vs 3.1 at load average 6."""
    cpu_median = statistics.median(cpu_step_s)
    return {
        "cpu_ms_per_step_median": 1e3 * cpu_median,
        "gflop_per_cpu_s": training_flops / 1e9 * batch / cpu_median,
        "images_per_s_idle_estimate": batch * threads / cpu_median,
    }


def _check_library_choices():
    """The flag choices spelled out above must match the library's."""
    from dim_keras import critics, encoders, estimators
    for ours, theirs, what in ((ESTIMATORS, estimators.ESTIMATORS, "estimators"),
                               (CRITICS, critics.CRITICS, "critics"), (ENCODERS, encoders.ENCODERS, "encoders")):
        if tuple(ours) != tuple(theirs):
            raise RuntimeError(f"benchmark's {what} {ours} differ from the library's {theirs}")


# --------------------------------------------------------------------------- data pipeline
def benchmark_data_pipeline(config):
    """Images/s of the tf.data input pipeline alone: random uint8 images (padded by 1/8 of the side)
    through ``dim_keras.data.make_dataset`` (random crop + flip, uint8 -> float32), or through an
    equivalent synthetic pipeline if the data package is missing."""
    import numpy as np
    import tensorflow as tf

    threads = _configure_threads(tf, config["threads"])
    size, batch = config["image_size"], config["batch_size"]
    padded = size + max(1, size // 8)
    rng = np.random.default_rng(config["seed"])
    images = rng.integers(0, 256, size=(max(8 * batch, 2048), padded, padded, 3), dtype=np.uint8)
    try:
        from dim_keras.data import make_dataset
        dataset = make_dataset(images, batch_size=batch, training=True, seed=config["seed"],
                               crop_size=size, flip=True)
        source = "dim_keras.data.make_dataset"
    except ImportError:
        dataset = (tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=config["seed"]).repeat()
                   .map(lambda image: tf.image.random_flip_left_right(tf.image.random_crop(image, [size, size, 3])),
                        num_parallel_calls=tf.data.AUTOTUNE)
                   .batch(batch, drop_remainder=True)
                   .map(lambda b: tf.cast(b, tf.float32) / 255.0).prefetch(tf.data.AUTOTUNE))
        source = "synthetic tf.data crop/flip pipeline"
    iterator = iter(dataset.repeat())
    for _ in range(config["warmup"]):
        next(iterator).numpy()
    step_s = []
    start = time.perf_counter()
    for _ in range(config["steps"]):
        next(iterator).numpy()
        now = time.perf_counter()
        step_s.append(now - start)
        start = now
    median = statistics.median(step_s)
    return {
        "mode": "data_pipeline",
        "source": source,
        "images_per_s": batch / median,
        "images_per_s_mean": batch * len(step_s) / sum(step_s),
        "step_ms_median": 1e3 * median,
        "step_ms_p90": 1e3 * _percentile(step_s, 90),
        "peak_memory_mb": max_rss_mb(),
        "device": f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)",
        "threads": threads,
        "load_average_before": os.getloadavg()[0],
        "config": {"image_size": size, "source_image_size": padded, "batch_size": batch,
                   "steps": config["steps"], "warmup": config["warmup"]},
    }


# --------------------------------------------------------------------------- matmul peak
MATMUL_CHAIN = 8


def benchmark_matmul_peak(config):
    """GFLOP/s of the configuration's dominant GEMM shape, and the images/s ceiling it implies.

    A chain of ``MATMUL_CHAIN`` dependent ``[4096, D] x [D, D]`` products (4096 = 64 images x 64
    locations, the local embedding's rows at batch 64) runs in one ``tf.function`` without XLA, so
    that neither XLA's algebraic simplifier nor launch overhead shortens it; only one scalar returns
    to the host.
    """
    import tensorflow as tf

    threads = _configure_threads(tf, config["threads"])
    device, on_gpu = _device_description(tf)
    dtype = {"none": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}[
        config["mixed_precision"]]
    d = config["embedding_dim"]
    rows = 4096
    x = tf.cast(tf.random.stateless_normal([rows, d], seed=[config["seed"], 1]), dtype)
    # Entries of variance 1/D keep the chain's values O(1) (no overflow in float16).
    w = tf.cast(tf.random.stateless_normal([d, d], seed=[config["seed"], 2]) / math.sqrt(d), dtype)

    @tf.function
    def chain(x, w):
        for _ in range(MATMUL_CHAIN):
            x = tf.matmul(x, w)
        return x[0, 0]

    for _ in range(config["warmup"]):
        chain(x, w).numpy()
    step_s, cpu_step_s = [], []
    for _ in range(config["steps"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        chain(x, w).numpy()
        step_s.append(time.perf_counter() - start)
        cpu_step_s.append(time.process_time() - cpu_start)
    flop = 2 * rows * d * d * MATMUL_CHAIN
    median = statistics.median(step_s)
    result = {
        "mode": "matmul_peak",
        "gemm": f"{MATMUL_CHAIN} x [{rows}, {d}] x [{d}, {d}] {dtype.name}",
        "gflop_per_s": flop / median / 1e9,
        "gflop_per_s_best": flop / min(step_s) / 1e9,
        "device": device,
        "threads": threads,
        "load_average": os.getloadavg()[0],
        "config": {"embedding_dim": d, "mixed_precision": config["mixed_precision"], "steps": config["steps"],
                   "warmup": config["warmup"]},
    }
    if on_gpu:
        result["tensor_float_32"] = tf.config.experimental.tensor_float_32_execution_enabled()
    else:
        result["gflop_per_cpu_s"] = flop / statistics.median(cpu_step_s) / 1e9
    try:
        model, _ = build_model(dict(config, jit_compile=False))
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    gflop_per_image = training_flops_per_image(model, config["batch_size"])["training"] / 1e9
    result["gflop_per_image"] = gflop_per_image
    result["images_per_s_ceiling"] = result["gflop_per_s"] / gflop_per_image
    if not on_gpu:
        result["images_per_s_ceiling_idle"] = result["gflop_per_cpu_s"] * threads / gflop_per_image
    return result


# --------------------------------------------------------------------------- torch comparison
def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def check_torch_config(config):
    """--compare_torch needs a configuration that apps/torch_reference.py reproduces."""
    if config["local_critic"] != "dot" or config["estimator"] not in ("jsd", "infonce"):
        raise UsageError("--compare_torch reproduces the authors' DIM(L) step: it needs --local_critic=dot and "
                         "--estimator=jsd or infonce")
    if config["alpha"] != 0 or config["beta"] == 0 or config["local_samples"]:
        raise UsageError("--compare_torch reproduces DIM(L): it needs --alpha=0, --beta>0 and --local_samples=0")
    if config["encoder"] not in ("auto", "dcgan") or config["image_size"] < 16 or config["image_size"] % 8:
        raise UsageError("--compare_torch uses the authors' CIFAR encoder: --encoder=dcgan/auto and an image size "
                         "that is a multiple of 8 (32 in the paper)")


def benchmark_torch(config):
    """Runs apps/torch_reference.py with the same settings in a subprocess; returns its JSON dict."""
    check_torch_config(config)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
    command = [sys.executable, script, "--json", f"--estimator={config['estimator']}",
               f"--batch_size={config['batch_size']}", f"--image_size={config['image_size']}",
               f"--steps={config['steps']}", f"--warmup={config['warmup']}",
               f"--embedding_dim={config['embedding_dim']}", f"--gamma={config['gamma']}",
               f"--prior_gradient_penalty={config['prior_gradient_penalty']}",
               f"--threads={config['threads']}", f"--seed={config['seed']}"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        return {"error": lines[-1]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- sweep
SWEEP_COLUMNS = ("estimator", "critic", "local samples", "batch", "images/s", "step ms (median)",
                 "step ms (p90)", "peak MB", "GFLOP/img", "GFLOP/s")


def _passthrough_flags():
    """The flags every sweep subprocess inherits (all but the sweep's own and the mode switches)."""
    skip = {"sweep", "sweep_batch_sizes", "sweep_critics", "sweep_estimators", "sweep_local_samples", "json",
            "matmul_peak", "batch_size", "local_critic", "estimator", "local_samples", "data_pipeline", "compare_torch"}
    args = []
    for name in config_from_flags():
        if name not in skip:
            value = FLAGS[name].value
            args.append(f"--{name}" if value is True else f"--no{name}" if value is False else f"--{name}={value}")
    return args


def run_sweep():
    """One fresh subprocess per configuration (process peak memory and dtype policy start clean)."""
    batch_sizes = _int_list("sweep_batch_sizes", FLAGS.sweep_batch_sizes, 2)
    critics = _choice_list("sweep_critics", FLAGS.sweep_critics, CRITICS)
    estimators = _choice_list("sweep_estimators", FLAGS.sweep_estimators, ESTIMATORS)
    local_samples = _int_list("sweep_local_samples", FLAGS.sweep_local_samples, 0)
    common = _passthrough_flags()
    rows = []
    for estimator in estimators:
        for critic in critics:
            for samples in local_samples:
                for batch in batch_sizes:
                    command = [sys.executable, os.path.abspath(__file__), "--json", f"--estimator={estimator}",
                               f"--local_critic={critic}", f"--local_samples={samples}",
                               f"--batch_size={batch}", *common]
                    completed = subprocess.run(command, capture_output=True, text=True)
                    row = {"estimator": estimator, "critic": critic, "local_samples": samples, "batch_size": batch}
                    if completed.returncode == 0:
                        row["result"] = json.loads(completed.stdout.strip().splitlines()[-1])
                    else:
                        lines = completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"]
                        row["error"] = lines[-1][:200]
                    rows.append(row)
    return rows


def sweep_table(rows):
    """Markdown table of sweep rows."""
    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "|".join("---" for _ in SWEEP_COLUMNS) + "|"]
    for row in rows:
        cells = [row["estimator"], row["critic"], str(row["local_samples"] or "all"), str(row["batch_size"])]
        if "result" in row:
            r = row["result"]
            cells += [f"{r['images_per_s']:.1f}", f"{r['step_ms_median']:.1f}", f"{r['step_ms_p90']:.1f}",
                      f"{r['peak_memory_mb']:.0f}", f"{r['gflop_per_image']:.3f}", f"{r['achieved_gflop_per_s']:.1f}"]
        else:
            cells += ["failed: " + row["error"].replace("|", "/")] + [""] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reporting
def summary_line(result):
    if result["mode"] == "matmul_peak":
        return (f"matmul peak ({result['gemm']}) on {result['device']}: {result['gflop_per_s']:.1f} GFLOP/s median "
                f"({result['gflop_per_s_best']:.1f} best)"
                + (f", {result['gflop_per_cpu_s']:.1f} GFLOP per CPU-s" if "gflop_per_cpu_s" in result else "")
                + f" -> ceiling {result['images_per_s_ceiling']:.1f} images/s at {result['gflop_per_image']:.3f} "
                f"GFLOP/training image"
                + (f" ({result['images_per_s_ceiling_idle']:.1f} on an idle machine)"
                   if "images_per_s_ceiling_idle" in result else ""))
    if result["mode"] == "data_pipeline":
        return (f"data pipeline ({result['source']}), batch {result['config']['batch_size']}, "
                f"{result['config']['source_image_size']} -> {result['config']['image_size']} px: "
                f"{result['images_per_s']:.0f} images/s ({result['step_ms_median']:.2f} ms/batch median)")
    c = result["config"]
    precision = "fp32" if c["mixed_precision"] == "none" else c["mixed_precision"]
    return (f"DeepInfoMax {c['estimator']}/{c['local_critic']} {c['encoder']} {c['image_size']}px batch "
            f"{c['batch_size']} {precision} xla={c['jit_compile']} on {result['device']}: "
            f"{result['images_per_s']:.1f} images/s | step {result['step_ms_median']:.1f} ms median, "
            f"{result['step_ms_p90']:.1f} ms p90 | peak memory {result['peak_memory_mb']:.0f} MB "
            f"({result['memory_kind']}) | {result['gflop_per_image']:.3f} GFLOP/training image -> "
            f"{result['achieved_gflop_per_s']:.1f} GFLOP/s | CIFAR-10 epoch {result['cifar10_epoch_s']:.0f} s"
            + (f" | CPU {result['cpu_ms_per_step_median']:.0f} ms/step -> {result['gflop_per_cpu_s']:.1f} GFLOP per "
               f"CPU-s, idle-machine estimate {result['images_per_s_idle_estimate']:.1f} images/s"
               if "cpu_ms_per_step_median" in result else ""))


def _fail(message):
    print(f"benchmark: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl parsing with the app's error convention: one line on stderr, exit status 2."""
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    if len(remaining) > 1:
        _fail(f"unexpected arguments: {' '.join(remaining[1:])}")
    return remaining


def main(argv):
    del argv
    try:
        if sum((FLAGS.sweep, FLAGS.data_pipeline, FLAGS.matmul_peak)) > 1:
            raise UsageError("--sweep, --data_pipeline and --matmul_peak are separate modes: pass one")
        if FLAGS.compare_torch and (FLAGS.sweep or FLAGS.data_pipeline or FLAGS.matmul_peak):
            raise UsageError("--compare_torch goes with a single training benchmark, not with another mode")
        config = config_from_flags()
        if FLAGS.compare_torch:
            check_torch_config(config)  # before minutes of TF benchmarking, not after
        if FLAGS.sweep:
            rows = run_sweep()
            print(sweep_table(rows))
            if FLAGS.json:
                print(json.dumps({"mode": "sweep", "rows": rows}))
            return
        if FLAGS.data_pipeline:
            result = benchmark_data_pipeline(config)
        elif FLAGS.matmul_peak:
            result = benchmark_matmul_peak(config)
        else:
            result = benchmark_training(config)
        print(summary_line(result))
        if FLAGS.compare_torch:
            if torch_available():
                result["torch"] = benchmark_torch(config)
                t = result["torch"]
                if "error" in t:
                    print(f"torch reference failed: {t['error']}")
                else:
                    print(f"torch reference (authors' step, PyTorch {t['torch_version']}): "
                          f"{t['images_per_s']:.1f} images/s | step {t['step_ms_median']:.1f} ms median, "
                          f"{t['step_ms_p90']:.1f} ms p90 | peak memory {t['peak_memory_mb']:.0f} MB | "
                          f"dim_keras / torch = {result['images_per_s'] / t['images_per_s']:.2f}x"
                          + (f" | CPU {t['cpu_ms_per_step_median']:.0f} ms/step, idle-machine estimate "
                             f"{t['images_per_s_idle_estimate']:.1f} images/s (dim_keras / torch = "
                             f"{result['images_per_s_idle_estimate'] / t['images_per_s_idle_estimate']:.2f}x)"
                             if "cpu_ms_per_step_median" in t and "cpu_ms_per_step_median" in result else ""))
            else:
                print("benchmark: torch is not installed; --compare_torch skipped (pip install torch)",
                      file=sys.stderr)
                result["torch"] = None
        if FLAGS.json:
            print(json.dumps(result))
    except UsageError as error:
        _fail(str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
