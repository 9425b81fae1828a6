"""MINE's simulation: estimate the MI of correlated Gaussians with a trained critic.

    python apps/estimate_mi.py --estimator=dv --rho=0.9 --dim=2 --json
    python apps/estimate_mi.py --plot=mi_vs_rho.png      # all estimators over rho
    python apps/estimate_mi.py --estimator=dv --ema_decay=0.99   # MINE's bias-corrected gradient
    python apps/estimate_mi.py --experiment=sweep --plot=sweep.png --output_json=sweep.json
                                  # MINE Fig. 1: estimators x --sweep_dims (2,5,10,20) x --seeds (3)
    python apps/estimate_mi.py --experiment=invariance --plot=inv.png   # MINE Fig. 2: Y = f(X) + sigma eps

x ~ N(0, I_d), z = rho x + sqrt(1 - rho^2) eps; the analytic MI is -d/2 log(1 - rho^2) nats.
The flags are the fields of dim_keras.config.EstimateMIConfig; the run is
dim_keras.runs.estimate_mi.estimate_mi.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import EstimateMIConfig  # noqa: E402


def run(config):
    from dim_keras.runs.estimate_mi import estimate_mi
    result = estimate_mi(config)
    if config.experiment != "single":
        if config.json:
            print(json.dumps(result))
        return
    print(f"{config.estimator} estimate {result['estimate']:.4f} nats; true MI {result['true_mi']:.4f} nats "
          f"(rho={config.rho}, d={config.dim}, batch {config.batch_size})")
    if config.json:
        result.pop("history")
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(EstimateMIConfig, run, "estimate_mi.py")
