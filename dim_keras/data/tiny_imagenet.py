"""Tiny ImageNet from the official tiny-imagenet-200/ folder (http://cs231n.stanford.edu/tiny-imagenet-200.zip).

wnids.txt lists the 200 WordNet ids (label = line index); train/<wnid>/images/*.JPEG are the training images;
val/images/*.JPEG with val/val_annotations.txt (file<TAB>wnid<TAB>box...) are the labelled validation set, used
as the "test" split (the official test set is unlabelled). Some images are grayscale: they are decoded as RGB.
"""

import numpy as np

from dim_keras.errors import DataError
from dim_keras.data.images import decode_image_files, list_image_files

TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_SIZE = (64, 64)


def find_tiny_imagenet_folder(data_dir):
    if data_dir is None:
        return None
    if (data_dir / TINY_IMAGENET_FOLDER / "wnids.txt").is_file():
        return data_dir / TINY_IMAGENET_FOLDER
    if (data_dir / "wnids.txt").is_file():
        return data_dir
    return None


def _read_lines(path):
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"tiny_imagenet: missing {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"tiny_imagenet: cannot read {path} ({error})") from None


def _class_names(folder, wnids):
    """Readable names from words.txt ("wnid<TAB>name, synonym, ...": first synonym) where present, else wnids."""
    words = {}
    if (folder / "words.txt").is_file():
        for line in _read_lines(folder / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return [words.get(wnid) or wnid for wnid in wnids]


def load_tiny_imagenet(split, folder):
    """Images uint8 [N, 64, 64, 3], labels int64 [N] in 0..199 and class names; split "train" or "test"."""
    wnids = [line.strip() for line in _read_lines(folder / "wnids.txt")]
    label_of = {wnid: index for index, wnid in enumerate(wnids)}
    if len(label_of) != len(wnids):
        raise DataError(f"tiny_imagenet: {folder / 'wnids.txt'} lists a class twice")
    paths, labels = [], []
    if split == "train":
        for wnid in wnids:
            image_dir = folder / "train" / wnid / "images"
            if not image_dir.is_dir():
                raise DataError(f"tiny_imagenet: missing folder {image_dir}")
            files = list_image_files(image_dir)
            paths += files
            labels += [label_of[wnid]] * len(files)
    else:
        annotations = folder / "val" / "val_annotations.txt"
        for line_number, line in enumerate(_read_lines(annotations), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in label_of:
                raise DataError(f"tiny_imagenet: {annotations} line {line_number} names no known wnid")
            paths.append(folder / "val" / "images" / fields[0].strip())
            labels.append(label_of[fields[1].strip()])
    if not paths:
        raise DataError(f"tiny_imagenet: no {split} images under {folder}")
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"tiny_imagenet: {len(missing)} image files are missing, e.g. {missing[0]}")
    images = decode_image_files(paths, TINY_IMAGENET_SIZE, what="tiny_imagenet")
    return images, np.asarray(labels, np.int64), _class_names(folder, wnids)
