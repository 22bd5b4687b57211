"""Curation inputs: folders, lists of paths and GLDv2 .tar shards, as one list of items.

Each item has a `key` (the manifest's path: the file's canonical absolute path, or
`<shard>.tar/<member>` for an image inside a tar, read in place without extracting
it), so one photo has one key however its path was typed, and a `name` that does not
depend on where the data is mounted, which decides the item's machine when the work
is split with --num-shards. Files still downloading (`*.part`) and everything under
an excluded folder (the curation's own output) are never inputs.

`ItemReader` reads an item's bytes. A read that fails with an error that may pass
(`transient`: EIO, EAGAIN, EINTR, EBUSY, ETIMEDOUT, and the errors of network file
systems and connections: ESTALE, ENOLINK, ECOMM, EREMOTEIO, ECONNRESET, ECONNABORTED,
ECONNREFUSED, ENOTCONN, ENETDOWN, ENETUNREACH, ENETRESET, EHOSTDOWN, EHOSTUNREACH) is
tried again after 0.1, 0.4, 1.6 … s (`backoff`); any other error (ENOENT, EACCES,
EISDIR, a tar that ends early, …) is final at once.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data.pipeline import IMAGE_EXTENSIONS, DataError, find_images

log = logging.getLogger(__name__)

LIST_EXTENSIONS = (".txt", ".csv")


@dataclass(frozen=True)
class Item:
    """One input image (or a known-bad input, with `error` set)."""

    key: str  # the manifest's path
    name: str  # mount-independent name (relative to its folder, list or tar)
    path: str = ""  # the file to read (plain files)
    tar: str = ""  # the tar shard holding it
    member: str = ""  # its name inside the tar
    offset: int = -1  # the member's data offset in an uncompressed tar (-1: read through tarfile)
    size: int = 0  # the member's size in bytes
    error: str = ""  # set when the input is known to be bad before reading it


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_tar(path) -> bool:
    path = Path(path)
    return path.is_file() and (path.name.lower().endswith((".tar", ".tar.gz", ".tgz"))
                               or (path.suffix.lower() not in IMAGE_EXTENSIONS + LIST_EXTENSIONS
                                   and tarfile.is_tarfile(path)))


def tar_items(path) -> list[Item]:
    """The images inside a tar shard, in the order they are stored (sequential reads).

    A truncated or corrupt shard (an interrupted download) keeps the images listed
    before the damage, plus one error item for the shard itself.
    """
    path = str(path)
    base = os.path.basename(path)
    items: list[Item] = []
    try:
        try:
            archive, compressed = tarfile.open(path, "r:"), False
        except tarfile.ReadError:  # gzip/bz2/xz: read through tarfile, no direct offsets
            archive, compressed = tarfile.open(path, "r:*"), True
        with archive:
            for info in archive:
                if not _is_image(info.name) or info.isdir():
                    continue
                item = Item(key=f"{path}/{info.name}", name=f"{base}/{info.name}", tar=path,
                            member=info.name, offset=-1 if compressed else info.offset_data,
                            size=info.size)
                if not info.isfile():  # a link or device named like an image: a row, never followed
                    kind = "a symbolic link" if info.issym() else "a hard link" if info.islnk() else "a special file"
                    item = Item(key=item.key, name=item.name, tar=path, member=info.name,
                                error=f"not a regular file in the tar: {kind}")
                items.append(item)
    except (tarfile.TarError, EOFError, OSError) as err:
        if not items and not tarfile.is_tarfile(path):
            raise DataError(f"{path}: not a tar archive") from None
        reason = f"corrupt or truncated tar after {len(items)} images: {str(err).strip() or type(err).__name__}"
        log.warning("%s: %s", path, reason)
        items.append(Item(key=path, name=base, tar=path, error=reason))
    return items


PARTIAL_DOWNLOAD = ".part"  # data.fetch's name for a file still downloading


def printable(path: str) -> str:
    """A path as text that any file can hold: bytes that are not UTF-8 (a name from another
    system, kept by Python as surrogates) shown as \\xNN escapes, deterministically."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _inside(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _folder_items(folder: Path, exclude: Sequence[str]) -> list[Item]:
    images = sorted(p for p in folder.rglob("*")
                    if p.is_file() and _is_image(p.name) and not _inside(str(p), exclude))
    if images:
        return [Item(key=printable(str(p)), name=printable(str(p.relative_to(folder))), path=str(p))
                for p in images]
    # A folder of downloaded shards (images_000.tar, …) rather than of images.
    tars = sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.endswith(PARTIAL_DOWNLOAD) and is_tar(p))
    return [item for tar in tars for item in tar_items(tar)]


