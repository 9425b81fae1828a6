r"""Evaluate a trained DIM encoder with the measures of Hjelm et al., ICLR 2019, section 4.1 (Tables 1, 2, 4).

    python apps/evaluate.py --encoder=runs/digits/encoder --dataset=digits \
        --output=runs/digits/evaluation.json --neighbours_png=runs/digits/neighbours.png

The train and test splits are encoded once (conv, fc and Y features); then every chosen measure runs on
the features:
  svm              linear SVM, hinge loss, --runs seeds, mean ± std (Table 4)          every layer
  logistic         logistic regression                                                  every layer
  mlp              one hidden layer of 200 units + dropout, test accuracy averaged     every layer
                   over the last epochs (Tables 1, 2)
  knn              k-nearest neighbours, L1                                             every layer
  attributes       CelebA: per-attribute linear accuracy, mean (min-max) (Fig. 11)      every layer
  semi_supervised  fine-tune encoder + 200-unit head (Table 2 "SS"; --encoder must be a .keras file)
  ms_ssim          MS-SSIM of a DCGAN decoder trained with L2 to reconstruct x from Y (Table 4)
  mine             MINE estimate of I(X; Y), DV bound on the test split (Table 4)
  ndm              neural dependency measure of Y (Table 4, App. A.6)
  neighbours       App. A.4 figure: one training query per class and its 4 nearest test images (L1 on Y)

--encoder is a SavedModel directory from dim_keras.export.export_encoder (serving_default: uint8 images
"images" -> dict of conv/fc/y/local), or a .keras file of the encoder (float images in [0, 1] -> dict),
which also allows semi_supervised.  Images larger than the encoder's input are center-cropped to it
(STL-10: 96x96 -> 64x64, as in dim_keras.data.dataset_defaults).

Prints a Markdown table (rows: measures, columns: conv, fc, Y) and writes the results as JSON to --output.
Bad input prints one line on stderr and exits with code 2.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from dim_keras import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("encoder", None, "SavedModel directory of the encoder (dim_keras.export), or a .keras file.")
flags.DEFINE_string("dataset", "digits", "Dataset name for dim_keras.data.load_split (digits, cifar10, ...).")
flags.DEFINE_string("data_dir", None, "Directory holding the dataset files (None: the dataset's default).")
flags.DEFINE_string("metrics", "", "Comma-separated measures: svm, logistic, mlp, knn, attributes, semi_supervised, "
                    "ms_ssim, mine, ndm, neighbours (default: all that apply to the data and flags).")
flags.DEFINE_string("layers", "conv,fc,y", "Comma-separated encoder outputs for the classifiers.")
flags.DEFINE_string("output", None, "JSON file for the results (written atomically).")
flags.DEFINE_string("neighbours_png", None, "PNG file for the nearest-neighbour figure (enables 'neighbours').")
flags.DEFINE_integer("runs", 5, "SVM runs (seeds) averaged, as in Table 4.")
flags.DEFINE_integer("seed", 0, "Random seed of every measure and of the --max_train/--max_test subsets.")
flags.DEFINE_integer("max_train", None, "Use at most this many training images (random subset), for quick runs.")
flags.DEFINE_integer("max_test", None, "Use at most this many test images (random subset), for quick runs.")
flags.DEFINE_integer("batch_size", 256, "Images per encoder call while encoding.")
flags.DEFINE_integer("mlp_epochs", 100, "Epochs of the 200-unit classifier ('mlp').")
flags.DEFINE_integer("mlp_last_epochs", 10, "The 'mlp' accuracy is the mean test accuracy of these last epochs.")
flags.DEFINE_integer("estimator_epochs", 20, "Training epochs of the MINE and NDM statistics networks.")
flags.DEFINE_integer("decoder_epochs", 20, "Training epochs of the MS-SSIM decoder.")
flags.DEFINE_integer("finetune_epochs", 20, "Training epochs of semi_supervised fine-tuning.")
flags.DEFINE_integer("verbose", 1, "0: quiet; 1: progress bar over the measures; 2: also inside each measure.")


class UsageError(ValueError):
    """A user mistake: reported as one line on stderr with exit code 2."""


def _check_flags():
    if not FLAGS.encoder:
        raise UsageError("--encoder is required (a SavedModel directory or a .keras file)")
    if not os.path.exists(FLAGS.encoder):
        raise UsageError(f"--encoder={FLAGS.encoder} does not exist")
    for name in ("runs", "batch_size", "mlp_epochs", "mlp_last_epochs", "estimator_epochs",
                 "decoder_epochs", "finetune_epochs"):
        if getattr(FLAGS, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    for name in ("max_train", "max_test"):
        # k-NN (k=5) and the figure (4 neighbours) need a few images per split.
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 10:
            raise UsageError(f"--{name} must be >= 10, got {getattr(FLAGS, name)}")
    if FLAGS.verbose not in (0, 1, 2):
        raise UsageError(f"--verbose must be 0, 1 or 2, got {FLAGS.verbose}")
    for name in ("output", "neighbours_png"):
        path = getattr(FLAGS, name)
        if path is not None and os.path.isdir(path):
            raise UsageError(f"--{name}={path} is a directory, not a file")


def _load_encoder(path):
    """(uint8 encoder_fn, trainable keras encoder or None, input (H, W))."""
    import keras
    import numpy as np

    if path.endswith(".keras"):
        import dim_keras.models  # noqa: F401  registers DeepInfoMax and its critics for loading

        try:
            model = keras.saving.load_model(path)
        except Exception as error:  # a corrupt or foreign file is a user mistake here
            raise UsageError(f"--encoder={path}: cannot load the keras model ({type(error).__name__})") from None
        # A whole DeepInfoMax model (train.py's model.keras) carries its encoder.
        model = getattr(model, "encoder", None) or model

        def encoder_fn(images):
            return model(np.asarray(images, np.float32) / 255.0, training=False)

        return encoder_fn, model, tuple(model.input_shape[1:3])
    if not os.path.isdir(path):
        raise UsageError(f"--encoder={path} is neither a SavedModel directory nor a .keras file")
    from dim_keras.export import load_encoder

    try:
        encoder = load_encoder(path, batch_size=FLAGS.batch_size)
    except (ValueError, KeyError, OSError) as error:
        raise UsageError(f"--encoder={path}: {str(error).splitlines()[0]}") from None
    return encoder, None, tuple(encoder.input_shape[:2])


def _subset(split, limit, seed):
    import numpy as np

    if limit is None or limit >= len(split.images):
        return split.images, split.labels
    chosen = np.sort(np.random.default_rng(seed).choice(len(split.images), size=limit, replace=False))
    return split.images[chosen], None if split.labels is None else split.labels[chosen]


def _fit_to_encoder(images, size, what):
    """Center-crops images larger than the encoder's input; smaller ones are a user mistake."""
    height, width = images.shape[1:3]
    target_h = height if size[0] is None else int(size[0])
    target_w = width if size[1] is None else int(size[1])
    if (height, width) == (target_h, target_w):
        return images
    if height < target_h or width < target_w:
        raise UsageError(f"{what} images are {height}x{width}, smaller than the encoder's {target_h}x{target_w} input")
    top, left = (height - target_h) // 2, (width - target_w) // 2
    return images[:, top:top + target_h, left:left + target_w]


