"""Start a server subprocess for a test, wait until it answers, and always stop it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(cmd: list[str], *, cwd: str | Path, env: dict[str, str], log: Path, ready: Callable[[], bool],
            what: str, timeout: float, stop_timeout: float) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` (output to ``log``) until ``ready()`` is true (an OSError counts as not yet), then
    yield it; the test fails with the log's tail if it exits or ``timeout`` passes first. Stopped
    (terminate, then kill after ``stop_timeout``) when the block ends."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if ready():
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
