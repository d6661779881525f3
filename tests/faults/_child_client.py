"""A client process for the fault tests: it blocks in ``queue.get()`` and waits to be hurt.

Usage: ``python _child_client.py MODE HOST PORT AUTHKEY_HEX [IDENT]``

Modes (each prints ``READY`` once its ``get`` is about to block):

``raw-get``
    distproc's low-level client: ``accept_connection``, then sends a ``get``
    request for IDENT, prints ``READY`` and blocks reading the reply.
``proxy-get``
    ``distproc.managers.BaseManager.connect()``; ``q = manager.get_queue()``;
    prints ``READY`` and blocks in ``q.get()``.
``proxy-sigint``
    like ``proxy-get``; on KeyboardInterrupt prints ``INTERRUPTED``, waits for
    a ``GO`` line on stdin, then prints ``QSIZE <q.qsize()>`` and
    ``ITEM <repr(q.get(timeout=5))>`` from the same proxy and exits 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _print(*parts: object) -> None:
    print(*parts, flush=True)


def raw_get(address: tuple[str, int], authkey: bytes, ident: str) -> int:
    from distproc.client.connection import Client, dispatch

    with Client(address, authkey) as conn:
        dispatch(conn, None, "accept_connection", ("doomed-raw-client",))
        conn.send((ident, "get", (), {}))
        _print("READY")
        _print("GOT", repr(conn.recv()))
    return 0


def proxy_get(address: tuple[str, int], authkey: bytes, *, sigint: bool) -> int:
    from distproc.managers import BaseManager

    class QueueManager(BaseManager):
        get_queue: Callable[[], Any]

    QueueManager.register("get_queue")
    manager = QueueManager(address=address, authkey=authkey)
    manager.connect()
    q = manager.get_queue()
    _print("QSIZE", q.qsize())  # opens this thread's connection before READY
    _print("READY")
    try:
        _print("GOT", repr(q.get()))
        return 2
    except KeyboardInterrupt:
        if not sigint:
            raise
        _print("INTERRUPTED")
    if sys.stdin.readline().strip() != "GO":
        return 3
    _print("QSIZE", q.qsize())
    _print("ITEM", repr(q.get(timeout=5)))
    return 0


def main(argv: list[str]) -> int:
    mode, host, port, key_hex, *rest = argv
    address = (host, int(port))
    authkey = bytes.fromhex(key_hex)
    if mode == "raw-get":
        return raw_get(address, authkey, rest[0])
    if mode in ("proxy-get", "proxy-sigint"):
        return proxy_get(address, authkey, sigint=mode == "proxy-sigint")
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
