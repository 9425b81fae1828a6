"""MINE's information bottleneck (Belghazi et al. 2018, Sec. 5.3, Table 3): a classifier of handwritten digits
trained on H(Y|Z) + beta I(X; Z), I estimated by MINE, against the deterministic baseline.

    python apps/mine_bottleneck.py                        # digits, gaussian encoder, betas 0,0.01,0.1,1, 3 seeds
    python apps/mine_bottleneck.py --noise=additive --sigma=0.3 --betas=0,0.1 --json
    python apps/mine_bottleneck.py --dataset=mnist --data_dir=D --steps=20000 --hidden_units=1024,1024

Prints one line per run and a table of beta -> test error, the test MINE estimate of I(X; Z) and H(Y) - CE (a
lower bound on I(Z; Y) <= I(X; Z)), mean +- std over --seeds; writes <output_dir>/mine_bottleneck.json and .png.
The flags are the fields of dim_keras.config.BottleneckConfig; the run is dim_keras.runs.bottleneck.bottleneck.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import BottleneckConfig  # noqa: E402


def run(config):
    from dim_keras.runs.bottleneck import bottleneck
    result = bottleneck(config)
    print("| setting | test error (%) | MINE I(X;Z), test (nats) | H(Y) - CE, test (nats) |\n|---|---|---|---|")
    for label, row in result["results"].items():
        error, mi, bound = row["test_error"], row["test_mi"], row["label_information"]
        print(f"| {label} | {100 * error['mean']:.2f} ± {100 * error['std']:.2f} | "
              f"{mi['mean']:.3f} ± {mi['std']:.3f} | {bound['mean']:.3f} ± {bound['std']:.3f} |")
    print(f"wrote {result['png']} and {result['json']} ({result['seconds']:.0f} s)")
    if config.json:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}))


if __name__ == "__main__":
    cli.run_app(BottleneckConfig, run, "mine_bottleneck.py")
