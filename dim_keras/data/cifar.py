"""CIFAR-10 / CIFAR-100 from the official "python version" files, as a directory or straight from the tar.gz.

Layout (https://www.cs.toronto.edu/~kriz/cifar.html): each batch is a pickled dict with b"data", a uint8
[N, 3072] array holding the red, green and blue 32x32 planes of an image row-major, and b"labels" (CIFAR-10) or
b"fine_labels" (CIFAR-100). Files are read with `RestrictedUnpickler`, never plain `pickle.load`.
"""

import tarfile
import zlib

import numpy as np

from dim_keras.errors import DataError, first_line
from dim_keras.data.safe_pickle import load_restricted_pickle

CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASS_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# Per dataset: folder and archive names of the official download, batch files per split, label key, class count.
CIFAR_LAYOUTS = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        members={"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]},
        label_key=b"labels",
        class_names=CIFAR10_CLASS_NAMES,
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        members={"train": ["train"], "test": ["test"]},
        label_key=b"fine_labels",
        class_names=CIFAR100_CLASS_NAMES,
    ),
}


def find_cifar_source(name, data_dir):
    """Where the official files of `name` are under data_dir: ("folder"|"archive", path), or None."""
    layout = CIFAR_LAYOUTS[name]
    if data_dir is None:
        return None
    folder = data_dir / layout["folder"]
    if folder.is_dir():
        return "folder", folder
    archive = data_dir / layout["archive"]
    if archive.is_file():
        return "archive", archive
    # data_dir may itself be the extracted folder.
    if all((data_dir / member).is_file() for member in layout["members"]["test"]) and (
        data_dir / layout["members"]["train"][0]
    ).is_file():
        return "folder", data_dir
    return None


def _read_folder_members(folder, members):
    missing = [member for member in members if not (folder / member).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (re-extract the official archive there)")
    return {member: load_restricted_pickle((folder / member).read_bytes(), folder / member) for member in members}


def _read_archive_members(archive, folder_name, members):
    """Read the wanted members straight out of the tar.gz in one streaming pass (nothing is extracted)."""
    wanted = {f"{folder_name}/{member}": member for member in members}
    found = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is not None and info.isfile():
                    found[member] = load_restricted_pickle(tar.extractfile(info).read(), f"{archive}:{info.name}")
                    if len(found) == len(wanted):
                        break
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{archive}: corrupt or truncated archive ({first_line(error)})") from None
    missing = [path for path, member in wanted.items() if member not in found]
    if missing:
        raise DataError(f"{archive}: archive lacks {', '.join(missing)}; is it the official python version?")
    return found


def _batch_arrays(batch, label_key, num_classes, source):
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{source}: not a CIFAR batch (expected a dict with b'data' and {label_key!r})")
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{source}: b'data' must be a uint8 [N, 3072] array")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DataError(f"{source}: {len(labels)} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source}: labels outside 0..{num_classes - 1}")
    # Rows hold the R, G, B planes one after the other: [N, 3, 32, 32] -> NHWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def load_cifar(name, split, source):
    """Images uint8 [N, 32, 32, 3], labels int64 [N] and class names of split "train" or "test"."""
    layout = CIFAR_LAYOUTS[name]
    kind, path = source
    members = layout["members"][split]
    if kind == "folder":
        batches = _read_folder_members(path, members)
    else:
        batches = _read_archive_members(path, layout["folder"], members)
    arrays = [
        _batch_arrays(batches[member], layout["label_key"], len(layout["class_names"]), f"{path}/{member}")
        for member in members
    ]
    images = np.ascontiguousarray(np.concatenate([images for images, _ in arrays]))
    labels = np.concatenate([labels for _, labels in arrays])
    return images, labels, list(layout["class_names"])
