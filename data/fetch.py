"""Downloading one file over HTTP: resumable, verified, with a progress bar.

A download goes to `<file>.part` and is resumed with an HTTP Range request that
carries If-Range (the server's ETag or Last-Modified from the first response), so a
file that changed on the server is sent whole, never spliced onto old bytes. It
gets its final name only after its size (and md5, where one is published) has been
checked and it is on disk (fsync), so a partial file is never taken for a complete
one. A verified file that is already there means nothing to do.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import wget

log = logging.getLogger(__name__)

_CHUNK = 1 << 18  # bytes per read while streaming a download
_USER_AGENT = "castle-dreamer (python urllib)"


class DownloadError(Exception):
    """A download, check or unpacking that failed; the message names the file and what to do."""


# --------------------------------------------------------------------------- progress


class _Progress:
    """A one-line progress bar on stderr using the `wget` package's `bar_adaptive` text.

    `mode`: True (or "auto") draws only on a terminal, "always" draws anyway,
    False (or "never") never draws.
    """

    def __init__(self, label: str, total: int | None, mode):
        self.stream = sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.on = mode == "always" or (mode not in (False, None, "never") and isatty())
        self.label, self.total, self.last, self.current = label, total, 0.0, 0

    def update(self, current: int) -> None:
        self.current = current
        now = time.monotonic()
        if self.on and (now - self.last >= 0.1 or current == self.total):
            self.last = now
            self._draw()

    def _draw(self) -> None:
        width = shutil.get_terminal_size((80, 20)).columns - len(self.label) - 2
        bar = wget.bar_adaptive(self.current, self.total or 0, width)
        self.stream.write(f"\r{self.label} {bar}")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- downloading


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    """The useful part of a network error, on one line."""
    if isinstance(err, urllib.error.HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, urllib.error.URLError):
        text = str(err.reason or err)
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _checked_file(path: Path) -> Path:
    """The md5sum-format note written beside a file whose md5 has been verified."""
    return path.with_name(path.name + ".md5")


def _already_verified(dest: Path, md5: str | None, expected_size: int | None) -> bool:
    """Whether a file that has its final name still passes its checks.

    A file gets its final name only after verification, so with no md5 to check
    its presence (and size) is enough. With an md5, the note written at
    verification time saves hashing a gigabyte again while the file is unchanged.
    """
    size = dest.stat().st_size
    if expected_size is not None and size != expected_size:
        return False
    if md5 is None:
        return True
    note = _checked_file(dest)
    try:
        fresh = note.stat().st_mtime_ns >= dest.stat().st_mtime_ns
        noted = note.read_text().split()[0].lower()
    except (OSError, IndexError):
        fresh, noted = False, None
    if fresh and noted == md5:
        return True
    if _md5_of(dest) == md5:
        note.write_text(f"{md5}  {dest.name}\n")
        return True
    return False


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where absent or '*'."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _validator_file(part: Path) -> Path:
    """Beside a partial download: the server's ETag (or Last-Modified) for the bytes it holds."""
    return part.with_name(part.name + ".validator")


def _discard(part: Path) -> None:
    """Delete a partial download and what it was resumed against."""
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


def _validator(response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range compares (RFC 9110 §13.1.5)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _open(url: str, offset: int, timeout: float, validator: str | None = None):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:  # the rest only if the file is unchanged; else the server sends it whole
            headers["If-Range"] = validator
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, *, label: str, expected_size: int | None, progress,
              timeout: float) -> int | None:
    """Fill `part` with the bytes at `url`, resuming what it holds; return the total size if known.

    Raises DownloadError when the server cannot be reached or the transfer stops
    early; the partial file is kept so that the next call resumes it.
    """
    failed = f"could not download {label} from {url}"
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        _discard(part)
        offset = 0
    if offset and offset == expected_size:
        return expected_size  # complete already: verification decides
    validator_file = _validator_file(part)
    for _ in range(2):  # a second round only when the partial file cannot be resumed
        validator = validator_file.read_text().strip() if offset and validator_file.exists() else None
        try:
            response = _open(url, offset, timeout, validator)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # Range Not Satisfiable: nothing after `offset`
                _, total = _content_range(err.headers.get("Content-Range"))
                if total == offset:
                    return total
                log.warning("%s: the server cannot resume %s; starting again from zero",
                            label, part)
                _discard(part)
                offset = 0
                continue
            raise DownloadError(f"{failed}: {_reason(err)}") from err
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"{failed}: {_reason(err)}") from err
        with response:
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:  # not the range asked for: trust nothing we hold
                    log.warning("%s: the server answered from byte %s, not %d; starting again",
                                label, start, offset)
                    _discard(part)
                    offset = 0
                    continue
            else:
                if offset:  # 200 to a Range request: the file changed (If-Range), or no resuming
                    log.info("%s: the server sends the whole file (changed since, or it does not "
                             "resume downloads); starting again from zero", label)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{failed}: the server offers {total} bytes, "
                                    f"{expected_size} were expected")
            total = total if total is not None else expected_size
            if offset == 0:  # what a later resume must match
                fresh = _validator(response)
                if fresh:
                    validator_file.write_text(fresh + "\n")
                else:
                    validator_file.unlink(missing_ok=True)
            received = _stream(response, part, offset, total, label, progress, failed)
        if total is not None and received < total:
            raise DownloadError(f"{failed}: the connection closed after {received} of {total} "
                                f"bytes (kept in {part}; run again to resume)")
        return total if total is not None else received
    raise DownloadError(f"{failed}: the server does not serve the rest of {part}; "
                        "delete it and run again")


