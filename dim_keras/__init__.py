"""dim_keras: Deep InfoMax (Hjelm et al., ICLR 2019) in Keras 3 / TensorFlow.

Modules, one paper concept each:

- :mod:`dim_keras.estimators`: MI lower bounds (JSD eq. 4, DV eq. 2, infoNCE eq. 5, NWJ).
- :mod:`dim_keras.critics`: critics scoring all pairs of a batch (Tables 6-9).
- :mod:`dim_keras.encoders`: encoders with named feature taps (App. A.2).
- :mod:`dim_keras.priors`: priors and the prior discriminator (eq. 7, Table 10).
- :mod:`dim_keras.models`: the ``DeepInfoMax`` Keras model (eq. 8).
- :mod:`dim_keras.export`: SavedModel export and :func:`load_encoder`.
- :mod:`dim_keras.data`, :mod:`dim_keras.runs`, :mod:`dim_keras.evaluation`,
  :mod:`dim_keras.generation`: datasets, training runs, evaluation, generation.

Importing the package does not import TensorFlow (the apps validate their
flags first); the library modules load on first use.  To load a saved model,
use :func:`load_model` (or import :mod:`dim_keras.models` before
``keras.saving.load_model``), which registers every serializable layer and model.
"""

import importlib
import sys

__version__ = "0.1.0"

_EXPORTS = {
    "BilinearCritic": "critics", "ConcatAndConvolveCritic": "critics",
    "EncodeAndDotCritic": "critics", "GlobalCritic": "critics",
    "SeparableCritic": "critics", "build_critic": "critics",
    "build_encoder": "encoders",
    "dv_lower_bound": "estimators", "infonce_lower_bound": "estimators",
    "jsd_lower_bound": "estimators", "mi_lower_bound": "estimators",
    "nwj_lower_bound": "estimators",
    "export_encoder": "export", "load_encoder": "export",
    "DeepInfoMax": "models", "default_optimizer": "models",
    "ContrastivePredictiveCoding": "cpc",
    "PriorDiscriminator": "priors",
    "RealNVP": "invertible", "AffineCoupling": "invertible",
    "TrainConfig": "config", "validate": "config",
    "UsageError": "errors", "DataError": "errors", "TrainingDiverged": "errors",
}

__all__ = sorted(_EXPORTS) + ["load_model", "register_serializables"]

# The modules whose import registers dim_keras's serializable layers and models with Keras.
_SERIALIZABLE_MODULES = ("dim_keras.models", "dim_keras.cpc", "dim_keras.generation", "dim_keras.invertible",
                         "dim_keras.multiview", "dim_keras.adversarial_invertible", "dim_keras.mine_gan",
                         "dim_keras.bottleneck", "dim_keras.baselines.vae", "dim_keras.baselines.mim",
                         "dim_keras.baselines.aae", "dim_keras.baselines.bigan", "dim_keras.baselines.nat")


def register_serializables():
    """Imports every module that registers a serializable layer or model (this imports Keras)."""
    for module in _SERIALIZABLE_MODULES:
        importlib.import_module(module)


if sys.modules.get("keras") is not None:  # keras already paid for: register the serializables now, as users expect
    register_serializables()


def load_model(path, **kwargs):
    """``keras.saving.load_model`` with dim_keras's layers and models registered."""
    register_serializables()
    import keras
    return keras.saving.load_model(path, **kwargs)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"dim_keras.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'dim_keras' has no attribute {name!r}")

