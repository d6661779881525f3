"""``report_managers.py`` with ``distproc.install()`` as the program's first line.

    python install_at_top.py METHOD...
"""

import distproc

distproc.install()

import importlib  # noqa: E402  (after install() on purpose)
import sys  # noqa: E402

if __name__ == "__main__":
    importlib.import_module("report_managers").main(sys.argv[1:])
