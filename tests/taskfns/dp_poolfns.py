"""Task functions of the ``ProcessPoolExecutor`` drop-in tests: initializers, methods."""

from __future__ import annotations

import os

#: What :func:`remember` set in this worker process ("unset" before).
STATE = "unset"


def remember(value: str) -> None:
    """An initializer: the tasks of this process then see ``value``."""
    global STATE
    STATE = value


def state() -> tuple[str, int]:
    return STATE, os.getpid()


def refuse(reason: str) -> None:
    """An initializer that fails."""
    raise ValueError(f"initializer refused: {reason}")


class Box:
    """An object whose bound method is a task; its size tells the instance apart."""

    def __init__(self, size: int) -> None:
        self.size = size

    def times(self, x: int) -> int:
        return self.size * x

    @classmethod
    def make(cls, size: int) -> int:
        return cls(size).size


class Big:
    """A result that the test can hold a weak reference to."""

    def __init__(self, x: int) -> None:
        self.x = x


def big(x: int) -> Big:
    return Big(x)
