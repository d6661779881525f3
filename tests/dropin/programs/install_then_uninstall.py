"""``report_managers.py`` after ``distproc.install()`` then ``distproc.uninstall()``.

    python install_then_uninstall.py METHOD...
"""

import importlib
import sys

if __name__ == "__main__":
    import distproc

    distproc.install()
    distproc.uninstall()
    importlib.import_module("report_managers").main(sys.argv[1:])
