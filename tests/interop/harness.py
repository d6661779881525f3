"""The machinery of the interop tests: peer interpreters, server processes, clients.

* :func:`find_peer_pythons`: every CPython 3.8 <= version < 3.14 installed
  under ``$(pyenv root)/versions/*/bin/python3``.
* :func:`python27`: the seed's Python 2.7, for the tests of Python 2 peers.
* :class:`ServerProcess`: a server script (see ``peers/``) in a subprocess;
  ready once it printed ``PORT <n>``, killed by :meth:`ServerProcess.stop`.
* :func:`run_json_program`: runs a peer program, returns its last line decoded.
* :func:`run_stdlib_client`: runs ``peers/stdlib_client.py`` with a peer
  Python and returns its ``RESULT`` line, decoded.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .peers import peer_common

#: The peer scripts run as ``python -m peers.<name>`` from this directory.
INTEROP_DIR = Path(__file__).resolve().parent

#: Python of the distproc side (the interpreter running the tests).
DISTPROC_PYTHON = sys.executable
#: Seconds a server gets to print its ``PORT`` line; a client script to finish.
STARTUP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 15.0
#: Lowest tested stdlib version, and the first one not tested.
MIN_VERSION = (3, 8)
MAX_VERSION = (3, 14)


# ---------------------------------------------------------------- interpreters
@dataclass(frozen=True)
class PeerPython:
    """One installed CPython to run stdlib peers with."""

    path: Path
    version: tuple[int, int, int]
    id: str = field(default="", compare=False)

    @property
    def modern_handshake(self) -> bool:
        """3.12+ challenge with ``{sha256}``; 3.8-3.11 with 20 bytes + raw HMAC-MD5."""
        return self.version >= (3, 12)


def pyenv_root() -> Path:
    """``$PYENV_ROOT``, else what ``pyenv root`` says, else ``~/.pyenv``."""
    env = os.environ.get("PYENV_ROOT")
    if env:
        return Path(env)
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run(
                [exe, "root"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            return Path(out)
    return Path.home() / ".pyenv"


def python27() -> Path:
    """Where pyenv keeps the seed's Python 2.7 (tests that need it skip without it)."""
    return pyenv_root() / "versions" / "2.7.18" / "bin" / "python"


def _interpreter_version(python: Path) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d %d %d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        major, minor, micro = (int(x) for x in out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return major, minor, micro


def find_peer_pythons() -> list[PeerPython]:
    """Every CPython 3.8 <= version < 3.14 under ``$(pyenv root)/versions``.

    Ids are ``py3.X``; ``py3.X.Y-<dir>`` where one minor version is installed twice.
    """
    found: list[tuple[tuple[int, int, int], Path]] = []
    for python in sorted((pyenv_root() / "versions").glob("*/bin/python3")):
        version = _interpreter_version(python)
        if version is not None and MIN_VERSION <= version[:2] < MAX_VERSION:
            found.append((version, python))
    found.sort()
    minors = [version[:2] for version, _ in found]
    peers = []
    for version, python in found:
        if minors.count(version[:2]) == 1:
            ident = "py{}.{}".format(*version)
        else:
            ident = "py{}.{}.{}-{}".format(*version, python.parent.parent.name)
        peers.append(PeerPython(python, version, ident))
    return peers


def peer_argv(python: str, script: str) -> list[str]:
    """The command line that runs ``peers/<script>.py`` (cwd: :data:`INTEROP_DIR`)."""
    return [python, "-m", f"peers.{script}"]


def peer_env() -> dict[str, str]:
    """The environment of peer processes: no PYTHON* variables of ours leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# -------------------------------------------------------------------- servers
@dataclass
class ServerProcess:
    """A server script running in a subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    authkey: bytes
    serializer: str
    handshake_log: Path | None = None
    port: int = 0
    _lines: queue.Queue[bytes] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        stderr_path: Path,
        authkey: bytes,
        serializer: str,
        handshake_log: Path | None = None,
    ) -> ServerProcess:
        """Start ``argv`` (not yet waiting for readiness: see :meth:`wait_ready`)."""
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=str(INTEROP_DIR),
                env=peer_env(),
            )
        server = cls(name, proc, stderr_path, authkey, serializer, handshake_log)
        server._reader = threading.Thread(
            target=server._read_stdout, name=f"{name} stdout", daemon=True
        )
        server._reader.start()
        return server

    @property
    def address(self) -> tuple[str, int]:
        return (peer_common.HOST, self.port)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the ``PORT <n>`` line (on the reader thread's queue, no sleeping)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.name} printed no PORT line within {timeout}s:\n{self.stderr()}")
        text = line.decode(errors="replace").strip()
        if not text.startswith(peer_common.READY_PREFIX):
            self.stop()
            pytest.fail(f"{self.name} did not start (stdout: {text!r}):\n{self.stderr()}")
        self.port = int(text[len(peer_common.READY_PREFIX) :])

    def handshakes(self) -> list[dict[str, str]]:
        """The handshakes the server logged (``--handshake-log``), in order."""
        assert self.handshake_log is not None
        if not self.handshake_log.exists():
            return []
        lines = self.handshake_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def wait_handshakes(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        """:meth:`handshakes`, once there are at least ``count`` (polled until ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.handshakes()
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.01)  # poll interval, bounded by the deadline

    def stop(self) -> None:
        """Kill the process (if still running) and release everything it held."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -------------------------------------------------------------------- clients
def run_json_program(argv: list[str], timeout: float = 60.0) -> Any:
    """Run a peer program to its end (``argv``, with :func:`peer_env`); its last
    line of output, decoded from JSON.  A program that fails fails the test."""
    done = subprocess.run(
        argv,
        env=peer_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def run_stdlib_client(
    peer: PeerPython, mode: str, port: int, authkey: bytes, serializer: str = "pickle"
) -> dict[str, Any]:
    """Run ``peers/stdlib_client.py MODE`` with ``peer``; its RESULT, decoded.

    The client is killed if it runs longer than :data:`CLIENT_TIMEOUT`.
    """
    argv = [
        *peer_argv(str(peer.path), "stdlib_client"),
        mode,
        "--port",
        str(port),
        "--authkey",
        authkey.hex(),
        "--serializer",
        serializer,
    ]
    what = f"stdlib {peer.id} client ({mode}, {serializer})"
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            cwd=str(INTEROP_DIR),
            env=peer_env(),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{what} still running after {CLIENT_TIMEOUT}s (killed)\n"
            f"stdout: {_text(exc.stdout)}\nstderr: {_text(exc.stderr)}"
        )
    stdout, stderr = _text(done.stdout), _text(done.stderr)
    lines = stdout.splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith(peer_common.RESULT_PREFIX):
        pytest.fail(
            f"{what} failed, exit code {done.returncode}\nstdout: {stdout}\nstderr: {stderr}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len(peer_common.RESULT_PREFIX) :])
    return result
