"""Writers of tiny datasets in each dataset's official on-disk format (and other shared test helpers), for tests.

Every writer returns what a loader must give back (pixels uint8 NHWC and int64 labels), so tests can check
round-trips exactly. Formats that are JPEG officially (Tiny ImageNet, CelebA) are written as PNG bytes under
the official file names: decoders sniff the content, and PNG keeps the round-trip lossless.
"""

import io
import pickle
import socket
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Python2StylePickler(pickle._Pickler):
    """Writes pickles the way the official CIFAR files were written by Python 2's cPickle (protocol 2).

    Byte strings become Python 2 `str` opcodes (SHORT_BINSTRING / BINSTRING) rather than Python 3's
    `_codecs.encode(...)` calls, and numpy globals are named `numpy.core.multiarray` as numpy 1.x did.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes_as_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_as_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
        self.memoize(obj)


def pickle_bytes(obj, style="py2"):
    """style "py2": like the official files; an int: that protocol of Python 3's pickle."""
    if style == "py2":
        buffer = io.BytesIO()
        Python2StylePickler(buffer, protocol=2).dump(obj)
        return buffer.getvalue()
    return pickle.dumps(obj, protocol=style)


def _random_cifar_batch(rng, count, label_key, num_classes, extra=None):
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=count).astype(np.int64)
    batch = {
        b"batch_label": b"testing batch",
        b"data": images.transpose(0, 3, 1, 2).reshape(count, 3072).copy(),  # R, G, B planes per row
        label_key: [int(label) for label in labels],
        b"filenames": [f"image_{k}.png".encode() for k in range(count)],
    }
    batch.update(extra(labels) if extra else {})
    return batch, images, labels


