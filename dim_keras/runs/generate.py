"""Generator training runs (App. A.8-A.9, Table 11): data -> generative model -> fit with quality tracking -> export.

Used by ``apps/generate.py``.  :func:`train_generator` writes to ``config.output_dir`` (default
``saved_models/generate-<model>-<timestamp>``, next to the training runs):

- ``samples/epoch_NNN.png``: an 8x8 grid of samples from a fixed z after every epoch (epoch 0: untrained G);
- ``histograms/epoch_NNN.png``: E's 1-D output on real vs generated images with the targets (as Fig. 15);
- ``metrics.json``: per epoch the training metrics, the Fréchet and kernel distances between features of
  real and generated images, and the overlap of E's two modes;
- ``tensorboard/``: the same numbers for TensorBoard (``train/`` and ``quality/``);
- ``generator/``: a SavedModel (``dim_keras.generation.export``).
"""

import os

import keras
import numpy as np
import tensorflow as tf

from dim_keras import figures, io
from dim_keras.config import validate
from dim_keras.errors import UsageError
from dim_keras.generation import NSGANCP, WGANGP, ImplicitPriorGenerator, build_networks, build_scalar_discriminator
from dim_keras.generation import quality
from dim_keras.generation.export import export_generator
from dim_keras.models import default_optimizer

GRID_SIDE = 8
# The settings recorded under "config" in metrics.json.
RECORDED_SETTINGS = (
    "dataset", "image_size", "model", "architecture", "epochs", "batch_size", "steps_per_epoch", "z_dim",
    "base_filters", "mu_p", "mu_q", "contractive_penalty", "discriminator_clipnorm", "encoder_steps",
    "learning_rate", "num_eval_samples", "seed", "verbose")


def generator_path(config):
    """Where :func:`train_generator` exports the generator of ``config``."""
    return os.path.join(config.output_dir, "generator")


def build_model(config, image_shape):
    """The generative model of ``config`` (a :class:`dim_keras.config.GenerateConfig`) for images of
    ``image_shape``, compiled with one :func:`dim_keras.models.default_optimizer` per player."""
    try:
        generator, encoder = build_networks(config.architecture, image_shape, z_dim=config.z_dim,
                                            base_filters=config.base_filters)
    except ValueError as error:
        raise UsageError(f"--architecture={config.architecture} does not fit {config.dataset} images: {error}") \
            from None
    steps = {} if config.encoder_steps is None else {"encoder_steps": config.encoder_steps}
    optimizers = {"generator_optimizer": default_optimizer(config.learning_rate),
                  "encoder_optimizer": default_optimizer(config.learning_rate)}
    if config.model == "implicit":
        model = ImplicitPriorGenerator(
            generator, encoder,
            build_scalar_discriminator(name="prior_discriminator_p"),
            build_scalar_discriminator(name="prior_discriminator_q"),
            mu_p=config.mu_p, mu_q=config.mu_q, contractive_penalty_weight=config.contractive_penalty,
            seed=config.seed, **steps)
        # App. A.9: gradient clipping on the discriminators.
        optimizers["discriminator_optimizer"] = default_optimizer(config.learning_rate,
                                                                  clipnorm=config.discriminator_clipnorm)
    elif config.model == "nsgan_cp":
        model = NSGANCP(generator, encoder, contractive_penalty_weight=config.contractive_penalty,
                        seed=config.seed, **steps)
    else:
        model = WGANGP(generator, encoder, seed=config.seed, **steps)
    model.compile(jit_compile=config.jit_compile, **optimizers)
    return model


def feature_extractor_for(config, images):
    """``(extractor, description)`` of the feature space of the distances: ``config.feature_encoder``'s
    ``config.feature_name`` output, else the fixed random-init conv net.  A feature encoder that cannot be
    loaded or does not fit ``images`` is a :class:`UsageError`, found here rather than mid-training."""
    if config.feature_encoder is None:
        return (quality.build_random_feature_extractor(images.shape[1:], seed=0),
                "fixed random-init conv net (build_random_feature_extractor, seed 0)")
    try:
        extractor = quality.encoder_feature_extractor(config.feature_encoder, config.feature_name)
        extractor(images[:2])
    except (OSError, ValueError) as error:
        raise UsageError(f"--feature_encoder={config.feature_encoder}: {error}") from None
    return extractor, f"DIM encoder {config.feature_encoder} ({config.feature_name})"


