"""Download, verify and unpack the real datasets: the original project's curated
photos and the Google Landmarks Dataset v2 (GLDv2) train shards.

    python -m data.download reduced_128 --root datasets
    python -m data.download gldv2 --shards 0-9 --extract

Every step is safe to interrupt and cheap to repeat:
- a download goes to `<file>.part` and is resumed with an HTTP Range request;
  it gets its final name only after its size (and md5, where one is published)
  has been checked, so a partial file is never taken for a complete one;
- an archive is checked member by member before anything is written (nothing
  may land outside the target folder), unpacked into `<folder>.partial` and
  renamed into place with a `.complete` marker, so a half-unpacked folder never
  looks finished;
- a verified file or a marked folder that is already there means nothing to do.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import wget

log = logging.getLogger(__name__)

# ============================================================================ URLs
# Everything this module fetches from the internet is named in this block.
#
# The original project's curated datasets, as its author published them on
# Zenodo (E-Fumi/TheAccidentalCastleDreamer, utils.py: `datasets = {...}`, fetched
# there with `wget.download`). Zenodo now serves these old `/record/` links by
# redirecting to `/records/`; urllib follows the redirect. The original lists no
# checksums, so only the size the server announces is checked for these files
# (md5 stays None: never fill it in from anywhere but the publisher).
# A mirror holding the same file names can stand in for the whole table:
# `--base-url URL` or the CASTLE_DREAMER_DATA_URL environment variable
# (URL/reduced_128.zip, URL/red_256_part_1.zip.zip, ...).
_ZENODO = "https://zenodo.org/record/{record}/files/{name}?download=1"
_ORIGINAL_URLS = {
    "reduced_128": (_ZENODO.format(record=5655491, name="reduced_128.zip"),),
    "reduced_256": tuple(
        _ZENODO.format(record=5676514, name=f"red_256_part_{i}.zip.zip") for i in range(1, 6)
    ),
    "validation": (_ZENODO.format(record=5654571, name="validation.zip"),),
    "test": (_ZENODO.format(record=5655436, name="test.zip"),),
}
# GLDv2 train set, as documented in cvdfoundation/google-landmark's README and
# download-dataset.sh: URL/train/images_000.tar ... images_499.tar, with md5sum
# files at URL/md5sum/train/md5.images_000.txt ("<md5>  images_000.tar").
# Override with `--base-url` or CASTLE_DREAMER_GLDV2_URL (same layout below it).
GLDV2_BASE_URL = "https://s3.amazonaws.com/google-landmark"
DATA_URL_ENV = "CASTLE_DREAMER_DATA_URL"
GLDV2_URL_ENV = "CASTLE_DREAMER_GLDV2_URL"
# ============================================================================

GLDV2_SHARDS = 500  # images_000.tar ... images_499.tar, ~1 GB each
MARKER = ".complete"  # written last into an unpacked folder: its presence means "finished"
DOWNLOADS = "downloads"  # sub-folder of the data root that holds the archives
_CHUNK = 1 << 18  # bytes per read while streaming a download
_USER_AGENT = "castle-dreamer (python urllib)"


@dataclass(frozen=True)
class DatasetSpec:
    """One downloadable dataset: its archive parts, in order, and where they unpack."""

    urls: tuple[str, ...]  # the publisher's URL of each part
    folder: str  # folder under the data root that holds the images once unpacked
    archive: str = "zip"  # archive format of every part ("zip", "tar", "tar.gz")
    md5: tuple[str | None, ...] = ()  # published md5 per part; empty: none published
    description: str = ""

    def filename(self, part: int) -> str:
        """The file name of a part (also its name on a mirror)."""
        return posixpath.basename(urllib.parse.urlsplit(self.urls[part]).path)

    def url(self, part: int, base_url: str | None) -> str:
        """Where to fetch a part: the publisher, or `base_url`/<file name> on a mirror."""
        if base_url:
            return f"{base_url.rstrip('/')}/{self.filename(part)}"
        return self.urls[part]

    def part_md5(self, part: int) -> str | None:
        """The published md5 of a part, or None."""
        return self.md5[part] if part < len(self.md5) else None


DATASETS: dict[str, DatasetSpec] = {
    "reduced_128": DatasetSpec(
        _ORIGINAL_URLS["reduced_128"], "reduced_128",
        description="curated GLDv2 building photos, 128 px (original's 128-px training set)",
    ),
    "reduced_256": DatasetSpec(
        _ORIGINAL_URLS["reduced_256"], "reduced_256",
        description="curated GLDv2 building photos, 256 px, in 5 parts of ~1 GB "
                    "(original's 256-px training set)",
    ),
    "validation": DatasetSpec(
        _ORIGINAL_URLS["validation"], "validation",
        description="the original's validation photos",
    ),
    "test": DatasetSpec(
        _ORIGINAL_URLS["test"], "test",
        description="the original's test photos",
    ),
}


class DownloadError(Exception):
    """A download, check or unpacking that failed; the message names the file and what to do."""


class UnsafeArchiveError(DownloadError):
    """An archive member that would be written outside its target folder."""


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


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
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
        part.unlink()
        offset = 0
    if offset and offset == expected_size:
        return expected_size  # complete already: verification decides
    for _ in range(2):  # a second round only when the partial file cannot be resumed
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # Range Not Satisfiable: nothing after `offset`
                _, total = _content_range(err.headers.get("Content-Range"))
                if total == offset:
                    return total
                log.warning("%s: the server cannot resume %s; starting again from zero",
                            label, part)
                part.unlink()
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
                    part.unlink(missing_ok=True)
                    offset = 0
                    continue
            else:
                if offset:  # 200 to a Range request: this server cannot resume
                    log.info("%s: the server does not resume downloads; starting again from zero",
                             label)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{failed}: the server offers {total} bytes, "
                                    f"{expected_size} were expected")
            total = total if total is not None else expected_size
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


def _download(url: str, dest: Path, *, label: str, md5: str | None, expected_size: int | None,
              progress, timeout: float) -> Path:
    md5 = md5.lower() if md5 else None
    if dest.exists():
        if _already_verified(dest, md5, expected_size):
            log.info("%s: already downloaded (%s)", label, dest)
            return dest
        log.warning("%s does not match its published size or md5; downloading it again", dest)
        dest.unlink()
        _checked_file(dest).unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s from %s to %s", label, url, dest)
    size = _transfer(url, part, label=label, expected_size=expected_size, progress=progress,
                     timeout=timeout)
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{dest}: {got} bytes downloaded, {size} expected; "
                            "the partial file was deleted, run again")
    if md5 is not None:
        actual = _md5_of(part)
        if actual != md5:
            part.unlink()
            raise DownloadError(f"{dest}: md5 {actual} does not match the published {md5} "
                                f"(from {url}); the corrupt download was deleted, run again")
    os.replace(part, dest)
    if md5 is not None:
        _checked_file(dest).write_text(f"{md5}  {dest.name}\n")
    return dest


def download_file(url: str, dest: Path, *, md5: str | None = None, expected_size: int | None = None,
                  progress=True, timeout: float = 60) -> Path:
    """Download `url` to `dest` resumably and return `dest` once its size and md5 check out.

    The transfer is urllib's rather than the `wget` package's (which the original
    used): `wget.download` always starts from byte zero, so it cannot resume a
    gigabyte shard. Only wget's progress-bar text is reused.

    md5: the published checksum; a mismatch deletes the download and raises.
    expected_size: bytes, when known beforehand; otherwise the server's
        Content-Length / Content-Range is checked.
    progress: True draws a bar on a terminal only, "always" also elsewhere, False never.
    timeout: seconds a connection may stay silent.
    Raises DownloadError naming the file and the reason.
    """
    dest = Path(dest)
    return _download(url, dest, label=dest.name, md5=md5, expected_size=expected_size,
                     progress=progress, timeout=timeout)


# --------------------------------------------------------------------------- unpacking


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str | None = None  # symlink target (from its folder) or hardlink target (from the root)


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
                    out.append(_Member(info.filename, "dir" if info.is_dir() else "file"))
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
                out.append(_Member(m.name, "file"))
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


def _check_members(archive: Path, members: Sequence[_Member]) -> None:
    """Refuse an archive any member of which would be written, or point, outside its folder.

    Paths are judged by their text, so nothing may pass *through* a symbolic link
    of the same archive (`l -> .` then `l/../x` would leave the folder on disk
    while looking inside on paper); links themselves may point inside.
    """
    links = {p for m in members if m.kind == "symlink" and (p := _relative(m.name))}
    refuse = f"{archive}: refusing to unpack (nothing was written):"
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


def _finished(target: Path) -> bool:
    """True if `target` was unpacked completely; raises if it exists without our marker."""
    if (target / MARKER).exists():
        return True
    if target.exists():
        raise DownloadError(f"{target} exists but has no {MARKER} marker, so it may be "
                            "incomplete; move it away (or pass it as a folder) and run again")
    return False


def _extract(archives: Sequence[Path], target: Path) -> Path:
    """Unpack `archives` into `target` together: every member checked first, then all or none."""
    if _finished(target):
        log.info("%s: already unpacked", target)
        return target
    kinds = [_archive_kind(a) for a in archives]
    for archive, kind in zip(archives, kinds):
        with _unreadable(archive):
            _check_members(archive, _members(archive, kind))
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


def safe_extract(archive: Path, target_dir: Path) -> Path:
    """Unpack a zip or tar (.tar.gz, ...) archive into `target_dir`, all or nothing; return it.

    Members that would land outside `target_dir` (absolute paths, '..', links
    pointing out) raise UnsafeArchiveError before anything is written. The folder
    appears, with a `.complete` marker, only once every member is out; a marked
    folder is left as it is.
    """
    return _extract([Path(archive)], Path(target_dir))


# --------------------------------------------------------------------------- datasets


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} "
                         "(GLDv2 shards: fetch_gldv2_shards)")
    return DATASETS[name]


def _remove_archive(path: Path) -> None:
    path.unlink(missing_ok=True)
    _checked_file(path).unlink(missing_ok=True)


def fetch_dataset(name: str, root: Path, *, base_url: str | None = None, progress=True,
                  keep_archives: bool = False) -> Path:
    """Download, verify and unpack one of DATASETS under `root`; return the folder of its images.

    Images may sit in sub-folders of the returned folder (as the archives have
    them). Archives go to root/downloads/ and are deleted once unpacked unless
    `keep_archives`. A multi-part dataset needs room for its archives and their
    contents at once.
    base_url: a mirror holding the same file names (default: $CASTLE_DREAMER_DATA_URL,
        else the publisher's URLs at the top of this module).
    Raises DownloadError (e.g. "could not download reduced_128 from <url>: <reason>").
    """
    spec = _spec(name)
    root = Path(root)
    target = root / spec.folder
    if _finished(target):
        return target
    base_url = base_url or os.environ.get(DATA_URL_ENV) or None
    count = len(spec.urls)
    archives = []
    for part in range(count):
        label = name if count == 1 else f"{name} (part {part + 1}/{count})"
        archives.append(_download(
            spec.url(part, base_url), root / DOWNLOADS / spec.filename(part), label=label,
            md5=spec.part_md5(part), expected_size=None, progress=progress, timeout=60,
        ))
    _extract(archives, target)
    if not keep_archives:
        for archive in archives:
            _remove_archive(archive)
    return target


def _gldv2_md5(base_url: str, folder: Path, shard: int) -> str:
    """The published md5 of a GLDv2 train shard, from its md5sum file (fetched once, then kept)."""
    tar_name = f"images_{shard:03d}.tar"
    path = folder / f"md5.images_{shard:03d}.txt"
    if not path.exists():
        _download(f"{base_url}/md5sum/train/{path.name}", path, label=f"GLDv2 {path.name}",
                  md5=None, expected_size=None, progress=False, timeout=60)
    fields = path.read_text(errors="replace").split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{32}", fields[0]):
        path.unlink()
        raise DownloadError(f"{path}: not an md5sum line ('<md5>  {tar_name}'); "
                            "it was deleted, run again to fetch it afresh")
    if len(fields) > 1 and fields[1].lstrip("*") != tar_name:
        raise DownloadError(f"{path} gives the md5 of {fields[1]}, not {tar_name}; "
                            "delete it and run again")
    return fields[0].lower()


def fetch_gldv2_shards(root: Path, shards: Iterable[int], *, extract: bool = False,
                       base_url: str | None = None, progress=True,
                       keep_archives: bool = False) -> list[Path]:
    """Download GLDv2 train shards into root/gldv2/train/, each checked against its md5 file.

    Returns the .tar paths, or with `extract` the folders root/gldv2/train/images_NNN/
    they unpack into (images at a/b/c/<id>.jpg inside; each tar is deleted once
    unpacked unless `keep_archives`). A md5.images_NNN.txt already in that folder
    is used instead of the published one.
    base_url: a mirror with the GLDv2 layout (train/, md5sum/train/); default
        $CASTLE_DREAMER_GLDV2_URL, else GLDV2_BASE_URL.
    """
    base_url = (base_url or os.environ.get(GLDV2_URL_ENV) or GLDV2_BASE_URL).rstrip("/")
    folder = Path(root) / "gldv2" / "train"
    shards = [int(s) for s in shards]
    for shard in shards:
        if not 0 <= shard < GLDV2_SHARDS:
            raise ValueError(f"GLDv2 train shards are numbered 0-{GLDV2_SHARDS - 1}, not {shard}")
    out = []
    for shard in shards:
        tar_name = f"images_{shard:03d}.tar"
        unpacked = folder / f"images_{shard:03d}"
        if extract and _finished(unpacked):
            out.append(unpacked)
            continue
        md5 = _gldv2_md5(base_url, folder, shard)
        tar = _download(f"{base_url}/train/{tar_name}", folder / tar_name,
                        label=f"GLDv2 {tar_name}", md5=md5, expected_size=None,
                        progress=progress, timeout=60)
        if extract:
            _extract([tar], unpacked)
            if not keep_archives:
                _remove_archive(tar)
            out.append(unpacked)
        else:
            out.append(tar)
    return out


# --------------------------------------------------------------------------- CLI


def parse_shards(text: str) -> list[int]:
    """'0-9', '3' or '0,5,10-19' → shard numbers (each 0-499), in the order given."""
    shards: list[int] = []
    for piece in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", piece)
        if not match:
            raise ValueError(f"--shards: {piece!r} is not a number or a range like 0-9")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if first > last or last >= GLDV2_SHARDS:
            raise ValueError(f"--shards: {piece.strip()!r} is outside 0-{GLDV2_SHARDS - 1} "
                             "or runs backwards")
        shards.extend(s for s in range(first, last + 1) if s not in shards)
    return shards


def main(argv: Iterable[str] | None = None) -> int:
    """CLI: exit 0 done, 1 download/check failed (one line on stderr), 2 usage error."""
    known = [*DATASETS, "gldv2"]
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description="Download, verify and unpack a dataset. "
                    + "; ".join(f"{k}: {v.description}" for k, v in DATASETS.items())
                    + "; gldv2: Google Landmarks v2 train shards (with --shards).",
    )
    parser.add_argument("name", help=f"one of: {', '.join(known)}")
    parser.add_argument("--root", default="datasets", help="data folder (default: datasets)")
    parser.add_argument("--base-url", help="a mirror with the same file names "
                        f"(default: ${DATA_URL_ENV} / ${GLDV2_URL_ENV}, else the publishers)")
    parser.add_argument("--shards",
                        help="gldv2 only: shard numbers, e.g. 0-9 or 0,5,10-19 (of 0-499)")
    parser.add_argument("--extract", action="store_true", help="gldv2 only: unpack each shard")
    parser.add_argument("--keep-archives", action="store_true", help="keep archives once unpacked")
    parser.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="progress bar: on a terminal only (auto), always, never")
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # usage errors (2) and --help (0), as a return value
        return int(exit_.code or 0)

    def usage(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.name not in known:
        return usage(f"unknown dataset {args.name!r}; known: {', '.join(known)}")
    if args.name == "gldv2":
        if not args.shards:
            return usage("gldv2 needs --shards, e.g. --shards 0-9 (of 0-499)")
        try:
            shards = parse_shards(args.shards)
        except ValueError as err:
            return usage(str(err))
    elif args.shards or args.extract:
        return usage("--shards and --extract apply to gldv2 only")
    progress = {"auto": True, "always": "always", "never": False}[args.progress]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.name == "gldv2":
            paths = fetch_gldv2_shards(Path(args.root), shards, extract=args.extract,
                                       base_url=args.base_url, progress=progress,
                                       keep_archives=args.keep_archives)
        else:
            paths = [fetch_dataset(args.name, Path(args.root), base_url=args.base_url,
                                   progress=progress, keep_archives=args.keep_archives)]
    except (DownloadError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
