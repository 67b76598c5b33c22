"""``python -m inqom_bridge_cli``."""

import os
import sys

from .cli import main


def run() -> int:
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # the reader went away, e.g. `export | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 1


if __name__ == "__main__":
    sys.exit(run())
