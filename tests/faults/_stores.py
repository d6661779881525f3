"""A task service with a store, that a test kills and starts again, and checks on its file."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._procs import AUTHKEY, Proc, free_port


class DurableService:
    """``distproc serve --store FILE`` on one port, that a test kills and starts again."""

    def __init__(
        self, procs: Callable[..., Proc], store: Path, *extra: str, port: int | None = None
    ) -> None:
        self.procs = procs
        self.store = store
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.extra = extra
        self.proc = self.start()

    def start(self) -> Proc:
        proc = self.procs("serve", "--address", self.address, "--store", str(self.store),
                          *self.extra)  # fmt: skip
        proc.wait_ready()
        self.proc = proc
        return proc

    def kill(self) -> None:
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def status(self) -> dict[str, Any]:
        from distproc.cli.status import fetch_status

        report = fetch_status(("127.0.0.1", self.port), AUTHKEY)
        [tasks] = [s for s in report["services"] if s.get("kind") == "tasks"]
        found: dict[str, Any] = tasks
        return found

    def stop(self) -> None:
        self.proc.popen.send_signal(signal.SIGTERM)
        assert self.proc.finish(30) == 0, self.proc.text


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        verdict: str = db.execute("PRAGMA integrity_check").fetchone()[0]
        return verdict
    finally:
        db.close()
