"""``python -m distproc.run script.py [args]``: run a program on distproc, unchanged.

Calls :func:`distproc.install` and then runs the script as ``python
script.py [args]`` would: as ``__main__``, with ``sys.argv`` set to
``[script.py, args...]`` and the script's folder first on ``sys.path``.
``python -m distproc.run -m module [args]`` runs a module as ``python -m``
does.  Child processes that the program starts run on distproc too (see
:mod:`distproc.dropin`).
"""

from __future__ import annotations

import os
import runpy
import sys

from .dropin import install

USAGE = "usage: python -m distproc.run SCRIPT.py [ARGS...] | -m MODULE [ARGS...]"


def _set_path0(folder: str) -> None:
    """Put ``folder`` where ``python -m`` put the current folder (unless ``-P``)."""
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0:1] = [folder]


def main(argv: list[str] | None = None) -> None:
    """Install distproc, then run the script or module named by ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        sys.exit(2 if not args else 0)
    install()
    if args[0] == "-m":
        if len(args) < 2:
            print(f"distproc.run: error: -m needs a module name\n{USAGE}", file=sys.stderr)
            sys.exit(2)
        sys.argv = args[1:]
        _set_path0(os.getcwd())
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return
    script = args[0]
    if not os.path.exists(script):
        print(f"distproc.run: error: can't open file {script!r}: no such file", file=sys.stderr)
        sys.exit(2)
    sys.argv = list(args)
    _set_path0(os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