def image_grid(images, side=GRID_SIDE, padding=2):
    """Tiles uint8 images [side*side, H, W, C] into one uint8 picture with a white ``padding``-pixel border."""
    count, height, width, channels = images.shape
    grid = np.full(
        (side * (height + padding) + padding, side * (width + padding) + padding, channels), 255, np.uint8
    )
    for index in range(min(count, side * side)):
        row, column = divmod(index, side)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top:top + height, left:left + width] = images[index]
    return grid


def _apply(network, inputs, batch_size=256):
    """Runs a Keras network in inference mode over ``inputs`` in batches (plain calls: ``predict`` would trace a
    new function for every network and batch shape)."""
    outputs = [network(inputs[start:start + batch_size], training=False).numpy()
               for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0)


def save_png(path, picture):
    """Writes a uint8 picture [H, W, C] as a PNG, atomically."""
    from PIL import Image

    if picture.shape[-1] == 1:
        picture = picture[..., 0]
    with io.atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp)


def save_histogram(path, encoded_real, encoded_fake, epoch, targets):
    """Writes the histograms of E's outputs on real and generated images, with the target densities
    N(mu, 1) of ``targets`` (none for the GAN baselines), as a PNG, atomically (Fig. 15)."""
    figure, axis = figures.pyplot().subplots(figsize=(6, 3.5))
    with figures.drawing(figure, path, dpi=80):
        low = min(encoded_real.min(), encoded_fake.min())
        high = max(encoded_real.max(), encoded_fake.max())
        if targets:
            low, high = min(low, min(targets) - 3), max(high, max(targets) + 3)
        bins = np.linspace(low, high, 60)
        axis.hist(encoded_real, bins=bins, alpha=0.6, density=True, label="E(x), real")
        axis.hist(encoded_fake, bins=bins, alpha=0.6, density=True, label="E(G(z)), generated")
        grid = np.linspace(low, high, 300)
        for mean, name in zip(targets, ("N(mu_P, 1)", "N(mu_Q, 1)")):
            axis.plot(grid, np.exp(-0.5 * (grid - mean) ** 2) / np.sqrt(2 * np.pi), "--", label=name)
        axis.set_title(f"encoder output, epoch {epoch}")
        axis.legend(fontsize=8)


