"""The figures of the runs: matplotlib without a display, each PNG written atomically (no TensorFlow)."""

import contextlib

from dim_keras import io


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed; the runs only write files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@contextlib.contextmanager
def drawing(figure, path, dpi=90, tight=True, **savefig_kwargs):
    """``with drawing(figure, path): ...draw on figure...``: on a clean exit the figure is laid out
    (``tight``) and written to ``path`` as a PNG, atomically; whatever happens it is closed, so a failed
    plot leaves neither a half-written file nor an open figure."""
    try:
        yield figure
        if tight:
            figure.tight_layout()
        with io.atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi, **savefig_kwargs)
    finally:
        pyplot().close(figure)
