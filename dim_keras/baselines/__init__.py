"""The comparison models of DIM's Tables 1, 2 and 4 and MIM (issue 15), trained like DIM.

``apps/train.py --method=...`` builds each through :func:`build_baseline`; every model is a
:class:`~dim_keras.baselines.base.BaselineModel` (the TensorFlow and JAX steps of
:class:`dim_keras.models.TwoObjectiveModel`, shared with :class:`~dim_keras.models.DeepInfoMax`) around the
encoder of :mod:`dim_keras.encoders`, so the export, checkpoints, probe and ``apps/evaluate.py`` treat every
method alike.

=========  ==========================================  ===================================
method     model                                       module
=========  ==========================================  ===================================
mim        A-MIM (Livne et al. 2019)                   :mod:`dim_keras.baselines.mim`
vae        VAE (Kingma & Welling 2014)                 :mod:`dim_keras.baselines.vae`
beta_vae   beta-VAE (Higgins et al. 2017)              :mod:`dim_keras.baselines.vae`
ae         deterministic auto-encoder                  :mod:`dim_keras.baselines.vae`
aae        adversarial auto-encoder (Makhzani 2015)    :mod:`dim_keras.baselines.aae`
bigan      BiGAN / ALI (Donahue 2017, Dumoulin 2017)   :mod:`dim_keras.baselines.bigan`
nat        Noise As Targets (Bojanowski & Joulin 2017) :mod:`dim_keras.baselines.nat`
=========  ==========================================  ===================================
"""

import importlib

# --method -> "module:function"; each function is build(config, encoder, encoder_name, input_shape,
# steps_per_epoch=None, num_examples=None) -> an uncompiled model (dim_keras.runs.model_setup compiles it).
BUILDERS = {
    "mim": "dim_keras.baselines.mim:build",
    "vae": "dim_keras.baselines.vae:build",
    "beta_vae": "dim_keras.baselines.vae:build",
    "ae": "dim_keras.baselines.vae:build",
    "aae": "dim_keras.baselines.aae:build",
    "bigan": "dim_keras.baselines.bigan:build",
    "nat": "dim_keras.baselines.nat:build",
}


def build_baseline(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """The uncompiled model of ``config.method`` (one of :data:`BUILDERS`) around ``encoder``."""
    module_name, function = BUILDERS[config.method].split(":")
    builder = getattr(importlib.import_module(module_name), function)
    return builder(config, encoder, encoder_name, input_shape, steps_per_epoch=steps_per_epoch,
                   num_examples=num_examples)
