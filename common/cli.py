"""The command-line convention of every program: expected errors are one line, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable


def exit_code(action: Callable[[], object], usage: tuple[type[BaseException], ...] = (),
              failure: tuple[type[BaseException], ...] = ()) -> int:
    """Run `action()`: 0 if it returns; "error: <message>" on stderr and 2 for a `usage`
    error (a bad flag, file or setting), 1 for a `failure` (the work could not be done)."""
    try:
        action()
    except usage as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except failure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
