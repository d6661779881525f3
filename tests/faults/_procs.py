"""``distproc`` subprocesses for the task-system fault tests, and waiting on a condition."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dp_taskfns

AUTHKEY = b"task-fault-authkey"
TASKFNS = Path(dp_taskfns.__file__).parent


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Wait until ``predicate()`` holds, checking on a short interval (state read over the wire)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        threading.Event().wait(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ(**changes: str) -> dict[str, str]:
    """This process's environment without distproc's variables or PYTHONPATH, plus ``changes``."""
    drop = ("DISTPROC_AUTHKEY", "DISTPROC_AUTHKEY_FILE", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(changes)
    return env


class Proc:
    """A ``python -m distproc ...`` subprocess; its stderr is read into :attr:`lines`.

    By default it runs in the task functions' folder with them on its path and
    the fault tests' authkey; :meth:`stop` kills it if it still runs.
    """

    def __init__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin: Any = None,
        stdout: Any = None,
    ) -> None:
        if env is None:
            env = clean_environ(DISTPROC_AUTHKEY=AUTHKEY.decode())
            env["PYTHONPATH"] = os.pathsep.join([str(TASKFNS), *sys.path])
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "distproc", *args],
            env=dict(env),
            cwd=cwd or TASKFNS,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first stderr line that ``pattern`` matches (a search), waiting for it."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = found.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"no line matching {pattern!r} in:\n{self.text}")
                self._changed.wait(left)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_line("serving|worker with", timeout)

    def count(self, pattern: str) -> int:
        found = re.compile(pattern)
        with self._changed:
            return sum(1 for line in self.lines if found.search(line))

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for it to exit by itself; its exit status."""
        code = self.popen.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)
        self._reader.join(10)
        streams = [self.popen.stdin, self.popen.stdout]
        if not self._reader.is_alive():  # else a process it started holds stderr open:
            streams.append(self.popen.stderr)  # closing it would wait for the reader
        for stream in streams:
            if stream is not None:
                stream.close()
