"""Atomic, shareable file output and up-front path checks (no TensorFlow import).

Every file and directory dim_keras writes goes through :func:`atomic_path`:
the content is written to a temporary sibling and renamed into place, so a
crash never leaves a half-written file under the final name.  The result gets
the ordinary permissions of a new file (``0666`` / ``0777`` minus the umask),
not the private ``0600`` / ``0700`` of ``mkstemp`` / ``mkdtemp``, so a model
server or a colleague can read an export.

The ``check_*`` functions find the path mistakes a user can make before any
work starts; they raise :class:`dim_keras.errors.UsageError`.
"""

import contextlib
import json
import os
import shutil
import uuid

from dim_keras.errors import UsageError


def _umask():
    """The process umask, read from /proc where possible: ``os.umask`` can only be read by setting it,
    which would briefly give files other threads (tf.data, TensorBoard) create a umask of 0."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _share(path):
    """Gives ``path`` (and, for a directory, everything in it) the default permissions."""
    mask = _umask()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def remove(path):
    """Removes the file or directory tree ``path``; nothing happens if it does not exist."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary sibling of ``path`` to write a file or directory to.

    On success the temporary is renamed to ``path`` (replacing what was
    there); on any exception, KeyboardInterrupt included, it is removed.  The
    temporary keeps ``path``'s extension, since some writers pick the format
    from it (``model.save``, ``savefig``, ``np.savez``).
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(parent, f".{stem}.tmp-{uuid.uuid4().hex[:8]}{ext}")
    try:
        yield tmp
        _share(tmp)
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)  # a directory cannot be replaced by rename
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_bytes(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return path


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, payload):
    """Writes ``payload`` as indented JSON (and a final newline) atomically; returns ``path``."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def is_temporary(name):
    """True for the temporaries :func:`atomic_path` creates (left behind only by a killed process)."""
    return name.startswith(".") and ".tmp-" in name


def remove_temporaries(directory):
    """Removes the temporaries a killed process left in ``directory``."""
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if is_temporary(name):
                remove(os.path.join(directory, name))


# ------------------------------------------------------------------ checks
def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_creatable(path, what):
    """``path`` does not exist: its nearest existing ancestor must be a writable directory."""
    ancestor = _nearest_existing(path)
    if not os.path.isdir(ancestor):
        raise UsageError(f"{what}={path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{what}={path}: {ancestor} is not writable")


def check_output_dir(path, what="--output_dir"):
    """Raises UsageError unless ``path`` is, or can be created as, a writable directory."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{what}={path} is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{what}={path} is not writable")
    else:
        _check_creatable(path, what)


def check_output_file(path, what="--output"):
    """Raises UsageError unless ``path`` can be written as a file."""
    if os.path.isdir(path):
        raise UsageError(f"{what}={path} is a directory, not a file")
    if os.path.exists(path):
        if not os.access(path, os.W_OK) or not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise UsageError(f"{what}={path} is not writable")
    else:
        _check_creatable(path, what)


def check_input_dir(path, what="--data_dir"):
    """Raises UsageError unless ``path`` is an existing, readable directory."""
    if not os.path.exists(path):
        raise UsageError(f"{what}={path} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"{what}={path} is a file, not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"{what}={path} is not readable")


def check_input_path(path, what):
    """Raises UsageError unless ``path`` (a file or a directory) exists and is readable."""
    if not os.path.exists(path):
        raise UsageError(f"{what}={path} does not exist")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what}={path} is not readable")
