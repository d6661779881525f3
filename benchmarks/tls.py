"""The cost of mutual TLS: put+get pairs and 1 MiB values, TLS against plain TCP, in one run.

Two servers of one queue manager run in child processes, one plain and one
with ``tls=`` (certificates from :mod:`distproc.certs`, made in a temporary
directory); this process is the client of both, with ``tls=`` for the one.
Both stay on TCP (``DISTPROC_LOCAL_SOCKET=0``): a TLS server offers no
same-host socket, and the comparison is TLS against the same TCP path.
Rounds alternate the sides (plain first in even rounds, TLS first in odd);
each round times N put+get pairs of a small value, then M of a 1 MiB value.
Printed: per workload, the median time per pair of each side with the range
over rounds, and the median of the paired per-round ratios TLS/plain (above
1: TLS is slower) with their range.

    python benchmarks/tls.py [--rounds 7] [--pairs 2000] [--big 40]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["DISTPROC_LOCAL_SOCKET"] = "0"

from distproc import TLSConfig
from distproc.certs import init_ca, issue
from distproc.managers import BaseManager

AUTHKEY = b"tls-benchmark"
_queue: queue.Queue[Any] = queue.Queue()


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue", callable=lambda: _queue)


def _serve(port_file: str, tls_dir: str | None) -> None:
    """In a child: serve the queue on a free port, write the port to ``port_file``."""
    tls = None
    if tls_dir is not None:
        d = Path(tls_dir)
        tls = TLSConfig(str(d / "server.pem"), str(d / "server.key"), str(d / "ca.pem"))
    server = QueueManager(address=("127.0.0.1", 0), authkey=AUTHKEY, tls=tls).get_server()
    Path(port_file + ".tmp").write_text(str(server.address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve()


def _start(tmp: Path, name: str, tls_dir: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / f"{name}.port"
    args = [sys.executable, __file__, "--serve", str(port_file)]
    if tls_dir is not None:
        args += ["--tls-dir", str(tls_dir)]
    child = subprocess.Popen(args)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {name} server did not start")
        time.sleep(0.01)  # polling for the child's port file, with a deadline
    return child, int(port_file.read_text())


def _time_pairs(q: Any, value: Any, count: int) -> float:
    """Seconds per put+get pair."""
    started = time.perf_counter()
    for _ in range(count):
        q.put(value)
        q.get()
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--big", type=int, default=40, help="1 MiB pairs per round")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.tls_dir)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        init_ca(tmp)
        issue("server", tmp)
        issue("client", tmp)
        client_tls = TLSConfig(
            str(tmp / "client.pem"), str(tmp / "client.key"), str(tmp / "ca.pem")
        )
        children = []
        try:
            plain_child, plain_port = _start(tmp, "plain", None)
            children.append(plain_child)
            tls_child, tls_port = _start(tmp, "tls", tmp)
            children.append(tls_child)
            plain = QueueManager(address=("127.0.0.1", plain_port), authkey=AUTHKEY)
            secure = QueueManager(address=("127.0.0.1", tls_port), authkey=AUTHKEY, tls=client_tls)
            plain.connect()
            secure.connect()
            queues = {"plain": plain.get_queue(),  # type: ignore[attr-defined]
                      "tls": secure.get_queue()}  # type: ignore[attr-defined]  # fmt: skip
            _run(queues, args)
        finally:
            for child in children:
                child.terminate()
                child.wait(30)


def _run(queues: dict[str, Any], args: argparse.Namespace) -> None:
    big = b"x" * (1 << 20)
    workloads = {"put+get pair, small value": (b"v", args.pairs),
                 "put+get pair, 1 MiB value": (big, args.big)}  # fmt: skip
    for q in queues.values():  # warm up both connections
        _time_pairs(q, b"v", 200)
        _time_pairs(q, big, 5)
    times: dict[str, dict[str, list[float]]] = {w: {"plain": [], "tls": []} for w in workloads}
    for round_ in range(args.rounds):
        order = ("plain", "tls") if round_ % 2 == 0 else ("tls", "plain")
        for workload, (value, count) in workloads.items():
            for side in order:
                times[workload][side].append(_time_pairs(queues[side], value, count))
    print(f"distproc TLS benchmark: {args.rounds} alternating rounds; "
          f"{os.cpu_count()} CPUs, unpinned (client and both servers may run on any); "
          f"load average at end {os.getloadavg()[0]:.2f}; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    for workload, sides in times.items():
        ratios = [t / p for t, p in zip(sides["tls"], sides["plain"], strict=True)]
        print(f"\n{workload}")
        for side in ("plain", "tls"):
            us = [t * 1e6 for t in sides[side]]
            print(f"  {side:5}  median {statistics.median(us):9.1f} us/pair  "
                  f"(range {min(us):.1f}-{max(us):.1f})")  # fmt: skip
        print(f"  TLS/plain  median {statistics.median(ratios):.2f}x  "
              f"(range {min(ratios):.2f}x-{max(ratios):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
