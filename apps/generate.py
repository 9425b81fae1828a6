"""Train an image generator by implicit prior matching to two Gaussians (Hjelm et al., ICLR 2019, App. A.8-A.9),
or one of the Table 11 baselines (NS-GAN-CP, WGAN-GP), and track its quality offline.

    python apps/generate.py --dataset=digits --model=implicit --architecture=dcgan --epochs=10 \
        --output_dir=runs/generate_digits

Writes to --output_dir:
  samples/epoch_NNN.png     an 8x8 grid of samples from a fixed z after every epoch (epoch_000: untrained G)
  histograms/epoch_NNN.png  histograms of the encoder's 1-D output on real vs generated images (as Fig. 15),
                            with the targets N(mu_P, 1) and N(mu_Q, 1) of the implicit generator drawn in
  metrics.json              per epoch: the training metrics, the Frechet and kernel (KID) distances between
                            features of real and generated images, and the overlap of E's two modes
  tensorboard/              the same numbers for TensorBoard (train/ and quality/)
  generator/                SavedModel: serving_default takes z float32 [N, z_dim], returns {"images": uint8}

The distances use the features of --feature_encoder (a DIM encoder SavedModel from dim_keras.export) when
given; otherwise a fixed random-init conv net (dim_keras.generation.quality.build_random_feature_extractor, seed
0 in every run so that runs stay comparable). Neither is Inception: the numbers are not comparable to published
FID/KID values, only to each other within one feature space.

Bad input prints one line on stderr and exits with code 2.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from dim_keras import cli  # noqa: E402

MODELS = ("implicit", "nsgan_cp", "wgan_gp")
ARCHITECTURES = ("dcgan", "resnet")

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "Dataset name for dim_keras.data.load_split (e.g. digits, cifar10).")
flags.DEFINE_string("data_dir", None, "Directory holding the dataset files (None: the dataset's default).")
flags.DEFINE_enum("model", "implicit", MODELS, "implicit (App. A.8), nsgan_cp or wgan_gp (Table 11 baselines).")
flags.DEFINE_enum("architecture", "dcgan", ARCHITECTURES, "dcgan (images of side <= 32) or resnet (Gulrajani).")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps_per_epoch", None, "Generator updates per epoch (default: one pass over the data).")
flags.DEFINE_integer("z_dim", 128, "Dimension of the generator's Gaussian input z.")
flags.DEFINE_integer("base_filters", None, "Width of the networks (default 64 for dcgan, 128 for resnet).")
flags.DEFINE_float("mu_p", 1.0, "Mean of the encoder's target N(mu_P, 1) for real images (eq. 13).")
flags.DEFINE_float("mu_q", -3.0, "Mean of the encoder's target N(mu_Q, 1) for generated images (eq. 13).")
flags.DEFINE_float("contractive_penalty", 1.0, "Weight of ||dE/dx||^2 on real images (implicit, nsgan_cp).")
flags.DEFINE_float("discriminator_clipnorm", 1.0, "Gradient-norm clipping of T_P and T_Q (implicit; App. A.9).")
flags.DEFINE_integer("encoder_steps", None,
                     "Encoder/critic updates per generator update (default: 2 implicit, 1 nsgan_cp, 5 wgan_gp).")
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate of every player (beta_1 = 0.5, as in DIM).")
flags.DEFINE_integer("num_eval_samples", 1000, "Real and generated images for the distances and histograms.")
flags.DEFINE_string("feature_encoder", None, "SavedModel dir of a DIM encoder whose features the distances use.")
flags.DEFINE_string("feature_name", "fc", "Output of --feature_encoder to use (local, conv, fc or y).")
flags.DEFINE_string("output_dir", "runs/generate", "Where samples, histograms, metrics and the generator go.")
flags.DEFINE_integer("seed", 0, "Random seed (weights, z, data order).")
flags.DEFINE_bool("jit_compile", True, "Compile the train step with XLA.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (0, 1 or 2).")

GRID_SIDE = 8


class UsageError(ValueError):
    """A user mistake: reported as one line on stderr with exit code 2."""


def _validate_flags():
    if FLAGS.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {FLAGS.epochs}")
    if FLAGS.batch_size < 2:
        raise UsageError(f"--batch_size must be >= 2, got {FLAGS.batch_size}")
    if FLAGS.steps_per_epoch is not None and FLAGS.steps_per_epoch < 1:
        raise UsageError(f"--steps_per_epoch must be >= 1, got {FLAGS.steps_per_epoch}")
    if FLAGS.z_dim < 1:
        raise UsageError(f"--z_dim must be >= 1, got {FLAGS.z_dim}")
    if FLAGS.base_filters is not None and FLAGS.base_filters < 1:
        raise UsageError(f"--base_filters must be >= 1, got {FLAGS.base_filters}")
    if FLAGS.mu_p == FLAGS.mu_q:
        raise UsageError("--mu_p and --mu_q must differ")
    if FLAGS.contractive_penalty < 0:
        raise UsageError(f"--contractive_penalty must be >= 0, got {FLAGS.contractive_penalty}")
    if FLAGS.discriminator_clipnorm <= 0:
        raise UsageError(f"--discriminator_clipnorm must be > 0, got {FLAGS.discriminator_clipnorm}")
    if FLAGS.encoder_steps is not None and FLAGS.encoder_steps < 1:
        raise UsageError(f"--encoder_steps must be >= 1, got {FLAGS.encoder_steps}")
    if FLAGS.learning_rate <= 0:
        raise UsageError(f"--learning_rate must be > 0, got {FLAGS.learning_rate}")
    if FLAGS.num_eval_samples < 2:
        raise UsageError(f"--num_eval_samples must be >= 2, got {FLAGS.num_eval_samples}")
    if FLAGS.verbose not in (0, 1, 2):
        raise UsageError(f"--verbose must be 0, 1 or 2, got {FLAGS.verbose}")
    if FLAGS.feature_encoder is not None and not os.path.isdir(FLAGS.feature_encoder):
        raise UsageError(f"--feature_encoder={FLAGS.feature_encoder} is not a directory")
    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise UsageError(f"--output_dir={FLAGS.output_dir} exists and is not a directory")


def _adam(learning_rate, **kwargs):
    import keras

    # beta_1 = 0.5: the DIM authors' framework default (REFERENCE-NOTES), also Gulrajani et al.'s for the GANs.
    return keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999, **kwargs)


def build_model(image_shape):
    """The generative model chosen by the flags, compiled."""
    from dim_keras.generation import NSGANCP, WGANGP, ImplicitPriorGenerator, build_networks
    from dim_keras.generation.networks import build_scalar_discriminator

    try:
        generator, encoder = build_networks(
            FLAGS.architecture, image_shape, z_dim=FLAGS.z_dim, base_filters=FLAGS.base_filters
        )
    except ValueError as error:
        raise UsageError(f"--architecture={FLAGS.architecture} does not fit {FLAGS.dataset} images: {error}")
    steps = {} if FLAGS.encoder_steps is None else {"encoder_steps": FLAGS.encoder_steps}
    lr = FLAGS.learning_rate
    if FLAGS.model == "implicit":
        model = ImplicitPriorGenerator(
            generator,
            encoder,
            build_scalar_discriminator(name="prior_discriminator_p"),
            build_scalar_discriminator(name="prior_discriminator_q"),
            mu_p=FLAGS.mu_p,
            mu_q=FLAGS.mu_q,
            contractive_penalty_weight=FLAGS.contractive_penalty,
            seed=FLAGS.seed,
            **steps,
        )
        model.compile(
            generator_optimizer=_adam(lr),
            encoder_optimizer=_adam(lr),
            discriminator_optimizer=_adam(lr, clipnorm=FLAGS.discriminator_clipnorm),
            jit_compile=FLAGS.jit_compile,
        )
    elif FLAGS.model == "nsgan_cp":
        model = NSGANCP(
            generator, encoder, contractive_penalty_weight=FLAGS.contractive_penalty, seed=FLAGS.seed, **steps
        )
        model.compile(generator_optimizer=_adam(lr), encoder_optimizer=_adam(lr), jit_compile=FLAGS.jit_compile)
    else:
        model = WGANGP(generator, encoder, seed=FLAGS.seed, **steps)
        model.compile(generator_optimizer=_adam(lr), encoder_optimizer=_adam(lr), jit_compile=FLAGS.jit_compile)
    return model


def image_grid(images, side=GRID_SIDE, padding=2):
    """Tiles uint8 images [side*side, H, W, C] into one uint8 picture with a white ``padding``-pixel border."""
    import numpy as np

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
    import numpy as np

    outputs = [network(inputs[start:start + batch_size], training=False).numpy()
               for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0)


def _to_uint8(images):
    import numpy as np

    return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def _save_png(path, picture):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if picture.shape[-1] == 1:
        picture = picture[..., 0]
    Image.fromarray(picture).save(path)


def _save_histogram(path, encoded_real, encoded_fake, epoch, targets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3.5))
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
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _write_json(path, payload):
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(temporary, path)


def make_quality_callback(model, real_images, feature_extractor, feature_description, output_dir, config):
    """A Keras callback that, before training (epoch 0) and after every epoch, saves the sample grid and the
    histogram of E's outputs, computes the Fréchet and kernel distances and the mode overlap, and appends them
    with the epoch's training metrics to metrics.json and TensorBoard."""
    import keras
    import numpy as np
    import tensorflow as tf

    from dim_keras.generation import quality

    real_features = quality.compute_features(feature_extractor, real_images)
    real_float = real_images.astype(np.float32) / 255.0
    fixed_z = np.random.default_rng(config["seed"]).standard_normal((len(real_images), model.z_dim))
    fixed_z = fixed_z.astype(np.float32)
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard", "quality"))
    targets = (model.mu_p, model.mu_q) if hasattr(model, "mu_p") else ()
    history = {"config": config, "feature_extractor": feature_description, "epochs": []}

    class QualityCallback(keras.callbacks.Callback):
        def _evaluate(self, epoch, logs):
            generated = _to_uint8(_apply(model.generator, fixed_z))
            _save_png(os.path.join(output_dir, "samples", f"epoch_{epoch:03d}.png"),
                      image_grid(generated[:GRID_SIDE * GRID_SIDE]))
            fake_features = quality.compute_features(feature_extractor, generated)
            frechet = quality.frechet_distance(real_features, fake_features)
            kid_mean, kid_std = quality.kernel_distance(real_features, fake_features, subset_size=500)
            encoded_real = _apply(model.encoder, real_float).reshape(-1)
            encoded_fake = _apply(model.encoder, generated.astype(np.float32) / 255.0).reshape(-1)
            overlap = quality.mode_overlap(encoded_real, encoded_fake)
            _save_histogram(os.path.join(output_dir, "histograms", f"epoch_{epoch:03d}.png"),
                            encoded_real, encoded_fake, epoch, targets)
            record = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()},
                      "frechet_distance": frechet, "kernel_distance": kid_mean, "kernel_distance_std": kid_std,
                      "encoder_mode_overlap": overlap}
            history["epochs"].append(record)
            _write_json(os.path.join(output_dir, "metrics.json"), history)
            with writer.as_default(step=epoch):
                tf.summary.scalar("frechet_distance", frechet)
                tf.summary.scalar("kernel_distance", kid_mean)
                tf.summary.scalar("encoder_mode_bhattacharyya", overlap["bhattacharyya"])
                tf.summary.histogram("encoded_real", encoded_real)
                tf.summary.histogram("encoded_generated", encoded_fake)
                tf.summary.image("samples", image_grid(generated[:GRID_SIDE * GRID_SIDE])[None], max_outputs=1)
            writer.flush()
            return record

        def on_train_begin(self, logs=None):
            self._evaluate(0, {})

        def on_epoch_end(self, epoch, logs=None):
            record = self._evaluate(epoch + 1, logs)
            if config["verbose"]:
                print(f"epoch {epoch + 1}: frechet_distance={record['frechet_distance']:.4f} "
                      f"kernel_distance={record['kernel_distance']:.5f} "
                      f"mode_overlap={record['encoder_mode_overlap']['bhattacharyya']:.3f}", flush=True)

    return QualityCallback(), history


