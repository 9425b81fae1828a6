"""Throughput benchmark of DeepInfoMax training steps (images/s, step time, peak memory, FLOPs).

    python apps/benchmark.py --estimator=jsd --batch_size=64 --json
    python apps/benchmark.py --mode=sweep --sweep_batch_sizes=32,64,128 --sweep_estimators=jsd,infonce
    python apps/benchmark.py --mode=data_pipeline --batch_size=64
    python apps/benchmark.py --mode=matmul_peak --mixed_precision=bfloat16
    python apps/benchmark.py --compare_torch --estimator=infonce

Times the model apps/train.py trains (the model flags are train.py's) on
random images after a warm-up and prints one summary line (a markdown table
for --mode=sweep); --json adds a JSON object with every figure as the last
line.  The flags are the fields of dim_keras.config.BenchmarkConfig; the run
is dim_keras.runs.benchmark.benchmark, whose docstring says how the steps
are timed and the FLOPs counted (docs/BENCHMARKS.md has the numbers).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import BenchmarkConfig  # noqa: E402


def run(config):
    from dim_keras.runs.benchmark import benchmark, summary
    result = benchmark(config)
    print(summary(result), flush=True)
    if config.json:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(BenchmarkConfig, run, "benchmark.py")
