"""dim_keras: Deep InfoMax (Hjelm et al., ICLR 2019) in Keras 3 / TensorFlow.

Modules, one paper concept each:

- :mod:`dim_keras.estimators`: MI lower bounds (JSD eq. 4, DV eq. 2, infoNCE eq. 5, NWJ).
- :mod:`dim_keras.critics`: critics scoring all pairs of a batch (Tables 6-9).
- :mod:`dim_keras.encoders`: encoders with named feature taps (App. A.2).
- :mod:`dim_keras.priors`: priors and the prior discriminator (eq. 7, Table 10).
- :mod:`dim_keras.models`: the ``DeepInfoMax`` Keras model (eq. 8).
- :mod:`dim_keras.export`: SavedModel export and :func:`load_encoder`.
- :mod:`dim_keras.data`, :mod:`dim_keras.training`, :mod:`dim_keras.evaluation`,
  :mod:`dim_keras.generation`: datasets, training runs, evaluation, generation.

Importing the package registers every serializable layer and model, so
``keras.saving.load_model("model.keras")`` works after ``import dim_keras``.
"""

import importlib

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
    "PriorDiscriminator": "priors",
}

__all__ = sorted(_EXPORTS)


# Registers DeepInfoMax, critics, encoders' layers and the prior discriminator.
from dim_keras import models as _models  # noqa: E402,F401


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"dim_keras.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'dim_keras' has no attribute {name!r}")