def _stream(response, part: Path, offset: int, total: int | None, label: str, progress,
            failed: str) -> int:
    """Append the response body to `part` (truncated first if `offset` is 0); return its size."""
    bar = _Progress(label, total, progress)
    received = offset
    bar.update(received)
    try:
        with open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:
                    raise DownloadError(
                        f"{failed}: interrupted after {received} of {total or '?'} bytes "
                        f"({_reason(err)}; kept in {part}, run again to resume)"
                    ) from err
                if not chunk:
                    return received
                out.write(chunk)
                received += len(chunk)
                bar.update(received)
    finally:
        bar.close()


def download_file(url: str, dest: Path, *, label: str | None = None, md5: str | None = None,
                  expected_size: int | None = None, progress=True, timeout: float = 60,
                  check: Callable[[Path], None] | None = None) -> Path:
    """Download `url` to `dest` resumably and return `dest` once its size and md5 check out.

    The transfer is urllib's rather than the `wget` package's (which the original
    used): `wget.download` always starts from byte zero, so it cannot resume a
    gigabyte shard. Only wget's progress-bar text is reused.

    label: what messages and the progress bar call the file (default: its name).
    md5: the published checksum; a mismatch deletes the download and raises.
    expected_size: bytes, when known beforehand; otherwise the server's
        Content-Length / Content-Range is checked.
    progress: True draws a bar on a terminal only, "always" also elsewhere, False never.
    timeout: seconds a connection may stay silent.
    check: a test of the content, for files published without an md5 (e.g. their
        CSV header): called with the complete download before it gets its name, and
        on a file already there; it raises DownloadError to reject the file, which is
        then deleted.
    Raises DownloadError naming the file and the reason.
    """
    dest = Path(dest)
    label = label or dest.name
    md5 = md5.lower() if md5 else None
    if dest.exists():
        if _already_verified(dest, md5, expected_size) and _passes(check, dest):
            log.info("%s: already downloaded (%s)", label, dest)
            return dest
        log.warning("%s does not match its published size, md5 or content check; "
                    "downloading it again", dest)
        remove_download(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s from %s to %s", label, url, dest)
    size = _transfer(url, part, label=label, expected_size=expected_size, progress=progress,
                     timeout=timeout)
    got = part.stat().st_size
    if size is not None and got != size:
        _discard(part)
        raise DownloadError(f"{dest}: {got} bytes downloaded, {size} expected; "
                            "the partial file was deleted, run again")
    if md5 is not None:
        actual = _md5_of(part)
        if actual != md5:
            _discard(part)
            raise DownloadError(f"{dest}: md5 {actual} does not match the published {md5} "
                                f"(from {url}); the corrupt download was deleted, run again")
    if check is not None:
        try:
            check(part)
        except DownloadError as err:
            _discard(part)
            raise DownloadError(f"{dest} (from {url}): {err}; the download was deleted") from err
    with open(part, "rb+") as f:  # on disk before it has its name: presence means complete
        os.fsync(f.fileno())
    os.replace(part, dest)
    _discard(part)  # its validator
    if md5 is not None:
        _checked_file(dest).write_text(f"{md5}  {dest.name}\n")
    return dest


def _passes(check: Callable[[Path], None] | None, path: Path) -> bool:
    """Whether `path` passes a content check (True when there is none)."""
    if check is None:
        return True
    try:
        check(path)
    except DownloadError as err:
        log.warning("%s: %s", path, err)
        return False
    return True


def remove_download(path: Path) -> None:
    """Delete a downloaded file and the note of its verified md5, if they exist."""
    path.unlink(missing_ok=True)
    _checked_file(path).unlink(missing_ok=True)
