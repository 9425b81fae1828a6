"""Keeps TensorFlow's native start-up chatter off the user's terminal (no TensorFlow import).

TensorFlow's C++ runtime writes glog-style lines straight to file
descriptor 2 (``I0000 ... port.cc:153] oneDNN custom operations are on``,
``Could not find cuda drivers``, ``failed call to cuInit``, ``Compiled
cluster using XLA!``), before and regardless of ``TF_CPP_MIN_LOG_LEVEL``
(TF 2.21 initialises absl logging itself).  :func:`filter_native_logs`
routes file descriptor 2 through a pipe whose reader drops those lines and
passes everything else (Python warnings, tracebacks, our one-line errors)
through unchanged.  Error-level native lines that are not known start-up
noise are passed through too: they can matter (an out-of-memory report);
only the collectives' reports of a lost multi-worker peer are dropped, since
the run then says itself, in one line, which worker it lost.

:func:`progress_verbosity` keeps Keras' redrawn progress bars out of
redirected output (one line per epoch instead).
"""

import atexit
import os
import re
import sys
import threading

# Info/warning lines of glog format, and the known error-level start-up noise of a machine without CUDA.
_GLOG = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^\]]+\] ")
# The further lines of those multi-line reports of a lost peer.
_CONTINUATION_PREFIXES = (b"Additional GRPC error information from remote target ",
                          b":UNKNOWN:Error received from peer", b"The tasks have crashed.",
                          b"The error could be from a previous operation.", b"/job:")
_CONTINUATION = (rb"(?:" + rb"|".join(re.escape(p) for p in _CONTINUATION_PREFIXES[:-1])
                 + rb"|/job:\w+/replica:\d+/task:\d+$)")
_NOISE = re.compile(
    rb"^(?:[IW]\d{4} "
    rb"|[EF]\d{4} .*(?:cuInit|cuda|CUDA|cuDNN|cuFFT|cuBLAS|TensorRT|computation placer|Unable to register"
    rb"|meta_optimizer\.cc)"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    # Multi-worker runs: the collectives' and coordination service's reports of a lost peer (the run says
    # which worker it lost in its own one-line error) and the peer that left first at the end of a run.
    rb"|E\d{4} [^\]]*\b(?:ring_\w+|base_collective_executor|collective_\w+|coordination_\w+|\w*rpc\w*"
    rb"|hierarchical_tree_broadcaster)\.cc:\d+\] "
    rb"|" + _CONTINUATION + rb")")

_state = {}


def is_noise(line):
    """True for a line (bytes, no newline) of TensorFlow's native start-up logging."""
    return bool(_NOISE.match(line))


def _pump(read_fd, write_fd):
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_noise(line))
        # A partial line that cannot be a native log line (a progress bar's "\r...") goes out at once.
        if pending and not _GLOG.match(pending[:40].ljust(40, b" ")) and not pending.startswith(
                (b"WARNING: All", b"To enable") + _CONTINUATION_PREFIXES):
            out += pending
            pending = b""
        if out:
            os.write(write_fd, out)
    if pending and not is_noise(pending):
        os.write(write_fd, pending)


def _restore():
    state = _state.pop("fds", None)
    if state is None:
        return
    real_fd, thread = state
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(real_fd, 2)  # closes the pipe's last write end: the reader sees EOF
    thread.join(timeout=2.0)


def filter_native_logs():
    """From now on, TensorFlow's native info/warning lines never reach stderr (idempotent).

    Call before TensorFlow is imported.  Also lowers absl's Python logging to
    errors (TensorFlow's SavedModel and tracing INFO lines).
    """
    if "fds" in _state or os.environ.get("DIM_KERAS_NATIVE_LOGS") == "1":
        return
    from absl import logging
    logging.set_verbosity(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        real_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:
        return
    thread = threading.Thread(target=_pump, args=(read_fd, real_fd), name="native-log-filter", daemon=True)
    thread.start()
    _state["fds"] = (real_fd, thread)
    atexit.register(_restore)


def device_summary():
    """One line saying where the Keras backend computes ("no GPU found, running on the CPU (...)"): TensorFlow's
    GPUs, or on JAX its default platform's devices."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        devices = jax.devices()
        if devices[0].platform != "cpu":
            return f"running on {len(devices)} {devices[0].platform.upper()} device(s) (JAX)"
        return (f"no GPU found, running on the CPU ({len(devices)} JAX CPU device(s), {os.cpu_count()} logical "
                f"cores)")
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"running on {len(gpus)} GPU(s)"
    return f"no GPU found, running on the CPU ({os.cpu_count()} logical cores)"


def progress_verbosity(verbose, stream=None):
    """The Keras ``verbose`` to use for ``verbose`` when writing to ``stream`` (default ``sys.stdout``).

    Keras' progress bar (verbose 1) redraws itself with ``\\r``, backspaces and ANSI colours even when the
    output goes to a file or a pipe (it treats every POSIX system as a terminal), which fills redirected logs
    with control characters.  Off a terminal, 1 becomes 2: one plain line per epoch (per finished bar for a
    ``keras.utils.Progbar``).  0 and 2 are returned unchanged.  The one place where dim_keras decides this:
    every ``fit`` / ``Progbar`` of the runs and the evaluation goes through it.
    """
    if verbose != 1:
        return verbose
    stream = sys.stdout if stream is None else stream
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        interactive = False
    return 1 if interactive else 2
