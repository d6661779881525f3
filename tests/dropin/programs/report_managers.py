"""A program that never names distproc: which ``multiprocessing.managers`` runs it?

    python report_managers.py METHOD...      (or under python -m distproc.run)

Prints one JSON line: for this process and for a child started with each
start method, the module behind ``multiprocessing.managers``, the module of
the ``BaseManager`` this file imported at its top (a spawned child imports
this file again), the class that ``multiprocessing.Manager()`` returns there,
and a value that went through that child's own manager.
"""

import json
import multiprocessing
import sys
from multiprocessing.managers import BaseManager
from typing import Any


def where() -> dict[str, Any]:
    import multiprocessing.managers

    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        shared["seen"] = "through the manager"
        value = shared["seen"]
        manager_class = type(manager)
    return {
        "module": multiprocessing.managers.__name__,
        "imported_at_top": BaseManager.__module__,
        "Manager()": manager_class.__module__ + "." + manager_class.__name__,
        "value": value,
    }


def child(results: Any, method: str) -> None:
    results.put((method, where()))


def main(methods: list[str]) -> None:
    report: dict[str, Any] = {"parent": where()}
    with multiprocessing.Manager() as manager:
        results = manager.Queue()
        for method in methods:
            context: Any = multiprocessing.get_context(method)
            process = context.Process(
                target=child, args=(results, method)
            )
            process.start()
            process.join(60)
            name, seen = results.get(timeout=60)
            report[name] = dict(seen, exitcode=process.exitcode)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
