"""`make_dataset`: tf.data input pipelines over uint8 image arrays or streams, with the paper's STL-10 augmentation.

Design:
- The pipeline runs over *indices*: shuffling permutes indices, and each batch gathers its images at once.
  Arrays up to `_MAX_IN_GRAPH_BYTES` are gathered in-graph; larger ones (STL-10 unlabelled is 2.7 GB) are
  gathered by `tf.numpy_function` from the numpy array, because tf.data serialises captured tensors into its
  graph and a GraphDef cannot exceed 2 GB.
- Augmentation randomness comes from `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)` zipped
  with the indices: three random integers per element (crop row, crop column, flip). Together with the seeded
  shuffle this makes every epoch of a pipeline built with the same seed identical across runs, while
  successive epochs differ from each other.
- Crops are exact integer windows gathered per element (no interpolation); flips reverse the width axis.
- A streaming source (`dim_keras.data.streaming.ImageStream`) gives decoded uint8 images instead of indices
  into an array: they are shuffled by the same seed (file positions, or records through a buffer), zipped with
  the same random integers, batched, and go through the same augmentation function as array batches.
"""

import numpy as np
import tensorflow as tf

from dim_keras.errors import DataError
from dim_keras.data.images import as_size

# Arrays larger than this are fed through numpy_function rather than captured in the tf.data graph.
_MAX_IN_GRAPH_BYTES = 256 * 2**20
# Evaluation batches are cached (cache=True) only while their float32 copy stays below this.
_MAX_CACHE_BYTES = 2**30


def make_dataset(
    images,
    labels=None,
    *,
    batch_size,
    training,
    seed=None,
    crop_size=None,
    flip=False,
    pad=0,
    drop_remainder=None,
    cache=True,
    num_shards=1,
    shard_index=0,
    colour=False,
    views=1,
):
    """A tf.data.Dataset of float32 images in [0, 1], batched (and (images, labels) tuples when labels given).

    Args:
      images: uint8 array [N, H, W, C] (numpy or np.memmap; never copied into the graph when large), or an
        `ImageStream` read from disk while it is iterated.
      labels: optional array [N, ...] (int64 class ids or [N, 40] attributes), batched along with the images;
        for a stream, True batches the stream's own labels.
      batch_size: examples per batch.
      training: True: reshuffle every epoch, random crops of `crop_size`, random horizontal flips if `flip`
        (the paper's STL-10 pretraining: 64x64 random crops of the 96x96 images plus flips, Sec. 4).
        False: dataset order, central crop of `crop_size`, no flips.
      seed: makes shuffling and augmentation reproducible (same seed -> identical batches in every epoch of
        a new pipeline); None draws a fresh seed.
      crop_size: None, an int or (height, width) of the crop.
      flip: random horizontal flips (training only).
      pad: training only: reflect-pad every side by this many pixels, then take a random crop of
        `crop_size` (default: the original size) - the standard CIFAR augmentation is pad 4, crop 32.
      drop_remainder: drop a last partial batch; default True when training (DIM's negatives need full
        batches), False otherwise.
      cache: keep evaluation batches in memory after the first pass (ignored for training, for streams, and
        for outputs whose float32 size exceeds 1 GiB).
      num_shards, shard_index: streams only: this worker reads only its share of the files (tf.distribute's
        auto-sharding is then switched off for the pipeline; docs/DISTRIBUTED.md).  Arrays are sharded by
        tf.distribute itself (its DATA policy).
      colour: training only: SimCLR/AMDIM-style colour distortion after the crop and flip: with probability
        0.8 brightness, contrast and saturation factors drawn from U[0.6, 1.4] each (torchvision's
        ColorJitter(0.4, 0.4, 0.4), without its hue), then grey with probability 0.2.
      views: training only: 2 gives ``(view, other_view)`` batches, two independent augmentations of the
        same images (AMDIM's two views, Bachman et al. 2019; :class:`dim_keras.models.DeepInfoMax` reads Y
        from the second); not with ``labels``.
    """
    stream = getattr(images, "streaming", False)
    if stream:
        if len(images) == 0:
            raise DataError("no images to make a dataset of")
        count, (height, width, channels) = len(images), images.output_shape
        if labels is not None and labels is not True:
            raise DataError("a stream batches its own labels: pass labels=True (or None)")
        if labels is True and images.label_kind is None:
            raise DataError(f"{images.name} {images.split} has no labels")
    else:
        images = _check_images(images)
        count, height, width, channels = images.shape
        if num_shards != 1:
            raise DataError("num_shards applies to streams; tf.distribute shards arrays itself")
    if labels is not None and not stream:
        labels = np.asarray(labels)
        if len(labels) != count:
            raise DataError(f"{len(labels)} labels for {count} images")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    crop = as_size(crop_size)
    if not isinstance(pad, (int, np.integer)) or pad < 0:
        raise DataError(f"pad must be a non-negative integer, got {pad!r}")
    pad = int(pad) if training else 0
    if pad and crop is None:
        crop = (height, width)
    if pad >= min(height, width):
        raise DataError(f"pad {pad} must be smaller than the {height}x{width} images (reflection padding)")
    if crop is not None and (crop[0] > height + 2 * pad or crop[1] > width + 2 * pad):
        raise DataError(f"crop_size {crop} is larger than the {height}x{width} images")
    if views not in (1, 2):
        raise DataError(f"views must be 1 or 2, got {views!r}")
    if views == 2 and (not training or labels is not None):
        raise DataError("views=2 makes training batches of two augmented views of each image, without labels")
    if drop_remainder is None:
        drop_remainder = bool(training)
    if drop_remainder and count < batch_size:
        raise DataError(f"only {count} images for a batch of {batch_size} (pass a smaller batch_size)")
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

    augment = _augmenter(training=training, crop=crop, pad=pad, flip=flip, height=height, width=width,
                         channels=channels, colour=colour and training, views=views)
    randoms_per_image = _randoms_per_image(colour and training, views)
    if stream:
        return _stream_dataset(images, labels is True, batch_size, training, shuffle_seed, augment_seed,
                               drop_remainder, augment, num_shards, shard_index, randoms_per_image)

    indices = tf.data.Dataset.range(count)
    if training:
        indices = indices.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)
        randoms = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True).batch(
            randoms_per_image)
        elements = tf.data.Dataset.zip(indices, randoms)
    else:
        elements = indices.map(lambda index: (index, tf.zeros([3], tf.int64)))
    elements = elements.batch(batch_size, drop_remainder=drop_remainder)

    gather_images = _image_gatherer(images)
    labels_tensor = None if labels is None else tf.constant(labels)

    def load_batch(batch_indices, batch_randoms):
        batch = augment(gather_images(batch_indices), batch_randoms)
        if labels_tensor is None:
            return batch
        return batch, tf.gather(labels_tensor, batch_indices)

    dataset = elements.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    out_height, out_width = crop if crop is not None else (height, width)
    if cache and not training and count * out_height * out_width * channels * 4 <= _MAX_CACHE_BYTES:
        dataset = dataset.cache()
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


