"""The distproc server of the interop tests: :mod:`peer_common`'s typeids on
``distproc.managers.BaseManager``.  Run by the dev interpreter (not a stdlib peer).

Usage, from tests/interop::

    python -m peers.distproc_server --authkey HEX [--serializer NAME] [--no-md5]

Binds 127.0.0.1 on a free port, prints ``PORT <port>`` on stdout when it
accepts connections, then serves until a ``shutdown`` request or a signal.
``--no-md5`` configures the server with ``ServerConfig(allow_md5=False)``.
"""

import argparse
from typing import Any, Dict, List, Optional

from distproc.managers import BaseManager, DictProxy
from distproc.server import ServerConfig

from . import peer_common


class Manager(BaseManager):
    pass


peer_common.register_server_typeids(Manager, DictProxy)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--authkey", required=True, help="hex")
    parser.add_argument("--serializer", default="pickle")
    parser.add_argument("--no-md5", action="store_true")
    args = parser.parse_args(argv)

    kwargs: Dict[str, Any] = {}
    if args.no_md5:
        kwargs["config"] = ServerConfig(allow_md5=False)
    manager = Manager(
        address=(peer_common.HOST, 0),
        authkey=bytes.fromhex(args.authkey),
        serializer=args.serializer,
        **kwargs,
    )
    server = manager.get_server()
    address: Any = server.address
    peer_common.print_line(peer_common.READY_PREFIX, str(address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