class QualityMonitor(keras.callbacks.Callback):
    """Before training (epoch 0) and after every epoch: saves the sample grid and the histogram of E's
    outputs, computes the Fréchet and kernel distances and the mode overlap, and appends them with the
    epoch's training metrics to ``history["epochs"]``, ``metrics.json`` and TensorBoard.

    ``real_images`` (uint8) are the real side of the distances and histograms; as many generated images
    come from a fixed z drawn with ``seed``.  ``log`` gets one line per epoch (None: silent).
    """

    def __init__(self, real_images, feature_extractor, output_dir, history, seed=0, log=None):
        super().__init__()
        self.real_images = real_images
        self.feature_extractor = feature_extractor
        self.output_dir = output_dir
        self.history = history
        self.seed = seed
        self.log = log
        self._real_features = quality.compute_features(feature_extractor, real_images)
        self._writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard", "quality"))

    def on_train_begin(self, logs=None):
        model = self.model
        rng = np.random.default_rng(self.seed)
        self._fixed_z = rng.standard_normal((len(self.real_images), model.z_dim)).astype(np.float32)
        self._targets = (model.mu_p, model.mu_q) if hasattr(model, "mu_p") else ()
        self._evaluate(0, {})

    def on_epoch_end(self, epoch, logs=None):
        record = self._evaluate(epoch + 1, logs)
        if self.log is not None:
            self.log(f"epoch {epoch + 1}: frechet_distance={record['frechet_distance']:.4f} "
                     f"kernel_distance={record['kernel_distance']:.5f} "
                     f"mode_overlap={record['encoder_mode_overlap']['bhattacharyya']:.3f}")

    def _evaluate(self, epoch, logs):
        model, name = self.model, f"epoch_{epoch:03d}.png"
        generated = quality.to_uint8(_apply(model.generator, self._fixed_z))
        grid = image_grid(generated[:GRID_SIDE * GRID_SIDE])
        save_png(os.path.join(self.output_dir, "samples", name), grid)
        fake_features = quality.compute_features(self.feature_extractor, generated)
        frechet = quality.frechet_distance(self._real_features, fake_features)
        kid_mean, kid_std = quality.kernel_distance(self._real_features, fake_features, subset_size=500)
        encoded_real = _apply(model.encoder, self.real_images.astype(np.float32) / 255.0).reshape(-1)
        encoded_fake = _apply(model.encoder, generated.astype(np.float32) / 255.0).reshape(-1)
        overlap = quality.mode_overlap(encoded_real, encoded_fake)
        save_histogram(os.path.join(self.output_dir, "histograms", name), encoded_real, encoded_fake, epoch,
                       self._targets)
        record = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()},
                  "frechet_distance": frechet, "kernel_distance": kid_mean, "kernel_distance_std": kid_std,
                  "encoder_mode_overlap": overlap}
        self.history["epochs"].append(record)
        io.write_json(os.path.join(self.output_dir, "metrics.json"), self.history)
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("frechet_distance", frechet)
            tf.summary.scalar("kernel_distance", kid_mean)
            tf.summary.scalar("encoder_mode_bhattacharyya", overlap["bhattacharyya"])
            tf.summary.histogram("encoded_real", encoded_real)
            tf.summary.histogram("encoded_generated", encoded_fake)
            tf.summary.image("samples", grid[None], max_outputs=1)
        self._writer.flush()
        return record


def train_generator(config, log=print):
    """Trains the generator of ``config`` (a :class:`dim_keras.config.GenerateConfig`), tracks its quality
    and exports it to ``<output_dir>/generator``; returns the metrics history (the content of metrics.json:
    ``config``, ``feature_extractor`` and one record per epoch, epoch 0 being the untrained generator).

    Raises :class:`UsageError` (:class:`dim_keras.errors.DataError` for data) for user mistakes.
    """
    from dim_keras.data import load_split, make_dataset
    from dim_keras.runtime import progress_verbosity

    validate(config)
    config.output_dir = config.output_dir or config.default_output_dir()
    split = load_split(config.dataset, "train", data_dir=config.data_dir, image_size=config.image_size)
    if len(split.images) < config.batch_size:
        raise UsageError(f"--batch_size={config.batch_size} exceeds the {len(split.images)} training images")
    keras.utils.set_random_seed(config.seed)
    image_shape = split.images.shape[1:]
    feature_extractor, feature_description = feature_extractor_for(config, split.images)

    model = build_model(config, image_shape)
    dataset = make_dataset(split.images, batch_size=config.batch_size, training=True, seed=config.seed)
    if config.steps_per_epoch is not None:
        dataset = dataset.repeat()

    eval_order = np.random.default_rng(config.seed).permutation(len(split.images))
    real_images = split.images[eval_order[:config.num_eval_samples]]
    os.makedirs(config.output_dir, exist_ok=True)
    history = {"config": {name: getattr(config, name) for name in RECORDED_SETTINGS},
               "feature_extractor": feature_description, "epochs": []}
    monitor = QualityMonitor(real_images, feature_extractor, config.output_dir, history, seed=config.seed,
                             log=log if config.verbose else None)
    model.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        verbose=progress_verbosity(config.verbose),
        shuffle=False,  # make_dataset shuffles
        callbacks=[monitor,
                   keras.callbacks.TensorBoard(os.path.join(config.output_dir, "tensorboard"), write_graph=False)],
    )
    export_generator(model.generator, generator_path(config))
    return history


def summary_line(history, config):
    """One line: the Fréchet distance of the untrained and the final generator, and where it went."""
    first, last = history["epochs"][0], history["epochs"][-1]
    return (f"frechet_distance {first['frechet_distance']:.4f} (epoch 0) -> {last['frechet_distance']:.4f} "
            f"(epoch {last['epoch']}); generator exported to {generator_path(config)}")
