"""MNIST from the official idx files (http://yann.lecun.com/exdb/mnist/), plain or gzipped.

The four files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each possibly with ``.gz``.  An idx file is a big-endian header -- two zero bytes,
the element type (0x08: unsigned byte) and the number of dimensions, then one uint32 per dimension -- followed
by the elements row-major: the images are [N, 28, 28], the labels [N] in 0..9.  They are looked for in
``data_dir`` itself, ``data_dir/mnist`` and ``data_dir/MNIST/raw`` (torchvision's layout).

Tschannen et al. (ICLR 2020, Sec. 3) use MNIST's top and bottom halves as two views
(:func:`dim_keras.multiview.load_views`); like every dataset of :func:`dim_keras.data.load_split`, the images
are returned as uint8 [N, 28, 28, 3] (the gray level replicated, as for ``digits``).
"""

import gzip
import struct
import zlib

import numpy as np

from dim_keras.errors import DataError, first_line

MNIST_SIDE = 28
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
# split -> (images file, labels file); "pretrain" is the train split, as for the other labelled datasets.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_FILES["pretrain"] = MNIST_FILES["train"]
_SUBFOLDERS = (".", "mnist", "MNIST/raw")
_UNSIGNED_BYTE = 0x08


def _file_in(folder, name):
    """``folder/name`` or ``folder/name.gz``, whichever exists (plain first), or None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_folder(data_dir):
    """The folder under ``data_dir`` holding any of the four idx files (plain or ``.gz``), or None."""
    if data_dir is None:
        return None
    names = [name for pair in (MNIST_FILES["train"], MNIST_FILES["test"]) for name in pair]
    for sub in _SUBFOLDERS:
        folder = data_dir / sub
        if folder.is_dir() and any(_file_in(folder, name) is not None for name in names):
            return folder
    return None


def _read_bytes(path):
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"mnist: {path} is not a readable idx file ({first_line(error)})") from None


def read_idx(path, ndim):
    """The uint8 array of the idx file ``path`` (``ndim`` dimensions); DataError when it is not one."""
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"mnist: {path} is truncated ({len(data)} bytes, shorter than the idx header)")
    zeros, element_type, dims = struct.unpack(">HBB", data[:4])
    if zeros != 0 or element_type != _UNSIGNED_BYTE or dims != ndim:
        raise DataError(f"mnist: {path} is not an idx file of {ndim}-d unsigned bytes (magic number "
                        f"0x{data[:4].hex()}, expected 0x000008{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"mnist: {path} is {what} ({len(data)} bytes, the header's shape {list(shape)} needs "
                        f"{expected})")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_mnist(split, folder):
    """Images uint8 [N, 28, 28, 3], labels int64 [N] in 0..9 and class names "0".."9" of ``split``."""
    image_name, label_name = MNIST_FILES[split]
    paths = {name: _file_in(folder, name) for name in (image_name, label_name)}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DataError(f"mnist: {folder} has no {' or '.join(missing)} (plain or .gz) for the {split} split")
    images = read_idx(paths[image_name], 3)
    labels = read_idx(paths[label_name], 1)
    if images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise DataError(f"mnist: {paths[image_name]} holds {images.shape[1]}x{images.shape[2]} images, not "
                        f"{MNIST_SIDE}x{MNIST_SIDE}")
    if len(labels) != len(images):
        raise DataError(f"mnist: {paths[label_name]} holds {len(labels)} labels for the {len(images)} images of "
                        f"{paths[image_name]}")
    if len(labels) and labels.max() > 9:
        raise DataError(f"mnist: {paths[label_name]} has labels outside 0..9")
    return np.repeat(images[..., np.newaxis], 3, axis=-1), labels.astype(np.int64), list(MNIST_CLASS_NAMES)
