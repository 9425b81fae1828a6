"""Tschannen et al., "On Mutual Information Maximization for Representation Learning" (ICLR 2020), as
experiments (``apps/mi_lab.py <experiment>``), on two views of handwritten digits (:mod:`dim_keras.multiview`):

- ``invertible`` (Sec. 3.1, Fig. 1a-b): invertible RealNVP encoders, so the true MI is constant, trained to
  maximise I_NCE / I_NWJ: the estimate and the linear probe rise anyway;
- ``adversarial`` (Sec. 3.1, Fig. 1c, App. B): the same invertible encoder trained so that a linear
  classifier does badly: MI stays maximal, the probe falls below raw pixels;
- ``conditioning`` (Sec. 3.1, Fig. 2): an encoder initialised at the identity that may become non-invertible;
  the Jacobian's condition number grows while I_EST and the probe rise;
- ``critics`` (Sec. 3.2, Fig. 3): bilinear, separable and MLP critics: tighter bounds, worse representations;
- ``target_mi`` (Sec. 3.3, Fig. 4a-b with ``encoders``): training to a target value ``min |I_EST - t|``;
- ``encoders`` (Sec. 3.3): MLP vs ConvNet encoders at the same I_EST: the encoder matters more;
- ``negatives`` (Sec. 4, Fig. 4c, App. E): non-i.i.d. negatives push I_NCE / I_NWJ above the true MI, and
  I_NCE as a triplet (k-plet) loss.

Each experiment module has ``run(config, log=print) -> dict`` and writes ``<output_dir>/<experiment>.json`` and
``.png``.
"""

import importlib

# experiment -> module of dim_keras.runs.mi_lab that runs it.
_MODULES = {
    "invertible": "invertible",
    "adversarial": "invertible",
    "conditioning": "conditioning",
    "critics": "critics",
    "target_mi": "critics",
    "encoders": "encoders",
    "negatives": "negatives",
}


def mi_lab(config, log=print):
    """Runs ``config.experiment`` (a validated :class:`dim_keras.config.MILabConfig`); returns its results."""
    module = importlib.import_module(f"dim_keras.runs.mi_lab.{_MODULES[config.experiment]}")
    return module.run(config, log=log)
