"""The test side of :func:`dp_taskfns.hold`: learn which task runs where, release them."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from types import TracebackType


class Hub:
    """A loopback listener: tasks report "started X PID" and block until :meth:`release`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.started: queue.Queue[tuple[int, int]] = queue.Queue()
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._released = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        line = conn.makefile("rb").readline().decode()
        parts = line.split()
        if len(parts) == 3 and parts[0] == "started":
            self.started.put((int(parts[1]), int(parts[2])))
        with self._lock:
            if not self._released:
                self._held.append(conn)
                return
        self._go(conn)

    @staticmethod
    def _go(conn: socket.socket) -> None:
        try:
            conn.sendall(b"go\n")
        except OSError:
            pass  # that task's worker is gone
        finally:
            conn.close()

    def next_started(self, timeout: float = 30.0) -> tuple[int, int]:
        """``(x, pid)`` of the next task that started; waits for it."""
        return self.started.get(timeout=timeout)

    def release(self) -> None:
        """Let every held task finish, and every later one at once."""
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for conn in held:
            self._go(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self._thread.join(5)

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
