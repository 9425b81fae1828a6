"""CelebA from the official aligned images and annotation files (Liu et al., 2015), or from tfds 'celeb_a'.

Files: img_align_celeba/<000001.jpg ...> (178x218), list_attr_celeba.txt (line 1: image count, line 2: the 40
attribute names, then "<file> <40 x -1|1>"), optionally list_eval_partition.txt ("<file> 0|1|2" for
train/validation/test). They may lie directly in data_dir or in the archive's Img/, Anno/ and Eval/ folders.
Faces are center-cropped to 140x140 and resized to 64x64, the usual DCGAN-era preprocessing of CelebA that
DIM's App. A.5 experiments use; attributes -1/1 become 0/1.
"""

import numpy as np

from dim_keras.errors import DataError
from dim_keras.data.images import decode_image_files

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
CELEBA_CROP = (140, 140)
CELEBA_SIZE = (64, 64)
# Without list_eval_partition.txt the last 10 % of images (in file order) are the test split.
CELEBA_FALLBACK_TEST_FRACTION = 0.1

_IMAGE_FOLDERS = ("img_align_celeba", "Img/img_align_celeba")
_ATTRIBUTE_FILES = ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt")
_PARTITION_FILES = ("list_eval_partition.txt", "Eval/list_eval_partition.txt")


def _first_existing(data_dir, candidates, is_dir):
    for candidate in candidates:
        path = data_dir / candidate
        if path.is_dir() if is_dir else path.is_file():
            return path
    return None


def find_celeba_files(data_dir):
    """(image folder, attribute file, partition file or None) when data_dir holds the official files, else None."""
    if data_dir is None:
        return None
    image_dir = _first_existing(data_dir, _IMAGE_FOLDERS, is_dir=True)
    attribute_file = _first_existing(data_dir, _ATTRIBUTE_FILES, is_dir=False)
    if image_dir is None and attribute_file is None:
        return None
    if image_dir is None or attribute_file is None:
        raise DataError(
            f"celeb_a: {data_dir} needs both img_align_celeba/ and list_attr_celeba.txt "
            f"(found only {(image_dir or attribute_file).name})"
        )
    return image_dir, attribute_file, _first_existing(data_dir, _PARTITION_FILES, is_dir=False)


def _parse_attributes(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        count = int(lines[0].strip())
        names = lines[1].split()
    except (IndexError, ValueError):
        raise DataError(f"celeb_a: {path} does not start with an image count and the attribute names") from None
    if tuple(names) != CELEBA_ATTRIBUTES:
        raise DataError(f"celeb_a: {path} does not list the 40 CelebA attributes in the official order")
    files, rows = [], []
    for line_number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 41 or any(value not in ("1", "-1") for value in fields[1:]):
            raise DataError(f"celeb_a: {path} line {line_number} is not '<file> <40 values of -1 or 1>'")
        files.append(fields[0])
        rows.append([value == "1" for value in fields[1:]])
    if len(files) != count:
        raise DataError(f"celeb_a: {path} announces {count} images but lists {len(files)} (truncated?)")
    return files, np.asarray(rows, np.int64).reshape(-1, 40)


def _parse_partition(path, files):
    partition = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"celeb_a: {path} line {line_number} is not '<file> 0|1|2'")
        partition[fields[0]] = int(fields[1])
    missing = [name for name in files if name not in partition]
    if missing:
        raise DataError(f"celeb_a: {path} has no partition for {len(missing)} images, e.g. {missing[0]}")
    return np.asarray([partition[name] for name in files])


def celeba_test_mask(files, partition_file):
    """Boolean mask of test images: the official partition 2 if known, else the last 10 %."""
    if partition_file is not None:
        return _parse_partition(partition_file, files) == 2
    test_count = int(round(len(files) * CELEBA_FALLBACK_TEST_FRACTION))
    mask = np.zeros(len(files), bool)
    mask[len(files) - test_count :] = True
    return mask


def load_celeba(split, found):
    """Images uint8 [N, 64, 64, 3], attributes int64 [N, 40] (0/1) and attribute names.

    "train" and "pretrain" are the official train + validation partitions (everything not in test).
    """
    image_dir, attribute_file, partition_file = found
    files, attributes = _parse_attributes(attribute_file)
    test = celeba_test_mask(files, partition_file)
    keep = test if split == "test" else ~test
    files = [name for name, kept in zip(files, keep) if kept]
    if not files:
        raise DataError(f"celeb_a: the {split} split of {attribute_file} is empty")
    paths = [image_dir / name for name in files]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"celeb_a: {len(missing)} image files are missing, e.g. {missing[0]}")
    images = decode_image_files(paths, CELEBA_SIZE, center_crop=CELEBA_CROP, what="celeb_a")
    return images, attributes[keep], list(CELEBA_ATTRIBUTES)
