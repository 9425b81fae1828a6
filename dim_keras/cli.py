"""What every app shares on the command line (no TensorFlow import).

- :func:`define_flags` generates an app's absl flags from a config dataclass
  of :mod:`dim_keras.config` (help text, choices and defaults from the fields);
- :func:`config_from_flags` builds the config back from the parsed flags;
- :func:`run_app` is the whole ``main`` of an app: parse (a config with a
  ``SUBCOMMAND`` class attribute takes that field from the one positional
  argument, e.g. ``mi_lab.py critics --steps=100``), validate (before
  TensorFlow is imported), filter TensorFlow's start-up noise, call the run
  function, and turn every failure into one line on stderr with exit code 2
  (a user mistake) or 1 (diverged training, a failing disk, a lost worker of a
  multi-worker run), and Ctrl-C into
  one line with exit code 130.
"""

import dataclasses
import signal
import sys

from absl import app, flags

from dim_keras import config as config_lib
from dim_keras.errors import Terminated, TrainingDiverged, UsageError, WorkerLost, first_line

def fail(prog, message, code=2):
    """Prints ``<prog>: error: <message>`` (one line) on stderr and exits (2: user mistake)."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


# ------------------------------------------------------------------- flags
def flag_fields(config_cls, prefix=(), only=None, exclude=(), defaults=None):
    """Yields ``(field, path, default)`` for every command-line setting of ``config_cls``.

    ``path`` is the attribute path from the top-level config (nested configs
    contribute their own fields under the same flag names).
    """
    defaults = defaults or {}
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if "nested" in meta:
            yield from flag_fields(meta["nested"], prefix + (field.name,), meta["only"], meta["exclude"],
                                   meta["defaults"])
            continue
        if not meta.get("flag", True) or (only is not None and field.name not in only) or field.name in exclude:
            continue
        default = defaults.get(field.name, field.default)
        yield field, prefix + (field.name,), default


def _help(field):
    meta = field.metadata
    text = meta.get("help", "")
    if meta.get("choices") is not None and meta.get("element") is None and field.type is not bool:
        text += f" One of: {', '.join(map(str, meta['choices']))}."
    elif meta.get("choices") is not None:
        text += f" Values from: {', '.join(map(str, meta['choices']))}."
    return text


def define_flags(config_cls, flag_values=flags.FLAGS, module_name=None):
    """Defines one absl flag per command-line field of ``config_cls``; returns their names.

    ``module_name`` is the module the flags are listed under; an app passes its
    ``sys.argv[0]``, since absl's ``--help`` lists the main module's flags.
    """
    names = []
    for field, _, default in flag_fields(config_cls):
        name, help_text, element = field.name, _help(field), field.metadata.get("element")
        kwargs = {"flag_values": flag_values, "module_name": module_name}
        if element is not None:
            flags.DEFINE_list(name, [str(v) for v in default], help_text, **kwargs)
        elif field.type is bool:
            flags.DEFINE_boolean(name, default, help_text, **kwargs)
        elif field.type is int:
            flags.DEFINE_integer(name, default, help_text, **kwargs)
        elif field.type is float:
            flags.DEFINE_float(name, default, help_text, **kwargs)
        else:
            flags.DEFINE_string(name, default, help_text, **kwargs)
        names.append(name)
    return names


def _convert(field, raw):
    element = field.metadata.get("element")
    if element is None:
        return raw
    try:
        return tuple(element(item.strip()) for item in raw if item.strip())
    except ValueError:
        kind = {int: "integers", float: "numbers"}.get(element, "values")
        raise UsageError(f"--{field.name} must be a comma-separated list of {kind}, got {','.join(raw)}") from None


def config_from_flags(config_cls, flag_values=flags.FLAGS):
    """The ``config_cls`` instance the parsed flags describe (not yet validated)."""
    config = config_cls()
    for field, path, _ in flag_fields(config_cls):
        target = config
        for attribute in path[:-1]:
            target = getattr(target, attribute)
        setattr(target, path[-1], _convert(field, flag_values[field.name].value))
    return config


# --------------------------------------------------------------------- app
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")


def _options(argv):
    """The arguments of ``argv`` before a ``--`` (after it everything is positional)."""
    args = list(argv[1:])
    return args[:args.index("--")] if "--" in args else args


def _with_long_help(argv):
    """``argv`` with ``-h`` spelled ``--help`` (absl knows only ``--help`` and ``-?``)."""
    options = _options(argv)
    return [argv[0], *("--help" if arg == "-h" else arg for arg in options), *argv[1 + len(options):]]


def _asks_for_help(argv):
    return any(arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in _HELP_FLAGS for arg in _options(argv))


def _raise_terminated(signum, frame):
    raise Terminated()


def run_app(config_cls, run, prog, interrupt_hint=""):
    """The whole command line of an app.

    ``run(config)`` does the work (it imports TensorFlow when it needs it);
    the flags are parsed and the config validated before that, so a mistake
    costs the user no TensorFlow start-up.  The Ctrl-C / SIGTERM line ends
    with the interrupt's own message when the run gave it one (what it
    saved), else with ``interrupt_hint`` (e.g. how to resume).
    """
    define_flags(config_cls, module_name=sys.argv[0])

    def parse_flags(argv):
        argv = _with_long_help(argv)
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(prog, first_line(error))
        except SystemExit as done:
            # absl prints the usage of --help/--helpfull/... and exits with status 1; asking for help is no error.
            if done.code == 1 and _asks_for_help(argv):
                sys.exit(0)
            raise

    subcommand = getattr(config_cls, "SUBCOMMAND", None)  # a field set by the one positional argument

    def main(argv):
        positional = argv[1:]
        if subcommand is not None:
            allowed = next(f for f in dataclasses.fields(config_cls) if f.name == subcommand).metadata["choices"]
            if not positional:
                fail(prog, f"name an {subcommand}: one of {', '.join(allowed)}")
            if positional[0] not in allowed:
                fail(prog, f"unknown {subcommand} {positional[0]!r}; choose one of {', '.join(allowed)}")
            positional = positional[1:]
        if positional:
            fail(prog, f"unexpected arguments: {' '.join(positional)}")
        try:
            config = config_from_flags(config_cls)
            if subcommand is not None:
                setattr(config, subcommand, argv[1])
            if hasattr(config, "from_command_line"):  # e.g. --resume takes the run's saved settings
                config = config.from_command_line(
                    {field.name for field, _, _ in flag_fields(config_cls) if flags.FLAGS[field.name].present})
            config = config_lib.validate(config)
        except UsageError as error:
            fail(prog, error)
        from dim_keras import runtime  # TF-free itself; filters what TensorFlow prints from here on
        runtime.filter_native_logs()
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            run(config)
        except UsageError as error:
            fail(prog, error)
        except (TrainingDiverged, WorkerLost) as error:
            fail(prog, error, code=1)
        except KeyboardInterrupt as interrupt:  # Ctrl-C (130) or SIGTERM (143)
            terminated = isinstance(interrupt, Terminated)
            fail(prog, f"{'terminated' if terminated else 'interrupted'}{str(interrupt) or interrupt_hint}",
                 code=143 if terminated else 130)
        except OSError as error:
            where = f"{error.filename}: " if getattr(error, "filename", None) else ""
            fail(prog, f"{where}{error.strerror or first_line(error)}", code=1)

    app.run(main, flags_parser=parse_flags)

