"""Unpacking zip and tar archives safely, all or nothing.

An archive is checked member by member before anything is written (nothing may
land outside the target folder), unpacked into `<folder>.partial` and renamed
into place with a `.complete` marker, so a half-unpacked folder never looks
finished; a marked folder means nothing to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data.fetch import DownloadError

log = logging.getLogger(__name__)

MARKER = ".complete"  # written last into an unpacked folder: its presence means "finished"


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to, checked from its listing before anything is written.

    The defaults fit the datasets here (the original's zips: ~400 000 JPEGs; a GLDv2 tar:
    ~1 GB of JPEGs, which do not compress) with room to spare, and stop a zip bomb.
    """

    members: int = 2_000_000
    total_bytes: int = 200 * 10**9  # declared uncompressed size of all members
    ratio: float = 100.0  # declared uncompressed size / archive size


LIMITS = Limits()


class UnsafeArchiveError(DownloadError):
    """An archive member that would be written outside its target folder."""


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str | None = None  # symlink target (from its folder) or hardlink target (from the root)
    size: int = 0  # declared uncompressed bytes


def _archive_kind(archive: Path) -> str:
    """'zip' or 'tar' from the bytes (tar first for tar-like names: a tar may end in a zip)."""
    tests = {"zip": zipfile.is_zipfile, "tar": tarfile.is_tarfile}
    tar_like = re.search(r"\.(tar|tgz|tbz2?|txz)(\.\w+)?$", archive.name)
    for kind in ("tar", "zip") if tar_like else ("zip", "tar"):
        if tests[kind](archive):
            return kind
    raise DownloadError(f"{archive}: not a zip or tar archive; delete it and run again")


def _members(archive: Path, kind: str) -> list[_Member]:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            out = []
            for info in zf.infolist():
                if stat.S_ISLNK(info.external_attr >> 16):
                    link = zf.read(info).decode("utf-8", "replace")
                    out.append(_Member(info.filename, "symlink", link))
                else:
                    out.append(_Member(info.filename, "dir" if info.is_dir() else "file",
                                       size=info.file_size))
            return out
    with tarfile.open(archive, "r:*") as tf:
        out = []
        for m in tf.getmembers():
            if m.issym():
                out.append(_Member(m.name, "symlink", m.linkname))
            elif m.islnk():
                out.append(_Member(m.name, "hardlink", m.linkname))
            elif m.isdir():
                out.append(_Member(m.name, "dir"))
            elif m.isfile():
                out.append(_Member(m.name, "file", size=m.size))
            else:
                out.append(_Member(m.name, "special"))
        return out


