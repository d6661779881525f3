"""Task functions for the task-system tests, imported by name in workers.

The tests put this directory on ``sys.path``; an Executor's local workers get
the master's ``sys.path``, and ``distproc worker`` subprocesses run here.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any


class CustomError(Exception):
    """An exception type that exists on both sides."""


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(value: Any) -> Any:
    return value


def pid() -> int:
    return os.getpid()


def boom(x: int) -> int:
    raise CustomError(f"boom {x}")


def die(code: int = 1) -> None:
    os._exit(code)


def die_on(x: int, bad: int) -> int:
    """Square ``x``, except that ``x == bad`` takes the worker down."""
    if x == bad:
        os._exit(1)
    return x * x


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def hold(port: int, x: int) -> int:
    """Tell the test's :class:`~hub.Hub` on ``port`` "started X PID", wait for its "go".

    Returns ``x * x``.  The wait is a blocking read: no polling, and the task
    ends as soon as the test releases it (or the hub closes).
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"started {x} {os.getpid()}\n".encode())
        reply = sock.makefile("rb").readline()
    if reply.strip() != b"go":
        raise ConnectionError("the test hub went away")
    return x * x


def flaky(directory: str, failures: int) -> str:
    """Raise ConnectionError the first ``failures`` calls (counted in ``directory``)."""
    folder = Path(directory)
    count = len(list(folder.glob("attempt-*")))
    (folder / f"attempt-{count}").touch()
    if count < failures:
        raise ConnectionError(f"attempt {count} fails")
    return f"ok after {count}"


def singleton(x: int) -> set[int]:
    """A value that a weak reference can follow (a set), for tests of who keeps results."""
    return {x}


def square_or_fail(x: int) -> int:
    """``x * x`` after a short wait; a ValueError for multiples of 97 (error records)."""
    time.sleep(0.0005)
    if x % 97 == 0:
        raise ValueError(f"{x} is a multiple of 97")
    return x * x


def slow_square(x: int, seconds: float) -> int:
    """``x * x`` after ``seconds``: a task that keeps a run going while a test hits it."""
    time.sleep(seconds)
    return x * x


def poison_until(marker: str) -> str:
    """Take the worker down unless the file ``marker`` exists; then note the run beside it."""
    if not os.path.exists(marker):
        os._exit(1)
    with open(marker + ".ran", "a") as f:
        f.write("ran\n")
    return "cured"