def evaluate():
    _check_flags()
    from dim_keras.data import DataError, load_split
    from dim_keras.evaluation import FeatureSet, evaluate_representation, markdown_table, write_json
    from dim_keras.evaluation.suite import resolve_metrics

    from dim_keras.evaluation.suite import parse_metrics

    layers = [name.strip() for name in FLAGS.layers.split(",") if name.strip()]
    if not layers:
        raise UsageError("--layers is empty")
    if FLAGS.metrics:
        try:
            parse_metrics(FLAGS.metrics)  # names first: before any loading
        except ValueError as error:
            raise UsageError(f"--metrics: {error}") from None
    try:
        train, test = (load_split(FLAGS.dataset, split, FLAGS.data_dir) for split in ("train", "test"))
    except DataError as error:
        raise UsageError(str(error)) from None
    label_kind = None if train.labels is None else ("attributes" if train.labels.ndim == 2 else "class")
    encoder_fn, encoder_model, input_size = _load_encoder(FLAGS.encoder)
    try:
        metrics = resolve_metrics(FLAGS.metrics or None, label_kind=label_kind, has_images=True,
                                  has_encoder_model=encoder_model is not None,
                                  has_neighbours_png=FLAGS.neighbours_png is not None)
    except ValueError as error:
        hint = " (pass a .keras encoder)" if "trainable keras encoder" in str(error) else ""
        hint += " (pass --neighbours_png)" if "neighbours_png" in str(error) else ""
        raise UsageError(f"--metrics: {error}{hint}") from None
    train_images, train_labels = _subset(train, FLAGS.max_train, FLAGS.seed)
    test_images, test_labels = _subset(test, FLAGS.max_test, FLAGS.seed + 1)
    train_images = _fit_to_encoder(train_images, input_size, "training")
    test_images = _fit_to_encoder(test_images, input_size, "test")
    names = tuple(dict.fromkeys(layers + ["y"]))
    try:
        feature_set = FeatureSet.from_encoder(
            encoder_fn, train_images, test_images, train_labels, test_labels, FLAGS.batch_size,
            names=names, class_names=train.class_names, verbose=FLAGS.verbose)
    except ValueError as error:
        raise UsageError(f"--encoder={FLAGS.encoder}: {str(error).splitlines()[0]}") from None
    options = {
        "mlp": {"epochs": FLAGS.mlp_epochs, "last_epochs": min(FLAGS.mlp_last_epochs, FLAGS.mlp_epochs)},
        "mine": {"epochs": FLAGS.estimator_epochs},
        "ndm": {"epochs": FLAGS.estimator_epochs},
        "ms_ssim": {"epochs": FLAGS.decoder_epochs},
        "semi_supervised": {"epochs": FLAGS.finetune_epochs,
                            "last_epochs": min(FLAGS.mlp_last_epochs, FLAGS.finetune_epochs)},
    }
    results = evaluate_representation(
        feature_set, metrics=metrics, layers=layers, runs=FLAGS.runs, seed=FLAGS.seed,
        encoder_model=encoder_model, neighbours_png=FLAGS.neighbours_png,
        options={m: o for m, o in options.items() if m in metrics}, verbose=FLAGS.verbose)
    results = {"dataset": FLAGS.dataset, "encoder": os.path.abspath(FLAGS.encoder), **results}
    print(markdown_table(results), end="")
    if FLAGS.output:
        write_json(results, FLAGS.output)
        print(f"results written to {FLAGS.output}")
    return results


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        evaluate()
    except UsageError as error:
        _fail(str(error))


def _fail(message):
    cli.fail("evaluate.py", message)


if __name__ == "__main__":
    cli.run(main, "evaluate.py")