def train():
    """Runs the whole pipeline for the parsed flags and returns the metrics history."""
    _validate_flags()  # before the slow imports, so that bad flags fail at once

    import keras
    import numpy as np

    from dim_keras.data import DataError, load_split, make_dataset
    from dim_keras.generation import quality
    from dim_keras.generation.export import export_generator

    try:
        split = load_split(FLAGS.dataset, "train", data_dir=FLAGS.data_dir)
    except DataError as error:
        raise UsageError(str(error)) from None
    if len(split.images) < FLAGS.batch_size:
        raise UsageError(f"--batch_size={FLAGS.batch_size} exceeds the {len(split.images)} training images")
    keras.utils.set_random_seed(FLAGS.seed)
    image_shape = split.images.shape[1:]

    if FLAGS.feature_encoder is not None:
        try:
            feature_extractor = quality.encoder_feature_extractor(FLAGS.feature_encoder, FLAGS.feature_name)
            feature_extractor(split.images[:2])  # fails here, not mid-training, on a shape or output mismatch
        except (OSError, ValueError) as error:
            raise UsageError(f"--feature_encoder={FLAGS.feature_encoder}: {error}") from None
        feature_description = f"DIM encoder {FLAGS.feature_encoder} ({FLAGS.feature_name})"
    else:
        feature_extractor = quality.build_random_feature_extractor(image_shape, seed=0)
        feature_description = "fixed random-init conv net (build_random_feature_extractor, seed 0)"

    model = build_model(image_shape)
    dataset = make_dataset(split.images, batch_size=FLAGS.batch_size, training=True, seed=FLAGS.seed)
    if FLAGS.steps_per_epoch is not None:
        dataset = dataset.repeat()

    eval_order = np.random.default_rng(FLAGS.seed).permutation(len(split.images))
    real_images = split.images[eval_order[:FLAGS.num_eval_samples]]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    config = {name: FLAGS[name].value for name in (
        "dataset", "model", "architecture", "epochs", "batch_size", "steps_per_epoch", "z_dim", "base_filters",
        "mu_p", "mu_q", "contractive_penalty", "discriminator_clipnorm", "encoder_steps", "learning_rate",
        "num_eval_samples", "seed", "verbose")}
    quality_callback, history = make_quality_callback(
        model, real_images, feature_extractor, feature_description, FLAGS.output_dir, config)
    model.fit(
        dataset,
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch,
        verbose=FLAGS.verbose,
        callbacks=[
            quality_callback,
            keras.callbacks.TensorBoard(os.path.join(FLAGS.output_dir, "tensorboard"), write_graph=False),
        ],
    )
    export_path = export_generator(model.generator, os.path.join(FLAGS.output_dir, "generator"))
    first, last = history["epochs"][0], history["epochs"][-1]
    print(f"frechet_distance {first['frechet_distance']:.4f} (epoch 0) -> {last['frechet_distance']:.4f} "
          f"(epoch {last['epoch']}); generator exported to {export_path}", flush=True)
    return history


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        train()
    except UsageError as error:
        _fail(str(error))


def _fail(message):
    cli.fail("generate.py", message)


if __name__ == "__main__":
    cli.run(main, "generate.py")
