"""The one exception type of the data layer."""


class DataError(ValueError):
    """A user mistake about data: unknown dataset or split, missing or corrupt files, refused pickles.

    The message is always a single line so that command-line apps can print it on stderr as is
    (exit code 2, no traceback). Where data is missing it names which files to put where.
    """

    def __init__(self, message):
        # Collapse line breaks coming from wrapped library messages (tf, PIL, tfds) into one line.
        super().__init__(" ".join(str(message).splitlines()))


def first_line(error):
    """The first non-empty line of an exception's message (or its type name), for one-line DataErrors."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
