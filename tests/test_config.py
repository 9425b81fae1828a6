"""The TF-free bottom floor: config dataclasses, generated flags, one validation pass, atomic writes,
path checks, the native-log filter."""
import dataclasses
import os
import subprocess
import sys

import pytest

from official_formats import WITHOUT_TENSORFLOW
from absl import flags

from dim_keras import choices, cli, config, io, runtime
from dim_keras.errors import DataError, UsageError

ALL_CONFIGS = (config.TrainConfig, config.GenerateConfig, config.EvaluateConfig, config.EstimateMIConfig,
               config.AblationConfig, config.BenchmarkConfig, config.TorchReferenceConfig, config.MILabConfig,
               config.MineGANConfig, config.BottleneckConfig, config.CompareQualityConfig, config.PrepareDataConfig,
               config.NegativesSweepConfig, config.LocalMapsConfig)


def test_config_and_cli_import_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "import dim_keras.config, dim_keras.cli, dim_keras.io, dim_keras.errors, dim_keras.runtime; "
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_one_usage_error_class():
    assert issubclass(DataError, UsageError) and issubclass(UsageError, ValueError)
    assert str(UsageError("two\nlines")) == "two lines"


@pytest.mark.parametrize("config_cls", ALL_CONFIGS)
def test_flags_are_generated_from_the_fields(config_cls):
    values = flags.FlagValues()
    names = cli.define_flags(config_cls, flag_values=values)
    assert len(names) == len(set(names))  # nested configs never clash with the outer fields
    values(["prog"])
    default = config_cls()
    built = cli.config_from_flags(config_cls, flag_values=values)
    assert built == default  # the flags' defaults are the dataclass defaults
    for field, path, _ in cli.flag_fields(config_cls):
        assert field.metadata["help"], field.name
    if config_cls is config.EvaluateConfig:
        with pytest.raises(UsageError, match="--encoder is required"):
            config.validate(default)
    elif config_cls is config.LocalMapsConfig:
        with pytest.raises(UsageError, match="--run_dir is required"):
            config.validate(default)
    elif getattr(config_cls, "SUBCOMMAND", None):  # the positional sub-command is required; each one is valid
        subcommand = next(f for f in dataclasses.fields(config_cls) if f.name == config_cls.SUBCOMMAND)
        assert not subcommand.metadata["flag"]
        with pytest.raises(UsageError, match="name an experiment"):
            config.validate(default)
        for name in subcommand.metadata["choices"]:
            config.validate(dataclasses.replace(default, **{config_cls.SUBCOMMAND: name}))
    else:
        config.validate(default)  # the defaults are valid settings


def test_flags_parse_into_nested_configs_and_lists():
    values = flags.FlagValues()
    cli.define_flags(config.AblationConfig, flag_values=values)
    values(["prog", "--alphas=0,1", "--epochs=2", "--estimator=dv", "--measures=ndm"])
    built = cli.config_from_flags(config.AblationConfig, flag_values=values)
    assert built.alphas == (0.0, 1.0) and built.measures == ("ndm",)
    assert built.train.epochs == 2 and built.train.estimator == "dv"
    assert built.train.probe is False  # the ablation's own default for its trials
    assert "alpha" not in values and "output_dir" not in values  # set by the search, not flags
    values = flags.FlagValues()
    cli.define_flags(config.AblationConfig, flag_values=values)
    values(["prog", "--alphas=0,x"])
    with pytest.raises(UsageError, match="--alphas must be a comma-separated list of numbers"):
        cli.config_from_flags(config.AblationConfig, flag_values=values)


@pytest.mark.parametrize("changes,message", [
    ({"dataset": "nosuch"}, "--dataset: unknown value 'nosuch'"),
    ({"batch_size": 1}, "--batch_size must be >= 2, got 1"),
    ({"learning_rate": float("nan")}, "--learning_rate must be a finite number"),
    ({"learning_rate": 0.0}, "--learning_rate must be > 0.0"),
    ({"gamma": -1.0}, "--gamma must be >= 0.0"),
    ({"alpha": 0.0, "beta": 0.0}, "both 0"),
    ({"verbose": 3}, "--verbose: unknown value 3"),
    ({"resume": True}, "--resume needs the --output_dir"),
    ({"image_size": 4, "dataset": "folder", "data_dir": "."}, "--image_size must be >= 8, got 4"),
    ({"image_size": 32}, "--image_size applies to --dataset=folder only; digits"),
    ({"probe_c": "0"}, "--probe_c must be a positive number or cv, got '0'"),
    ({"probe_c": "inf"}, "--probe_c must be a positive number or cv"),
    ({"probe_c": "auto"}, "--probe_c must be a positive number or cv, got 'auto'"),
])
def test_validate_reports_the_first_bad_setting(changes, message):
    with pytest.raises(UsageError, match=message):
        config.validate(dataclasses.replace(config.TrainConfig(), **changes))


def test_probe_c_is_a_positive_number_or_cv():
    assert config.TrainConfig().resolved_probe_c() == 1.0  # the probe every earlier result was made with
    assert config.TrainConfig(probe_c="0.01").resolved_probe_c() == 0.01
    assert config.TrainConfig(probe_c="CV").resolved_probe_c() == "cv"
    config.validate(config.CompareQualityConfig(train=config.TrainConfig(probe_c="cv")))
    # the comparison harness cross-validates by default, and every arm's run config carries it
    harness = config.CompareQualityConfig()
    assert harness.run_config("paper", 0, "unused").resolved_probe_c() == "cv"


def test_validate_recurses_into_nested_configs():
    bad = config.AblationConfig(train=config.TrainConfig(batch_size=0))
    with pytest.raises(UsageError, match="--batch_size"):
        config.validate(bad)


