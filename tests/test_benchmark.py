"""Tests of the benchmark (dim_keras.runs.benchmark, apps/benchmark.py) and the PyTorch reference
(dim_keras.runs.torch_reference, apps/torch_reference.py): output formats with tiny settings, the analytic
FLOP count against hand-computed values, the shared timing helpers, the one-line exit-2 convention
before TensorFlow starts, the JAX backend on a Python where TensorFlow cannot be imported (as on the GPU
machines), and the --backends comparison's figures.  No timing is asserted."""

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
from absl import flags

from official_formats import WITHOUT_TENSORFLOW

from dim_keras import cli
from dim_keras.config import BenchmarkConfig, TorchReferenceConfig, TrainConfig, validate
from dim_keras.errors import UsageError
from dim_keras.runs import benchmark as bench
from dim_keras.runs import timing, torch_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK_APP = os.path.join(ROOT, "apps", "benchmark.py")
TORCH_APP = os.path.join(ROOT, "apps", "torch_reference.py")
# Tiny and XLA-free: compiling is what a 2-step run spends its time on.
TINY = ["--image_size=16", "--batch_size=8", "--steps=2", "--warmup=1", "--embedding_dim=16", "--nojit_compile"]
TORCH_TINY = ["--image_size=16", "--batch_size=4", "--steps=2", "--warmup=1", "--embedding_dim=16"]


def tiny_config(**settings):
    """BenchmarkConfig of TINY; ``settings`` override BenchmarkConfig fields."""
    model = TrainConfig(batch_size=8, embedding_dim=16, jit_compile=False)
    return BenchmarkConfig(**{"image_size": 16, "steps": 2, "warmup": 1, "model": model, **settings})


def _run(app, *args, timeout=240):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, app, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def _run_without_tensorflow(app, *args):
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, app, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def _last_json(completed):
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the app
def test_json_last_line_has_the_fields():
    result = _last_json(_run(BENCHMARK_APP, *TINY, "--json"))
    for field in ("images_per_s", "step_ms_median", "step_ms_p90", "peak_memory_mb", "device", "config",
                  "gflop_per_image", "achieved_gflop_per_s", "cifar10_epoch_s"):
        assert field in result, field
    assert result["mode"] == "training"
    assert result["images_per_s"] > 0
    assert result["step_ms_p90"] >= result["step_ms_median"] > 0
    assert result["peak_memory_mb"] > 0
    assert result["config"]["batch_size"] == 8 and result["config"]["encoder"] == "small"
    # Consistency of derived figures (exact relations, not timings).
    assert result["images_per_s"] == pytest.approx(8 / (result["step_ms_median"] / 1e3))
    assert result["cifar10_epoch_s"] == pytest.approx(50000 / result["images_per_s"])