# Random integers per image and view: crop row, crop column, flip; and with colour distortion five more
# (whether to distort, the three factors, whether to make it grey).
_CROP_FLIP_RANDOMS, _COLOUR_RANDOMS = 3, 5
# torchvision's ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4) factors U[1 - 0.4, 1 + 0.4], applied
# with probability 0.8, and RandomGrayscale(p=0.2): SimCLR's CIFAR colour distortion without hue (AMDIM's
# pipeline has the same components).
_JITTER, _JITTER_PROBABILITY, _GREY_PROBABILITY = 0.4, 0.8, 0.2
# ITU-R 601 luma, as torchvision's rgb_to_grayscale and tf.image.rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _randoms_per_image(colour, views):
    return (_CROP_FLIP_RANDOMS + (_COLOUR_RANDOMS if colour else 0)) * views


def _uniform(randoms):
    """int64 random integers -> float32 uniform in [0, 1) (24 bits each)."""
    return tf.cast(tf.math.floormod(randoms, 2**24), tf.float32) / float(2**24)


def _distort_colour(batch, randoms):
    """float32 RGB batch [B, H, W, 3] in [0, 1], random integers [B, 5] -> the colour-distorted batch."""
    u = _uniform(randoms)
    distort = (u[:, 0] < _JITTER_PROBABILITY)[:, None, None, None]
    brightness, contrast, saturation = ((1.0 - _JITTER + 2.0 * _JITTER * u[:, k])[:, None, None, None]
                                        for k in (1, 2, 3))
    luma = tf.constant(_LUMA, tf.float32)

    def grey(images):
        return tf.reduce_sum(images * luma, axis=-1, keepdims=True)

    jittered = tf.clip_by_value(batch * brightness, 0.0, 1.0)
    mean = tf.reduce_mean(grey(jittered), axis=[1, 2, 3], keepdims=True)
    jittered = tf.clip_by_value((jittered - mean) * contrast + mean, 0.0, 1.0)
    jittered = tf.clip_by_value(grey(jittered) + (jittered - grey(jittered)) * saturation, 0.0, 1.0)
    batch = tf.where(distort, jittered, batch)
    make_grey = (u[:, 4] < _GREY_PROBABILITY)[:, None, None, None]
    return tf.where(make_grey, tf.broadcast_to(grey(batch), tf.shape(batch)), batch)


