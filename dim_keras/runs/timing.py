"""What the benchmark and the PyTorch reference measure with (no TensorFlow, no torch import).

Shared by :mod:`dim_keras.runs.benchmark` and :mod:`dim_keras.runs.torch_reference`,
so both report the same figures, computed the same way:

- :func:`time_steps`: untimed warm-up calls, then wall-clock and process
  CPU time of each timed call;
- :func:`step_stats`: images/s (``batch / median step time``), step-time
  median, p90 and minimum, and the CIFAR-10 epoch time they imply;
- :func:`cpu_time_fields`: CPU-seconds per step and the idle-machine estimate;
- :func:`percentile`, :func:`max_rss_mb`, :func:`cpu_description`.
"""

import math
import os
import resource
import statistics
import sys
import time

CIFAR10_TRAIN_IMAGES = 50000


def percentile(values, q):
    """Linear-interpolated percentile (numpy's default) without numpy."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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


def cpu_description():
    """``CPU: <model> (<n> logical cores)``."""
    return f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)"


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


def time_steps(step, steps, warmup, after_warmup=None):
    """Calls ``step()`` ``warmup`` times untimed, then ``after_warmup()`` (if given), then ``steps`` timed times.

    ``step`` must return only once its work is done (e.g. by fetching a scalar result to the host).
    Returns ``(wall_s, cpu_s)``: the wall-clock and process CPU seconds (all threads) of each timed call.
    """
    for _ in range(warmup):
        step()
    if after_warmup is not None:
        after_warmup()
    wall_s, cpu_s = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        wall_s.append(time.perf_counter() - start)
        cpu_s.append(time.process_time() - cpu_start)
    return wall_s, cpu_s


def step_stats(step_s, batch_size):
    """Throughput figures of per-step wall times: images/s is ``batch_size / median step time``."""
    median = statistics.median(step_s)
    images_per_s = batch_size / median
    return {
        "images_per_s": images_per_s,
        "images_per_s_mean": batch_size * len(step_s) / sum(step_s),
        "step_ms_median": 1e3 * median,
        "step_ms_p90": 1e3 * percentile(step_s, 90),
        "step_ms_min": 1e3 * min(step_s),
        "cifar10_epoch_s": CIFAR10_TRAIN_IMAGES / images_per_s,
    }


def flop_fields(training_flops_per_image, images_per_s):
    """GFLOP per training image and the achieved GFLOP/s at ``images_per_s``."""
    gflop = training_flops_per_image / 1e9
    return {"gflop_per_image": gflop, "achieved_gflop_per_s": gflop * images_per_s}


def cpu_time_fields(cpu_step_s, batch_size, threads, training_flops_per_image):
    """CPU-seconds per step (all threads of this process), far less sensitive than wall time to other
    processes competing for the cores.  ``images_per_s_idle_estimate`` = batch * threads / CPU-seconds
    per step: what the step would reach with every core to itself.  Under contention CPU time per step
    grows too (cache sharing, spinning worker threads), so the estimate errs low, never high."""
    cpu_median = statistics.median(cpu_step_s)
    return {
        "cpu_ms_per_step_median": 1e3 * cpu_median,
        "gflop_per_cpu_s": training_flops_per_image / 1e9 * batch_size / cpu_median,
        "images_per_s_idle_estimate": batch_size * threads / cpu_median,
    }


def load_average():
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
