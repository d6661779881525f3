"""A ``multiprocessing.managers`` client; standard library only (CPython 3.8+).

Usage, from tests/interop::

    python -m peers.stdlib_client MODE --port N --authkey HEX [--serializer NAME]

Connects to 127.0.0.1:N and prints one line ``RESULT <json>`` (last line of
stdout).  Modes:

* ``scenario``: ``peer_common.run_scenario`` → ``{"scenario": ..., "handshakes": [...]}``
* ``connect``: ``connect()`` then one dict round trip →
  ``{"connected": true, "dict": {...}, "handshakes": [...]}``, or
  ``{"connected": false, "error": "<exception type>", ...}`` when the
  handshake fails (the error must be a ``multiprocessing.AuthenticationError``);
* ``shutdown``: send the ``shutdown`` server method → ``{"shutdown": <reply>}``.

``handshakes`` lists one entry per connection this client made (see
``peer_common.install_handshake_tap``).
"""

import argparse
import multiprocessing
import sys
from multiprocessing import managers
from multiprocessing.connection import Client
from typing import Any, Dict, List, Optional

from . import peer_common


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["scenario", "connect", "shutdown"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--authkey", required=True, help="hex")
    parser.add_argument("--serializer", default="pickle")
    args = parser.parse_args(argv)
    authkey = bytes.fromhex(args.authkey)
    address = (peer_common.HOST, args.port)

    handshakes: List[Dict[str, str]] = []
    peer_common.install_handshake_tap(handshakes.append)
    result: Dict[str, Any] = {"python": "{}.{}".format(*sys.version_info[:2])}

    if args.mode == "scenario":
        result["scenario"] = peer_common.run_scenario(managers, args.port, authkey, args.serializer)
    elif args.mode == "connect":

        class Manager(managers.BaseManager):
            pass

        peer_common.register_client_typeids(Manager, managers.DictProxy)
        manager = Manager(address=address, authkey=authkey, serializer=args.serializer)
        try:
            manager.connect()
        except multiprocessing.AuthenticationError as exc:
            result.update(connected=False, error=type(exc).__name__, message=str(exc))
        else:
            d = manager.Dict()  # type: ignore[attr-defined]
            d["ok"] = 1
            result.update(connected=True, dict=d.copy())
            del d
    else:
        conn = Client(address, authkey=authkey)
        try:
            result["shutdown"] = vars(managers)["dispatch"](conn, None, "shutdown")
        finally:
            conn.close()

    result["handshakes"] = handshakes
    peer_common.print_line(peer_common.RESULT_PREFIX, result)


if __name__ == "__main__":
    main()
