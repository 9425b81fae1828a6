"""Every setting of every dim_keras run, declared once (no TensorFlow import).

Each run is described by a dataclass whose fields carry their help text,
choices, ranges and path kind in ``metadata``.  From that one declaration

- :mod:`dim_keras.cli` generates the command-line flags of the apps,
- :func:`validate` checks a config in one pass, before TensorFlow starts,
- ``config.json`` of a run and the ablation's search space are written.

Cross-field rules live in each dataclass's ``check`` method, which
:func:`validate` calls after the per-field checks.  Nested configs (the
ablation holds a :class:`TrainConfig` for its trials) are validated and
turned into flags recursively.
"""

import dataclasses
import datetime
import json
import math
import os
import typing

from dim_keras import choices
from dim_keras import io
from dim_keras.errors import UsageError

# The paper trains 1000 epochs on CIFAR and 200 on the other datasets (App. A.2);
# the digits default keeps the Quickstart within minutes on a laptop CPU.
DEFAULT_EPOCHS = {"cifar10": 1000, "cifar100": 1000, "digits": 5}
PAPER_EPOCHS = 200

# --recipe: the settings a training recipe bundles (dim_keras.runs.train applies them; docs/RESULTS.md has the
# measurements behind every entry).
#   global_layer_norm: layer norm on the critic's Y embedding (the authors' code; Table 8 lists none).
#   score_scale / score_penalty / score_clip: AMDIM's score stabilisers (scores / sqrt(embedding width),
#     0.05 * mean(s^2), 20 * tanh(s / 20)); the scale multiplies the scores of every critic of the model.
#   pad_crop_flip: the standard CIFAR augmentation (reflect-pad 4, random crop back, random flip) for datasets
#     the paper trains without augmentation; datasets with the paper's own crops (STL-10) keep those.
#   colour_jitter: SimCLR/AMDIM's colour distortion after the crop and flip (dim_keras.data.make_dataset).
#   views: 1, or 2 for AMDIM's two views: Y from one augmented view of an image, the local features from
#     another, independently augmented one (DeepInfoMax's docstring).
#   estimator: the default --estimator: JSD for paper (the paper's DIM(L) runs, Sec. 4), infoNCE for improved
#     (the paper's own best estimator on CIFAR, Table 1, and AMDIM's).
#   learning_rate, lr_schedule: the default --learning_rate, constant or cosine-decayed to 0 over the run.
#   layer_defaults: keras (glorot kernels, BN momentum 0.99 / eps 1e-3) or torch (the authors' step runs with
#     torch's: kaiming-uniform, BN 0.9 / 1e-5; dim_keras.initializers).
# A recipe's score_scale that means 1 / sqrt(--embedding_dim), AMDIM's scale for encode-and-dot scores.
INVERSE_SQRT_WIDTH = "1/sqrt(embedding_dim)"
# The flags of TrainConfig that override a recipe key of the same name (--augment maps to pad_crop_flip and
# colour_jitter).
RECIPE_FLAGS = ("estimator", "global_layer_norm", "score_scale", "score_penalty", "score_clip", "lr_schedule",
                "layer_defaults", "views")
RECIPES = {
    "paper": {"estimator": "jsd", "global_layer_norm": True, "score_scale": 1.0, "score_penalty": 0.0, "score_clip": None,
              "pad_crop_flip": False, "colour_jitter": False, "views": 1, "learning_rate": 1e-4,
              "lr_schedule": "constant", "layer_defaults": "torch"},
    "improved": {"estimator": "infonce", "global_layer_norm": True, "score_scale": INVERSE_SQRT_WIDTH, "score_penalty": 0.05,
                 "score_clip": 20.0, "pad_crop_flip": True, "colour_jitter": False, "views": 1,
                 "learning_rate": 5e-4, "lr_schedule": "cosine",
                 "layer_defaults": "keras"},
}
PROBE_FEATURES = ("y", "fc", "conv")
# --monitor_every's default ("auto"): monitor every this many epochs on datasets with class labels; off on the
# datasets below, whose labels are not classes (celeb_a: 40 binary attributes), as the monitor's k-NN and linear
# probes need classes.  One measurement (1,000 train + 980 test cifar10-dev images) took 5.6-9.8 s against
# 132-155 s of training per epoch on the busy 2-core CPU (digits: 3.2-4.5 s against 51-59 s): 4-8 % when
# monitoring every epoch, under 2 % every 5th, which leaves room for accelerators, where training is faster
# and the probes (scikit-learn, on the CPU) are not.
DEFAULT_MONITOR_EVERY = 5
# Datasets whose pretraining has augmentation of its own (STL-10's random crops and flips, Sec. 4), so that
# --views=2 needs no --augment there; TFRecords have their source's (runs.train.augmentation checks them).
DATASETS_WITH_OWN_AUGMENTATION = ("stl10", "tfrecord")
WITHOUT_CLASS_LABELS = ("celeb_a",)

# Path kinds of a field's ``path`` metadata and the check each gets.
_PATH_CHECKS = {
    "input_dir": io.check_input_dir,
    "input": io.check_input_path,
    "output_dir": io.check_output_dir,
    "output_file": io.check_output_file,
}


def setting(default, help, *, choices=None, minimum=None, maximum=None, above=None, below=None,
            path=None, element=None, min_items=None, flag=True):
    """A dataclass field with its help text and constraints.

    Args:
        default: the default value (tuples for lists).
        help: the flag's help text.
        choices: allowed values (of each element, for tuples).
        minimum, maximum: inclusive numeric bounds (of each element, for tuples).
        above, below: exclusive numeric bounds.
        path: ``input_dir``, ``input``, ``output_dir`` or ``output_file``: checked to exist / be writable.
        element: element type of a tuple field (``float``, ``int`` or ``str``); the flag is a comma list.
        min_items: least number of elements of a tuple field.
        flag: False keeps the field out of the command line (library-only setting).
    """
    metadata = dict(help=help, choices=choices, minimum=minimum, maximum=maximum, above=above, below=below,
                    path=path, element=element, min_items=min_items, flag=flag)
    return dataclasses.field(default=default, metadata=metadata)


def refuse_repeated_values(config, *names):
    """UsageError for the first of ``config``'s list settings ``names`` that lists a value twice."""
    for name in names:
        values = getattr(config, name)
        if len(set(values)) != len(values):
            raise UsageError(f"--{name} lists a value twice: {','.join(map(str, values))}")


def two_views_without_augmentation(dataset):
    """The UsageError of ``--views=2`` on ``dataset`` without augmentation: TrainConfig.check refuses it for
    datasets known to have none, the training run for TFRecords whose source had none."""
    return UsageError(f"--views=2 needs augmentation, or its two views are the same image: {dataset} has none "
                      "of its own, so pass --augment=pad_crop_flip or pad_crop_flip_colour")


def nested(config_cls, help, *, only=None, exclude=(), **defaults):
    """A field holding another config; its flags are those of ``config_cls``
    (all, or ``only`` these, minus ``exclude``), with ``defaults`` overridden."""
    metadata = dict(help=help, nested=config_cls, only=only, exclude=tuple(exclude), defaults=defaults)
    return dataclasses.field(default_factory=lambda: config_cls(**defaults), metadata=metadata)


def _describe(value):
    return repr(value) if isinstance(value, str) else str(value)


