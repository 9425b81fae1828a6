r"""Compare trained runs of any --method with the DIM paper's measures, one row per run (Tables 1 and 4).

    python apps/compare.py --run_dirs=saved_models/dim,saved_models/vae,saved_models/mim \
        --output=docs/compare_digits.json --latent_png=docs/latents_digits.png

Every run's exported encoder (apps/train.py's encoder/) is measured on the same images: linear probe
(logistic) and SVM on conv / fc / Y, MS-SSIM of a decoder trained from Y, MINE's I(X; Y) and NDM
(apps/evaluate.py's measures, --metrics), then the code measures of MIM's claims (--latent_measures): active
units of Y (Burda et al. 2016) and the reconstruction MSE of the methods with a decoder.  Prints a Markdown
table, writes the results as JSON (--output) and the codes' principal plane as a PNG (--latent_png).

Bad input prints one line on stderr and exits with code 2.  The flags are the fields of
dim_keras.config.CompareConfig; the run is dim_keras.runs.compare.compare.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import CompareConfig  # noqa: E402


def run(config):
    from dim_keras.runs.compare import compare
    compare(config)  # prints the table


if __name__ == "__main__":
    cli.run_app(CompareConfig, run, "compare.py")
