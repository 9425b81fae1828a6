"""What every app shares on the command line: one-line errors with exit code 2."""

import sys

from absl import app, flags


def fail(prog, message, code=2):
    """Prints ``<prog>: error: <message>`` on stderr and exits (2: user mistake)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(main, prog):
    """``absl.app.run`` whose flag errors are one line on stderr and exit 2."""
    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(prog, str(error).splitlines()[0])
    app.run(main, flags_parser=parse_flags)