def _check_value(name, value, meta):
    """Per-field checks of one (scalar) value."""
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        allowed = ", ".join(map(str, meta["choices"]))
        raise UsageError(f"--{name}: unknown value {_describe(value)}; choose one of {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name} must be a finite number, got {value}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise UsageError(f"--{name} must be >= {meta['minimum']}, got {value}")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise UsageError(f"--{name} must be <= {meta['maximum']}, got {value}")
        if meta.get("above") is not None and not value > meta["above"]:
            raise UsageError(f"--{name} must be > {meta['above']}, got {value}")
        if meta.get("below") is not None and not value < meta["below"]:
            raise UsageError(f"--{name} must be < {meta['below']}, got {value}")


def validate(config):
    """Raises :class:`UsageError` (one line) for the first bad setting of ``config``.

    Checks every field against its metadata (choices, ranges, finiteness,
    paths), recursing into nested configs, then the config's ``check``.
    Needs no TensorFlow: apps call it before TensorFlow is imported.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        meta = field.metadata
        if "nested" in meta:
            validate(value)
            continue
        if meta.get("element") is not None:
            values = tuple(value or ())
            if meta.get("min_items") is not None and len(values) < meta["min_items"]:
                raise UsageError(f"--{field.name} needs at least {meta['min_items']} value(s), "
                                 f"got {','.join(map(str, values)) or 'none'}")
            for item in values:
                _check_value(field.name, item, meta)
        else:
            _check_value(field.name, value, meta)
        if meta.get("path") and value is not None:
            _PATH_CHECKS[meta["path"]](value, f"--{field.name}")
    check = getattr(config, "check", None)
    if check is not None:
        check()
    return config


def to_dict(config):
    """The config as JSON-ready nested dicts (tuples become lists)."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def from_dict(config_cls, payload):
    """Inverse of :func:`to_dict`; unknown keys are a UsageError."""
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise UsageError(f"unknown {config_cls.__name__} settings: {', '.join(unknown)}")
    values = {}
    for name, value in payload.items():
        meta = known[name].metadata
        if "nested" in meta:
            value = from_dict(meta["nested"], value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return config_cls(**values)


# ===================================================================== train
@dataclasses.dataclass
class TrainConfig:
    """A DIM training run (``apps/train.py``, ``dim_keras.runs.train``); defaults are the paper's DIM(L)."""
    dataset: str = setting("digits", "Dataset: digits (scikit-learn's, offline), cifar10, cifar100, stl10, "
                           "tiny_imagenet, celeb_a, mnist, folder (class-per-subfolder images in --data_dir), or "
                           "tfrecord (the shards apps/prepare_data.py wrote to --data_dir).",
                           choices=choices.DATASETS)
    data_dir: str = setting(None, "Directory with the dataset's official files (cifar-10-batches-py, "
                            "cifar-10-python.tar.gz, cifar-100-python, stl10_binary, tiny-imagenet-200, "
                            "img_align_celeba + list_attr_celeba.txt, MNIST's *-idx*-ubyte[.gz]) or a prepared "
                            "tfds data_dir.",
                            path="input_dir")
    download: bool = setting(False, "Let tensorflow-datasets download the dataset if it is not on disk.")
    streaming: str = setting("auto", "Read the data from disk while training (folder, tfrecord and tfds data) "
                             "instead of holding it in memory: auto streams splits above "
                             f"{choices.STREAMING_AUTO_BYTES / 2**30:g} GiB decoded "
                             "(dim_keras.choices.STREAMING_AUTO_BYTES), on always, off never.",
                             choices=choices.STREAMING_MODES)
    strict: bool = setting(False, "Stop at the first image file that cannot be read, instead of skipping "
                           "unreadable files (counted, and the first few named, at the end).")
    method: str = setting("dim", "What to train: dim (Deep InfoMax, eq. 8); cpc (Contrastive Predictive Coding "
                          "on the encoder's local grid, DIM Sec. 4.2 / Table 3's baseline, dim_keras.cpc: a row GRU "
                          "summary predicts the local features 1, 2 and 3 rows below in each column with infoNCE "
                          "and encode-and-dot critics; use --encoder=folded for the paper's 7x7 grid); or one of "
                          "the comparison models of DIM's Tables 1, 2 and 4 and MIM (dim_keras.baselines): mim "
                          "(Mutual Information Machine, A-MIM), vae, beta_vae (--vae_beta), ae, aae (adversarial "
                          "auto-encoder), bigan (with a deterministic encoder), nat (Noise As Targets, "
                          "--nat_reassign_every). Every method refuses DIM's objective flags (--alpha, --beta, "
                          "--gamma, --prior, --estimator, ...); the encoder, data, optimizer and run flags apply to "
                          "all, and every method exports the same encoder signature (Y: the latent mean of the "
                          "probabilistic ones).",
                          choices=choices.METHODS)
    alpha: float = setting(0.0, "Weight of the global MI term (eq. 8). DIM(L): 0, DIM(G): 1.", minimum=0.0)
    beta: float = setting(1.0, "Weight of the local MI term (eq. 8). DIM(L): 1, DIM(G): 0.", minimum=0.0)
    gamma: float = setting(0.1, "Weight of the prior-matching term (eq. 8). DIM(L): 0.1, DIM(G): 1.", minimum=0.0)
    estimator: str = setting(None, "MI estimator: jsd (eq. 4), dv (eq. 2), infonce (eq. 5) or nwj (default: the "
                             "recipe's: jsd for paper, infonce for improved).", choices=choices.ESTIMATORS)
    local_critic: str = setting("dot", "Local critic: dot (encode-and-dot, Tables 8-9), concat "
                                "(concat-and-convolve, Table 7), bilinear or separable.", choices=choices.CRITICS)
    prior: str = setting("uniform", "Prior for Y: uniform (paper), gaussian, unit_ball or unit_sphere.",
                         choices=choices.PRIORS)
    prior_gradient_penalty: float = setting(
        0.0, "Gradient penalty on the prior discriminator's inputs (the authors' code has one; the paper "
        "does not mention it, so it is off).", minimum=0.0)
    recipe: str = setting("paper", "Training recipe: paper (faithful to the paper and to the authors' code, "
                          "whose layer norm on the critic's Y embedding it keeps) or improved (what later work "
                          "found to help at equal epochs: infoNCE, augmentation, AMDIM's score stabilisers, a "
                          "cosine learning-rate decay; docs/RESULTS.md).", choices=choices.RECIPES)
    # The recipe's knobs, each a flag of its own (default None: the recipe's value, RECIPES).
    global_layer_norm: bool = setting(None, "Layer norm on the critic's Y embedding, as the authors' code has "
                                      "(Table 8 lists none; default: the recipe's, on for both).")
    score_scale: float = setting(None, "Multiply every critic score by this (default: the recipe's: 1 for "
                                 "paper, 1/sqrt(--embedding_dim) as AMDIM for improved).", above=0.0)
    score_penalty: float = setting(None, "Weight of AMDIM's mean(score^2) penalty (default: the recipe's: 0 for "
                                   "paper, 0.05 for improved).", minimum=0.0)
    score_clip: float = setting(None, "Soft-clip scores to c * tanh(s / c); 0 = off (default: the recipe's: off "
                                "for paper, 20 as AMDIM for improved).", minimum=0.0)
    augment: str = setting(None, "Training augmentation where the dataset has none of the paper's: none, "
                           "pad_crop_flip (reflect-pad 1/8 of the side, random crop, random flip) or "
                           "pad_crop_flip_colour (then SimCLR's colour distortion: brightness, contrast, saturation, "
                           "grey; default: the recipe's: none for paper, pad_crop_flip for improved).",
                           choices=choices.AUGMENTATIONS)
    views: int = setting(None, "2: AMDIM's two views, Y from one augmented copy of each image and the local "
                         "features from another, independently augmented one (needs augmentation); 1: one view "
                         "(default: the recipe's: 1).", choices=(1, 2))
    lr_schedule: str = setting(None, "Learning-rate schedule: constant or cosine (decay to 0 over the run; "
                               "default: the recipe's: constant for paper, cosine for improved).",
                               choices=choices.LR_SCHEDULES)
    layer_defaults: str = setting(None, "Initialisation and normalisation defaults of every layer: keras "
                                  "(glorot-uniform, zero biases, BN momentum 0.99, eps 1e-3) or torch (what the "
                                  "authors' step runs with: kernels and biases U(+-1/sqrt(fan_in)), BN momentum "
                                  "0.9, eps 1e-5; default: the recipe's: torch for paper, keras for improved).",
                                  choices=choices.LAYER_DEFAULTS)
    encoder: str = setting("auto", "Encoder: auto (by image size), small (8-28 px), dcgan (32x32, Table 1), "
                           "alexnet (64x64, Table 2), folded (strided crops, Sec. 4.2 / Table 3: 7x7 crops of 1/4 "
                           "of the side at a stride of 1/8, each through --crop_encoder; sides multiples of 8, "
                           ">= 32), resnet18 or resnet50 (CIFAR-sized stem).", choices=choices.ENCODERS)
    crop_encoder: str = setting("conv", "--encoder=folded only: the network shared by every crop: conv (a small "
                                "conv net), resnet18 or resnet50 (Table 3's CIFAR-10 runs used a ResNet-50).",
                                choices=choices.CROP_ENCODERS)
    image_size: int = setting(None, "--dataset=folder only: resize every image to this square side (default: "
                              "the images' own size, which must then be the same for all of them).", minimum=8)
    embedding_dim: int = setting(2048, "Width of the encode-and-dot critic's embedding (2048 in the paper).",
                                 minimum=1)
    y_dim: int = setting(64, "Size of the representation Y (64 in the paper).", minimum=1)
    local_samples: int = setting(None, "Score only this many random locations of the local map per step "
                                 "(bounds the B x B x M^2 score tensor of infoNCE; default all).", minimum=1)
    negatives: int = setting(None, "Negative images per positive (DIM App. A.3, Fig. 9): each global feature is "
                             "contrasted with the local features, at all locations, of only this many other "
                             "images of its batch, drawn at random per step (default, or >= --batch_size - 1: all "
                             "B - 1 others).", minimum=1)
    occlusion: bool = setting(False, "Compute Y from an occluded copy of each image while the local features "
                              "see the full image (DIM Sec. 4.3, App. A.7): one random rectangle per image, "
                              "leaving a 10x10 block (per 32 pixels of side) visible and one occluded.")
    coordinate_prediction: str = setting("none", "Auxiliary coordinate prediction (DIM Sec. 4.3, App. A.7): "
                                         "absolute (the (i, j) of a local feature from Y and it), relative "
                                         "(i - i', j - j' from Y and two local features) or both (Table 5).",
                                         choices=choices.COORDINATE_TASKS)
    coordinate_weight: float = setting(1.0, "Weight of the coordinate-prediction cross-entropy in the encoder's "
                                       "loss (the paper gives none).", minimum=0.0)
    num_globals: int = setting(0, "Multiple globals (DIM Sec. 4.2, Table 3): this many less-global features, "
                               "each from a random 3x3 block of the local feature grid (7x7 with "
                               "--encoder=folded) through one shared network, each scored against all local "
                               "features by the one local critic; 0: the single global Y. Needs --beta > 0 and a "
                               "local grid of at least 3x3.", minimum=0)
    vae_beta: float = setting(4.0, "--method=beta_vae: the weight of the ELBO's KL term (Higgins et al. 2017, "
                              "beta > 1 trades reconstruction for a factorised code; --method=vae is beta = 1).",
                              above=0.0)
    nat_reassign_every: int = setting(3, "--method=nat: re-assign the noise targets within each batch (Hungarian "
                                      "algorithm) every this many epochs; between them the assignment is kept "
                                      "(Bojanowski & Joulin 2017).", minimum=1)
    epochs: int = setting(None, "Epochs (default: 1000 for CIFAR, 200 for the other datasets as in the paper, "
                          "5 for digits).", minimum=1)
    batch_size: int = setting(64, "Global batch size (64 in the paper); >= 2, since the negatives of an "
                              "image come from the other images of its batch.", minimum=2)
    learning_rate: float = setting(None, "Adam learning rate, betas 0.5/0.999 as the authors (default: the "
                                   "recipe's: 1e-4 for paper, as the paper; 5e-4 with a cosine decay to 0 for "
                                   "improved).", above=0.0)
    seed: int = setting(0, "Random seed: weights, shuffling, augmentation, prior samples.")
    mixed_precision: str = setting("off", "Mixed precision: off, float16 or bfloat16 (GPU only; slower on "
                                   "CPU). Losses stay float32.", choices=choices.PRECISIONS)
    jit_compile: bool = setting(True, "Compile the training step with XLA (TensorFlow backend; off under "
                                "mirrored/multi_worker). The JAX backend always jit-compiles its step.")
    steps_per_epoch: int = setting(None, "Cap on the steps per epoch (for quick runs).", minimum=1)
    output_dir: str = setting(None, "Where to write checkpoints, logs and the export "
                              "(default saved_models/<dataset>-<objective>-<timestamp>).", path="output_dir")
    resume: bool = setting(False, "Continue the run in --output_dir from its last checkpoint.")
    strategy: str = setting("default", "tf.distribute strategy: default (one device), mirrored (all local "
                            "GPUs) or multi_worker (from TF_CONFIG). On the JAX backend: default (one device) or "
                            "mirrored (keras.distribution.DataParallel over all local devices); no multi_worker.",
                            choices=choices.STRATEGIES)
    synchronized_bn: bool = setting(False, "Batch-norm statistics over all replicas.")
    probe: bool = setting(True, "After training, print a linear probe table (labelled datasets).")
    probe_max_train: int = setting(10000, "Training examples used by the linear probe.", minimum=10)
    probe_c: str = setting("1", "Inverse L2 strength C of the final linear probe's logistic regression: a positive "
                           "number, or cv to choose it from 1e-4, 1e-3, 1e-2, 1e-1, 1 by stratified 5-fold "
                           "cross-validation on the probe's training features (about 26x the fits; the C of "
                           "each feature is kept in probe.json).")
    monitor_every: int = setting(
        None, "Every this many epochs and after the last, add the test accuracy of conv, fc and y under the "
        "linear probe (logistic regression on standardised features) and a k-NN (k=20, L1), on a "
        "class-balanced labelled subsample (--monitor_examples), with the encoder in inference mode, to the "
        "epoch's metrics (progress bar, TensorBoard, metrics.json: probe_linear_*, probe_knn_*); 0: off. "
        f"Default: {DEFAULT_MONITOR_EVERY} on datasets with class labels, off otherwise.", minimum=0)
    monitor_examples: int = setting(
        1000, "Labelled images the monitor trains its probes on, and as many it tests them on (the first "
        "of each class in the train and test splits the linear probe uses).", minimum=10)
    keep_checkpoints: int = setting(1, "Epoch checkpoints kept in <output_dir>/checkpoints (the newest; "
                                    "each holds the weights and the optimizers' state).", minimum=1)
    keras_optimizer_state: bool = setting(False, "Also store the optimizers' state in model.keras (about "
                                          "3x its size; the checkpoints already hold it for --resume).")
    verbose: int = setting(1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
                           choices=(0, 1, 2))

    # What a resumed run may change: how long, where and how it runs.  Every other setting defines the
    # model, the data or the objective, and a resumed run keeps the one in its config.json.  (mixed_precision
    # only between off and bfloat16: float16's optimizers hold other state, see check_resumable.)
    RESUMABLE: typing.ClassVar[tuple] = (
        "data_dir", "download", "epochs", "steps_per_epoch", "output_dir", "resume", "jit_compile", "strategy",
        "synchronized_bn", "mixed_precision", "probe", "probe_max_train", "verbose", "keep_checkpoints",
        "keras_optimizer_state", "monitor_every", "monitor_examples", "streaming", "strict")

    # DIM objective settings that --method=cpc has no use for (dim_keras.cpc): refused there unless at their
    # defaults, so that no one believes they shaped a CPC run.
    DIM_ONLY_SETTINGS: typing.ClassVar[tuple] = (
        "alpha", "beta", "gamma", "prior", "prior_gradient_penalty", "local_critic", "local_samples", "negatives",
        "occlusion", "coordinate_prediction", "coordinate_weight", "num_globals", "score_penalty", "score_clip",
        "views")

    # Settings of one method only: refused with any other unless at their defaults.
    METHOD_SETTINGS: typing.ClassVar[dict] = {"vae_beta": ("beta_vae",), "nat_reassign_every": ("nat",)}

    def _check_method(self):
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        for name, methods in self.METHOD_SETTINGS.items():
            if self.method not in methods and getattr(self, name) != defaults[name]:
                raise UsageError(f"--{name} is a setting of --method={'/'.join(methods)} and --method={self.method} "
                                 f"has no use for it: drop --{name}")
        if self.method == "dim":
            return
        objective = ("CPC's objective is fixed: infoNCE over 3 row offsets" if self.method == "cpc"
                     else f"--method={self.method} has its own objective, dim_keras.baselines")
        for name in self.DIM_ONLY_SETTINGS:
            if getattr(self, name) != defaults[name]:
                raise UsageError(f"--{name} is a setting of DIM's objective and --method={self.method} has no use "
                                 f"for it: drop --{name} ({objective})")
        if self.method == "cpc" and self.estimator not in (defaults["estimator"], "infonce"):
            raise UsageError(f"--estimator={self.estimator}: --method=cpc scores its predictions with infoNCE "
                             "(DIM Sec. 4.2): drop --estimator")
        if self.method != "cpc" and self.estimator != defaults["estimator"]:
            raise UsageError(f"--estimator={self.estimator} is a setting of DIM's objective and "
                             f"--method={self.method} has no use for it: drop --estimator")
        if self.method != "cpc":  # the critics' settings: the baselines have no critic
            for name in ("embedding_dim", "score_scale", "global_layer_norm"):
                if getattr(self, name) != defaults[name]:
                    raise UsageError(f"--{name} is a setting of DIM's and CPC's critics and --method={self.method} "
                                     f"has none: drop --{name}")
            if self.method == "nat" and self.strategy != "default":
                raise UsageError(f"--strategy={self.strategy}: --method=nat re-assigns its targets on the host for "
                                 "one device's batch and trains on one device: drop --strategy")

    def check(self):
        self._check_method()
        self.resolved_probe_c()
        if self.method == "nat" and self.streaming == "on":
            raise UsageError("--method=nat keeps one noise target per training image and indexes them in memory: "
                             "drop --streaming=on")
        if self.alpha == 0 and self.beta == 0:
            raise UsageError("--alpha and --beta are both 0: there is no mutual information term to maximise")
        if self.num_globals and self.beta == 0:
            raise UsageError("--num_globals needs the local MI term (--beta > 0): the less-global features are "
                             "scored against the local features")
        recipe = self.recipe_settings()
        if (recipe["views"] == 2 and self.method == "dim" and not recipe["pad_crop_flip"]
                and self.dataset not in DATASETS_WITH_OWN_AUGMENTATION):
            raise two_views_without_augmentation(self.dataset)
        if self.crop_encoder != "conv" and self.encoder != "folded":
            raise UsageError(f"--crop_encoder={self.crop_encoder} applies to --encoder=folded only")
        if self.resume and not self.output_dir:
            raise UsageError("--resume needs the --output_dir of the run to resume")
        has_run = bool(self.output_dir) and os.path.exists(os.path.join(self.output_dir, "checkpoints", "checkpoint"))
        if self.resume and not has_run:
            raise UsageError(f"--resume: {self.output_dir} holds no run to resume (no checkpoints/checkpoint)")
        if not self.resume and has_run:
            raise UsageError(f"{self.output_dir} already holds a run; pass --resume to continue it or choose "
                             "another --output_dir")
        if self.dataset == "folder" and not self.data_dir:
            raise UsageError("--dataset=folder needs --data_dir (a folder of <class>/<image> files)")
        if self.dataset == "tfrecord" and not self.data_dir:
            raise UsageError("--dataset=tfrecord needs --data_dir (the --output of apps/prepare_data.py)")
        if self.image_size is not None and self.dataset != "folder":
            raise UsageError(f"--image_size applies to --dataset=folder only; {self.dataset} is used at its own "
                             "size")
        if self.monitor_every and self.dataset in WITHOUT_CLASS_LABELS:
            raise UsageError(f"--monitor_every needs class labels and {self.dataset} has none (its labels are "
                             "attributes): drop --monitor_every or pass --monitor_every=0")

    def from_command_line(self, explicit):
        """What a command line means (``explicit``: the names of the flags it gives): with ``--resume``,
        the run's saved settings with those flags on top (:func:`resume_config`)."""
        return resume_config(self, explicit)

    def objective_name(self):
        if self.method != "dim":
            return self.method
        return (f"{self.resolved_estimator()}-a{self.alpha:g}-b{self.beta:g}-g{self.gamma:g}"
                f"-{self.local_critic}")

    def resolved_probe_c(self):
        """``--probe_c`` as the probe takes it: a positive float, or ``"cv"``; UsageError (one line) otherwise."""
        if str(self.probe_c).strip().lower() == "cv":
            return "cv"
        try:
            value = float(self.probe_c)
        except (TypeError, ValueError):
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise UsageError(f"--probe_c must be a positive number or cv, got {self.probe_c!r}")
        return value

    def resolved_epochs(self):
        return self.epochs or DEFAULT_EPOCHS.get(self.dataset, PAPER_EPOCHS)

    def resolved_monitor_every(self):
        """``--monitor_every``, its default ("auto", None) resolved: on for datasets with class labels."""
        if self.monitor_every is not None:
            return self.monitor_every
        return 0 if self.dataset in WITHOUT_CLASS_LABELS else DEFAULT_MONITOR_EVERY

    def recipe_settings(self):
        """The recipe's knobs (:data:`RECIPES`) with the ones given as flags on top."""
        settings = dict(RECIPES[self.recipe])
        for name in RECIPE_FLAGS:
            if getattr(self, name) is not None:
                settings[name] = getattr(self, name)
        if self.augment is not None:
            settings["pad_crop_flip"] = self.augment != "none"
            settings["colour_jitter"] = self.augment == "pad_crop_flip_colour"
        if settings["score_clip"] == 0:
            settings["score_clip"] = None
        if settings["score_scale"] == INVERSE_SQRT_WIDTH:
            settings["score_scale"] = self.embedding_dim ** -0.5
        return settings

    def spelled_out(self):
        """This config with every setting that defaults to its recipe's (the knobs, ``--estimator``,
        ``--learning_rate``, ``--augment``) set to the value it resolves to: the same run, described without
        reference to what the recipes hold today.  Records of finished runs store this, so that a later change
        of a recipe's default cannot make an old run look like a new one."""
        recipe = self.recipe_settings()
        augment = "none"
        if recipe["pad_crop_flip"]:
            augment = "pad_crop_flip_colour" if recipe["colour_jitter"] else "pad_crop_flip"
        return dataclasses.replace(
            self, estimator=recipe["estimator"], learning_rate=self.resolved_learning_rate(), augment=augment,
            global_layer_norm=recipe["global_layer_norm"], score_scale=recipe["score_scale"],
            score_penalty=recipe["score_penalty"], score_clip=recipe["score_clip"] or 0.0,
            lr_schedule=recipe["lr_schedule"], layer_defaults=recipe["layer_defaults"], views=recipe["views"])

    def resolved_estimator(self):
        """``--estimator``, or the recipe's when not given."""
        return self.recipe_settings()["estimator"]

    def resolved_learning_rate(self):
        """``--learning_rate``, or the recipe's when not given."""
        return self.learning_rate or RECIPES[self.recipe]["learning_rate"]

    def default_output_dir(self):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return os.path.join("saved_models", f"{self.dataset}-{self.objective_name()}-{stamp}")


RUN_CONFIG = "config.json"


def load_run_config(output_dir, flag="--resume"):
    """``(TrainConfig, record)`` of the run in ``output_dir``: its settings and the rest of its config.json
    (``resolved``: what "auto" settings became; ``history``: one entry per start).  A missing or unreadable
    file is a UsageError naming ``flag``."""
    path = os.path.join(output_dir, RUN_CONFIG)
    try:
        with open(path) as handle:
            record = json.load(handle)
        settings = {k: v for k, v in record.items() if k not in ("resolved", "history")}
        if "recipe" not in settings:  # a run from before --recipe: no layer norm on Y, Keras's layer defaults
            settings.setdefault("global_layer_norm", False)
            settings.setdefault("layer_defaults", "keras")
        return from_dict(TrainConfig, settings), record
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"{flag}: cannot read {path} ({error})") from None


def _meaning(config, name):
    """What setting ``name`` of ``config`` means: a recipe knob or the learning rate left at None is the
    recipe's value, and a data directory is the same directory however it is spelled."""
    if name == "learning_rate":
        return config.resolved_learning_rate()
    if name in RECIPE_FLAGS:
        return config.recipe_settings()[name]
    if name == "augment":
        return config.recipe_settings()["pad_crop_flip"], config.recipe_settings()["colour_jitter"]
    value = getattr(config, name)
    if name == "data_dir" and value:
        return os.path.realpath(value)
    return value


def changed_settings(saved, config):
    """``{name: (saved value, new value)}`` for every setting of ``config`` that means something else than
    in ``saved`` (:func:`_meaning`: ``--learning_rate=None`` under the paper recipe is its 1e-4)."""
    return {f.name: (getattr(saved, f.name), getattr(config, f.name)) for f in dataclasses.fields(TrainConfig)
            if _meaning(saved, f.name) != _meaning(config, f.name)}


def finished_record(path, filename, settings, what="run"):
    """The JSON record ``path/filename`` of a finished run (``compare_quality``'s arms, ``negatives_sweep``'s
    points) when it was made with ``settings``, its ``"settings"`` entry, with ``reused`` set; None when
    there is none.  Settings are compared by what they mean (:func:`_meaning`; a TrainConfig setting missing
    from one side is at its default, so a record written before the setting existed still matches); keys
    that are not TrainConfig settings compare as they are.  UsageError (one line) when the record cannot be
    read or was made with other settings."""
    record_path = os.path.join(path, filename)
    if not os.path.exists(record_path):
        return None
    try:
        with open(record_path) as handle:
            record = json.load(handle)
        saved = record.get("settings", {})
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        configs = [from_dict(TrainConfig, {k: v for k, v in side.items() if k in fields})
                   for side in (saved, settings)]
    except (OSError, ValueError, TypeError, UsageError) as error:
        raise UsageError(f"cannot read {record_path} ({error}): remove it to rerun that {what}") from None

    def meaning(side, config, name):
        return _meaning(config, name) if name in fields else side.get(name)

    changed = sorted(name for name in set(saved) | set(settings)
                     if meaning(saved, configs[0], name) != meaning(settings, configs[1], name))
    if changed:
        raise UsageError(f"{path} holds a finished {what} with other settings ({', '.join(changed)}): choose "
                         "another --output_dir")
    return dict(record, reused=True)


def check_resumable(saved, config):
    """Raises UsageError (one line) if ``config`` changes a setting that defines ``saved``'s model or objective."""
    for name, (old, new) in changed_settings(saved, config).items():
        if name in ("epochs", "steps_per_epoch") and saved.recipe_settings()["lr_schedule"] == "cosine":
            raise UsageError(f"--{name}={new} differs from the run's {name}={old} ({RUN_CONFIG}), and its cosine "
                             f"learning-rate decay is laid out over the run's epochs x steps: drop --{name} or "
                             "start a new --output_dir")
        if name == "mixed_precision" and "float16" in (old, new):
            # Under float16 Keras wraps each optimizer in a LossScaleOptimizer, whose state (the loss scale and
            # its step counter) the other precisions' optimizers do not have: the checkpoint cannot be restored.
            raise UsageError(f"--mixed_precision={new} differs from the run's mixed_precision={old} ({RUN_CONFIG}), "
                             "and float16's optimizers keep a loss scale the other precisions' do not: resume "
                             f"with mixed_precision={old}, switch only between off and bfloat16, or start a new "
                             "--output_dir")
        if name not in TrainConfig.RESUMABLE:
            raise UsageError(f"--{name}={new} differs from the run's {name}={old} ({RUN_CONFIG}); a resumed run keeps "
                             f"what defines its model, data and objective: drop --{name} or start a new --output_dir")


def resume_config(config, explicit):
    """The config a ``--resume`` command line means: the run's saved settings, with the flags given
    explicitly (``explicit``: their names) applied on top; changing a setting that is not
    ``TrainConfig.RESUMABLE`` is a UsageError.  ``config`` is returned unchanged when it does not resume
    (or there is no run to resume: :meth:`TrainConfig.check` reports that)."""
    if not config.resume or not config.output_dir or not os.path.exists(os.path.join(config.output_dir, RUN_CONFIG)):
        return config
    saved, _ = load_run_config(config.output_dir)
    merged = dataclasses.replace(saved, **{name: getattr(config, name) for name in explicit
                                           if hasattr(saved, name)})
    merged.resume, merged.output_dir = True, config.output_dir
    check_resumable(saved, merged)
    return merged


# ================================================================ generate
@dataclasses.dataclass
class GenerateConfig:
    """Generator training (``apps/generate.py``, ``dim_keras.runs.generate``): App. A.8 and Table 11."""
    dataset: str = setting("digits", "Dataset (see apps/train.py).", choices=choices.DATASETS)
    data_dir: str = setting(None, "Directory holding the dataset files.", path="input_dir")
    image_size: int = setting(None, "--dataset=folder only: resize every image to this square side (default: "
                              "the images' own size, which must then be the same for all of them).", minimum=8)
    model: str = setting("implicit", "implicit (App. A.8), nsgan_cp or wgan_gp (Table 11 baselines).",
                         choices=choices.GENERATIVE_MODELS)
    architecture: str = setting("dcgan", "dcgan (images of side <= 32) or resnet (Gulrajani et al.).",
                                choices=choices.GENERATOR_ARCHITECTURES)
    epochs: int = setting(10, "Training epochs.", minimum=1)
    batch_size: int = setting(64, "Batch size.", minimum=2)
    steps_per_epoch: int = setting(None, "Generator updates per epoch (default: one pass over the data).",
                                   minimum=1)
    z_dim: int = setting(128, "Dimension of the generator's Gaussian input z.", minimum=1)
    base_filters: int = setting(None, "Width of the networks (default 64 for dcgan, 128 for resnet).", minimum=1)
    mu_p: float = setting(1.0, "Mean of the encoder's target N(mu_P, 1) for real images (eq. 13).")
    mu_q: float = setting(-3.0, "Mean of the encoder's target N(mu_Q, 1) for generated images (eq. 13).")
    contractive_penalty: float = setting(1.0, "Weight of ||dE/dx||^2 on real images (implicit, nsgan_cp).",
                                         minimum=0.0)
    discriminator_clipnorm: float = setting(1.0, "Gradient-norm clipping of T_P and T_Q (implicit; App. A.9).",
                                            above=0.0)
    encoder_steps: int = setting(None, "Encoder/critic updates per generator update (default: 2 implicit, "
                                 "1 nsgan_cp, 5 wgan_gp).", minimum=1)
    learning_rate: float = setting(1e-4, "Adam learning rate of every player (beta_1 = 0.5, as in DIM).",
                                   above=0.0)
    num_eval_samples: int = setting(1000, "Real and generated images for the distances and histograms.",
                                    minimum=2)
    feature_encoder: str = setting(None, "SavedModel dir of a DIM encoder whose features the distances use "
                                   "(default: a fixed random-init conv net).", path="input_dir")
    feature_name: str = setting("fc", "Output of --feature_encoder to use.", choices=choices.ENCODER_OUTPUTS)
    output_dir: str = setting(None, "Where samples, histograms, metrics and the generator go (default "
                              "saved_models/generate-<model>-<timestamp>).", path="output_dir")
    seed: int = setting(0, "Random seed (weights, z, data order).")
    jit_compile: bool = setting(True, "Compile the train step with XLA.")
    verbose: int = setting(2, "Keras fit verbosity (0, 1 or 2).", choices=(0, 1, 2))

    def check(self):
        if self.mu_p == self.mu_q:
            raise UsageError("--mu_p and --mu_q must differ")
        if self.dataset == "folder" and not self.data_dir:
            raise UsageError("--dataset=folder needs --data_dir (a folder of <class>/<image> files)")
        if self.image_size is not None and self.dataset != "folder":
            raise UsageError(f"--image_size applies to --dataset=folder only; {self.dataset} is used at its own "
                             "size")
        if self.feature_encoder is not None and not any(
                os.path.isfile(os.path.join(self.feature_encoder, name))
                for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise UsageError(f"--feature_encoder={self.feature_encoder} is not a SavedModel directory "
                             "(no saved_model.pb); export the encoder with dim_keras.export")

    def default_output_dir(self):
        """``saved_models/generate-<model>-<timestamp>``: next to the training runs (TrainConfig's)."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return os.path.join("saved_models", f"generate-{self.model}-{stamp}")


# ================================================================ evaluate
@dataclasses.dataclass
class EvaluateConfig:
    """Evaluation of a trained encoder (``apps/evaluate.py``, ``dim_keras.runs.evaluate``), Sec. 4.1."""
    encoder: str = setting(None, "SavedModel directory of the encoder (dim_keras.export), or a .keras file "
                           "(required).", path="input")
    dataset: str = setting("digits", "Dataset (see apps/train.py).", choices=choices.DATASETS)
    data_dir: str = setting(None, "Directory holding the dataset files.", path="input_dir")
    streaming: str = setting("auto", "Read folder, tfrecord and tfds data from disk while encoding, keeping only "
                             "features (on), or load it into memory (off); auto streams a split whose evaluated "
                             "images (after --max_train/--max_test) are over "
                             f"{choices.STREAMING_AUTO_BYTES / 2**30:g} GiB decoded and loads smaller ones, "
                             "whatever the measures.  The measures that need the images in memory (ms_ssim, mine, "
                             "neighbours, semi_supervised) are left out of streamed data (refused if asked for).",
                             choices=choices.STREAMING_MODES)
    metrics: tuple = setting((), "Comma-separated measures (default: all that apply to the data and flags).",
                             element=str, choices=choices.METRICS)
    layers: tuple = setting(("conv", "fc", "y"), "Comma-separated encoder outputs for the classifiers.",
                            element=str, choices=choices.ENCODER_OUTPUTS, min_items=1)
    output: str = setting(None, "JSON file for the results (written atomically).", path="output_file")
    neighbours_png: str = setting(None, "PNG file for the nearest-neighbour figure (enables 'neighbours').",
                                  path="output_file")
    runs: int = setting(5, "SVM runs (seeds) averaged, as in Table 4.", minimum=1)
    seed: int = setting(0, "Random seed of every measure and of the --max_train/--max_test subsets.")
    # k-NN (k=5) and the figure (4 neighbours) need a few images per split.
    max_train: int = setting(None, "Use at most this many training images (random subset).", minimum=10)
    max_test: int = setting(None, "Use at most this many test images (random subset).", minimum=10)
    batch_size: int = setting(256, "Images per encoder call while encoding.", minimum=1)
    mlp_epochs: int = setting(100, "Epochs of the 200-unit classifier ('mlp').", minimum=1)
    mlp_last_epochs: int = setting(10, "The 'mlp' accuracy is the mean test accuracy of these last epochs.",
                                   minimum=1)
    estimator_epochs: int = setting(20, "Training epochs of the MINE and NDM statistics networks.", minimum=1)
    decoder_epochs: int = setting(20, "Training epochs of the MS-SSIM decoder.", minimum=1)
    finetune_epochs: int = setting(20, "Training epochs of semi_supervised fine-tuning.", minimum=1)
    verbose: int = setting(1, "0: quiet; 1: progress bar over the measures; 2: also inside each measure.",
                           choices=(0, 1, 2))

    def check(self):
        if not self.encoder:
            raise UsageError("--encoder is required (a SavedModel directory or a .keras file)")
        if not self.encoder.endswith(".keras"):
            if not os.path.isdir(self.encoder):
                raise UsageError(f"--encoder={self.encoder} is neither a SavedModel directory nor a .keras file")
            if not any(os.path.isfile(os.path.join(self.encoder, name))
                       for name in ("saved_model.pb", "saved_model.pbtxt")):
                raise UsageError(f"--encoder={self.encoder} holds no SavedModel (saved_model.pb); pass the "
                                 "encoder/ directory of a training run, or a .keras file")
        refuse_repeated_values(self, "metrics", "layers")
        # The train and test splits of celeb_a carry 40 binary attributes; those of the others, classes.
        attributes = self.dataset == "celeb_a"
        for metric in self.metrics:
            if metric == "attributes" and not attributes:
                raise UsageError(f"--metrics=attributes needs attribute labels (celeb_a); {self.dataset} has "
                                 "classes")
            if metric in choices.LAYER_METRICS + ("semi_supervised",) and metric != "attributes" and attributes:
                raise UsageError(f"--metrics={metric} needs class labels; celeb_a has attributes (use "
                                 "--metrics=attributes)")
        if "semi_supervised" in self.metrics and not self.encoder.endswith(".keras"):
            raise UsageError("--metrics=semi_supervised fine-tunes the encoder: pass a .keras --encoder")
        if "neighbours" in self.metrics and not self.neighbours_png:
            raise UsageError("--metrics=neighbours needs --neighbours_png")
        if self.output and self.neighbours_png and (os.path.abspath(self.output)
                                                    == os.path.abspath(self.neighbours_png)):
            raise UsageError("--output and --neighbours_png name the same file")


# ================================================================ compare
# The Table 1 / Table 4 columns (linear probe, SVM, MS-SSIM, MINE, NDM) that apps/compare.py measures by default.
COMPARE_METRICS = ("logistic", "svm", "ms_ssim", "mine", "ndm")


@dataclasses.dataclass
class CompareConfig:
    """Several trained runs side by side (``apps/compare.py``, ``dim_keras.runs.compare``): the measures of
    ``apps/evaluate.py`` for each run's exported encoder on the same images, one row per run (the shape of the
    DIM paper's Tables 1 and 4), plus MIM's code measures (``dim_keras.evaluation.latents``)."""
    run_dirs: tuple = setting((), "Comma-separated training run directories (the --output_dir of apps/train.py, "
                              "with config.json, encoder/ and model.keras), one row each (required).", element=str)
    labels: tuple = setting((), "Comma-separated row labels, one per run (default: each run's --method, numbered "
                            "when repeated).", element=str)
    dataset: str = setting(None, "Dataset to measure on (default: the runs' own, which must then agree).",
                           choices=choices.DATASETS)
    data_dir: str = setting(None, "Directory holding the dataset files (default: the runs' own when --dataset "
                            "is theirs).", path="input_dir")
    metrics: tuple = setting(COMPARE_METRICS, "Comma-separated measures of apps/evaluate.py per run.",
                             element=str, choices=choices.LAYER_METRICS + ("ms_ssim", "mine", "ndm"))
    layers: tuple = setting(("conv", "fc", "y"), "Comma-separated encoder outputs for the classifiers.",
                            element=str, choices=choices.ENCODER_OUTPUTS, min_items=1)
    latent_measures: bool = setting(True, "Also the code measures of MIM's claims: active units of Y (Burda et "
                                    "al. 2016, variance of the posterior mean over test images > 0.01; for the "
                                    "methods with a Gaussian posterior and N(0, I) prior: vae, beta_vae, mim) and "
                                    "the reconstruction MSE of the methods with a decoder.")
    latent_png: str = setting(None, "PNG of the test images' Y on its first two principal components, one panel "
                              "per run, coloured by class.", path="output_file")
    output: str = setting(None, "JSON file for every run's results (written atomically).", path="output_file")
    svm_runs: int = setting(5, "SVM runs (seeds) averaged, as in Table 4.", minimum=1)
    seed: int = setting(0, "Random seed of every measure and of the --max_train/--max_test subsets.")
    max_train: int = setting(None, "Use at most this many training images (random subset).", minimum=10)
    max_test: int = setting(None, "Use at most this many test images (random subset).", minimum=10)
    batch_size: int = setting(256, "Images per encoder call while encoding.", minimum=1)
    estimator_epochs: int = setting(20, "Training epochs of the MINE and NDM statistics networks.", minimum=1)
    decoder_epochs: int = setting(20, "Training epochs of the MS-SSIM decoder.", minimum=1)
    verbose: int = setting(1, "0: only the table; 1: one line per run.", choices=(0, 1))

    def run_settings(self):
        """``[(label, run_dir, TrainConfig)]`` of ``--run_dirs``, in order (UsageError for a directory that
        holds no finished training run)."""
        runs = []
        for run_dir in self.run_dirs:
            if not os.path.isdir(run_dir):
                raise UsageError(f"--run_dirs: {run_dir} is not a directory")
            settings, _ = load_run_config(run_dir, flag="--run_dirs")
            if not os.path.isfile(os.path.join(run_dir, "encoder", "saved_model.pb")):
                raise UsageError(f"--run_dirs: {run_dir} has no exported encoder (encoder/saved_model.pb): is the "
                                 "run finished?")
            if self.latent_measures and not os.path.isfile(os.path.join(run_dir, "model.keras")):
                raise UsageError(f"--run_dirs: {run_dir} has no model.keras, which the reconstruction MSE of "
                                 "--latent_measures reads: pass --nolatent_measures or a finished run")
            runs.append([settings.method, run_dir, settings])
        if self.labels:
            for run, label in zip(runs, self.labels):
                run[0] = label
        else:
            methods = [run[0] for run in runs]
            for k, run in enumerate(runs):
                if methods.count(run[0]) > 1:
                    run[0] = f"{run[0]}-{methods[:k + 1].count(run[0])}"
        return [tuple(run) for run in runs]

    def check(self):
        if not self.run_dirs:
            raise UsageError("--run_dirs is required: the training runs to compare (comma-separated)")
        if len(set(self.run_dirs)) != len(self.run_dirs):
            raise UsageError("--run_dirs lists a run twice")
        if self.labels and len(self.labels) != len(self.run_dirs):
            raise UsageError(f"--labels gives {len(self.labels)} labels for {len(self.run_dirs)} --run_dirs")
        if len(set(self.labels)) != len(self.labels):
            raise UsageError("--labels lists a label twice")
        refuse_repeated_values(self, "metrics", "layers")
        runs = self.run_settings()
        if self.dataset is None:
            datasets = {settings.dataset for _, _, settings in runs}
            if len(datasets) > 1:
                raise UsageError(f"--run_dirs were trained on different datasets ({', '.join(sorted(datasets))}): "
                                 "pass --dataset to measure them all on one")
        if self.latent_png and not self.latent_measures:
            raise UsageError("--latent_png draws the code of --latent_measures: drop --nolatent_measures")
        if self.output and self.latent_png and os.path.abspath(self.output) == os.path.abspath(self.latent_png):
            raise UsageError("--output and --latent_png name the same file")


# ============================================================ prepare_data
@dataclasses.dataclass
class LocalMapsConfig:
    """Fig. 14 of the DIM paper (``apps/local_maps.py``, ``dim_keras.runs.local_maps``): for a finished
    training run, the infoNCE loss of Y against the local feature at every location, with Y computed from
    the full image and from an occluded copy (App. A.7's masks)."""
    run_dir: str = setting(None, "The training run (its output_dir: config.json and model.keras).",
                           path="input_dir")
    batch_size: int = setting(64, "Test images scored together: each image's negatives are the others' local "
                              "features, as in training.", minimum=2)
    images: int = setting(6, "Images drawn in the figure (rows).", minimum=1)
    seed: int = setting(0, "Seed of the occlusion masks.")
    output: str = setting(None, "PNG to write (default <run_dir>/local_maps.png; the numbers go to the .json "
                          "beside it).", path="output_file")
    json: bool = setting(False, "Print the summary as a JSON object as the last line.")

    def check(self):
        if self.run_dir is None:
            raise UsageError("--run_dir is required: the output_dir of a finished apps/train.py run")
        for name in (RUN_CONFIG, "model.keras"):
            if not os.path.isfile(os.path.join(self.run_dir, name)):
                raise UsageError(f"--run_dir: no {name} in {self.run_dir} (the output_dir of a finished "
                                 f"apps/train.py run has both)")
        if self.images > self.batch_size:
            raise UsageError(f"--images ({self.images}) must be at most --batch_size ({self.batch_size})")


@dataclasses.dataclass
class PrepareDataConfig:
    """Sharded TFRecords of a dataset (``apps/prepare_data.py``, ``dim_keras.runs.prepare_data``), to stream
    with ``apps/train.py --dataset=tfrecord --data_dir=<output>`` (format: ``dim_keras.data.tfrecord``)."""
    dataset: str = setting("digits", "Dataset to write (see apps/train.py; folder: the images in --data_dir).",
                           choices=tuple(name for name in choices.DATASETS if name != "tfrecord"))
    data_dir: str = setting(None, "Directory holding the dataset files (folder: the images).", path="input_dir")
    download: bool = setting(False, "Let tensorflow-datasets download the dataset if it is not on disk.")
    image_size: int = setting(None, "--dataset=folder only: resize every image to this square side (default: "
                              "the images' own size, which must then be the same for all of them).", minimum=8)
    output: str = setting(None, "Directory for the shards and manifest.json (default data/tfrecord-<dataset>); "
                          "rerun the same command to finish an interrupted preparation (finished shards are "
                          "kept) or to verify a finished one.", path="output_dir")
    splits: tuple = setting(("pretrain", "train", "test"), "Splits to write (pretrain is written once, as train, "
                            "for every dataset but stl10).", element=str, choices=("pretrain", "train", "test"),
                            min_items=1)
    shard_size: int = setting(2048, "Images per shard (several shards per training worker let each read its own "
                              "files).", minimum=1)
    seed: int = setting(0, "Seed of the assignment of images to shards (each shard is a random sample).")
    strict: bool = setting(False, "Stop at the first image file that cannot be read, instead of skipping it "
                           "(skipped files are listed in each shard's info and the manifest).")
    verbose: int = setting(1, "0: quiet; 1: a progress bar.", choices=(0, 1))

    # The settings that define what a preparation holds: a rerun must keep them to continue it.  So must
    # --data_dir, checked apart (dim_keras.runs.prepare_data) as an absolute, normalised path.
    CONTENT: typing.ClassVar[tuple] = ("dataset", "image_size", "splits", "shard_size", "seed")

    def check(self):
        if self.dataset == "folder" and not self.data_dir:
            raise UsageError("--dataset=folder needs --data_dir (a folder of <class>/<image> files)")
        if self.image_size is not None and self.dataset != "folder":
            raise UsageError(f"--image_size applies to --dataset=folder only; {self.dataset} is written at its own "
                             "size")
        if len(set(self.splits)) != len(self.splits):
            raise UsageError(f"--splits lists a split twice: {','.join(self.splits)}")

    def resolved_output(self):
        return self.output or os.path.join("data", f"tfrecord-{self.dataset}")


# ============================================================= estimate_mi
@dataclasses.dataclass
class EstimateMIConfig:
    """MINE's correlated-Gaussian check (``apps/estimate_mi.py``, ``dim_keras.runs.estimate_mi``).

    ``--experiment=single`` (default): one estimator at one rho (plus, with ``--plot``, every estimator over
    ``--rhos``); ``sweep``: MINE Fig. 1, every ``--sweep_estimators`` at every ``--sweep_dims`` over
    ``--seeds`` seeds; ``invariance``: MINE Fig. 2, ``I(X; f(X) + sigma eps)`` for each ``--functions``.
    """
    experiment: str = setting("single", "single: one estimate (and --plot over --rhos); sweep: estimators x "
                              "dimensions x seeds (MINE Fig. 1); invariance: Y = f(X) + sigma eps for each f "
                              "(MINE Fig. 2).", choices=choices.MI_EXPERIMENTS)
    estimator: str = setting("dv", "MI estimator (mine_f: MINE's f-divergence bound, the same function as nwj; "
                             "dv_ema: dv with MINE's bias-corrected gradient, see --ema_decay).",
                             choices=choices.SIMULATION_ESTIMATORS)
    ema_decay: float = setting(0.0, "MINE's bias-corrected gradient for --estimator=dv: decay of the moving "
                               "average of E_M[e^T] (0 = plain DV; dv_ema uses 0.99 when this is 0).",
                               minimum=0.0, below=1.0)
    critic: str = setting("separable", "Critic for the vector pairs.", choices=choices.CRITICS)
    rho: float = setting(0.8, "Per-dimension correlation of x and z, in (-1, 1) (also of --experiment=sweep).",
                         above=-1.0, below=1.0)
    dim: int = setting(2, "Number of dimensions d.", minimum=1)
    batch_size: int = setting(512, "Pairs per batch (B x B scores per batch).", minimum=2)
    steps: int = setting(1000, "Critic training steps.", minimum=1)
    learning_rate: float = setting(1e-3, "Adam learning rate of the critic.", above=0.0)
    hidden_units: int = setting(128, "Hidden width of the critic's MLPs.", minimum=1)
    seed: int = setting(0, "Random seed (the first seed of --experiment=sweep).")
    json: bool = setting(False, "Print a JSON object as the last line.")
    plot: str = setting(None, "Write a PNG to this path: single: the estimate vs rho for every estimator (next "
                        "to the analytic MI); sweep: estimate vs true MI per dimension with error bars; "
                        "invariance: the estimate per f and sigma.", path="output_file")
    rhos: tuple = setting((0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95), "Correlations for --plot.", element=float,
                          above=-1.0, below=1.0, min_items=1)
    output_json: str = setting(None, "sweep / invariance: write the results as JSON to this path.",
                               path="output_file")
    sweep_dims: tuple = setting((2, 5, 10, 20), "Dimensions of --experiment=sweep.", element=int, minimum=1,
                                min_items=1)
    sweep_estimators: tuple = setting(("dv", "dv_ema", "mine_f", "nwj", "infonce", "jsd"),
                                      "Estimators of --experiment=sweep.", element=str,
                                      choices=choices.SIMULATION_ESTIMATORS, min_items=1)
    seeds: int = setting(3, "Seeds per (estimator, dimension) of --experiment=sweep.", minimum=1)
    sweep_steps: int = setting(500, "Critic training steps of --experiment=sweep and invariance.", minimum=1)
    sweep_batch_size: int = setting(256, "Batch size of --experiment=sweep and invariance.", minimum=2)
    functions: tuple = setting(choices.INVARIANCE_FUNCTIONS, "f of --experiment=invariance.", element=str,
                               choices=choices.INVARIANCE_FUNCTIONS, min_items=1)
    sigmas: tuple = setting((0.1, 0.3, 1.0), "Noise scales of --experiment=invariance.", element=float,
                            above=0.0, min_items=1)

    def check(self):
        if self.ema_decay > 0 and self.estimator not in ("dv", "dv_ema"):
            raise UsageError(f"--ema_decay applies to --estimator=dv (or dv_ema), not {self.estimator}")
        if self.output_json and self.experiment == "single":
            raise UsageError("--output_json needs --experiment=sweep or invariance")


# ================================================================ MI lab
def check_evaluation_interval(steps, eval_every):
    """Raises :class:`UsageError` unless ``eval_every`` divides ``steps``: a run trains ``steps / eval_every``
    evaluation periods, so any other pair would train a different number of steps than it reports."""
    if eval_every > steps:
        raise UsageError(f"--eval_every={eval_every} is more than --steps={steps}")
    if steps % eval_every:
        raise UsageError(f"--eval_every={eval_every} must divide --steps={steps} (the run evaluates every "
                         f"--eval_every steps and stops at --steps)")


@dataclasses.dataclass
class MILabConfig:
    """Tschannen et al. (ICLR 2020), one experiment per sub-command (``apps/mi_lab.py``, ``dim_keras.runs.mi_lab``).

    The two views are the top and bottom halves of handwritten digits (:mod:`dim_keras.multiview`); results
    go to ``<output_dir>/<experiment>.json`` and ``<output_dir>/<experiment>.png``.
    """
    SUBCOMMAND: typing.ClassVar[str] = "experiment"  # the positional argument of apps/mi_lab.py

    experiment: str = setting(None, "The experiment (the sub-command).", choices=choices.MI_LAB_EXPERIMENTS,
                              flag=False)
    dataset: str = setting("digits", "Digits whose top and bottom halves are the two views: digits "
                           "(scikit-learn's 8x8, built in) or mnist (official idx files in --data_dir, or tfds).",
                           choices=choices.VIEW_DATASETS)
    data_dir: str = setting(None, "Where the dataset's files are (mnist).", path="input_dir")
    estimators: tuple = setting(("infonce", "nwj"), "MI estimators to compare (the paper: I_NCE and I_NWJ).",
                                element=str, choices=choices.ESTIMATORS, min_items=1)
    steps: int = setting(None, "Training steps per run (default: the experiment's own, sized for a CPU run "
                         "in minutes; the paper trains 20k+).", minimum=1)
    eval_every: int = setting(None, "Steps between evaluations of I_EST and the linear probe on the test "
                              "split (default: steps / 10).", minimum=1)
    batch_size: int = setting(128, "Pairs per batch (the paper's 128; I_NCE <= log batch_size).", minimum=2)
    learning_rate: float = setting(1e-4, "Adam learning rate (the paper's 1e-4).", above=0.0)
    seeds: int = setting(3, "Runs per setting (the paper averages 20); the figures show mean +- std.",
                         minimum=1)
    seed: int = setting(0, "First random seed.")
    probe_examples: int = setting(10000, "Training examples of the linear probe at most (a random subset "
                                  "when the split is larger, e.g. MNIST's 60k).", minimum=10)
    output_dir: str = setting("saved_models/mi_lab", "Where <experiment>.json and <experiment>.png go.",
                              path="output_dir")
    json: bool = setting(False, "Print the results as a JSON object on the last line.")
    critics: tuple = setting(choices.MI_LAB_CRITICS, "critics: the critics to compare (Sec. 3.2): bilinear "
                             "x^T W y, separable phi1(x)^T phi2(y) (100-unit ReLU layer, 100 outputs) and mlp "
                             "(200-unit ReLU layer on [x, y]).", element=str, choices=choices.MI_LAB_CRITICS,
                             min_items=1)
    targets: tuple = setting((2.0, 4.0), "target_mi and encoders: the targets t of min |I_EST - t| in nats (the "
                             "paper's 2 and 4; I_NCE needs t < log batch_size).", element=float, above=0.0,
                             min_items=1)
    encoders: tuple = setting(("mlp", "conv"), "encoders: the view encoders to compare at equal I_EST (Sec. "
                              "3.3): mlp (300-300-100) and conv (two 5x5 stride-2 convolutions, layer norm, "
                              "average pooling, dense 100).", element=str, choices=choices.VIEW_ENCODERS,
                              min_items=1)
    # invertible, adversarial (Sec. 3.1, App. B) and conditioning (Sec. 3.1, Fig. 2).
    realnvp_couplings: int = setting(6, "invertible and adversarial: additive coupling layers of each RealNVP "
                                     "encoder (the paper's 30; 6 keep the default runs in minutes on a CPU).",
                                     minimum=1)
    realnvp_hidden_units: tuple = setting((128, 128), "invertible and adversarial: hidden ReLU layers of each "
                                          "coupling's shift MLP (the paper's 512,512; 128,128 for a CPU).",
                                          element=int, minimum=1, min_items=1)
    classifier_learning_rate: float = setting(1e-3, "adversarial: Adam learning rate of the linear classifier "
                                              "(App. B: 1e-4, the authors' notebook: 1e-3; this experiment does "
                                              "not use --learning_rate).", above=0.0)
    encoder_learning_rate: float = setting(1e-4, "adversarial: Adam learning rate of the encoder (App. B: 1e-6, "
                                           "the notebook: 1e-5 for 4k encoder steps; 1e-4 for the CPU default's "
                                           "1.5k).", above=0.0)
    classifier_steps: int = setting(10, "adversarial: classifier updates per encoder update (App. B's 10).",
                                    minimum=1)
    warmup_steps: int = setting(1000, "adversarial: classifier updates before the first encoder update (App. "
                                "B's 1k).", minimum=0)
    noise_std: float = setting(0.05, "conditioning: std of the Gaussian vector added to both views, the same "
                               "vector to each (the paper's coupled noise, 0.05).", minimum=0.0)
    jacobian_inputs: int = setting(128, "conditioning: random (noisy) training inputs at which the condition "
                                   "number of g1's Jacobian is computed (the paper's 128).", minimum=1)

    def check(self):
        if self.experiment is None:
            raise UsageError(f"name an experiment: one of {', '.join(choices.MI_LAB_EXPERIMENTS)}")
        if self.data_dir is not None and self.dataset == "digits":
            raise UsageError("--data_dir applies to --dataset=mnist (the digits ship with scikit-learn)")
        if self.experiment == "negatives" and (self.dataset != "digits" or self.data_dir is not None):
            raise UsageError("negatives runs on synthetic Gaussians (App. E): --dataset and --data_dir do not apply")
        refuse_repeated_values(self, "estimators", "critics", "targets", "encoders")
        if (self.experiment in ("target_mi", "encoders") and "infonce" in self.estimators
                and max(self.targets) >= math.log(self.batch_size)):
            raise UsageError(f"--targets={max(self.targets):g} is out of reach of I_NCE, which is at most "
                             f"log(--batch_size) = {math.log(self.batch_size):.2f} nats")
        if (self.experiment in ("target_mi", "encoders") and "jsd" in self.estimators
                and max(self.targets) >= 2 * math.log(2)):
            raise UsageError(f"--targets={max(self.targets):g} is out of reach of the JSD bound, which is at most "
                             f"2 log 2 = {2 * math.log(2):.2f} nats")
        if self.steps is not None and self.eval_every is not None:
            check_evaluation_interval(self.steps, self.eval_every)


@dataclasses.dataclass
class MineGANConfig:
    """GAN vs GAN+MINE on 25 Gaussians, MINE Sec. 5.1, Fig. 4 (``apps/mine_gan.py``, ``dim_keras.runs.mine_gan``).

    Every seed trains the plain GAN (beta = 0) and GAN+MINE (``--beta``) with the same networks, counts the
    modes covered and the high-quality fraction on ``--eval_samples`` samples (:mod:`dim_keras.mine_gan`), and
    writes ``<output_dir>/mine_gan.png`` (KDE plots) and ``<output_dir>/mine_gan.json``.
    """
    steps: int = setting(10000, "Training iterations per model (the paper's 5,000; at this learning rate "
                         "GAN+MINE's samples are still diffuse after 5,000).", minimum=1)
    batch_size: int = setting(100, "Minibatch size (the paper's 100).", minimum=2)
    beta: float = setting(1.0, "MINE weight of GAN+MINE (the paper's 1.0; the plain GAN is always beta = 0).",
                          above=0.0)
    learning_rate: float = setting(1e-3, "Adam learning rate of all three networks (the paper's 1e-4; at 1e-4 "
                                   "neither model has formed modes after 5,000 steps on the CPU-sized networks).",
                                   above=0.0)
    generator_units: tuple = setting((128, 128), "Hidden layers of the generator (the paper's 500,500; 128,128 "
                                     "for a CPU run in minutes).", element=int, minimum=1, min_items=1)
    discriminator_units: tuple = setting((128, 128, 128), "Hidden layers of the discriminator (the paper's "
                                         "400,400,400).", element=int, minimum=1, min_items=1)
    statistics_units: tuple = setting((64, 64, 64), "Hidden layers of MINE's statistics network (the paper's "
                                      "400,400,400; it scores K x K pairs, see --statistics_batch_size).", element=int,
                                      minimum=1, min_items=1)
    statistics_batch_size: int = setting(32, "The statistics network scores the K x K pairs of the first K "
                                         "samples of each batch (K joint, K(K-1) marginal pairs; its cost is "
                                         "quadratic in K); 0 = the whole batch.", minimum=0)
    noise_dim: int = setting(10, "Dimensions of the noise eps (not given in the paper).", minimum=0)
    code_dim: int = setting(3, "Dimensions of the code c of I(G([eps, c]); c) (not given in the paper).",
                            minimum=1)
    ema_decay: float = setting(0.99, "Decay of MINE's moving average of E[e^T] (bias-corrected gradient, "
                               "Sec. 3.2; 0 = plain DV gradient).", minimum=0.0, below=1.0)
    adaptive_clipping: bool = setting(True, "Clip the MI gradient to the GAN gradient's norm (the paper's "
                                      "adaptive clipping).")
    seeds: int = setting(3, "Seeds; each trains both models.", minimum=1)
    seed: int = setting(0, "First random seed.")
    eval_samples: int = setting(2500, "Generated samples the modes are counted on (VEEGAN's 2,500).", minimum=1)
    min_count: int = setting(1, "High-quality samples a mode needs to count as covered (VEEGAN: at least one).",
                             minimum=1)
    strict_min_count: int = setting(20, "A second, stricter count of the covered modes, also reported.",
                                    minimum=1)
    jit_compile: bool = setting(False, "XLA-compile the training loop (off: measured 4-10x slower on CPU for "
                                "these small networks).")
    output_dir: str = setting("saved_models/mine_gan", "Where mine_gan.png and mine_gan.json go.",
                              path="output_dir")
    json: bool = setting(False, "Print the results as a JSON object on the last line.")

    def check(self):
        if self.statistics_batch_size == 1 or self.statistics_batch_size > self.batch_size:
            raise UsageError(f"--statistics_batch_size={self.statistics_batch_size} must be 0 (the whole batch) "
                             f"or from 2 to --batch_size={self.batch_size}")
        if self.strict_min_count < self.min_count:
            raise UsageError(f"--strict_min_count={self.strict_min_count} is less than --min_count={self.min_count}")


@dataclasses.dataclass
class BottleneckConfig:
    """The information bottleneck with MINE, MINE Sec. 5.3, Table 3 (``apps/mine_bottleneck.py``,
    ``dim_keras.runs.bottleneck``).

    For every beta of ``--betas`` a stochastic encoder (``--noise``) is trained on ``H(Y|Z) + beta I_MINE(X; Z)``,
    next to the deterministic baseline (no noise, cross-entropy only), over ``--seeds`` seeds; the test error and
    the MINE estimate of I(X; Z) on the test split go to ``<output_dir>/mine_bottleneck.json`` and ``.png``.
    """
    dataset: str = setting("digits", "Digits to classify, as flat pixel vectors: digits (scikit-learn's 8x8, "
                           "built in) or mnist (the paper's; files in --data_dir, or tfds).",
                           choices=choices.BOTTLENECK_DATASETS)
    data_dir: str = setting(None, "Where the dataset's files are (mnist).", path="input_dir")
    betas: tuple = setting((0.0, 0.01, 0.1, 1.0), "IB weights beta of the stochastic encoder (0 = noise but no "
                           "MI term; the paper's 1e-3 is tiny next to digits' MI estimates of ~1-2 nats).",
                           element=float, minimum=0.0, min_items=1)
    noise: str = setting("gaussian", "The stochastic encoder of Table 3: gaussian (z = mu(x) + sigma(x) eps, "
                         "Alemi et al.'s), additive (z = enc(x + --sigma eps)) or propagated (z = enc([x, eps])).",
                         choices=choices.BOTTLENECK_NOISES)
    sigma: float = setting(0.3, "Input-noise std of --noise=additive (pixels are in [0, 1]).", above=0.0)
    steps: int = setting(300, "Training steps per run (the paper: 200 epochs of MNIST, ~120k steps; 300 steps "
                         "are ~21 epochs of digits' 1,438 training images).", minimum=1)
    batch_size: int = setting(100, "Batch size (the paper's 100; the statistics network scores all B x B pairs).",
                              minimum=2)
    learning_rate: float = setting(1e-3, "Adam learning rate of the encoder and decoder (the paper's 1e-4, for "
                                   "200 epochs).", above=0.0)
    statistics_learning_rate: float = setting(1e-3, "Adam learning rate of the statistics network.", above=0.0)
    statistics_steps: int = setting(1, "Updates of the statistics network per encoder update.", minimum=1)
    ema_decay: float = setting(0.99, "Decay of MINE's moving average of E[e^T] (bias-corrected gradient, "
                               "Sec. 3.2; 0 = plain DV gradient).", minimum=0.0, below=1.0)
    representation_dim: int = setting(256, "Dimensions of Z (the paper's 256).", minimum=1)
    hidden_units: tuple = setting((512, 512), "Hidden ReLU layers of the encoder (the paper's 1024,1024; "
                                  "512,512 for a CPU run in minutes).", element=int, minimum=1, min_items=1)
    statistics_units: tuple = setting((256,), "Hidden ELU layers of the statistics network T(x, z) (it scores "
                                      "all B x B pairs, so a second layer costs B^2 x units^2 per step).",
                                      element=int, minimum=1, min_items=1)
    test_samples: int = setting(12, "Draws of z whose predictions are averaged for the test error (Alemi et "
                                "al.'s 12).", minimum=1)
    jit_compile: bool = setting(True, "XLA-compile the training step (one compilation per encoder kind, reused "
                                "for every beta and seed).")
    seeds: int = setting(3, "Runs per setting; the table and figure show mean +- std.", minimum=1)
    seed: int = setting(0, "First random seed.")
    output_dir: str = setting("saved_models/mine_bottleneck", "Where mine_bottleneck.json and "
                              "mine_bottleneck.png go.", path="output_dir")
    json: bool = setting(False, "Print the results as a JSON object on the last line.")

    def check(self):
        if self.noise == "none":
            raise UsageError("--noise=none is the deterministic baseline, which always runs; choose a stochastic "
                             "encoder: gaussian, additive or propagated")
        if len(set(self.betas)) != len(self.betas):
            raise UsageError(f"--betas lists a value twice: {','.join(map(str, self.betas))}")
        if self.data_dir is not None and self.dataset == "digits":
            raise UsageError("--data_dir applies to --dataset=mnist (the digits ship with scikit-learn)")


# ================================================================ ablation
@dataclasses.dataclass
class AblationConfig:
    """A keras-tuner search over alpha, beta, gamma (``tuning/ablation.py``, ``dim_keras.runs.ablation``; Fig. 10).

    Every trial is one DIM run of ``train`` with the trial's alpha, beta, gamma.
    """
    search_dir: str = setting("saved_models/ablation", "Where the search, trials and results go; rerun with "
                              "the same directory to resume.", path="output_dir")
    mode: str = setting("grid", "grid: every combination of --alphas x --betas x --gammas; bayesian: "
                        "kt.BayesianOptimization over the --*_range intervals.", choices=choices.ABLATION_MODES)
    objective: str = setting("probe_accuracy", "What the tuner optimises: probe_accuracy (linear probe on Y, "
                             "max), ms_ssim (max), mine (max) or ndm (min).",
                             choices=tuple(choices.ABLATION_OBJECTIVES))
    measures: tuple = setting((), "Further measures to record per trial (comma list, same names).",
                              element=str, choices=tuple(choices.ABLATION_OBJECTIVES))
    alphas: tuple = setting((0.0, 0.5, 1.0), "Grid values of alpha (global MI weight).", element=float,
                            minimum=0.0, min_items=1)
    betas: tuple = setting((0.0, 0.5, 1.0), "Grid values of beta (local MI weight).", element=float,
                           minimum=0.0, min_items=1)
    gammas: tuple = setting((0.1,), "Grid values of gamma (prior-matching weight).", element=float,
                            minimum=0.0, min_items=1)
    alpha_range: tuple = setting((0.0, 1.0), "Bayesian mode: low,high of alpha.", element=float, minimum=0.0)
    beta_range: tuple = setting((0.0, 1.0), "Bayesian mode: low,high of beta.", element=float, minimum=0.0)
    gamma_range: tuple = setting((0.0, 1.0), "Bayesian mode: low,high of gamma.", element=float, minimum=0.0)
    max_trials: int = setting(None, "Trials to run (required for bayesian; grid: default the whole grid).",
                              minimum=1)
    eval_epochs: int = setting(20, "Training epochs of the MS-SSIM decoder, MINE and NDM networks.", minimum=1)
    eval_max_train: int = setting(10000, "Training images used by the measures.", minimum=10)
    keep_trial_models: bool = setting(False, "Keep every finished trial's checkpoints and model.keras (by "
                                      "default removed once its measures are written; its exported "
                                      "encoder, measures and logs stay).")
    # alpha, beta, gamma come from the search; each trial writes to its own directory.
    train: TrainConfig = nested(TrainConfig, "Settings of every trial's training run.",
                                exclude=("alpha", "beta", "gamma", "output_dir", "resume", "probe",
                                         "probe_max_train"),
                                epochs=5, probe=False, monitor_every=0, verbose=0)

    def check(self):
        refuse_repeated_values(self, "alphas", "betas", "gammas")
        for name in ("alpha_range", "beta_range", "gamma_range"):
            values = getattr(self, name)
            if len(values) != 2 or not values[0] < values[1]:
                raise UsageError(f"--{name} must be low,high with low < high, got {','.join(map(str, values))}")
        if self.mode == "bayesian" and not self.max_trials:
            raise UsageError("--mode=bayesian needs --max_trials")
        if self.train.strategy == "multi_worker":
            # One MultiWorkerMirroredStrategy per process, created before TensorFlow starts: a search's
            # trials cannot each have one (docs/DISTRIBUTED.md).
            raise UsageError("--strategy=multi_worker is not supported by the ablation (a process can join a "
                             "cluster only once, not once per trial): use --strategy=mirrored, or apps/train.py "
                             "for one multi-worker training")
        if self.mode == "grid" and not any(self.alphas) and not any(self.betas):
            raise UsageError("--alphas and --betas are all 0: no grid point has a mutual information term "
                             "to maximise")

    def all_measures(self):
        return list(dict.fromkeys(["probe_accuracy", self.objective, *self.measures]))


# =============================================================== benchmark
@dataclasses.dataclass
class BenchmarkConfig:
    """Training-throughput benchmark (``apps/benchmark.py``, ``dim_keras.runs.benchmark``).

    The model settings are a :class:`TrainConfig`, so the benchmark times
    exactly the model that ``apps/train.py`` trains.
    """
    mode: str = setting("training", "training: time training steps; sweep: one training benchmark per "
                        "combination of the --sweep_* lists (they set --estimator, --local_critic, --local_samples "
                        "and --batch_size), each in a fresh subprocess, as a markdown table; data_pipeline: the "
                        "tf.data input pipeline alone; matmul_peak: a chain of [4096, D] x [D, D] matmuls (D = "
                        "--embedding_dim, the critic's dominant GEMM) in the --mixed_precision dtype, and the "
                        "images/s ceiling it implies.", choices=choices.BENCHMARK_MODES)
    image_size: int = setting(32, "Side of the square random images.", minimum=8)
    steps: int = setting(20, "Timed training steps.", minimum=1)
    warmup: int = setting(3, "Untimed steps first (tracing, XLA compilation, allocator warm-up).", minimum=1)
    steps_per_execution: int = setting(1, "Training steps per compiled call.", minimum=1)
    threads: int = setting(0, "TF (and torch) intra-op threads; 0 = all cores (on JAX, which always uses every "
                           "core it is given, 0 or the core count only).", minimum=0)
    json: bool = setting(False, "Print a JSON object with the results as the last line.")
    compare_torch: bool = setting(False, "Also time apps/torch_reference.py (the authors' DIM(L) step in "
                                  "PyTorch) with the same batch size and threads; skipped when torch is missing. On "
                                  "JAX it runs as --backends=jax --compare_torch (each in a process of its own).")
    backends: tuple = setting((), "--mode=training on each of these Keras backends (tensorflow, jax), each in a "
                              "fresh process with KERAS_BACKEND set, in --rounds interleaved rounds (with "
                              "--compare_torch the authors' PyTorch step too), and the images/s ratio of each to "
                              "the first; empty: this process's backend only.", element=str,
                              choices=("tensorflow", "jax"))
    rounds: int = setting(1, "Rounds of --backends (the order alternates between rounds).", minimum=1)
    pipeline_source: str = setting("arrays", "--mode=data_pipeline: where the images come from: arrays (random "
                                   "uint8 in memory), png or jpeg (a folder of generated --image_size files, "
                                   "streamed), tfrecord (those PNGs written by apps/prepare_data.py, streamed).",
                                   choices=("arrays", "png", "jpeg", "tfrecord"))
    pipeline_images: int = setting(4096, "--mode=data_pipeline: generated images of the png, jpeg and tfrecord "
                                   "sources (written to a temporary directory, removed after).", minimum=1)
    sweep_batch_sizes: tuple = setting((16, 32, 64, 128), "Batch sizes of --mode=sweep.", element=int,
                                       minimum=2, min_items=1)
    sweep_critics: tuple = setting(("dot", "bilinear"), "Local critics of --mode=sweep.", element=str,
                                   choices=choices.CRITICS, min_items=1)
    sweep_estimators: tuple = setting(("jsd", "infonce"), "Estimators of --mode=sweep.", element=str,
                                      choices=choices.ESTIMATORS, min_items=1)
    sweep_local_samples: tuple = setting((0,), "--local_samples values of --mode=sweep (0 = all locations).",
                                         element=int, minimum=0, min_items=1)
    model: TrainConfig = nested(
        TrainConfig, "The benchmarked model.",
        only=("estimator", "local_critic", "encoder", "embedding_dim", "y_dim", "alpha", "beta", "gamma",
              "prior", "prior_gradient_penalty", "local_samples", "batch_size", "mixed_precision",
              "jit_compile", "seed"))

    def check(self):
        if self.mode == "sweep" and self.model.local_samples is not None:
            raise UsageError("--mode=sweep sets the local samples of each run from --sweep_local_samples; "
                             "drop --local_samples")
        if self.backends and self.mode != "training":
            raise UsageError(f"--backends goes with --mode=training, not --mode={self.mode} (set KERAS_BACKEND to "
                             f"run the other modes on another backend)")
        if len(set(self.backends)) != len(self.backends):
            raise UsageError(f"--backends lists a backend twice: {','.join(self.backends)}")
        if self.rounds > 1 and not self.backends:
            raise UsageError("--rounds goes with --backends")
        if self.compare_torch:
            if self.mode != "training":
                raise UsageError(f"--compare_torch goes with --mode=training, not --mode={self.mode}")
            check_torch_comparable(self)
        if self.pipeline_source != "arrays" and self.mode != "data_pipeline":
            raise UsageError(f"--pipeline_source goes with --mode=data_pipeline, not --mode={self.mode}")


def check_torch_comparable(config):
    """--compare_torch needs a configuration that the PyTorch reference reproduces."""
    model = config.model
    if model.local_critic != "dot" or model.resolved_estimator() not in ("jsd", "infonce"):
        raise UsageError("--compare_torch reproduces the authors' DIM(L) step: it needs --local_critic=dot and "
                         "--estimator=jsd or infonce")
    if model.alpha != 0 or model.beta == 0 or model.local_samples:
        raise UsageError("--compare_torch reproduces DIM(L): it needs --alpha=0, --beta>0 and no --local_samples")
    # --encoder=auto picks the dcgan encoder for 29-63 px images (dim_keras.encoders.auto_encoder_name).
    dcgan = model.encoder == "dcgan" or (model.encoder == "auto" and 28 < config.image_size < 64)
    if not dcgan or config.image_size < 16 or config.image_size % 8:
        raise UsageError("--compare_torch uses the authors' CIFAR encoder: it needs the dcgan encoder (--encoder="
                         "dcgan, or auto at 32 to 56 px) and an image size that is a multiple of 8 (32 in the paper)")
    if model.prior != "uniform":
        raise UsageError("--compare_torch reproduces the authors' uniform prior: it needs --prior=uniform")


@dataclasses.dataclass
class TorchReferenceConfig:
    """The PyTorch re-implementation of the authors' DIM(L) step (``apps/torch_reference.py``), timing only."""
    estimator: str = setting("jsd", "Local MI estimator: the authors' fenchel_dual_loss with the JSD measure, "
                             "or infonce_loss.", choices=("jsd", "infonce"))
    batch_size: int = setting(64, "Images per training step (the authors use 64).", minimum=2)
    image_size: int = setting(32, "Side of the square random images (multiple of 8, >= 16).", minimum=16)
    steps: int = setting(20, "Timed training steps.", minimum=1)
    warmup: int = setting(3, "Untimed steps first (allocator and kernel-selection warm-up).", minimum=0)
    embedding_dim: int = setting(2048, "Units of MI1x1ConvNet / MIFCNet (2048 in the paper).", minimum=1)
    y_dim: int = setting(64, "Size of the representation Y (64 in the paper).", minimum=1)
    gamma: float = setting(0.1, "Weight of the prior-matching term (0 switches the discriminator off).",
                           minimum=0.0)
    prior_gradient_penalty: float = setting(0.0, "Weight of the authors' gradient penalty on the "
                                            "discriminator's real and fake inputs.", minimum=0.0)
    threads: int = setting(0, "torch intra-op threads; 0 = all cores.", minimum=0)
    device: str = setting("auto", "Where to run: auto = cuda if available, else cpu.",
                          choices=("auto", "cpu", "cuda"))
    channels_last: bool = setting(False, "Use the channels-last memory format (not the authors' default).")
    seed: int = setting(0, "Seed for weights and the random batch.")
    json: bool = setting(False, "Print a JSON object with the results as the last line.")

    def check(self):
        if self.image_size % 8:
            raise UsageError(f"--image_size must be a multiple of 8, got {self.image_size}")


# ========================================================= compare_quality
# The arms of apps/compare_quality.py: dim_keras's recipes, the authors' step in PyTorch, and the dim_keras
# encoder at its seeded initialisation (the probe's baseline).
QUALITY_ARMS = choices.RECIPES + ("torch", "random_init")
# The torch arm is the authors' CIFAR encoder (32x32 in the paper): datasets whose images it takes as they are.
TORCH_ARM_DATASETS = ("digits", "cifar10", "cifar100", "folder")


@dataclasses.dataclass
class CompareQualityConfig:
    """Representation quality at equal epochs (``apps/compare_quality.py``, ``dim_keras.runs.compare_quality``).

    For every seed, each dim_keras recipe of ``--arms`` is one run of ``apps/train.py``'s training (DIM(L)
    without the prior: gamma = 0) and ``torch`` is the authors' step re-implemented in PyTorch
    (:mod:`dim_keras.runs.torch_reference`), trained on the same pretraining images for the same epochs; the
    ``conv``, ``fc`` and ``y`` features of every encoder get the same linear probe (standardised features,
    logistic regression) on the same data.  ``random_init`` is the dim_keras encoder at its seeded
    initialisation.  Real CIFAR-10 images: ``--data_dir=../shared/data/cifar10-dev``.
    """
    arms: tuple = setting(QUALITY_ARMS, "What to compare: paper and improved (dim_keras's --recipe), torch (the "
                          "authors' DIM(L) step in PyTorch; needs torch) and random_init (the dim_keras encoder "
                          "untrained).", element=str, choices=QUALITY_ARMS, min_items=1)
    seeds: tuple = setting((0, 1, 2), "Seeds; every arm trains once per seed and the table shows mean +- std.",
                           element=int, min_items=1)
    threads: int = setting(0, "TensorFlow intra-op threads and torch threads; 0 = all cores.", minimum=0)
    output_dir: str = setting("saved_models/compare_quality", "Where each run goes (<arm>-seed<seed>/) and "
                              "compare_quality.json / .png; rerun with the same directory to reuse the finished "
                              "runs and resume an unfinished dim_keras one.", path="output_dir")
    json: bool = setting(False, "Print the results as a JSON object on the last line.")
    train: TrainConfig = nested(
        TrainConfig, "Settings of every arm's training (the dim_keras runs take the rest from apps/train.py's "
        "defaults: the paper's DIM(L) with gamma = 0).",
        only=("dataset", "data_dir", "download", "epochs", "batch_size", "steps_per_epoch", "probe_max_train",
              "probe_c", "monitor_every", "monitor_examples", "jit_compile", "verbose", "learning_rate", "augment",
              "lr_schedule", "global_layer_norm", "score_scale", "score_penalty", "score_clip", "layer_defaults"),
        # probe_c="cv": the comparison's probe chooses C on the training labels. With C = 1 the probe overfits
        # the 1,024-d fc on a few thousand images and the ranking of the arms on fc flipped with the probe's C
        # (docs/RESULTS.md, "The probe's regularisation"); --probe_c=1 repeats the earlier tables' protocol.
        dataset="cifar10", epochs=10, monitor_every=1, verbose=2, probe_c="cv")

    def check(self):
        refuse_repeated_values(self, "arms", "seeds")
        if self.train.dataset in WITHOUT_CLASS_LABELS:
            raise UsageError(f"the linear probe needs class labels and {self.train.dataset} has none (its labels "
                             "are attributes)")
        if self.train.dataset == "folder" and not self.train.data_dir:
            raise UsageError("--dataset=folder needs --data_dir (a folder of <class>/<image> files)")
        if "torch" in self.arms:
            if self.train.dataset not in TORCH_ARM_DATASETS:
                raise UsageError(f"--arms=torch is the authors' CIFAR encoder (32x32 images); {self.train.dataset} "
                                 f"is not: use {', '.join(TORCH_ARM_DATASETS)}, or leave torch out of --arms")
            import importlib.util
            if importlib.util.find_spec("torch") is None:
                raise UsageError("--arms=torch needs PyTorch (pip install torch; a dev-only tool, not a dependency "
                                 "of dim_keras): install it or leave torch out of --arms")

    def run_config(self, arm, seed, output_dir, resume=False):
        """The :class:`TrainConfig` of dim_keras arm ``arm`` (a recipe) with ``seed``: DIM(L) without the prior."""
        return dataclasses.replace(self.train, recipe=arm, gamma=0.0, seed=seed, output_dir=output_dir,
                                   probe=True, resume=resume)


# =============================================================== negatives
@dataclasses.dataclass
class NegativesSweepConfig:
    """DIM's number-of-negatives experiment (App. A.3, Fig. 9; ``apps/negatives_sweep.py``,
    ``dim_keras.runs.negatives_sweep``).

    Every (estimator, K) point is one run of ``apps/train.py``'s training with ``--estimator`` and
    ``--negatives=K`` (K negative images per positive), probed by its linear probe (``probe.json``).
    Real CIFAR-10 images: ``--data_dir=../shared/data/cifar10-dev``.
    """
    output_dir: str = setting("saved_models/negatives", "Where each point's run goes (<estimator>-k<K>/) and "
                              "negatives.json / negatives.png; rerun with the same directory to skip the finished "
                              "points and resume an unfinished one.", path="output_dir")
    estimators: tuple = setting(("jsd", "infonce", "dv"), "The MI estimators compared (Fig. 9: JSD, infoNCE, "
                                "DV).", element=str, choices=choices.ESTIMATORS, min_items=1)
    negatives: tuple = setting((), "The numbers of negative images K per positive (default: 1, 2, 4, ... up to "
                               "--batch_size - 1, i.e. log2 K = 0 .. floor(log2(B - 1)), and B - 1 itself: all).",
                               element=int, minimum=1)
    json: bool = setting(False, "Print the results as a JSON object on the last line.")
    train: TrainConfig = nested(
        TrainConfig, "Settings of every point's training (the rest: apps/train.py's defaults, the paper's DIM(L)).",
        only=("dataset", "data_dir", "download", "streaming", "alpha", "beta", "gamma", "local_critic", "recipe",
              "encoder", "embedding_dim", "y_dim", "local_samples", "epochs", "batch_size", "learning_rate", "seed",
              "mixed_precision", "jit_compile", "steps_per_epoch", "probe_max_train", "monitor_every",
              "monitor_examples", "verbose"),
        dataset="cifar10", epochs=10, monitor_every=0, verbose=2)

    def resolved_negatives(self):
        """The K of the sweep, ascending: ``--negatives``, or 1, 2, 4, ... <= B - 1 and B - 1."""
        if self.negatives:
            return sorted(self.negatives)
        most = self.train.batch_size - 1
        return sorted({2 ** k for k in range(int(math.log2(most)) + 1)} | {most})

    def check(self):
        refuse_repeated_values(self, "estimators", "negatives")
        most = self.train.batch_size - 1
        too_many = [k for k in self.negatives if k > most]
        if too_many:
            raise UsageError(f"--negatives={','.join(map(str, too_many))}: a batch of --batch_size="
                             f"{self.train.batch_size} has at most {most} negative images per positive")
        if self.train.dataset in WITHOUT_CLASS_LABELS:
            raise UsageError(f"the linear probe needs class labels and {self.train.dataset} has none (its labels "
                             "are attributes)")
        if self.train.dataset in ("folder", "tfrecord") and not self.train.data_dir:
            raise UsageError(f"--dataset={self.train.dataset} needs --data_dir")

    def run_config(self, estimator, negatives, output_dir, resume=False):
        """The :class:`TrainConfig` of the point (``estimator``, K = ``negatives``), with the final probe on."""
        return dataclasses.replace(self.train, estimator=estimator, negatives=negatives, output_dir=output_dir,
                                   probe=True, resume=resume)
