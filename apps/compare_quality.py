"""Representation quality at equal epochs: dim_keras's recipes, the authors' DIM(L) step (PyTorch) and the
untrained encoder, probed alike (issue 12).

    python apps/compare_quality.py --dataset=cifar10 --data_dir=../shared/data/cifar10-dev --epochs=10 --seeds=0,1,2
    python apps/compare_quality.py --data_dir=../shared/data/cifar10-dev --epochs=1 --seeds=0 --arms=torch,random_init

Every seed trains each dim_keras recipe of --arms (paper, improved) with apps/train.py's training (DIM(L)
without the prior term: gamma = 0) and the authors' step re-implemented in PyTorch (torch; needs torch, a
dev-only tool) on the same pretraining images for --epochs epochs, then probes the conv, fc and y features of
every encoder with the same linear probe (random_init: the dim_keras encoder untrained), its C chosen by
cross-validation on the training labels (--probe_c=cv, the harness's default; --probe_c=1 is the fixed C of
the earlier tables in docs/RESULTS.md).  Prints a markdown
table of mean +- std over seeds and writes <output_dir>/compare_quality.json (per-seed values, wall times) and
<output_dir>/compare_quality.png (probe accuracy against epochs, from the runs' probe monitor); --json adds the
JSON object as the last line.  Rerunning with the same --output_dir reuses the finished runs.  The flags are the
fields of dim_keras.config.CompareQualityConfig; the run is dim_keras.runs.compare_quality.compare_quality.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import CompareQualityConfig  # noqa: E402


def run(config):
    from dim_keras.runs.compare_quality import compare_quality, summary_lines
    result = compare_quality(config)
    print("\n".join(summary_lines(result)), flush=True)
    if config.json:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(CompareQualityConfig, run, "compare_quality.py")
