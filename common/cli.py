"""The command-line convention of every program: expected errors are one line, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable


def documented_parser(prog: str, doc: str, **kwargs) -> argparse.ArgumentParser:
    """A parser whose description is the module docstring's first paragraph and whose
    epilog (after the options in --help) is the rest, laid out as written."""
    intro, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(prog=prog, description=intro, epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Every program's log lines: time, level, module, message."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
