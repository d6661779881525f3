"""A fleet of worker processes: started, replaced when they die, stopped on request.

``distproc worker -c N`` supervises N one-slot children this way, and so does
an :class:`~distproc.Executor` with ``workers=N``.  Each child is
``python -m distproc worker ... --child``: it holds its own connection, so
when it dies the service requeues its tasks at once; the fleet then starts
another.  A child that keeps dying at once is restarted with a growing delay (one
that exits with status 0, having run its ``max_tasks_per_child``, at once).
With ``relay_stderr``, what a child writes to stderr (its log lines) is copied
line by line to this process's ``sys.stderr``, whatever that is at the time
(above a progress bar, say), instead of going to the terminal around it.
A child that exits with ``EXIT_REFUSED`` (the service refused it: a wrong
authkey, not a task service; or it cannot start: no usable authkey, a bad
option) is not restarted, since another would fail the same way: the fleet
stops, and calls the callback given to :meth:`Fleet.when_refused` with the
child's last ``distproc: error:`` line.

Children get the authkey as hex in ``DISTPROC_AUTHKEY_HEX`` (see
:func:`child_env`), so that any bytes reach them, not only UTF-8 text without
NUL that an environment variable can hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = [
    "AUTHKEY_HEX_ENV",
    "EXIT_REFUSED",
    "Fleet",
    "child_authkey",
    "child_command",
    "child_env",
    "describe_exit",
    "local_workers",
]

log = logging.getLogger("distproc.worker")

#: A child that lived shorter than this is restarted after a growing delay.
QUICK_DEATH = 1.0
MAX_RESTART_DELAY = 5.0
#: A child's exit status when the service refused it or it cannot start (EX_CONFIG
#: of sysexits.h): the fleet does not start another.
EXIT_REFUSED = 78
#: How a fleet hands its children the authkey: its bytes as hex.
AUTHKEY_HEX_ENV = "DISTPROC_AUTHKEY_HEX"
_ERROR_PREFIX = "distproc: error: "


def child_env(base: Mapping[str, str], authkey: bytes) -> dict[str, str]:
    """``base`` with ``authkey`` as the only key a child finds (the text ones removed)."""
    env = dict(base)
    env.pop("DISTPROC_AUTHKEY", None)
    env.pop("DISTPROC_AUTHKEY_FILE", None)
    env[AUTHKEY_HEX_ENV] = authkey.hex()
    return env


def child_authkey(environ: Mapping[str, str]) -> bytes | None:
    """The key that :func:`child_env` put in ``environ``, if any; ValueError if not hex."""
    text = environ.get(AUTHKEY_HEX_ENV)
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{AUTHKEY_HEX_ENV} is not hex") from None
    if not key:
        raise ValueError(f"{AUTHKEY_HEX_ENV} is empty")
    return key


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def child_command(address: str, extra: Sequence[str] = ()) -> list[str]:
    """The command line of one worker child for the service at ``address``."""
    return [sys.executable, "-m", "distproc", "worker", address, "--child", *extra]


def _relay(stream: IO[bytes], said: list[str]) -> None:
    """Copy ``stream`` to ``sys.stderr``; its last ``distproc: error:`` line goes in ``said``."""
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            if line.startswith(_ERROR_PREFIX):
                said[:] = [line[len(_ERROR_PREFIX):].strip()]
            with contextlib.suppress(Exception):  # no stderr left to write to
                sys.stderr.write(line)
                sys.stderr.flush()


class Fleet:
    """``count`` children running ``command``; see the module docstring."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        env: Mapping[str, str] | None = None,
        *,
        relay_stderr: bool = False,
    ) -> None:
        if count < 1:
            raise ValueError("a fleet needs at least one worker process")
        self.command = list(command)
        self.count = count
        self.env = dict(os.environ if env is None else env)
        self.relay_stderr = relay_stderr
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: Set when a child exited with EXIT_REFUSED; see :meth:`when_refused`.
        self.refused = False
        #: What that child said (its ``distproc: error:`` line, when relayed).
        self.refused_reason = ""
        self._on_refused: Callable[[str], None] | None = None

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(
                target=self._keep, args=(index,), name=f"distproc-fleet-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def when_refused(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once a child exits with EXIT_REFUSED (now, if one has)."""
        with self._lock:
            self._on_refused = callback
            if not self.refused:
                return
        callback(self.refused_reason)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def _keep(self, index: int) -> None:
        delay = 0.0
        while not self.stopping.is_set():
            with self._lock:
                if self.stopping.is_set():
                    return
                # A session of its own: a Ctrl-C at the terminal reaches the
                # supervisor only, which stops the children gracefully.
                proc = subprocess.Popen(
                    self.command, env=self.env, start_new_session=True,
                    stderr=subprocess.PIPE if self.relay_stderr else None,
                )  # fmt: skip
                self.procs[index] = proc
            said: list[str] = []
            relay = None
            if proc.stderr is not None:
                relay = threading.Thread(target=_relay, args=(proc.stderr, said), daemon=True)
                relay.start()
            born = time.monotonic()
            returncode = proc.wait()
            if self.stopping.is_set():
                return
            if returncode == EXIT_REFUSED:
                if relay is not None:
                    relay.join(5.0)  # its last lines, unless a grandchild holds the pipe
                how = describe_exit(returncode)
                self._refuse(said[0] if said else f"a worker process could not start ({how})")
                return
            # Status 0: it ended by design (max_tasks_per_child): replaced at once, quietly.
            log.log(
                logging.INFO if returncode == 0 else logging.WARNING,
                "worker process %d ended (%s); starting another", proc.pid,
                describe_exit(returncode),
            )  # fmt: skip
            delay = min(max(delay * 2, 0.1), MAX_RESTART_DELAY) if (
                returncode != 0 and time.monotonic() - born < QUICK_DEATH
            ) else 0.0  # fmt: skip
            if delay:
                self.stopping.wait(delay)

    def _refuse(self, reason: str) -> None:
        with self._lock:
            first = not self.refused
            self.refused, self.refused_reason = True, reason
            self.stopping.set()
            callback = self._on_refused
        if first and callback is not None:
            callback(reason)

    def signal(self, signum: int) -> None:
        with self._lock:
            procs = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every child (they finish running tasks), then SIGKILL after ``timeout``."""
        self.stopping.set()
        self.signal(signal.SIGTERM)
        self.wait(timeout)

    def kill(self) -> None:
        """Stop every child at once; the service requeues their tasks."""
        self.stopping.set()
        self.signal(signal.SIGKILL)
        self.wait(10.0)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in list(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(1.0)


def local_workers(
    address: tuple[str, int] | str,
    authkey: bytes,
    count: int,
    *,
    allow_pickle: bool = False,
    queue: str | None = None,
    tls: TLSConfig | None = None,
) -> Fleet:
    """Start ``count`` worker processes for this process's task service at ``address``.

    The workers of ``Executor(workers=N)``: they import task functions the way
    this process does (its ``sys.path``, and its ``__main__`` script), and
    exit when this process does or their connection drops; with ``tls``, they
    connect with its files (``DISTPROC_TLS_*``).  Their service
    need not be up yet, only listening (:func:`~distproc.addresses.listen_on`):
    ``distproc map`` starts them before its own imports are done.
    """
    # They run what this process sends (see .allowlist): pow and str, as with
    # ProcessPoolExecutor.
    extra = ["--parent", str(os.getpid()), "--trust-master"]
    if isinstance(address, str):  # a Redis URL: they serve its queue, across Redis restarts
        extra += ["--queue", queue] if queue else []
    else:
        extra.append("--exit-on-disconnect")
    if allow_pickle:
        extra.append("--allow-pickle")
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main, str) and main.endswith(".py") and os.path.exists(main):
        extra += ["--main", os.path.abspath(main)]
    env = child_env(os.environ, authkey)
    if tls is not None:
        env.update(tls.environ())
    # This process's sys.path, as multiprocessing's spawn hands it to children:
    # workers import the task functions the way the master did.
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if isinstance(address, str):
        where = address
    else:
        host = address[0]
        connect_to = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        port = address[1]
        where = f"[{connect_to}]:{port}" if ":" in connect_to else f"{connect_to}:{port}"
    fleet = Fleet(child_command(where, extra), count, env, relay_stderr=True)
    fleet.start()
    return fleet