def _augmenter(*, training, crop, pad, flip, height, width, channels, colour=False, views=1):
    """uint8 batch [B, H, W, C] and its random integers [B, k] -> float32 batch in [0, 1]: reflect-pad, crop
    (random windows when training, else central), random flips and colour distortion when training; with
    ``views=2`` a pair of such batches, each with its own randoms.  The same for arrays and streams."""
    out_height, out_width = crop if crop is not None else (height, width)
    if colour and channels != 3:
        raise DataError(f"colour distortion needs RGB images, got {channels} channel(s)")

    def augment(batch, batch_randoms):
        if views == 2:
            per_view = _randoms_per_image(colour, 1)
            return (augment_view(batch, batch_randoms[:, :per_view]),
                    augment_view(batch, batch_randoms[:, per_view:]))
        return augment_view(batch, batch_randoms)

    def augment_view(batch, batch_randoms):
        if pad:
            batch = tf.pad(batch, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        if crop is not None:
            batch = _crop(batch, batch_randoms, crop, height + 2 * pad, width + 2 * pad, random=training)
        if training and flip:
            flipped = tf.equal(batch_randoms[:, 2] % 2, 1)
            batch = tf.where(flipped[:, None, None, None], tf.reverse(batch, axis=[2]), batch)
        batch = tf.cast(batch, tf.float32) / 255.0
        if colour:
            batch = _distort_colour(batch, batch_randoms[:, _CROP_FLIP_RANDOMS:])
        return tf.ensure_shape(batch, [None, out_height, out_width, channels])

    return augment


def _stream_dataset(stream, with_labels, batch_size, training, shuffle_seed, augment_seed, drop_remainder,
                    augment, num_shards, shard_index, randoms_per_image):
    """`make_dataset` over an ImageStream: decoded elements, shuffled and sharded by the stream
    (`ImageStream.elements`), zipped with the augmentation randoms, batched, augmented."""
    elements = stream.elements(shuffle_seed=shuffle_seed if training else None, num_shards=num_shards,
                               shard_index=shard_index)
    if training:
        randoms = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True).batch(
            randoms_per_image)
        elements = tf.data.Dataset.zip(elements, randoms)
    else:
        elements = elements.map(lambda *element: (element, tf.zeros([3], tf.int64)))
    elements = elements.batch(batch_size, drop_remainder=drop_remainder)

    def load_batch(element, batch_randoms):
        batch_images, batch_labels, _ = element
        batch = augment(batch_images, batch_randoms)
        return (batch, batch_labels) if with_labels else batch

    dataset = elements.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    if num_shards > 1:
        # Sharded here, by files: tf.distribute must not shard again (its AUTO policy would fall back to
        # sharding the already-sharded elements, and each worker would train on 1/W of its own share).
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _check_images(images):
    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"images must be a uint8 array [N, H, W, C], got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DataError("no images to make a dataset of")
    return images


def _image_gatherer(images):
    """index batch [B] -> uint8 images [B, H, W, C], in-graph for small arrays, via numpy for big ones."""
    if images.nbytes <= _MAX_IN_GRAPH_BYTES:
        images_tensor = tf.constant(images)
        return lambda batch_indices: tf.gather(images_tensor, batch_indices)

    def gather_numpy(batch_indices):
        return np.ascontiguousarray(images[batch_indices])

    def gather(batch_indices):
        batch = tf.numpy_function(gather_numpy, [batch_indices], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, [None, *images.shape[1:]])

    return gather


def _crop(batch, batch_randoms, crop, height, width, random):
    """Per-element crop windows gathered exactly: random offsets when `random`, else the central window."""
    crop_height, crop_width = crop
    if not random:
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return batch[:, top : top + crop_height, left : left + crop_width]
    tops = batch_randoms[:, 0] % (height - crop_height + 1)
    lefts = batch_randoms[:, 1] % (width - crop_width + 1)
    rows = tops[:, None] + tf.range(crop_height, dtype=tf.int64)[None, :]
    columns = lefts[:, None] + tf.range(crop_width, dtype=tf.int64)[None, :]
    batch = tf.gather(batch, rows, axis=1, batch_dims=1)
    return tf.gather(batch, columns, axis=2, batch_dims=1)
