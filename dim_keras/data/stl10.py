"""STL-10 from the official binary files (stl10_binary/, https://cs.stanford.edu/~acoates/stl10/).

Each *_X.bin is raw uint8, 3x96x96 per image stored column-major (the layout MATLAB writes), each *_y.bin one
uint8 label 1..10 per image. unlabeled_X.bin is 100,000 images (2.7 GB): it is memory-mapped and copied in
chunks into the output array instead of being read into a temporary first.
"""

import numpy as np

from dim_keras.errors import DataError

STL10_CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
STL10_FOLDER = "stl10_binary"
_IMAGE_SIDE = 96
_RECORD_BYTES = 3 * _IMAGE_SIDE * _IMAGE_SIDE
_COPY_CHUNK = 4096  # images per copy from the memory map (~113 MB)

# Files each split reads, in order; "pretrain" = unlabelled + train as in the paper (Sec. 4).
STL10_SPLIT_PARTS = {
    "train": ["train"],
    "test": ["test"],
    "pretrain": ["unlabeled", "train"],
}


def find_stl10_folder(data_dir):
    if data_dir is None:
        return None
    if (data_dir / STL10_FOLDER).is_dir():
        return data_dir / STL10_FOLDER
    if any((data_dir / f"{part}_X.bin").is_file() for part in ("train", "test", "unlabeled")):
        return data_dir
    return None


def _image_memmap(path):
    if not path.is_file():
        raise DataError(f"stl10: missing {path} (extract stl10_binary.tar.gz there)")
    size = path.stat().st_size
    if size == 0 or size % _RECORD_BYTES:
        raise DataError(
            f"stl10: {path} is truncated or not an STL-10 image file "
            f"({size} bytes is not a multiple of the {_RECORD_BYTES}-byte image record)"
        )
    count = size // _RECORD_BYTES
    # Column-major 3x96x96 == row-major [3, W, H]; transposing gives [N, H, W, 3].
    return np.memmap(path, np.uint8, "r", shape=(count, 3, _IMAGE_SIDE, _IMAGE_SIDE)).transpose(0, 3, 2, 1)


def _labels(path, count):
    if not path.is_file():
        raise DataError(f"stl10: missing {path} (extract stl10_binary.tar.gz there)")
    labels = np.fromfile(path, np.uint8)
    if labels.size != count:
        raise DataError(f"stl10: {path} holds {labels.size} labels for {count} images (truncated?)")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"stl10: {path} has labels outside 1..10")
    return labels.astype(np.int64) - 1


def load_stl10(split, folder):
    """Images uint8 [N, 96, 96, 3], labels int64 [N] in 0..9 (None for "pretrain") and class names."""
    parts = STL10_SPLIT_PARTS[split]
    maps = [_image_memmap(folder / f"{part}_X.bin") for part in parts]
    labels = None
    if split != "pretrain":
        labels = _labels(folder / f"{parts[0]}_y.bin", len(maps[0]))
    images = np.empty((sum(len(m) for m in maps), _IMAGE_SIDE, _IMAGE_SIDE, 3), np.uint8)
    offset = 0
    for image_map in maps:
        for start in range(0, len(image_map), _COPY_CHUNK):
            chunk = image_map[start : start + _COPY_CHUNK]
            images[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
    return images, labels, list(STL10_CLASS_NAMES)