def _cifar_files(name, n_per_batch, rng, style):
    """{member file name: pickle bytes} and the expected {"train", "test"} images and labels."""
    files, images, labels = {}, {"train": [], "test": []}, {"train": [], "test": []}
    if name == "cifar10":
        members = [(f"data_batch_{k}", "train") for k in range(1, 6)] + [("test_batch", "test")]
        label_key, num_classes, extra = b"labels", 10, None
        files["batches.meta"] = pickle_bytes({b"label_names": [n.encode() for n in CIFAR10_NAMES]}, style)
    else:
        members = [("train", "train"), ("test", "test")]
        label_key, num_classes = b"fine_labels", 100
        extra = lambda fine: {b"coarse_labels": [int(label) // 5 for label in fine]}  # noqa: E731
        files["meta"] = pickle_bytes({b"fine_label_names": [b"x"] * 100, b"coarse_label_names": [b"y"] * 20}, style)
    for member, split in members:
        batch, batch_images, batch_labels = _random_cifar_batch(rng, n_per_batch, label_key, num_classes, extra)
        files[member] = pickle_bytes(batch, style)
        images[split].append(batch_images)
        labels[split].append(batch_labels)
    return files, {k: np.concatenate(v) for k, v in images.items()}, {k: np.concatenate(v) for k, v in labels.items()}


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def _write_cifar_folder(name, directory, n_per_batch, rng, style):
    files, images, labels = _cifar_files(name, n_per_batch, rng, style)
    folder = Path(directory) / _CIFAR_FOLDERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    for member, data in files.items():
        (folder / member).write_bytes(data)
    (folder / "readme.html").write_text("<html></html>")
    return images, labels


def _write_cifar_archive(name, directory, n_per_batch, rng, style, replace=None):
    files, images, labels = _cifar_files(name, n_per_batch, rng, style)
    files.update(replace or {})
    with tarfile.open(Path(directory) / _CIFAR_ARCHIVES[name], "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{_CIFAR_FOLDERS[name]}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return images, labels


def write_cifar10(directory, n_per_batch, rng, style="py2"):
    """cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta). Returns (images, labels) dicts
    keyed "train" (5 * n_per_batch images) and "test" (n_per_batch)."""
    return _write_cifar_folder("cifar10", directory, n_per_batch, rng, style)


def write_cifar10_tar_gz(directory, n_per_batch, rng, style="py2", replace=None):
    """cifar-10-python.tar.gz; `replace` maps member names to raw bytes to put in their place."""
    return _write_cifar_archive("cifar10", directory, n_per_batch, rng, style, replace)


def write_cifar100(directory, n_per_batch, rng, style="py2"):
    """cifar-100-python/ (train, test, meta) with n_per_batch images each; fine labels 0..99."""
    return _write_cifar_folder("cifar100", directory, n_per_batch, rng, style)


def write_cifar100_tar_gz(directory, n_per_batch, rng, style="py2", replace=None):
    return _write_cifar_archive("cifar100", directory, n_per_batch, rng, style, replace)


def _write_stl_images(path, images):
    # Official layout: each image 3x96x96 column-major == row-major [3, W, H].
    images.transpose(0, 3, 2, 1).tofile(path)


def write_stl10(directory, rng, n_train=4, n_test=3, n_unlabelled=5):
    """stl10_binary/ with train/test/unlabeled *_X.bin and *_y.bin (labels 1..10 on disk).

    Returns (images, labels): images keyed "train", "test", "unlabelled"; labels (0..9) keyed "train", "test".
    """
    folder = Path(directory) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = {}, {}
    for split, file_part, count in (("train", "train", n_train), ("test", "test", n_test),
                                    ("unlabelled", "unlabeled", n_unlabelled)):  # fmt: skip
        images[split] = rng.integers(0, 256, size=(count, 96, 96, 3), dtype=np.uint8)
        _write_stl_images(folder / f"{file_part}_X.bin", images[split])
        if split != "unlabelled":
            labels[split] = rng.integers(0, 10, size=count).astype(np.int64)
            (labels[split] + 1).astype(np.uint8).tofile(folder / f"{file_part}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")  # fmt: skip
    return images, labels


def save_png(path, image):
    """Save uint8 [H, W, 3] (or [H, W] / [H, W, 4]) as PNG bytes at `path`, whatever its extension."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def write_tiny_imagenet(directory, rng, n_classes=3, n_train_per_class=2, n_val=4):
    """tiny-imagenet-200/ with wnids.txt, words.txt, train/<wnid>/images/<wnid>_<k>.JPEG, val/images/val_<k>.JPEG
    and val/val_annotations.txt. Returns (images, labels, wnids); images/labels keyed "train" and "test" (= val),
    in the loader's order (train: wnids order then file name; val: annotation order)."""
    folder = Path(directory) / "tiny-imagenet-200"
    wnids = [f"n{1000000 + 17 * k:08d}" for k in range(n_classes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {k}, other name\n" for k, w in enumerate(wnids)))
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    for label, wnid in enumerate(wnids):
        for k in range(n_train_per_class):
            image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            save_png(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", image)
            images["train"].append(image)
            labels["train"].append(label)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    annotation_lines = []
    for k in range(n_val):
        label = int(rng.integers(0, n_classes))
        image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        save_png(folder / "val" / "images" / f"val_{k}.JPEG", image)
        annotation_lines.append(f"val_{k}.JPEG\t{wnids[label]}\t0\t0\t63\t63")
        images["test"].append(image)
        labels["test"].append(label)
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotation_lines) + "\n")
    return ({k: np.stack(v) for k, v in images.items()}, {k: np.asarray(v, np.int64) for k, v in labels.items()},
            wnids)  # fmt: skip


CELEBA_ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def celeba_face(quadrant_colors, border_color, height=218, width=178):
    """A 218x178 "face" whose central 140x140 window is four constant quadrants (colors [4, 3]: top-left,
    top-right, bottom-left, bottom-right) and whose outside is `border_color`: after the center crop and the
    resize to 64x64 each 32x32 quadrant must be constant, away from the quadrant seams."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = border_color
    top, left = (height - 140) // 2, (width - 140) // 2
    for index, (rows, columns) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        image[top + 70 * rows : top + 70 * (rows + 1), left + 70 * columns : left + 70 * (columns + 1)] = (
            quadrant_colors[index]
        )
    return image


def write_celeba(directory, rng, n=10, partition=True, layout="flat"):
    """img_align_celeba/<%06d.jpg> (PNG bytes), list_attr_celeba.txt and (if `partition`) list_eval_partition.txt.

    layout "flat": files directly in directory; "archive": in Img/, Anno/, Eval/ as in the official download.
    Returns dict(attributes int64 [n, 40] 0/1, partition int [n] 0/1/2, quadrant_colors uint8 [n, 4, 3],
    border_colors uint8 [n, 3], files [n]).
    """
    directory = Path(directory)
    image_dir = directory / ("Img/img_align_celeba" if layout == "archive" else "img_align_celeba")
    attribute_file = directory / ("Anno/list_attr_celeba.txt" if layout == "archive" else "list_attr_celeba.txt")
    partition_file = directory / ("Eval/list_eval_partition.txt" if layout == "archive" else "list_eval_partition.txt")
    files = [f"{k + 1:06d}.jpg" for k in range(n)]
    attributes = rng.integers(0, 2, size=(n, 40)).astype(np.int64)
    partitions = rng.integers(0, 3, size=n)
    partitions[:3] = [0, 1, 2]  # every partition non-empty
    quadrant_colors = rng.integers(0, 200, size=(n, 4, 3), dtype=np.uint8)
    border_colors = np.full((n, 3), 255, np.uint8)  # brighter than every quadrant: any leak shows
    for k, name in enumerate(files):
        save_png(image_dir / name, celeba_face(quadrant_colors[k], border_colors[k]))
    attribute_file.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{name} " + " ".join(f"{2 * v - 1:2d}" for v in attributes[k]) for k, name in enumerate(files)]
    attribute_file.write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTE_NAMES) + " \n" + "\n".join(rows) + "\n")
    if partition:
        partition_file.parent.mkdir(parents=True, exist_ok=True)
        partition_file.write_text("".join(f"{name} {p}\n" for name, p in zip(files, partitions)))
    return dict(attributes=attributes, partition=partitions, quadrant_colors=quadrant_colors,
                border_colors=border_colors, files=files)  # fmt: skip


def write_folder(directory, rng, class_names=("cat", "dog"), n_per_class=5, size=(20, 24), extension=".png"):
    """directory/<class>/img_<k><extension> (lossless: .png or .bmp). Returns (paths, images [N, H, W, 3],
    labels int64 [N]) in sorted path order, which is the loader's order before the train/test split."""
    directory = Path(directory)
    entries = []
    for label, class_name in enumerate(class_names):
        for k in range(n_per_class):
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            path = directory / class_name / f"img_{k:03d}{extension}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, format="BMP" if extension.lower() == ".bmp" else "PNG")
            entries.append((path, image, label))
    entries.sort(key=lambda entry: str(entry[0]))
    return ([e[0] for e in entries], np.stack([e[1] for e in entries]),
            np.asarray([e[2] for e in entries], np.int64))  # fmt: skip


def free_ports(count):
    """``count`` TCP ports on 127.0.0.1 that were free a moment ago (for TF_CONFIG clusters in tests)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ``python -c WITHOUT_TENSORFLOW app.py [flags]`` runs an app with TensorFlow and Keras made unimportable:
# a mistake reported this way was found before TensorFlow would have started (no start-up cost or noise).
WITHOUT_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
                      "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def idx_bytes(array):
    """``array`` (uint8) in the idx format of the MNIST files: 0, 0, 0x08 (unsigned byte), the number of
    dimensions, one big-endian uint32 per dimension, then the bytes row-major."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(directory, rng, n_train=5, n_test=3, gzipped=False):
    """The four official MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte; with ``.gz`` when ``gzipped``) in ``directory``. Returns (images, labels) keyed "train"
    and "test": images uint8 [N, 28, 28] (gray), labels int64 [N] in 0..9."""
    import gzip

    images, labels = {}, {}
    for split, prefix, count in (("train", "train", n_train), ("test", "t10k", n_test)):
        images[split] = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels[split] = rng.integers(0, 10, size=count).astype(np.int64)
        for kind, array in (("images-idx3", images[split]), ("labels-idx1", labels[split])):
            data = idx_bytes(array)
            path = Path(directory) / f"{prefix}-{kind}-ubyte{'.gz' if gzipped else ''}"
            path.write_bytes(gzip.compress(data) if gzipped else data)
    return images, labels
