"""Training-run settings and their validation (no TensorFlow import, so the
apps can reject bad flags before TensorFlow starts)."""

import dataclasses
import math
import os

from dim_keras.choices import (CRITICS, DATASETS, ENCODERS, ESTIMATORS, PRECISIONS,
                               PRIORS, STRATEGIES)

# The paper trains 1000 epochs on CIFAR and 200 on the other datasets (App. A.2);
# the digits default keeps the Quickstart within minutes on a laptop CPU.
DEFAULT_EPOCHS = {"cifar10": 1000, "cifar100": 1000, "digits": 5}
PAPER_EPOCHS = 200
PROBE_FEATURES = ("y", "fc", "conv")


class UsageError(ValueError):
    """A user mistake; the message is one line meant for the command line."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a DIM training run needs; defaults are the paper's DIM(L)."""
    dataset: str = "digits"
    data_dir: str = None
    download: bool = False
    alpha: float = 0.0
    beta: float = 1.0
    gamma: float = 0.1
    estimator: str = "jsd"
    local_critic: str = "dot"
    prior: str = "uniform"
    encoder: str = "auto"
    embedding_dim: int = 2048
    y_dim: int = 64
    local_samples: int = None
    epochs: int = None
    batch_size: int = 64
    learning_rate: float = 1e-4
    seed: int = 0
    mixed_precision: str = "off"
    jit_compile: bool = True
    steps_per_epoch: int = None
    output_dir: str = None
    resume: bool = False
    strategy: str = "default"
    synchronized_bn: bool = False
    probe: bool = True
    probe_max_train: int = 10000
    verbose: int = 1

    def objective_name(self):
        return (f"{self.estimator}-a{self.alpha:g}-b{self.beta:g}-g{self.gamma:g}"
                f"-{self.local_critic}")


def validate(config):
    """Raises UsageError for every bad setting, before any work is done."""
    checks = [
        (config.dataset in DATASETS, f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}"),
        (config.estimator in ESTIMATORS, f"unknown estimator {config.estimator!r}; choose one of {', '.join(ESTIMATORS)}"),
        (config.local_critic in CRITICS, f"unknown local critic {config.local_critic!r}; choose one of {', '.join(CRITICS)}"),
        (config.prior in PRIORS, f"unknown prior {config.prior!r}; choose one of {', '.join(PRIORS)}"),
        (config.encoder in ENCODERS, f"unknown encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}"),
        (config.strategy in STRATEGIES, f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}"),
        (config.mixed_precision in PRECISIONS, f"unknown mixed precision {config.mixed_precision!r}; choose one of {', '.join(PRECISIONS)}"),
        (config.batch_size is not None and config.batch_size >= 2, f"batch size must be >= 2 (negatives come from the other images), got {config.batch_size}"),
        (config.epochs is None or config.epochs > 0, f"epochs must be > 0, got {config.epochs}"),
        (config.steps_per_epoch is None or config.steps_per_epoch > 0, f"steps per epoch must be > 0, got {config.steps_per_epoch}"),
        (math.isfinite(config.learning_rate) and config.learning_rate > 0, f"learning rate must be a finite number > 0, got {config.learning_rate}"),
        (all(math.isfinite(v) and v >= 0 for v in (config.alpha, config.beta, config.gamma)), f"alpha, beta and gamma must be finite and >= 0, got {config.alpha}, {config.beta}, {config.gamma}"),
        (config.alpha > 0 or config.beta > 0, "alpha and beta are both 0: there is no mutual information term to maximise"),
        (config.embedding_dim > 0 and config.y_dim > 0, "embedding_dim and y_dim must be > 0"),
        (config.local_samples is None or config.local_samples > 0, f"local samples must be > 0, got {config.local_samples}"),
        (not config.resume or config.output_dir, "--resume needs the --output_dir of the run to resume"),
        (config.data_dir is None or os.path.isdir(config.data_dir), f"data dir {config.data_dir} does not exist"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
