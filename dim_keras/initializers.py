"""PyTorch's layer defaults for Keras layers: the initialisation and normalisation the authors' step runs with.

The authors' code (rdevon/DIM on PyTorch) sets no initialiser or batch-norm argument of its own, so their
networks start from torch's defaults, which differ from Keras's:

- ``Conv2d`` / ``Linear`` kernels: ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (Keras: glorot-uniform); biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Keras: zeros);
- ``BatchNorm``: momentum 0.1 for the new batch statistic, i.e. Keras ``momentum=0.9`` (Keras: 0.99), and
  eps 1e-5 (Keras: 1e-3); ``LayerNorm`` eps 1e-5 (Keras: 1e-3).

:func:`apply_torch_layer_defaults` sets them on a built model.  Measured effect on real CIFAR-10 images in
docs/RESULTS.md ("Parity").
"""

import math

import keras
import numpy as np
from keras import layers

# torch's BatchNorm momentum 0.1 weighs the new batch statistic; Keras's momentum weighs the old one.
TORCH_BN_MOMENTUM = 0.9
TORCH_NORM_EPSILON = 1e-5


def apply_torch_layer_defaults(model, seed=None, keep=("shortcut",)):
    """Re-draws every Conv2D / Dense kernel and bias of ``model`` (recursively) as torch initialises them
    and gives its BatchNormalization / LayerNormalization layers torch's momentum and epsilon.

    Layers named in ``keep`` are left alone (the critics' linear shortcuts start as a noisy identity, as
    the authors initialise them explicitly).  ``seed`` makes the draw reproducible.  Call before
    training (the optimizer's slots are not touched).  The momentum and epsilon are layer attributes, so
    they are saved with the model's config.
    """
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.name in keep:
            continue
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = TORCH_BN_MOMENTUM
            layer.epsilon = TORCH_NORM_EPSILON
        elif isinstance(layer, layers.LayerNormalization):
            layer.epsilon = TORCH_NORM_EPSILON
        elif isinstance(layer, (layers.Conv2D, layers.Dense)):
            kernel = layer.kernel
            fan_in = int(np.prod(kernel.shape[:-1]))  # [kh, kw, in, out] or [in, out]
            bound = 1.0 / math.sqrt(fan_in)
            kernel.assign(rng.uniform(-bound, bound, kernel.shape).astype(kernel.dtype))
            if layer.bias is not None:
                layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype(layer.bias.dtype))
    return model


__all__ = ["apply_torch_layer_defaults", "TORCH_BN_MOMENTUM", "TORCH_NORM_EPSILON"]
