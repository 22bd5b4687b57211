"""Where kept images go: unique deterministic names, written so that a kill never loses data.

A kept image is written to a hidden temporary name, fsync'ed and renamed into the
output folder; only then is its manifest row written, and only after that row is
durable does a move delete the source. Names derive from a hash of the input's
path, so redoing an image after a kill rewrites the same file, never a second one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from data.pipeline import IMAGE_EXTENSIONS
from transfer_learning.sources import Item

log = logging.getLogger(__name__)

MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
         (b"RIFF", ".webp"))


def output_name(item: Item, data: bytes = b"") -> str:
    """`<stem>-<12 hex of a hash of the input path><ext>`: readable, unique, deterministic."""
    base = os.path.basename(item.member or item.path or item.key)
    stem, ext = os.path.splitext(base)
    if ext.lower() not in IMAGE_EXTENSIONS:
        ext = next((e for magic, e in MAGIC if data.startswith(magic)), ".img")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "image"
    digest = hashlib.sha1(item.key.encode("utf-8")).hexdigest()[:12]
    return f"{stem}-{digest}{ext.lower()}"


def _partial_prefix(tag: str) -> str:
    return f".partial-{tag}-"


class OutputFolder:
    """Writes kept images into one folder under `mode` copy | move | link | none."""

    def __init__(self, folder, mode: str = "copy", tag: str = "0"):
        self.folder = Path(folder)
        self.mode = mode
        self.tag = tag
        self._warned: set[str] = set()
        if mode != "none":
            self.folder.mkdir(parents=True, exist_ok=True)

    def _warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def remove_partials(self) -> int:
        """Delete temporary files an interrupted run of this shard left behind."""
        if self.mode == "none" or not self.folder.is_dir():
            return 0
        prefix = _partial_prefix(self.tag)
        stale = [p for p in self.folder.iterdir() if p.name.startswith(prefix)]
        for path in stale:
            path.unlink()
        if stale:
            log.info("removed %d partial files of an interrupted run from %s", len(stale), self.folder)
        return len(stale)

    def write(self, item: Item, data: bytes) -> str:
        """Put a kept image in the folder (complete and durable when this returns); its name."""
        if self.mode == "none":
            return ""
        name = output_name(item, data)
        final = self.folder / name
        tmp = self.folder / (_partial_prefix(self.tag) + name)
        if self.mode == "link" and item.path:
            try:
                if final.exists() and os.path.samefile(item.path, final):
                    return name
                os.link(item.path, tmp)
                os.replace(tmp, final)
                return name
            except OSError as err:
                tmp.unlink(missing_ok=True)
                self._warn_once("link", "cannot hard-link into %s (%s): copying instead",
                                self.folder, err.strerror or err)
        if item.tar and self.mode in ("move", "link"):
            self._warn_once("tar", "images inside .tar shards cannot be %s; copying them",
                            "moved" if self.mode == "move" else "linked")
        # The bytes that were classified are the bytes kept (copy and move alike).
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return name

    def sync(self) -> None:
        """Make this batch's renames durable (the folder's entries), before the manifest rows."""
        if self.mode == "none":
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_source(self, item: Item) -> None:
        """The end of a move, once the output and its manifest row are durable."""
        if self.mode != "move" or not item.path:
            return
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("%s: kept and copied, but cannot delete the source (%s)", item.path,
                        err.strerror or err)

    def finish_moves(self, rows) -> int:
        """Delete sources of kept rows whose move a kill interrupted after the row was written."""
        if self.mode != "move" or rows is None or not len(rows):
            return 0
        finished = 0
        for path, output in rows.loc[rows["status"] == "kept", ["path", "output"]].itertuples(index=False):
            target = self.folder / output
            if output and os.path.isfile(path) and target.is_file() \
                    and os.path.getsize(path) == target.stat().st_size:
                os.unlink(path)
                finished += 1
        if finished:
            log.info("finished %d moves an interrupted run had left half done", finished)
        return finished
