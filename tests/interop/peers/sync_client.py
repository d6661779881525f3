"""A ``SyncManager`` client, in stdlib-only code, that sends and receives proxies.

    python sync_client.py PORT AUTHKEY_HEX

Each step needs pickled names of ``multiprocessing.managers`` to travel:
a proxy sent to the server inside a list, a proxy the server sends back, the
``Token`` of a ``#PROXY`` reply (a dict's iterator), a ``Namespace`` and a
``Value`` sent back by value.  Prints one JSON line: each step's result, or
the type and first line of its error.
"""

import json
import multiprocessing
import sys
from multiprocessing import managers
from typing import Any, Callable, Dict


def step(results: Dict[str, Any], name: str, func: Callable[[], Any]) -> None:
    try:
        results[name] = func()
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if "Error" in line] or [str(exc)]
        results[name] = f"{type(exc).__name__}: {lines[-1].strip()}"


if __name__ == "__main__":
    authkey = bytes.fromhex(sys.argv[2])
    # A proxy the server sends back connects with the process's key (the stdlib's rule).
    multiprocessing.current_process().authkey = authkey
    manager: Any = managers.SyncManager(address=("127.0.0.1", int(sys.argv[1])), authkey=authkey)
    manager.connect()
    inner = manager.dict({"a": 1})
    outer = manager.list()
    results: Dict[str, Any] = {}
    step(results, "send a proxy", lambda: outer.append(inner))
    step(results, "proxy sent back", lambda: outer[0]["a"])
    step(results, "token of a #PROXY reply", lambda: sorted(iter(inner)))
    step(results, "namespace by value", lambda: manager.Namespace(x=2)._getvalue().x)
    step(results, "value by value", lambda: manager.Value("i", 3)._getvalue().value)
    print(json.dumps(results), flush=True)
