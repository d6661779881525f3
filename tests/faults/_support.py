"""Helpers behind the fault-test fixtures: servers in threads, client subprocesses."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_fixtures import RunningServer, start_serving

from distproc.server import Server

CHILD_SCRIPT = Path(__file__).with_name("_child_client.py")


@dataclass
class QueueServer(RunningServer):
    """A fault test's server, whose ``get_queue`` typeid serves one queue to every client."""

    #: The queue that the ``get_queue`` typeid serves to every client.
    shared_queue: queue.Queue[Any] = field(default_factory=queue.Queue)


def start_server_thread(server: Server, shared: queue.Queue[Any]) -> QueueServer:
    """Run ``server.serve()`` in a thread; return once it accepts connections."""
    return QueueServer(server, start_serving(server, name="fault-test-server"), shared)


@dataclass
class Child:
    """A client subprocess (``_child_client.py``) whose stdout is read line by line."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr

        def read_out() -> None:
            for line in out:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        def read_err() -> None:
            for line in err:
                self.stderr.append(line)

        for target in (read_out, read_err):
            t = threading.Thread(target=target, name="fault-test-child-reader", daemon=True)
            t.start()
            self.readers.append(t)

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        """The next stdout line, which must start with ``prefix``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the child printed no {prefix!r} line within {timeout}s"
            ) from None
        if line is None:
            self.proc.wait(5)
            raise AssertionError(
                f"the child exited ({self.proc.returncode}) before printing {prefix!r}:\n"
                + "".join(self.stderr)
            )
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}:\n" + "".join(
            self.stderr
        )
        return line

    def send_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for t in self.readers:
            t.join(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


ServerFactory = Callable[..., QueueServer]
ChildFactory = Callable[..., Child]
