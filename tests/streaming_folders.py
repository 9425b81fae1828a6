"""Generated folders of 64x64 PNG images for the streaming tests, written once and cached.

Each folder lives under the system temp dir, keyed by a version string (bump it when the generator changes)
and the image count; a marker file written last says it is complete, so a run killed while generating
starts the folder over instead of using half of it.
"""
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

VERSION = "v1"
SIDE = 64


def image(index):
    """The index-th generated image: uint8 [64, 64, 3], distinct for every index below 64 * 256 * 251.

    Row/column ramps shifted by the index keep the PNGs small (~0.2 KB) while the image still encodes the
    index: red at (0, 0) is index % 256, green at (0, 0) is (index // 256) % 256, blue is index % 251.
    """
    rows = np.arange(SIDE, dtype=np.int64)[:, None]
    pixels = np.empty((SIDE, SIDE, 3), np.uint8)
    pixels[..., 0] = (rows + index) % 256
    pixels[..., 1] = (rows.T + index // 256) % 256
    pixels[..., 2] = index % 251
    return pixels


def index_of(pixels):
    """Inverse of `image` for images up to 65,536 (red and green at the top-left corner)."""
    return int(pixels[0, 0, 0]) + 256 * int(pixels[0, 0, 1])


def png_folder(count):
    """A folder of ``count`` generated PNGs (``000000.png`` ...), unlabelled (no class sub-folders)."""
    root = os.path.join(tempfile.gettempdir(), f"dim_keras-streaming-png{SIDE}-{VERSION}")
    folder = os.path.join(root, f"n{count}")
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    partial = f"{folder}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for index in range(count):
        Image.fromarray(image(index)).save(os.path.join(partial, f"{index:06d}.png"), compress_level=1)
    open(os.path.join(partial, ".complete"), "w").close()
    os.makedirs(root, exist_ok=True)
    try:
        os.rename(partial, folder)
    except OSError:  # another process finished it first
        shutil.rmtree(partial, ignore_errors=True)
    return folder
