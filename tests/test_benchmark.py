"""Tests of apps/benchmark.py: output formats (subprocess runs with tiny settings), the analytic FLOP
count against hand-computed values, and the one-line exit-2 convention.  No timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(REPO, "apps")
BENCHMARK = os.path.join(APPS, "benchmark.py")
# Tiny and XLA-free: compiling is what a 2-step run spends its time on.
TINY = ["--image_size=16", "--batch_size=8", "--steps=2", "--warmup=1", "--embedding_dim=16", "--nojit_compile"]


def _run(*args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, BENCHMARK, *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def _import_benchmark():
    sys.path.insert(0, APPS)
    try:
        import benchmark
    finally:
        sys.path.remove(APPS)
    return benchmark


def test_json_last_line_has_the_fields():
    completed = _run(*TINY, "--json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    for field in ("images_per_s", "step_ms_median", "step_ms_p90", "peak_memory_mb", "device", "config",
                  "gflop_per_image", "achieved_gflop_per_s", "cifar10_epoch_s"):
        assert field in result, field
    assert result["images_per_s"] > 0
    assert result["step_ms_p90"] >= result["step_ms_median"] > 0
    assert result["peak_memory_mb"] > 0
    assert result["config"]["batch_size"] == 8 and result["config"]["encoder"] == "small"
    # Consistency of derived figures (exact relations, not timings).
    assert result["images_per_s"] == pytest.approx(8 / (result["step_ms_median"] / 1e3))
    assert result["cifar10_epoch_s"] == pytest.approx(50000 / result["images_per_s"])


def test_sweep_prints_a_markdown_table():
    completed = _run(*TINY, "--sweep", "--sweep_batch_sizes=4", "--sweep_critics=bilinear",
                     "--sweep_estimators=infonce")
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [line for line in completed.stdout.strip().splitlines() if line.startswith("|")]
    assert len(lines) == 3  # header, separator, one configuration
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:4] == ["estimator", "critic", "local samples", "batch"] and "images/s" in header
    assert set(lines[1].replace("|", "")) == {"-"}
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert len(cells) == len(header)
    assert cells[:4] == ["infonce", "bilinear", "all", "4"]
    assert float(cells[header.index("images/s")]) > 0


def test_data_pipeline_json():
    completed = _run("--data_pipeline", "--image_size=16", "--batch_size=8", "--steps=3", "--warmup=1", "--json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["mode"] == "data_pipeline" and result["images_per_s"] > 0
    assert result["config"]["image_size"] == 16 and result["config"]["source_image_size"] == 18


@pytest.mark.parametrize("args", [["--batch_size=1"], ["--estimator=mine"], ["--sweep_critics=nope", "--sweep"],
                                  ["--mixed_precision=fp8"], ["--sweep", "--data_pipeline"],
                                  ["--compare_torch", "--local_critic=bilinear"], ["--steps=2", "extra"]])
def test_bad_flags_exit_2_with_one_line(args):
    """Rejected before TensorFlow is imported: nothing but the one message on stderr."""
    completed = _run(*args, timeout=60)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark: ")
    assert completed.stdout == ""


def test_flag_choices_match_the_library():
    benchmark = _import_benchmark()
    from dim_keras import critics, encoders, estimators
    assert tuple(benchmark.ESTIMATORS) == tuple(estimators.ESTIMATORS)
    assert tuple(benchmark.CRITICS) == tuple(critics.CRITICS)
    assert tuple(benchmark.ENCODERS) == tuple(encoders.ENCODERS)


def test_flop_count_of_the_paper_configuration():
    """DCGAN encoder (Table 1), 2048-unit encode-and-dot critic, batch 64, 32x32, gamma 0.1."""
    from absl import flags
    benchmark = _import_benchmark()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["benchmark"])
    model, _ = benchmark.build_model(dict(benchmark.config_from_flags(), jit_compile=False))
    flops = benchmark.training_flops_per_image(model, batch_size=64)
    parts = flops["parts"]
    # conv 3->64 (16x16), 64->128 (8x8), 128->256 (4x4), all 4x4 kernels; fc 4096->1024; y 1024->64.
    assert parts["encoder"] == (2 * 16 * 16 * 16 * 3 * 64 + 2 * 8 * 8 * 16 * 64 * 128
                                + 2 * 4 * 4 * 16 * 128 * 256 + 2 * 4096 * 1024 + 2 * 1024 * 64)
    d = 2048
    assert parts["local_critic"] == (2 * (64 * d + d * d + 64 * d)                 # global MLP on Y
                                     + 64 * 2 * (128 * d + d * d + 128 * d)        # 64 locations, 1x1 convs
                                     + 2 * 64 * 64 * d)                            # 2 B L D pair scores / image
    assert parts["prior_discriminator"] == 3 * 2 * (64 * 1000 + 1000 * 200 + 200)
    assert flops["training"] == 3 * flops["forward"]
    assert flops["training"] / 1e9 == pytest.approx(2.02, abs=0.01)  # "about 2 GFLOP per image"


def test_percentile_matches_numpy():
    import numpy as np
    benchmark = _import_benchmark()
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 50, 90, 100):
        assert benchmark._percentile(values, q) == pytest.approx(np.percentile(values, q))
