"""The ``multiprocessing.Pool`` script that ``map_vs_pool.py`` measures ``distproc map`` against.

What a user would write for the README's main job without distproc: read the
lines of stdin, call the function on each in a process per CPU, print the
results in input order, one JSON line each::

    seq 1 100000 | python benchmarks/_pool_map.py examples.squares:square -w 2

The lines are read first, so that the chunk size can be the one
``Pool.map`` picks for a list (a quarter of each process's share); each
worker parses its lines and calls the function, and the master writes the
JSON of the results.  Blank lines are skipped, as ``distproc map`` does.
MODULE is imported with the current directory on ``sys.path``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from multiprocessing import Pool
from typing import Any

_function: Callable[[Any], Any] | None = None


def load(target: str) -> None:
    """In each worker: import the function named by ``MODULE:FUNCTION``."""
    global _function
    module, _, name = target.partition(":")
    _function = getattr(importlib.import_module(module), name)


def call(line: str) -> Any:
    assert _function is not None
    return _function(json.loads(line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", metavar="MODULE:FUNCTION")
    parser.add_argument("-w", "--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    lines = [line for line in sys.stdin if line.strip()]
    chunksize = max(1, len(lines) // (4 * args.workers))
    with Pool(args.workers, initializer=load, initargs=(args.target,)) as pool:
        for result in pool.imap(call, lines, chunksize):
            sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
