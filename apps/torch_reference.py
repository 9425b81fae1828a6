"""Time the authors' DIM(L) training step re-implemented in PyTorch (timing only).

    python apps/torch_reference.py --batch_size=64 --steps=20 --json
    python apps/torch_reference.py --estimator=infonce --channels_last --device=cuda

Prints one summary line; --json adds a JSON object with every figure as the
last line (apps/benchmark.py --compare_torch reads it).  Needs torch and absl,
not TensorFlow.  The flags are the fields of
dim_keras.config.TorchReferenceConfig; the run is
dim_keras.runs.torch_reference.torch_reference, whose docstring lists what of
the authors' code it reproduces.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import TorchReferenceConfig  # noqa: E402


def run(config):
    from dim_keras.runs.torch_reference import summary, torch_reference
    result = torch_reference(config)
    print(summary(result), flush=True)
    if config.json:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(TorchReferenceConfig, run, "torch_reference.py")
