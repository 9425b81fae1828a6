"""Input occlusion for the global feature (DIM Sec. 4.3, App. A.7, Fig. 14).

With occlusion the global feature ``Y`` is computed from an occluded copy of the image while the
local features come from the full image, so maximising their MI asks ``Y`` to carry what is shared
across the whole image.  App. A.7 gives only the constraint on the sampling distribution ("ad-hoc"):

    at least one 10 x 10 block of pixels remains visible and at least one 10 x 10 block of pixels is
    fully occluded

on 32 x 32 inputs, 10 being the receptive field of a local feature of the encoder, so that at least
one local feature is fully observed and one fully unobserved.  The block is scaled with the image
(:func:`occlusion_block`: 20 on 64 x 64).  The sampler here draws one occluding rectangle per image:

* height and width uniform in ``[b, S - b]`` (``b`` the block, ``S`` the side): the rectangle always
  contains a fully occluded ``b x b`` block;
* its top edge uniform over the rows that leave a band of at least ``b`` fully visible rows above
  or below it (the band spans the full width, so it contains a fully visible ``b x b`` block); its left
  edge uniform over all columns where it fits;
* for a random half of the images the same with rows and columns swapped (a full-height visible band).

Occluded pixels are set to 0 (the paper does not say which value it used).  Everything is
``keras.ops`` with a ``SeedGenerator``, so the masks are drawn inside the jitted train step on
TensorFlow and JAX.
"""

from keras import ops
import keras

# App. A.7: a 10 x 10 pixel block on 32 x 32 inputs (the receptive field of a local feature).
PAPER_BLOCK = 10
PAPER_SIDE = 32


def occlusion_block(height, width):
    """The side of A.7's block for an image of ``height x width``: 10 pixels per 32 (halves round up), at
    least 1."""
    return max(1, int(PAPER_BLOCK * min(height, width) / PAPER_SIDE + 0.5))


def check_image_size(height, width, block=None):
    """Raises ``ValueError`` unless two blocks (one visible, one occluded) fit on each side; returns the block."""
    block = occlusion_block(height, width) if block is None else int(block)
    if not (2 * block <= height and 2 * block <= width):
        raise ValueError(f"occlusion needs images of at least {2 * block} x {2 * block} pixels "
                         f"(two {block} x {block} blocks: one visible, one occluded), got {height} x {width}")
    return block


def _uniform_choice(valid, seed):
    """One index per row of the 0/1 matrix ``valid`` [B, N], uniform over its ones."""
    noise = keras.random.uniform(ops.shape(valid), minval=0.1, maxval=1.0, seed=seed)
    return ops.argmax(noise * valid, axis=-1)


def _rectangles_beside_a_row_band(batch, height, width, block, seed):
    """Occluded ``[batch, height, width]`` booleans: one rectangle each, leaving a full-width band of at least
    ``block`` visible rows above or below it (the module docstring's distribution)."""
    rows = ops.arange(height, dtype="int32")
    cols = ops.arange(width, dtype="int32")

    def size(side):  # uniform in [block, side - block]
        sizes = ops.cast(ops.arange(side), "float32")
        valid = ops.cast((sizes >= block) & (sizes <= side - block), "float32")
        return ops.cast(_uniform_choice(ops.broadcast_to(valid, (batch, side)), seed), "int32")

    h, w = size(height), size(width)  # [B]
    # Top edges leaving >= block visible rows above (top >= block) or below (height - top - h >= block).
    top_valid = ((rows[None, :] >= block) | (height - rows[None, :] - h[:, None] >= block)) \
        & (rows[None, :] <= height - h[:, None])
    top = ops.cast(_uniform_choice(ops.cast(top_valid, "float32"), seed), "int32")
    left_valid = cols[None, :] <= width - w[:, None]
    left = ops.cast(_uniform_choice(ops.cast(left_valid, "float32"), seed), "int32")
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + h)[:, None])  # [B, H]
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < (left + w)[:, None])  # [B, W]
    return in_rows[:, :, None] & in_cols[:, None, :]


def occlusion_masks(batch, height, width, seed, block=None):
    """Masks ``[batch, height, width, 1]``, 1 = visible, 0 = occluded, one rectangle each (see the module
    docstring for the distribution).  ``seed`` is a ``keras.random.SeedGenerator`` (or an int).

    The guaranteed visible band runs along the rows for half of the images (drawn at random) and along the
    columns for the other half, so the distribution does not favour one orientation."""
    block = check_image_size(height, width, block)
    along_rows = _rectangles_beside_a_row_band(batch, height, width, block, seed)
    along_cols = ops.transpose(_rectangles_beside_a_row_band(batch, width, height, block, seed), (0, 2, 1))
    by_rows = keras.random.uniform((batch, 1, 1), seed=seed) < 0.5
    occluded = ops.where(by_rows, along_rows, along_cols)
    return ops.expand_dims(1.0 - ops.cast(occluded, "float32"), -1)


def occlude(images, seed, block=None):
    """``images`` [B, H, W, C] (floats in [0, 1]) with one rectangle per image set to 0."""
    shape = images.shape
    batch = shape[0] if shape[0] is not None else ops.shape(images)[0]
    masks = occlusion_masks(batch, shape[1], shape[2], seed, block=block)
    return images * ops.cast(masks, images.dtype)
