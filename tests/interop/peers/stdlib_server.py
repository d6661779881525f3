"""A ``multiprocessing.managers`` server; standard library only (CPython 3.8+).

Usage, from tests/interop::

    python -m peers.stdlib_server --authkey HEX [--serializer NAME] [--handshake-log PATH]

Binds 127.0.0.1 on a free port, prints ``PORT <port>`` on stdout when it
accepts connections, then serves until a ``shutdown`` request or a signal.
With ``--handshake-log``, appends one JSON line per handshake (the short form
of its frames, see ``peer_common.install_handshake_tap``) to that file.
"""

import argparse
import json
import threading
from multiprocessing.managers import BaseManager, DictProxy
from typing import Any, Dict, List, Optional

from . import peer_common


class Manager(BaseManager):
    pass


peer_common.register_server_typeids(Manager, DictProxy)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--authkey", required=True, help="hex")
    parser.add_argument("--serializer", default="pickle")
    parser.add_argument("--handshake-log")
    args = parser.parse_args(argv)

    if args.handshake_log:
        lock = threading.Lock()
        path: str = args.handshake_log

        def sink(entry: Dict[str, str]) -> None:
            with lock, open(path, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

        peer_common.install_handshake_tap(sink)

    manager = Manager(
        address=(peer_common.HOST, 0),
        authkey=bytes.fromhex(args.authkey),
        serializer=args.serializer,
    )
    server = manager.get_server()
    address: Any = server.address
    peer_common.print_line(peer_common.READY_PREFIX, str(address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
