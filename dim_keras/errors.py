"""The exceptions of dim_keras (no TensorFlow import).

Every message is one line, so a command-line app prints it as is on stderr:
``UsageError`` and ``DataError`` exit with code 2 (the user can fix them),
``TrainingDiverged`` and ``WorkerLost`` with code 1.
"""


def one_line(message):
    """Collapses the line breaks of ``message`` (wrapped library messages) into one line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class UsageError(ValueError):
    """A user mistake (a bad setting, a path that cannot be used); one line."""

    def __init__(self, message):
        super().__init__(one_line(message))


class DataError(UsageError):
    """A user mistake about data: unknown dataset or split, missing or corrupt files, refused pickles.

    Where data is missing the message names which files to put where.
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class WorkerLost(RuntimeError):
    """Multi-worker training lost a peer (it died, hung or cannot be reached); exit code 1.

    Every worker of the group stops; rerun all of them with ``--resume``.
    """

    def __init__(self, message):
        super().__init__(one_line(message))


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so a run stops as cleanly as on Ctrl-C (exit code 143)."""


def first_line(error):
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