def test_config_dict_round_trip():
    original = config.AblationConfig(alphas=(0.0, 2.0), train=config.TrainConfig(epochs=3, estimator="nwj"))
    payload = config.to_dict(original)
    assert payload["alphas"] == [0.0, 2.0] and payload["train"]["epochs"] == 3
    assert config.from_dict(config.AblationConfig, payload) == original
    with pytest.raises(UsageError, match="unknown TrainConfig settings: nosuch"):
        config.from_dict(config.TrainConfig, {"nosuch": 1})


def test_choices_match_the_library():
    from dim_keras import estimators, priors
    from dim_keras.evaluation import suite
    assert tuple(estimators._BOUNDS) == choices.ESTIMATORS
    assert tuple(priors.PRIORS) == choices.PRIORS
    assert suite.METRICS == choices.METRICS


# ---------------------------------------------------------------------- io
def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_atomic_writes_replace_whole_files_with_shareable_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "metrics.json"
        io.write_json(str(target), {"b": 1, "a": [1, 2]})
        assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
        assert _mode(target) == 0o644
        with io.atomic_path(str(tmp_path / "export")) as tmp:
            os.makedirs(os.path.join(tmp, "variables"))
            with open(os.path.join(tmp, "variables", "data"), "w") as handle:
                handle.write("x")
        assert _mode(tmp_path / "export") == 0o755 and _mode(tmp_path / "export" / "variables" / "data") == 0o644
    finally:
        os.umask(umask)
    assert sorted(os.listdir(tmp_path)) == ["export", "sub"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    io.write_text(str(target), "old")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(str(target)) as tmp:
            assert tmp.endswith(".json")  # the extension is kept for format-sniffing writers
            with open(tmp, "w") as handle:
                handle.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_path_checks(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    io.check_output_dir(str(tmp_path / "new" / "deeper"))
    io.check_output_file(str(tmp_path / "new" / "out.json"))
    with pytest.raises(UsageError, match="is a file, not a directory"):
        io.check_output_dir(str(blocker / "run"))
    with pytest.raises(UsageError, match="is a file, not a directory"):
        io.check_output_file(str(blocker / "out.json"))
    with pytest.raises(UsageError, match="is a directory, not a file"):
        io.check_output_file(str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        io.check_input_dir(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="is a file, not a directory"):
        io.check_input_dir(str(blocker))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UsageError, match="not writable"):
            io.check_output_dir(str(locked / "run"))


# ----------------------------------------------------------- native logs
NATIVE_START_UP = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795465082.641425    1950 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1795465082.641724    1950 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    b"E0000 00:00:1795465085.700043    1950 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.",
    b"I0000 00:00:1795465086.222385    2000 device_compiler.h:208] Compiled cluster using XLA!",
    # Grappler's harmless "an optional graph rewrite did not apply", logged at error level.
    b"E0000 00:00:1795465086.6 2000 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply",
]


def test_native_start_up_lines_are_noise_and_user_lines_are_not():
    assert all(runtime.is_noise(line) for line in NATIVE_START_UP)
    for line in (b"train.py: error: --epochs must be >= 1", b"Traceback (most recent call last):",
                 b"E0000 00:00:1795465086.1 2000 bfc_allocator.cc:485] Allocator ran out of memory",
                 b"/x.py:3: UserWarning: something the user should see"):
        assert not runtime.is_noise(line)


def test_progress_bars_become_one_line_per_epoch_off_a_terminal(tmp_path):
    class Terminal:
        def isatty(self):
            return True

    with open(tmp_path / "log", "w") as log:
        assert [runtime.progress_verbosity(v, log) for v in (0, 1, 2)] == [0, 2, 2]
    assert [runtime.progress_verbosity(v, Terminal()) for v in (0, 1, 2)] == [0, 1, 2]


def test_filter_drops_native_lines_written_to_fd_2_and_keeps_the_rest():
    lines = b"\\n".join(NATIVE_START_UP).decode()
    code = ("import os, sys; from dim_keras import runtime; runtime.filter_native_logs(); "
            f"os.write(2, b'''{lines}\\nkept line\\n'''); print('python line', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr.splitlines() == ["kept line", "python line"]


APPS = {("apps", "train.py"): config.TrainConfig, ("apps", "generate.py"): config.GenerateConfig,
        ("apps", "evaluate.py"): config.EvaluateConfig, ("apps", "estimate_mi.py"): config.EstimateMIConfig,
        ("apps", "benchmark.py"): config.BenchmarkConfig, ("apps", "torch_reference.py"): config.TorchReferenceConfig,
        ("apps", "mi_lab.py"): config.MILabConfig, ("apps", "mine_gan.py"): config.MineGANConfig,
        ("apps", "mine_bottleneck.py"): config.BottleneckConfig, ("tuning", "ablation.py"): config.AblationConfig,
        ("apps", "compare_quality.py"): config.CompareQualityConfig,
        ("apps", "prepare_data.py"): config.PrepareDataConfig,
        ("apps", "negatives_sweep.py"): config.NegativesSweepConfig, ("apps", "local_maps.py"): config.LocalMapsConfig}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("app", sorted(APPS))
def test_every_app_documents_every_flag_of_its_config_without_tensorflow(app):
    code = WITHOUT_TENSORFLOW
    result = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, *app), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.stderr == ""
    assert result.returncode == 0  # absl's usage exits with 1; asking for help is no error
    for field, _, _ in cli.flag_fields(APPS[app]):
        assert f"--{field.name}:" in result.stdout or f"--[no]{field.name}:" in result.stdout, field.name


@pytest.mark.parametrize("flag", ["-h", "--helpfull"])
def test_short_and_full_help_exit_0(flag):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "apps", "estimate_mi.py"), flag],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert "--estimator:" in result.stdout