def test_sweep_prints_a_markdown_table():
    completed = _run(BENCHMARK_APP, *TINY, "--mode=sweep", "--sweep_batch_sizes=4", "--sweep_critics=bilinear",
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


@pytest.mark.parametrize("args,fragment", [
    (["--batch_size=1"], "--batch_size must be >= 2"),
    (["--estimator=mine"], "--estimator: unknown value 'mine'"),
    (["--mode=sweep", "--sweep_critics=nope"], "--sweep_critics: unknown value 'nope'"),
    (["--sweep_batch_sizes=1"], "--sweep_batch_sizes must be >= 2"),
    (["--mixed_precision=fp8"], "--mixed_precision: unknown value 'fp8'"),
    (["--mixed_precision=mixed_float16"], "--mixed_precision: unknown value"),  # train.py's spellings only
    (["--mode=nope"], "--mode: unknown value 'nope'"),
    (["--sweep"], "Unknown command line flag 'sweep'"),  # the old boolean modes are gone
    (["--mode=sweep", "--local_samples=4"], "--sweep_local_samples"),
    (["--mode=data_pipeline", "--compare_torch"], "--compare_torch goes with --mode=training"),
    (["--pipeline_source=png"], "--pipeline_source goes with --mode=data_pipeline"),
    (["--compare_torch", "--local_critic=bilinear"], "--local_critic=dot"),
    (["--compare_torch", "--image_size=24"], "dcgan encoder"),  # auto picks the small encoder below 29 px
    (["--compare_torch", "--prior=gaussian"], "--prior=uniform"),
    (["--steps=2", "extra"], "unexpected arguments: extra"),
    (["--backends=torch"], "--backends: unknown value 'torch'"),
    (["--backends=jax,jax"], "--backends lists a backend twice"),
    (["--mode=sweep", "--backends=jax"], "--backends goes with --mode=training"),
    (["--rounds=3"], "--rounds goes with --backends"),
])
def test_bad_flags_exit_2_with_one_line_before_tensorflow(args, fragment):
    """Rejected before TensorFlow is imported: nothing but the one message on stderr."""
    completed = _run_without_tensorflow(BENCHMARK_APP, *args)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark.py: error: "), completed.stderr[-2000:]
    assert fragment in lines[0]
    assert completed.stdout == ""


def test_library_modules_import_without_tensorflow():
    """The sweep's parent process and the torch reference never load TensorFlow."""
    code = ("import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
            "import dim_keras.runs.benchmark, dim_keras.runs.torch_reference, dim_keras.runs.timing; print('ok')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr[-2000:]


def test_torch_app_bad_flag_exit_2_with_one_line():
    completed = _run_without_tensorflow(TORCH_APP, "--image_size=20")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == ["torch_reference.py: error: --image_size must be a multiple "
                                                     "of 8, got 20"]


def test_torch_app_needs_no_tensorflow():
    """With torch it times the step with TF unimportable; without, it says so in one line (exit 2)."""
    completed = _run_without_tensorflow(TORCH_APP, *TORCH_TINY, "--json")
    if importlib.util.find_spec("torch") is None:
        assert completed.returncode == 2
        assert completed.stderr.strip().splitlines() == [
            "torch_reference.py: error: PyTorch is not installed (pip install torch)"]
    else:
        result = _last_json(completed)
        assert result["implementation"] == "torch_reference" and result["images_per_s"] > 0


# --------------------------------------------------------------------------- the library
def test_data_pipeline_result():
    result = bench.benchmark(tiny_config(mode="data_pipeline", steps=3))
    assert result["mode"] == "data_pipeline" and result["images_per_s"] > 0
    assert result["config"]["image_size"] == 16 and result["config"]["source_image_size"] == 18
    assert "data pipeline" in bench.summary(result)


@pytest.mark.parametrize("source", ["png", "jpeg", "tfrecord"])
def test_data_pipeline_streams_generated_files(source):
    result = bench.benchmark(tiny_config(mode="data_pipeline", steps=3, pipeline_source=source, pipeline_images=40))
    assert result["source"] == f"dim_keras.data.make_dataset streaming {source}" and result["images_per_s"] > 0
    assert result["config"]["source_image_size"] == 16 and result["source_bytes"] > 0
    assert f"streaming {source}" in bench.summary(result)


def test_matmul_peak_result():
    result = bench.benchmark(tiny_config(mode="matmul_peak"))
    assert result["mode"] == "matmul_peak" and result["gflop_per_s"] > 0
    assert result["gemm"] == "8 x [4096, 16] x [16, 16] float32"
    assert result["images_per_s_ceiling"] == pytest.approx(result["gflop_per_s"] / result["gflop_per_image"])
    assert bench.summary(result).startswith("matmul peak")


def test_an_image_size_the_encoder_cannot_take_is_a_usage_error():
    config = tiny_config(image_size=12)
    config.model.encoder = "dcgan"
    with pytest.raises(UsageError, match="dcgan encoder"):
        bench.benchmark(config)


def test_flag_choices_match_the_library():
    from dim_keras import critics, encoders, estimators
    fields = {field.name: field for field, _, _ in cli.flag_fields(BenchmarkConfig)}
    assert tuple(fields["estimator"].metadata["choices"]) == tuple(estimators.ESTIMATORS)
    assert tuple(fields["local_critic"].metadata["choices"]) == tuple(critics.CRITICS)
    assert tuple(fields["encoder"].metadata["choices"]) == tuple(encoders.ENCODERS)
    assert tuple(fields["sweep_estimators"].metadata["choices"]) == tuple(estimators.ESTIMATORS)
    assert tuple(fields["sweep_critics"].metadata["choices"]) == tuple(critics.CRITICS)


def test_flop_count_of_the_paper_configuration():
    """DCGAN encoder (Table 1), 2048-unit encode-and-dot critic, batch 64, 32x32, gamma 0.1."""
    model, encoder_name = bench.build_benchmark_model(BenchmarkConfig())
    assert encoder_name == "dcgan"
    flops = bench.training_flops_per_image(model, batch_size=64)
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
    # The torch reference counts its step the same way (no torch needed for the count).
    assert torch_reference.training_flops_per_image() == flops["training"]


def test_command_lines_give_back_the_config():
    """The sweep's and --compare_torch's subprocesses get flags that rebuild the config exactly."""
    config = tiny_config(mode="sweep", threads=1, sweep_batch_sizes=(4, 8), sweep_local_samples=(0, 16))
    config.model = dataclasses.replace(config.model, mixed_precision="bfloat16", alpha=0.5, y_dim=32)
    for original in (config, *(run for _, run in bench.sweep_configs(config))):
        values = flags.FlagValues()
        cli.define_flags(BenchmarkConfig, flag_values=values)
        values(["benchmark.py", *bench.command_line(original)])
        assert cli.config_from_flags(BenchmarkConfig, flag_values=values) == original
    runs = [run for _, run in bench.sweep_configs(config)]
    assert len(runs) == 2 * 2 * 2 * 2
    assert {run.model.local_samples for run in runs} == {None, 16}
    assert all(run.mode == "training" and run.json for run in runs)

    torch_config = bench.torch_config(BenchmarkConfig(compare_torch=True, steps=5, threads=2))
    validate(torch_config)
    values = flags.FlagValues()
    cli.define_flags(TorchReferenceConfig, flag_values=values)
    values(["torch_reference.py", *bench.command_line(torch_config)])
    assert cli.config_from_flags(TorchReferenceConfig, flag_values=values) == torch_config
    assert (torch_config.steps, torch_config.threads, torch_config.json) == (5, 2, True)


# --------------------------------------------------------------------------- timing helpers
def test_percentile_matches_numpy():
    import numpy as np
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 50, 90, 100):
        assert timing.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_step_figures():
    stats = timing.step_stats([0.5, 0.25, 1.0], batch_size=10)
    assert stats["images_per_s"] == pytest.approx(20.0)  # batch / median step time
    assert stats["images_per_s_mean"] == pytest.approx(30 / 1.75)
    assert (stats["step_ms_median"], stats["step_ms_min"]) == (pytest.approx(500.0), pytest.approx(250.0))
    assert stats["cifar10_epoch_s"] == pytest.approx(50000 / 20.0)
    cpu = timing.cpu_time_fields([2.0, 1.0, 3.0], batch_size=10, threads=2, training_flops_per_image=1e9)
    assert cpu == {"cpu_ms_per_step_median": pytest.approx(2000.0), "gflop_per_cpu_s": pytest.approx(5.0),
                   "images_per_s_idle_estimate": pytest.approx(10.0)}
    calls = []
    wall_s, cpu_s = timing.time_steps(lambda: calls.append("step"), steps=3, warmup=2,
                                      after_warmup=lambda: calls.append("reset"))
    assert calls == ["step", "step", "reset", "step", "step", "step"]
    assert len(wall_s) == len(cpu_s) == 3 and min(wall_s) >= 0


# --------------------------------------------------------------------------- torch reference
@pytest.mark.parametrize("estimator", ["jsd", "infonce"])
def test_torch_reference_result(estimator):
    pytest.importorskip("torch")
    config = TorchReferenceConfig(estimator=estimator, image_size=16, batch_size=4, steps=2, warmup=1,
                                  embedding_dim=16, device="cpu", threads=1)
    result = torch_reference.torch_reference(config)
    assert result["images_per_s"] == pytest.approx(4 / (result["step_ms_median"] / 1e3))
    assert result["gflop_per_image"] == pytest.approx(
        torch_reference.training_flops_per_image(16, 16, 4, 0.1) / 1e9)
    assert result["config"]["estimator"] == estimator and result["cpu_ms_per_step_median"] > 0
    assert torch_reference.summary(result).startswith(f"torch reference DIM(L) {estimator} batch 4")


# --------------------------------------------------------------------------- JAX and the backend comparison
# A sitecustomize that makes TensorFlow and TFDS look uninstalled: `import tensorflow` raises ModuleNotFoundError
# and, unlike sys.modules['tensorflow'] = None, "tensorflow" stays out of sys.modules, which Keras reads
# (keras.src.utils.backend_utils.in_tf_graph imports TensorFlow when the key is there).
NO_TENSORFLOW_SITECUSTOMIZE = """
import sys


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTensorFlow())
"""


def _without_tensorflow_env(tmp_path, **env):
    """An environment whose Pythons (this one's children too) cannot import TensorFlow or TFDS, as on the GPU
    machines, which have JAX but no TensorFlow: a sitecustomize on PYTHONPATH blocks the imports."""
    (tmp_path / "sitecustomize.py").write_text(NO_TENSORFLOW_SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, CUDA_VISIBLE_DEVICES="", **env)


def test_jax_training_runs_without_tensorflow(tmp_path):
    """KERAS_BACKEND=jax times the training step (bfloat16 policy) with TensorFlow unimportable: synthetic uint8
    input, Keras callbacks for the timing, process RSS for the CPU's memory."""
    pytest.importorskip("jax")
    completed = subprocess.run(
        [sys.executable, BENCHMARK_APP, "--image_size=16", "--batch_size=4", "--steps=2", "--warmup=1",
         "--embedding_dim=8", "--y_dim=8", "--mixed_precision=bfloat16", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
        env=_without_tensorflow_env(tmp_path, KERAS_BACKEND="jax"))
    result = _last_json(completed)
    assert result["backend"] == "jax" and "tensorflow" not in result["versions"] and "jax" in result["versions"]
    assert result["config"]["mixed_precision"] == "bfloat16" and result["config"]["batch_size"] == 4
    assert result["memory_kind"] == "process max RSS" and result["peak_memory_mb"] > 0
    assert result["images_per_s"] == pytest.approx(4 / (result["step_ms_median"] / 1e3))
    assert result["cifar10_epoch_s"] == pytest.approx(50000 / result["images_per_s"])
    assert math.isfinite(result["final_loss"])
    summary_line = completed.stdout.strip().splitlines()[-2]
    assert summary_line.startswith("DeepInfoMax jsd/dot small 16px batch 4 bfloat16") and "(jax)" in summary_line


def test_backends_compares_tensorflow_and_jax_in_one_run():
    """One round of each backend in its own process: the table, the ratio line, and ratio = jax / tensorflow."""
    pytest.importorskip("jax")
    completed = _run(BENCHMARK_APP, *TINY, "--backends=tensorflow,jax", "--json")
    result = _last_json(completed)
    assert result["mode"] == "backends" and result["arms"] == ["tensorflow", "jax"]
    (only,) = result["rounds"]
    assert only["tensorflow"]["backend"] == "tensorflow" and only["jax"]["backend"] == "jax", only
    jax_entry = result["comparison"]["jax"]
    assert jax_entry["ratio_to_first"] == pytest.approx(
        only["jax"]["images_per_s"] / only["tensorflow"]["images_per_s"])
    assert result["comparison"]["tensorflow"]["ratio_to_first"] == pytest.approx(1.0)
    lines = completed.stdout.strip().splitlines()
    assert [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "arm" not in line] == [
        "tensorflow", "jax"]
    assert any(line.startswith(f"jax / tensorflow = {jax_entry['ratio_to_first']:.2f}x images/s") for line in lines)


def _measured(images_per_s, idle=None, device="CPU: test"):
    """The fields of one training result that the comparison reads."""
    result = {"images_per_s": images_per_s, "step_ms_median": 64e3 / images_per_s, "peak_memory_mb": images_per_s,
              "device": device}
    if idle is not None:
        result["images_per_s_idle_estimate"] = idle
    return result


def test_comparison_pairs_rounds_and_leaves_out_failures():
    rounds = [{"tensorflow": _measured(50.0, idle=100.0), "jax": _measured(60.0, idle=110.0)},
              {"tensorflow": _measured(40.0, idle=80.0), "jax": _measured(60.0, idle=120.0)},
              {"tensorflow": {"error": "out of memory"}, "jax": _measured(70.0, idle=130.0)}]
    comparison = bench.compare_rounds(rounds, ["tensorflow", "jax"])
    tf_entry, jax_entry = comparison["tensorflow"], comparison["jax"]
    assert tf_entry["images_per_s"] == [50.0, 40.0] and tf_entry["errors"] == ["out of memory"]
    assert tf_entry["images_per_s_median"] == 45.0 and tf_entry["cifar10_epoch_s"] == pytest.approx(50000 / 45)
    assert jax_entry["images_per_s_median"] == 60.0 and jax_entry["peak_memory_mb"] == 70.0
    assert jax_entry["step_ms_median"] == pytest.approx(64e3 / 60)
    # Paired: 60/50 and 60/40 (the third round has no TensorFlow figure), median 1.35; not 60/45 = 1.33.
    assert jax_entry["ratio_to_first_rounds"] == pytest.approx([1.2, 1.5])
    assert jax_entry["ratio_to_first"] == pytest.approx(1.35)
    assert jax_entry["idle_ratio_to_first"] == pytest.approx((1.1 + 1.5) / 2)
    table = bench.summary({"mode": "backends", "arms": ["tensorflow", "jax"], "rounds": rounds,
                           "comparison": comparison, "config": bench.settings(tiny_config())})
    assert "| jax | 60.0, 60.0, 70.0 | 60.0 | 1.35 |" in table
    assert "jax / tensorflow = 1.35x images/s (median of paired rounds: 1.20, 1.50); idle-machine estimate 1.30x" \
        in table


def test_each_backend_arm_gets_the_settings_of_one_run():
    config = tiny_config(backends=("tensorflow", "jax"), rounds=2, compare_torch=False)
    arms = bench.backend_arms(config)
    assert [(name, app, env) for name, app, _, env in arms] == [
        ("tensorflow", "benchmark.py", {"KERAS_BACKEND": "tensorflow"}),
        ("jax", "benchmark.py", {"KERAS_BACKEND": "jax"})]
    values = flags.FlagValues()
    cli.define_flags(BenchmarkConfig, flag_values=values)
    values(["benchmark.py", *arms[1][2]])
    single = cli.config_from_flags(BenchmarkConfig, flag_values=values)
    assert single == dataclasses.replace(config, backends=(), rounds=1, json=True)


def test_saturation_is_the_smallest_batch_within_five_percent_of_the_best():
    def row(batch, rate, critic="dot"):
        return {"estimator": "jsd", "critic": critic, "local_samples": 0, "batch_size": batch,
                "result": {"images_per_s": rate}}
    rows = [row(64, 1000.0), row(128, 1900.0), row(256, 2000.0), row(512, 1960.0), row(1024, 1500.0),
            {"estimator": "jsd", "critic": "dot", "local_samples": 0, "batch_size": 2048, "error": "out of memory"},
            row(64, 500.0, critic="bilinear")]  # one batch size only: nothing to say
    found = bench.saturation(rows)
    assert list(found) == [("jsd", "dot", 0)]
    assert found[("jsd", "dot", 0)] == {"images_per_s": 2000.0, "best_batch_size": 256, "saturating_batch_size": 128,
                                        "cifar10_epoch_s": 25.0}


def test_the_benchmark_builds_the_model_train_builds_with_every_setting():
    """One builder (dim_keras.runs.model_setup, TensorFlow-free, for the benchmark on JAX) serves train.py and
    the benchmark, and every model setting of a TrainConfig reaches the model: settings away from their
    defaults, read back from the model's config."""
    from dim_keras.runs import model_setup, train

    assert train.build_model is model_setup.build_model
    config = TrainConfig(batch_size=8, embedding_dim=16, y_dim=8, gamma=0.1, recipe="improved", alpha=0.5,
                         local_critic="separable", estimator="infonce", prior="gaussian", prior_gradient_penalty=1.0,
                         local_samples=4, occlusion=True, coordinate_prediction="both", coordinate_weight=0.5,
                         seed=7)
    model = model_setup.build_model(config, (32, 32, 3), steps_per_epoch=10)
    built = model.get_config()
    for name in ("alpha", "gamma", "local_critic", "estimator", "prior", "prior_gradient_penalty", "local_samples",
                 "occlusion", "coordinate_prediction", "coordinate_weight", "embedding_dim", "seed"):
        assert built[name] == getattr(config, name), name
    recipe = config.recipe_settings()
    for name in ("global_layer_norm", "score_scale", "score_penalty", "score_clip"):
        assert built[name] == recipe[name], name
    assert model.encoder.output["y"].shape[-1] == 8
    # The settings of Sec. 4.2 / App. A.3 on the folded encoder: multiple globals (its 7x7 crop grid), a ResNet-18
    # crop network (2 + 2 + 2 + 2 residual blocks), K = 3 negatives of a batch of 8 (so not "all 7 others").
    config = TrainConfig(batch_size=8, embedding_dim=16, y_dim=8, encoder="folded", crop_encoder="resnet18",
                         num_globals=2, negatives=3, seed=7)
    model = model_setup.build_model(config, (32, 32, 3), steps_per_epoch=10)
    built = model.get_config()
    assert (built["num_globals"], built["negatives"]) == (2, 3)
    names = [layer.name for layer in model.encoder.layers]
    assert sum(name.startswith("crop_stage") and name.endswith("_add") for name in names) == 8
    assert "crop_conv1" not in names  # not the default conv crop network
    assert model.encoder.output["local"].shape[1:3] == (7, 7)
