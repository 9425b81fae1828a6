"""Loopback multi-worker processes for the tests (tests/test_streaming.py, tests/test_multiworker_app.py):
started as the workers of one ``TF_CONFIG`` cluster on free local ports, and reaped so that none outlives its
test."""
import json
import os
import subprocess

from official_formats import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(commands, env=None):
    """Starts one process per argv of ``commands``, as workers 0 (the chief), 1, ... of a ``TF_CONFIG`` cluster
    on free loopback ports, in the repository root, with ``env`` added to the environment and stdout / stderr
    piped as text."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(commands))]}
    procs = []
    for index, command in enumerate(commands):
        worker_env = dict(os.environ, **(env or {}),
                          TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(command, env=worker_env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=300):
    """``[(returncode, stdout, stderr)]`` of ``procs``; kills what is still running after ``timeout`` s (or
    when waiting fails), then reaps it."""
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results
