"""dim_keras: Deep InfoMax (Hjelm et al., ICLR 2019) in Keras 3 / TensorFlow.

Modules, one paper concept each:

- :mod:`dim_keras.estimators`: MI lower bounds (JSD eq. 4, DV eq. 2, infoNCE eq. 5, NWJ).
- :mod:`dim_keras.critics`: critics scoring all pairs of a batch (Tables 6-9).
- :mod:`dim_keras.encoders`: encoders with named feature taps (App. A.2).
- :mod:`dim_keras.priors`: priors and the prior discriminator (eq. 7, Table 10).
- :mod:`dim_keras.models`: the ``DeepInfoMax`` Keras model (eq. 8).
- :mod:`dim_keras.export`: SavedModel export and :func:`load_encoder`.
"""

from dim_keras.critics import (BilinearCritic, ConcatAndConvolveCritic,
                               EncodeAndDotCritic, GlobalCritic, SeparableCritic,
                               build_critic)
from dim_keras.encoders import build_encoder
from dim_keras.estimators import (dv_lower_bound, infonce_lower_bound,
                                  jsd_lower_bound, mi_lower_bound, nwj_lower_bound)
from dim_keras.export import export_encoder, load_encoder
from dim_keras.models import DeepInfoMax, default_optimizer
from dim_keras.priors import PriorDiscriminator

__version__ = "0.1.0"