def list_items(inputs: Sequence[str], exclude: Sequence[str] = ()) -> list[Item]:
    """Every input image of folders (recursive), .txt/.csv lists, tar shards or single images.

    Paths are made canonical (absolute, links resolved) first. Raises DataError for
    an input path that does not exist or is still downloading; an input named twice,
    in any spelling, is kept once; nothing under an `exclude` folder is an input.
    Folders that hold no image give no items (the caller decides whether nothing to
    do is an error).
    """
    exclude = [os.path.realpath(f) for f in exclude]
    items: list[Item] = []
    for source in inputs:
        if not os.path.exists(source):
            raise DataError(f"{source}: no such file or folder")
        path = Path(os.path.realpath(source))
        if path.name.endswith(PARTIAL_DOWNLOAD):
            raise DataError(f"{source}: still downloading (a {PARTIAL_DOWNLOAD} file); "
                            "classify the finished file once its download completes")
        if path.is_dir():
            items += _folder_items(path, exclude)
        elif path.suffix.lower() in LIST_EXTENSIONS:
            root = path.parent
            for entry in map(os.path.realpath, find_images(path)):
                if _inside(entry, exclude):
                    continue
                try:
                    name = os.path.relpath(entry, root)
                except ValueError:
                    name = entry
                items.append(Item(key=printable(entry), name=printable(name), path=entry))
        elif _is_image(path.name):
            if not _inside(str(path), exclude):
                items.append(Item(key=printable(str(path)), name=printable(path.name), path=str(path)))
        elif is_tar(path):
            items += tar_items(path)
        else:
            raise DataError(f"{source}: expected a folder, a .txt/.csv list, a .tar shard or an image")
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    if len(unique) < len(items):
        log.info("%d inputs were named more than once; each is classified once", len(items) - len(unique))
    return unique


def shard_of(name: str, num_shards: int) -> int:
    """The machine (0 … num_shards-1) an item belongs to, from its mount-independent name."""
    digest = hashlib.md5(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(items: Sequence[Item], num_shards: int, shard_index: int) -> list[Item]:
    if num_shards == 1:
        return list(items)
    return [item for item in items if shard_of(item.name, num_shards) == shard_index]


_TRANSIENT_NAMES = ("EIO", "EAGAIN", "EWOULDBLOCK", "EINTR", "EBUSY", "ETIMEDOUT", "ESTALE", "ENOLINK",
                    "ECOMM", "EREMOTEIO", "ECONNRESET", "ECONNABORTED", "ECONNREFUSED", "ENOTCONN",
                    "ENETDOWN", "ENETUNREACH", "ENETRESET", "EHOSTDOWN", "EHOSTUNREACH")
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in _TRANSIENT_NAMES if hasattr(errno, name))


def transient(err: BaseException) -> bool:
    """Whether a read error may pass if the read is tried again (see the module's docstring)."""
    return isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS


_pause = time.sleep  # the wait between attempts (tests replace it)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0, 1, …): 0.1, 0.4, 1.6, 5, 5, …"""
    return min(0.1 * 4 ** attempt, 5.0)


class ItemReader:
    """Reads items' bytes; keeps the current tar shard open between calls.

    `retries`: how many more times a read failing with a `transient` error is tried,
    each after a `backoff` wait (the shard is reopened first); the last failure is
    raised with the number of attempts in its message.
    """

    def __init__(self, retries: int = 0):
        self.retries = max(0, int(retries))
        self._tar_path = None
        self._file = None
        self._archive = None

    def read(self, item: Item) -> bytes:
        attempt = 0
        while True:
            try:
                return self._read(item)
            except OSError as err:
                if not transient(err):
                    raise
                self.close()  # a network file system may need the file opened again
                if attempt == self.retries:
                    if attempt:
                        raise OSError(err.errno, f"{err.strerror or err} ({attempt + 1} attempts)",
                                      err.filename) from err
                    raise
                log.info("%s: %s; reading it again in %.1f s", item.key, err, backoff(attempt))
                _pause(backoff(attempt))
                attempt += 1

    def _read(self, item: Item) -> bytes:
        if not item.tar:
            with open(item.path, "rb") as f:
                return f.read()
        if item.tar != self._tar_path:
            self.close()
            self._tar_path = item.tar
            self._file = open(item.tar, "rb")
            self._archive = None
        if item.offset >= 0:
            self._file.seek(item.offset)
            data = self._file.read(item.size)
            if len(data) != item.size:
                raise OSError(f"the tar ends {item.size - len(data)} bytes into this member")
            return data
        if self._archive is None:
            self._archive = tarfile.open(item.tar, "r:*")
        member = self._archive.extractfile(item.member)
        if member is None:
            raise OSError("not a regular file in the tar")
        return member.read()

    def close(self) -> None:
        try:
            if self._archive is not None:
                self._archive.close()
            if self._file is not None:
                self._file.close()
        except OSError:  # closing a file whose reads failed can fail the same way
            pass
        self._tar_path = self._file = self._archive = None