def _relative(name: str) -> str | None:
    """The normalised path of `name` below the target folder, or None if it leaves it."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    path = posixpath.normpath(name)
    return None if path == ".." or path.startswith("../") else path


def _through_link(path: str, links: set[str]) -> str | None:
    """The first symbolic link that `path`, as written, passes through, if any.

    Judged before normalising: on disk `l/..` is the parent of wherever `l`
    points, not the folder holding `l`.
    """
    parts = path.replace("\\", "/").split("/")
    for i in range(1, len(parts)):
        prefix = posixpath.normpath("/".join(parts[:i]))
        if prefix in links:
            return prefix
    return None


def _check_members(archive: Path, members: Sequence[_Member], limits: Limits = LIMITS) -> None:
    """Refuse an archive any member of which would be written, or point, outside its folder,
    or which would unpack to more members, bytes or times its own size than `limits`.

    Paths are judged by their text, so nothing may pass *through* a symbolic link
    of the same archive (`l -> .` then `l/../x` would leave the folder on disk
    while looking inside on paper); links themselves may point inside.
    """
    links = {p for m in members if m.kind == "symlink" and (p := _relative(m.name))}
    refuse = f"{archive}: refusing to unpack (nothing was written):"
    total = sum(m.size for m in members)
    if len(members) > limits.members:
        raise UnsafeArchiveError(f"{refuse} {len(members)} members, more than {limits.members}")
    if total > limits.total_bytes:
        raise UnsafeArchiveError(f"{refuse} it would unpack to {total} bytes, more than {limits.total_bytes}")
    if total > limits.ratio * max(archive.stat().st_size, 1):
        raise UnsafeArchiveError(f"{refuse} it would unpack to {total} bytes, more than "
                                 f"{limits.ratio:g} times its own size (a zip bomb?)")
    for m in members:
        path = _relative(m.name)
        if path is None:
            raise UnsafeArchiveError(f"{refuse} member {m.name!r} would be written outside the "
                                     "target folder (absolute path or '..')")
        if path == "." and m.kind != "dir":
            raise UnsafeArchiveError(f"{refuse} member {m.name!r} would replace the target folder")
        via = _through_link(m.name, links)
        if via is not None:
            raise UnsafeArchiveError(f"{refuse} member {m.name!r} goes through the symbolic "
                                     f"link {via!r}")
        if m.kind == "special":
            raise UnsafeArchiveError(f"{refuse} member {m.name!r} is a device or pipe, not a file")
        if m.kind in ("symlink", "hardlink"):
            link = m.link or ""
            # a symlink's target is relative to its folder, a hardlink's to the archive root
            base = posixpath.dirname(path) if m.kind == "symlink" else ""
            joined = posixpath.join(base, link)
            if not link or _relative(joined) is None or _through_link(joined, links) is not None:
                raise UnsafeArchiveError(f"{refuse} {m.kind} {m.name!r} -> {link!r} points outside "
                                         "the target folder or through another link")


def _unpack(archive: Path, kind: str, dest: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
        return
    with tarfile.open(archive, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
            tf.extractall(dest, filter="data")
        else:
            tf.extractall(dest)


@contextlib.contextmanager
def _unreadable(archive: Path):
    """Turn a corrupt archive's errors into a DownloadError that names it."""
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        if isinstance(err, getattr(tarfile, "FilterError", ())):  # tarfile's own check
            raise UnsafeArchiveError(f"{archive}: refusing to unpack: {err}") from err
        raise DownloadError(f"{archive}: cannot unpack ({err}); delete it and run again") from err


def is_unpacked(target: Path) -> bool:
    """True if `target` was unpacked completely; raises if it exists without our marker."""
    if (target / MARKER).exists():
        return True
    if target.exists():
        raise DownloadError(f"{target} exists but has no {MARKER} marker, so it may be "
                            "incomplete; move it away (or pass it as a folder) and run again")
    return False


def extract_all(archives: Sequence[Path], target: Path, limits: Limits = LIMITS) -> Path:
    """Unpack `archives` into `target` together: every member checked first, then all or none."""
    if is_unpacked(target):
        log.info("%s: already unpacked", target)
        return target
    kinds = [_archive_kind(a) for a in archives]
    for archive, kind in zip(archives, kinds):
        with _unreadable(archive):
            _check_members(archive, _members(archive, kind), limits)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left behind by an interrupted run
    staging.mkdir(parents=True)
    try:
        for archive, kind in zip(archives, kinds):
            log.info("unpacking %s into %s", archive, target)
            with _unreadable(archive):
                _unpack(archive, kind, staging)
        note = {"archives": [a.name for a in archives],
                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        (staging / MARKER).write_text(json.dumps(note) + "\n")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def safe_extract(archive: Path, target_dir: Path, limits: Limits = LIMITS) -> Path:
    """Unpack a zip or tar (.tar.gz, ...) archive into `target_dir`, all or nothing; return it.

    Members that would land outside `target_dir` (absolute paths, '..', links
    pointing out), and archives beyond `limits` (members, bytes, compression ratio),
    raise UnsafeArchiveError before anything is written. The folder appears, with a
    `.complete` marker, only once every member is out; a marked folder is left as it is.
    """
    return extract_all([Path(archive)], Path(target_dir), limits)
