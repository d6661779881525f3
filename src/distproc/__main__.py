"""``python -m distproc``: the ``distproc`` command."""

from distproc.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
