"""Shared test setup: quiet TensorFlow, deterministic seeds, and the backend legs of CI.

The suite runs on TensorFlow (the default backend), where every test runs.  Tests marked ``backends``
(``@pytest.mark.backends`` or a module's ``pytestmark``) are the ones meant to run on every Keras backend;
under ``KERAS_BACKEND=jax`` (CI's second leg) only they run:

- a test module whose source never mentions ``mark.backends`` is not even imported (many import
  TensorFlow-only parts of the library at the top, and importing them would only cost time);
- in the modules that are imported, unmarked tests are deselected.

``tests/backend_testing.py`` gives marked tests one spelling for gradients and compiled functions on both
backends.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # The JAX leg compiles hundreds of small programs (every eager op at each new shape, every jitted step)
    # and runs most of them once: XLA's CPU backend at optimisation level 0 compiles them faster.  Measured on
    # this repository's 2 shared cores: the leg took 140 s without, 106 s with (same 104 tests passing; the
    # tests compare with tolerances, never speed).  Set before JAX starts; an explicit level in XLA_FLAGS wins.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import keras  # noqa: E402
import pytest  # noqa: E402

BACKENDS_MARKER = "backends"
_ALL_TESTS = keras.backend.backend() == "tensorflow"


def pytest_ignore_collect(collection_path, config):
    if _ALL_TESTS or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if f"mark.{BACKENDS_MARKER}" not in collection_path.read_text(encoding="utf-8"):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    if _ALL_TESTS:
        return
    unmarked = [item for item in items if item.get_closest_marker(BACKENDS_MARKER) is None]
    if unmarked:
        config.hook.pytest_deselected(items=unmarked)
        items[:] = [item for item in items if item.get_closest_marker(BACKENDS_MARKER) is not None]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
