"""The in-flight marker: which inputs a curation was reading when its process died.

A process killed while it decodes or scores (SIGKILL, the kernel's OOM killer, a
decoder that crashes) writes no error row, so a restart would read the same input
and die again, forever. Before the pipeline reads each batch, classify.py therefore
writes the keys it may now be reading, decoding or scoring into a small JSON file
beside the manifest (`<manifest>.inflight.json`: one atomic, fsync'ed write per
batch, never per image). On a restart, keys in it without a manifest row are
suspects. Each is read and scored alone, one at a time and before anything else,
with the file naming it `alone` meanwhile: its innocent batch-mates get their rows
that way. An input on which the process dies again while alone (its second death)
gets an error row on the next restart instead of a third attempt.

A kill from outside looks exactly like a death an input caused: `kill -9` landing
while a suspect is alone makes that suspect an error row. Python exceptions are not
deaths: Ctrl-C, and SIGTERM through `classify.main`, forget the `alone` mark first.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

from common.files import remove_stale_temporaries, write_text

log = logging.getLogger(__name__)

DIED = "the process died while reading or scoring it, twice (in a batch, then alone); not tried again"


def marker_path(manifest) -> Path:
    """`x/manifest.csv` → `x/manifest.inflight.json` (one marker per manifest, so per shard)."""
    return Path(manifest).with_suffix(".inflight.json")


class InFlight:
    """The marker file of one manifest: what a dead process left, and marks for this one."""

    def __init__(self, path):
        self.path = Path(path)
        self.alone = ""  # the key this process is reading alone ("" in the batch phase)
        self._keys: list[str] = []

    def left(self, done) -> tuple[list[str], str]:
        """(suspects, died alone): what an earlier process left without a row in `done`.

        Suspects were in flight when it died, in order; `died alone` ("" if none) is
        the one it was reading alone, i.e. on which it died a second time.
        """
        remove_stale_temporaries(self.path)
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [], ""
        except (ValueError, OSError) as err:  # written atomically: this is someone else's file
            log.warning("%s: unreadable in-flight marker (%s); ignoring it", self.path, err)
            return [], ""
        alone = state.get("alone", "")
        alone = alone if alone and alone not in done else ""
        suspects = [k for k in state.get("keys", []) if k not in done and k != alone]
        return suspects, alone

    def mark(self, keys: Sequence[str], alone: str = "") -> None:
        """Record that `keys` are in flight (`alone`: the one being read by itself), durably."""
        self._keys, self.alone = list(keys), alone
        text = json.dumps({"pid": os.getpid(), "alone": alone, "keys": self._keys})
        write_text(self.path, text + "\n", durable=True)

    def interrupted(self) -> None:
        """A Python exception, not a death: blame no input for it."""
        if self.alone:  # keep the suspects for the next run, alone-free
            self.mark(self._keys)
        else:
            self.clear()

    def clear(self) -> None:
        """Nothing in flight (the run finished)."""
        self.path.unlink(missing_ok=True)
        self._keys, self.alone = [], ""
