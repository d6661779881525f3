"""Every exception distproc raises, under one root.

::

    DistprocError
    ├── AuthenticationError      (also multiprocessing.AuthenticationError)
    ├── ProtocolError            a peer broke the wire protocol
    │   ├── FrameTooLargeError   a length prefix over the configured limit
    │   ├── NotAServerError      what a client reached is no distproc or
    │                            multiprocessing.managers server (silent, or
    │                            it speaks something else)
    │   └── TLSError             a TLS connection failed: no certificate, one
    │                            the peer refused, or a peer without TLS
    ├── ConnectionLostError      (also ConnectionResetError and EOFError)
    │                            the server went away while a call was pending
    ├── RemoteError              (also multiprocessing.managers.RemoteError)
    │                            the server reported a failure with its traceback
    ├── StartError               a manager's server, or an Executor's local
    │                            workers, could not be started
    ├── WorkerLostError          a task took down max_attempts workers (dead letter)
    ├── TaskTimeoutError         (also TimeoutError) a task ran past its timeout
    ├── TaskImportError          (also ImportError) no connected worker can import
    │                            a task's function
    ├── NoTaskServiceError       the server reached is not a task service
    ├── MissingExtraError        (also ModuleNotFoundError) an optional part needs
    │                            an extra that is not installed (distproc[web])
    ├── StoreError               a task store cannot be opened or written (not a
    │                            store, another version, damaged, read-only, full,
    │                            served by another process)
    └── ServiceLostError         (also concurrent.futures.BrokenExecutor) a master's
                                 task service went away for good, or came back
                                 without the master's tasks

``RemoteTraceback`` is not raised: it is the ``__cause__`` of an exception
that a task raised on a worker, and its text is the worker's traceback.

Where the stdlib has an exception type for a situation, the distproc class
derives from it too, so code written against ``multiprocessing`` keeps
catching what it caught before, and ``except DistprocError`` catches all of
distproc's own.  Exceptions raised by a user's remote method are re-raised in
the caller with their own type (``queue.Empty`` stays ``queue.Empty``).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.managers as _mp_managers

__all__ = [
    "AuthenticationError",
    "ConnectionLostError",
    "DistprocError",
    "FrameTooLargeError",
    "MissingExtraError",
    "NoTaskServiceError",
    "NotAServerError",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "ServiceLostError",
    "StartError",
    "StoreError",
    "TLSError",
    "TaskImportError",
    "TaskTimeoutError",
    "WorkerLostError",
]


class DistprocError(Exception):
    """The root of every exception that distproc defines."""


class AuthenticationError(DistprocError, multiprocessing.AuthenticationError):
    """The peer did not prove that it knows the authkey (or we could not)."""


class ProtocolError(DistprocError, OSError):
    """The peer sent bytes that do not follow the protocol."""


class FrameTooLargeError(ProtocolError):
    """A frame's length prefix is larger than this side accepts."""


class NotAServerError(ProtocolError):
    """A client's peer is no distproc or multiprocessing.managers server.

    It did not go through the handshake within the client's handshake timeout,
    or its first bytes were not a handshake's.  Trying again will not help
    unless the address is changed (or a stuck server recovers).
    """


class TLSError(ProtocolError):
    """A TLS connection failed: a certificate refused, or a peer that speaks no TLS.

    Its message says which side refused what; trying again will not help
    until the certificates (or the TLS options of one side) change.
    """


class ConnectionLostError(DistprocError, ConnectionResetError, EOFError):
    """The connection to the server closed while a call was waiting for its reply.

    It is a ``ConnectionError`` (so ``except ConnectionError`` works) and an
    ``EOFError`` (what the stdlib raises in the same situation).
    """


class RemoteError(DistprocError, _mp_managers.RemoteError):
    """The server failed to run a call; ``str()`` holds the remote traceback."""

    def __str__(self) -> str:
        if not self.args:
            return ""
        return "\n" + "-" * 75 + "\n" + str(self.args[0]) + "-" * 75


class StartError(DistprocError, RuntimeError):
    """A manager's server process, or an Executor's local workers, could not be started."""


class WorkerLostError(DistprocError):
    """A task's worker was lost ``max_attempts`` times; the task is dead-lettered.

    ``attempts`` lists each worker that took the task and how it ended, as
    ``(worker, how)`` pairs of strings.
    """

    def __init__(self, message: str, attempts: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.attempts = list(attempts or [])


class TaskTimeoutError(DistprocError, TimeoutError):
    """A task ran longer than its ``timeout`` and was stopped."""


class TaskImportError(DistprocError, ImportError):
    """Every connected worker failed to import a task's function.

    ``workers`` lists each worker that tried and what it said, as
    ``(worker, error)`` pairs of strings.
    """

    def __init__(self, message: str, workers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.workers = list(workers or [])


class NoTaskServiceError(DistprocError):
    """The server reached is not a task service (a manager, or not distproc at all)."""


class MissingExtraError(DistprocError, ModuleNotFoundError):
    """An optional part of distproc needs a library that is not installed.

    The message names the pip command that installs it (``pip install
    'distproc[web]'``).
    """


class StoreError(DistprocError):
    """A task store cannot be opened or written; ``str()`` says why and what to do."""


class ServiceLostError(DistprocError, concurrent.futures.BrokenExecutor):
    """A master lost its task service for good: it did not come back within the
    master's reconnect time, or came back without the master's tasks (a store
    kept in memory).  Pending futures fail with it, and so does every later call."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker (set as its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb
