"""A ``SyncManager`` server, in stdlib-only code (run it under distproc.run, or not).

    python sync_server.py AUTHKEY_HEX

Serves on 127.0.0.1 on a free port, prints ``PORT <n>`` once it listens, and
serves until a ``shutdown`` request or a signal.
"""

import sys
from multiprocessing import managers
from typing import Any

if __name__ == "__main__":
    manager = managers.SyncManager(address=("127.0.0.1", 0), authkey=bytes.fromhex(sys.argv[1]))
    server: Any = manager.get_server()
    print(f"PORT {server.address[1]}", flush=True)
    server.serve_forever()
