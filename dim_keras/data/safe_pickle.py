"""A restricted unpickler for the CIFAR "python version" files.

The official CIFAR-10/100 batches are Python 2 pickles of a dict holding a uint8 numpy array, lists of ints
and byte strings. Plain `pickle.load` would run whatever callable a crafted file names (``os.system``,
``builtins.open`` ...), so `find_class` here admits only the handful of globals those files (and re-pickled
copies of them written by Python 3) need; anything else raises `DataError` before it can be called.
"""

import io
import pickle

import numpy as np

from dim_keras.errors import DataError, first_line


def _numpy_internals():
    """numpy moved `multiarray` from numpy.core to numpy._core in 2.0; resolve without importing the alias."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _allowed_globals():
    multiarray, numeric = _numpy_internals()
    allowed = {}
    for package in ("numpy.core", "numpy._core"):
        # ndarray.__reduce__ -> _reconstruct(ndarray, shape, dtype) followed by __setstate__ with the raw bytes.
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # numpy scalars (e.g. a label stored as np.int64) pickle through `scalar(dtype, raw_bytes)`.
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        # Protocol-5 pickles of arrays rebuild them from a buffer.
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Python 3 writes bytes with protocol < 3 as _codecs.encode(str, "latin1"): a pure string transform.
    import _codecs

    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` admits only numpy array reconstruction (see module docstring)."""

    def __init__(self, file, source):
        super().__init__(file, encoding="bytes")
        self._source = source
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source}: refused to unpickle {module}.{name} "
                "(a CIFAR batch holds only numpy arrays, lists and strings; the file is corrupt or crafted)"
            ) from None


def load_restricted_pickle(data, source):
    """Unpickle `data` (bytes or a binary file object) with `RestrictedUnpickler`; every failure -> DataError."""
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(file, source).load()
    except DataError:
        raise
    except Exception as error:  # only admitted, side-effect-free callables ran: any error means a bad file
        raise DataError(f"{source}: corrupt or truncated pickle ({first_line(error)})") from None
