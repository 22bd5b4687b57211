"""Writing files so that a crash never leaves half of one: temp file, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[str], object], durable: bool = False) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file onto `path` (same folder).

    The temporary name keeps the extension last ("tmp-name.ext"), because some writers
    (Keras, h5py, PIL) choose the format from it. `durable`: fsync the file before the
    rename, so that after a power cut the name holds the whole file or nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    try:
        write(str(tmp))
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path) -> int:
    """Delete the temporary files of `atomic_write(path)` that a killed process left beside
    `path` (`tmp-<pid>-<name>`); how many. Call it only where no other process writes `path`."""
    path = Path(path)
    stale = list(path.parent.glob(f"tmp-*-{path.name}")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def write_text(path, text: str, durable: bool = False) -> Path:
    """Write `text` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), durable)


def write_json(path, data, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Write `data` as JSON (one trailing newline) atomically."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name): for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
