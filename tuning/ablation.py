"""Ablation of DIM's objective weights alpha, beta, gamma with keras-tuner (Fig. 10).

    python tuning/ablation.py --alphas=0,0.5,1 --betas=0,1 --gammas=0.1,1
    python tuning/ablation.py --mode=bayesian --max_trials=20 --objective=ndm

Every trial trains one DIM run (the training flags of apps/train.py, less
alpha, beta, gamma, output_dir, resume and the probe) into
<search_dir>/trials/<trial_id> and measures its encoder's Y; a measured
trial's checkpoints and model.keras are then removed (--keep_trial_models
keeps them).  Rerun with the same --search_dir to resume.  Writes results.json, results.csv and one PNG
per (measure, gamma) to --search_dir.  The flags are the fields of
dim_keras.config.AblationConfig; the run is dim_keras.runs.ablation.search.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import AblationConfig  # noqa: E402


def run(config):
    from dim_keras.runs.ablation import search
    result = search(config)
    done = sum(row["status"] == "COMPLETED" for row in result["rows"])
    print(f"{done}/{len(result['rows'])} trials completed; results in {result['results']}")


if __name__ == "__main__":
    cli.run_app(AblationConfig, run, "ablation.py",
                interrupt_hint="; finished trials are kept: rerun with the same --search_dir to resume")
