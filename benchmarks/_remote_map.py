"""``distproc map --address`` with its workers started apart, as remote workers join.

    seq 1 100000 | python benchmarks/_remote_map.py examples.squares:square -w 2

What ``map_vs_pool.py --also 'remote=python benchmarks/_remote_map.py {fn} -w {workers}'``
measures: ``distproc map FN --address 127.0.0.1:PORT -w 0`` reads stdin and
writes stdout, and ``distproc worker 127.0.0.1:PORT -c N``, started beside
it with the same authkey, runs every call (so the master starts no worker of
its own).  They are on this host, so the workers' connections move to the
same-host Unix socket after the handshake, as a remote worker's would not;
the blocks, the service and the workers' code are the same.  The worker is
stopped with SIGTERM once the map has ended.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", metavar="MODULE:FUNCTION")
    parser.add_argument("-w", "--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    script = Path(sys.executable).parent / "distproc"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "distproc"]
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, DISTPROC_AUTHKEY=secrets.token_hex(16))
    master = subprocess.Popen([*command, "map", args.target, "--address", address, "-w", "0"],
                              env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = subprocess.Popen([*command, "worker", address, "-c", str(args.workers)], env=env,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        status = master.wait()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if master.poll() is None:
            master.kill()
            master.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
