"""Shared checks of the apps' command-line behaviour, for the app tests (tests/test_*_app.py)."""


def assert_usage_error(result, *fragments, app="train.py"):
    """Exactly one line on stderr, ``<app>: error: ...`` (dim_keras.cli.run_app), exit code 2, holding
    every one of ``fragments``."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"{app}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
