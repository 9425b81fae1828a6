"""Train Deep InfoMax and export the encoder.

    python apps/train.py                       # DIM(L) on scikit-learn's digits
    python apps/train.py --dataset=stl10 --data_dir=/data
    python apps/train.py --flagfile=run.flags

Writes to --output_dir (default saved_models/<dataset>-<objective>-<time>):
checkpoints/ (every epoch; --resume continues), logs/ (TensorBoard),
metrics.json, config.json, encoder/ (SavedModel: uint8 images -> features),
model.keras, probe.json (labelled datasets).
"""

import os
import sys

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags, logging  # noqa: E402

from dim_keras import cli  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "digits", "Dataset: digits (scikit-learn's, offline; default), cifar10, "
                    "cifar100, stl10, tiny_imagenet, celeb_a, or folder (class-per-subfolder images in --data_dir).")
flags.DEFINE_string("data_dir", None, "Directory with the dataset's official files (cifar-10-batches-py, "
                    "cifar-10-python.tar.gz, cifar-100-python, stl10_binary, tiny-imagenet-200, "
                    "img_align_celeba + list_attr_celeba.txt) or a prepared tfds data_dir.")
flags.DEFINE_boolean("download", False, "Let tensorflow-datasets download the dataset if it is not on disk.")
flags.DEFINE_float("alpha", 0.0, "Weight of the global MI term (eq. 8). DIM(L): 0, DIM(G): 1.")
flags.DEFINE_float("beta", 1.0, "Weight of the local MI term (eq. 8). DIM(L): 1, DIM(G): 0.")
flags.DEFINE_float("gamma", 0.1, "Weight of the prior-matching term (eq. 8). DIM(L): 0.1, DIM(G): 1.")
flags.DEFINE_string("estimator", "jsd", "MI estimator: jsd (eq. 4), dv (eq. 2), infonce (eq. 5) or nwj.")
flags.DEFINE_string("local_critic", "dot", "Local critic: dot (encode-and-dot, Tables 8-9), concat "
                    "(concat-and-convolve, Table 7), bilinear or separable.")
flags.DEFINE_string("prior", "uniform", "Prior for Y: uniform (paper), gaussian, unit_ball or unit_sphere.")
flags.DEFINE_string("encoder", "auto", "Encoder: auto (by image size), small (8-28 px), dcgan (32x32, "
                    "Table 1) or alexnet (64x64, Table 2).")
flags.DEFINE_integer("embedding_dim", 2048, "Width of the encode-and-dot critic's embedding (2048 in the paper).")
flags.DEFINE_integer("y_dim", 64, "Size of the representation Y (64 in the paper).")
flags.DEFINE_integer("local_samples", None, "Score only this many random locations of the local map per "
                     "step (bounds the B x B x M^2 score tensor of infoNCE).")
flags.DEFINE_integer("epochs", None, "Epochs (default: 1000 for CIFAR, 200 for the other datasets as in "
                     "the paper, 5 for digits).")
flags.DEFINE_integer("batch_size", 64, "Global batch size (64 in the paper).")
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate (1e-4, betas 0.5/0.999 as the authors).")
flags.DEFINE_integer("seed", 0, "Random seed: weights, shuffling, augmentation, prior samples.")
flags.DEFINE_string("mixed_precision", "off", "Mixed precision: off, float16 or bfloat16 (GPU only; "
                    "slower on CPU). Losses stay float32.")
flags.DEFINE_boolean("jit_compile", True, "Compile the training step with XLA.")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on the steps per epoch (for quick runs).")
flags.DEFINE_string("output_dir", None, "Where to write checkpoints, logs and the export "
                    "(default saved_models/<dataset>-<objective>-<timestamp>).")
flags.DEFINE_boolean("resume", False, "Continue the run in --output_dir from its last checkpoint.")
flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default (one device), mirrored "
                    "(all local GPUs) or multi_worker (from TF_CONFIG).")
flags.DEFINE_boolean("synchronized_bn", False, "Batch-norm statistics over all replicas.")
flags.DEFINE_boolean("probe", True, "After training, print a linear probe table (labelled datasets).")
flags.DEFINE_integer("probe_max_train", 10000, "Training examples used by the linear probe.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")


def fail(message, code=2):
    cli.fail("train.py", message, code)



def config_from_flags():
    from dim_keras.config import TrainConfig
    names = [f.name for f in __import__("dataclasses").fields(TrainConfig)]
    return TrainConfig(**{name: FLAGS[name].value for name in names})


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)
    from dim_keras import config as config_lib
    config = config_from_flags()
    try:
        config_lib.validate(config)  # before TensorFlow starts
    except config_lib.UsageError as err:
        fail(str(err))
    from dim_keras import training
    try:
        training.train(config)
    except training.UsageError as err:
        fail(str(err))
    except training.TrainingDiverged as err:
        fail(str(err), code=1)
    except OSError as err:
        training.cleanup_failed_export(config.output_dir)
        fail(f"{err.filename or config.output_dir}: {err.strerror or err}")


if __name__ == "__main__":
    cli.run(main, "train.py")
