"""The curation manifest: one CSV row per input, appended durably, readable after a kill -9.

Columns: path, status (kept | rejected_pass1 | rejected_pass2 | error), output (the
kept file's name in the output folder), reason (why an input is an error), then
one score column per member (pass1_0, pass1_1, …, pass2_0, …; empty when that
member did not run). Rows are appended a batch at a time and fsync'ed; a row is
written only after its output file is complete. A run killed mid-write leaves at
most one torn line at the end, which `open_manifest` cuts off before appending.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from common.files import atomic_write, remove_stale_temporaries, write_text

# Scores as written: 9 significant digits give back every float32 exactly, so a
# score the rule kept (> 0.9) never reads back as 0.900000.
SCORE_FORMAT = "%.9g"

log = logging.getLogger(__name__)

KEPT, REJECTED_1, REJECTED_2, ERROR = "kept", "rejected_pass1", "rejected_pass2", "error"
STATUSES = (KEPT, REJECTED_1, REJECTED_2, ERROR)
BASE_COLUMNS = ["path", "status", "output", "reason"]


class ManifestError(ValueError):
    """A manifest that cannot be used (another run's columns, unreadable); the message names it."""


def score_columns(pass1: int, pass2: int) -> list[str]:
    return [f"pass1_{i}" for i in range(pass1)] + [f"pass2_{i}" for i in range(pass2)]


def _parse(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False) if text else pd.DataFrame()


def _complete_prefix(data: bytes) -> tuple[bytes, pd.DataFrame]:
    """The longest prefix of whole, parseable rows (a kill may tear the last one)."""
    end = data.rfind(b"\n") + 1
    while end > 0:
        try:
            frame = _parse(data[:end].decode("utf-8"))
        except (pd.errors.ParserError, UnicodeDecodeError):
            frame = None
        if frame is not None and (frame.empty or frame["status"].isin(STATUSES).all()):
            return data[:end], frame
        end = data.rfind(b"\n", 0, end - 1) + 1
    return b"", pd.DataFrame()


def read_manifest(path) -> pd.DataFrame:
    """All complete rows of a manifest (a torn last line is ignored); scores as floats."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    _, frame = _complete_prefix(data)
    if frame.empty and not list(frame.columns):
        raise ManifestError(f"{path}: not a manifest (no header)")
    missing = [c for c in BASE_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: not a manifest (no {', '.join(missing)} column)")
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if column not in BASE_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in BASE_COLUMNS:
        frame[column] = frame[column].astype(str)
    return frame


class Manifest:
    """An open manifest: the rows already done, and durable appends of new ones."""

    def __init__(self, path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.done: pd.DataFrame = pd.DataFrame(columns=self.columns)
        self._file = None

    def open(self) -> "Manifest":
        """Create the file with its header, or recover the rows of an earlier run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)  # a kill while the header was being written
        header = ",".join(self.columns) + "\n"
        if not self.path.exists() or self.path.stat().st_size == 0:
            write_text(self.path, header, durable=True)
        data = self.path.read_bytes()
        if not data.startswith(header.encode("utf-8")):
            first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
            raise ManifestError(f"--manifest: {self.path} has columns {first!r}, not this run's "
                                f"{header.strip()!r}; use another --manifest or the same members")
        prefix, frame = _complete_prefix(data)
        if len(prefix) < len(data):
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                        self.path, len(data) - len(prefix))
            with open(self.path, "r+b") as f:
                f.truncate(len(prefix))
                f.flush()
                os.fsync(f.fileno())
        self.done = _typed(frame) if not frame.empty else self.done
        duplicated = self.done["path"].duplicated()
        if duplicated.any():
            raise ManifestError(f"{self.path}: {int(duplicated.sum())} inputs appear twice "
                                f"(e.g. {self.done['path'][duplicated].iloc[0]}); it was not "
                                "written by one classify.py run")
        self._file = open(self.path, "ab")
        return self

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows (dicts keyed by column) and make them durable before returning."""
        rows = list(rows)
        if not rows:
            return
        frame = pd.DataFrame(rows).reindex(columns=self.columns)
        text = frame.to_csv(header=False, index=False, float_format=SCORE_FORMAT, lineterminator="\n")
        self._file.write(text.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Manifest":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def summary(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per status, every status listed."""
    counts = frame["status"].value_counts() if len(frame) else {}
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def merge_manifests(paths: Sequence, out) -> pd.DataFrame:
    """Concatenate the shards' manifests into `out` (sorted by path); each input must appear once."""
    frames = [read_manifest(p) for p in paths]
    columns = list(frames[0].columns)
    for path, frame in zip(paths, frames):
        if list(frame.columns) != columns:
            raise ManifestError(f"{path}: columns {list(frame.columns)} differ from "
                                f"{paths[0]}'s {columns}")
    merged = pd.concat(frames, ignore_index=True)
    duplicated = merged["path"].duplicated(keep=False)
    if duplicated.any():
        raise ManifestError(f"{int(duplicated.sum())} rows name the same input in several "
                            f"manifests (e.g. {merged['path'][duplicated].iloc[0]}); were the "
                            "shards run with the same --num-shards?")
    merged = merged.sort_values("path", kind="stable").reset_index(drop=True)
    atomic_write(out, lambda tmp: merged.to_csv(tmp, index=False, float_format=SCORE_FORMAT, lineterminator="\n"))
    return merged
