"""An image folder: data_dir/<class>/*.{png,jpg,jpeg,bmp}, one sub-folder per class (names sorted = labels).

Without class sub-folders, images directly in data_dir form an unlabelled set. Every image is resized to
`image_size` when given; without it the images must all have one size (read from the file headers before any
decoding), and a folder of mixed sizes is a DataError naming two of them. Resizing to whatever the first file
happens to be would make the encoder's input size (and memory) depend on file names, and the choice would be
recorded nowhere. The train/test split is a fixed per-class permutation, so it is the same on every run and
machine.
"""

import numpy as np

from dim_keras.errors import DataError
from dim_keras.data.images import (IMAGE_EXTENSIONS, as_size, decode_image_files_skipping, decode_one,
                                   list_image_files)

FOLDER_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def scan_folder(data_dir):
    """(paths, labels or None, class_names) of every image under data_dir, in sorted order."""
    if not data_dir.is_dir():
        raise DataError(f"folder: --data_dir={data_dir} is not a directory")
    class_dirs = sorted(path for path in data_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    paths, labels, class_names = [], [], []
    for class_dir in class_dirs:
        files = list_image_files(class_dir, recursive=True)
        if files:
            labels += [len(class_names)] * len(files)
            class_names.append(class_dir.name)
            paths += files
    if paths:
        return paths, np.asarray(labels, np.int64), class_names
    paths = list_image_files(data_dir)
    if not paths:
        raise DataError(
            f"folder: no images found; put <class>/*{'|'.join(IMAGE_EXTENSIONS)} sub-folders in --data_dir={data_dir}"
        )
    return paths, None, []


def folder_test_mask(labels, count):
    """Deterministic per-class split: round(20 %) of each class (by a fixed permutation) goes to test
    (at least one image overall when there are two or more)."""
    rng = np.random.default_rng(_SPLIT_SEED)
    groups = [np.arange(count)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    mask = np.zeros(count, bool)
    for members in groups:
        test_count = int(np.floor(len(members) * FOLDER_TEST_FRACTION + 0.5))
        mask[rng.permutation(members)[:test_count]] = True
    if count >= 2 and not mask.any():
        # Too few images per class for rounding to pick any: still hold one out so "test" is never empty.
        largest = max(groups, key=len)
        mask[rng.permutation(largest)[0]] = True
    return mask


# common_size's answers within this process: a run loads the folder's pretraining, train and test splits, and
# each would otherwise open every header again (seconds per 100k files).  Keyed by the folder and its listing.
_SIZES = {}


def common_size(paths, data_dir):
    """The (height, width) every image of `paths` has; DataError when they differ.

    Sizes come from the file headers (PIL opens lazily: no pixel is decoded), so a folder of large mixed photos
    fails at once instead of after decoding everything at the first one's size. Files PIL cannot open are left
    to the decoder (which names a corrupt file).
    """
    key = (str(data_dir.resolve()), len(paths), str(paths[0]), str(paths[-1]))
    if key not in _SIZES:
        _SIZES.clear()  # one folder at a time
        _SIZES[key] = _common_size(paths, data_dir)
    return _SIZES[key]


def _common_size(paths, data_dir):
    from PIL import Image

    first = None
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:
            continue
        if first is None:
            first = (height, width), path
        elif (height, width) != first[0]:
            (h, w), first_path = first
            raise DataError(
                f"folder: the images in --data_dir={data_dir} differ in size ({h}x{w}: "
                f"{first_path.relative_to(data_dir)}, {height}x{width}: {path.relative_to(data_dir)}); pass "
                f"--image_size=SIDE to resize them all to SIDExSIDE"
            )
    return first[0] if first is not None else tuple(decode_one(paths[0], what="folder").shape[:2])


def folder_listing(split, data_dir, image_size=None):
    """``(paths, labels or None, class_names, (height, width))`` of a split of the folder: the files are listed
    once and nothing is decoded (sizes come from the headers, `common_size`, unless ``image_size`` is given)."""
    paths, labels, class_names = scan_folder(data_dir)
    size = as_size(image_size)
    if size is None:
        size = common_size(paths, data_dir)
    test = folder_test_mask(labels, len(paths))
    keep = test if split == "test" else ~test
    kept_paths = [path for path, kept in zip(paths, keep) if kept]
    if not kept_paths:
        raise DataError(f"folder: too few images in {data_dir} for a {split} split ({len(paths)} in all)")
    return kept_paths, None if labels is None else labels[keep], class_names, size


def load_folder(split, data_dir, image_size=None, skipped=None):
    """Images uint8 [N, H, W, 3] (common size), labels int64 [N] or None, class names.

    `image_size` (int or (h, w)) resizes every image; None keeps their own size, which must be the same for all
    (`common_size`).  Unreadable files are a DataError, or skipped into ``skipped`` (a `SkippedImages`).
    """
    paths, labels, class_names, size = folder_listing(split, data_dir, image_size)
    images, readable = decode_image_files_skipping(paths, size, what="folder", skipped=skipped)
    if not len(images):
        raise DataError(f"folder: none of the {len(paths)} {split} images in {data_dir} can be read "
                        f"(e.g. {paths[0]})")
    return images, None if labels is None else labels[readable], class_names
