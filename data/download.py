"""The real datasets and the command line that fetches them: the original project's
curated photos, and the Google Landmarks Dataset v2 (GLDv2) train shards and metadata.

    python -m data.download reduced_128 --root datasets
    python -m data.download gldv2 --shards 0-9 --extract
    python -m data.download gldv2_metadata      # train.csv + train_label_to_hierarchical.csv

Every step is safe to interrupt and cheap to repeat: each file is downloaded
resumably and verified (data/fetch.py), each archive checked and unpacked all
or nothing (data/archives.py); what is already there and finished is left as
it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from data.archives import extract_all, is_unpacked
from data.fetch import DownloadError, download_file, remove_download

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
# Its metadata, from the same README ("Download the labels and metadata"), sits at
# URL/metadata/<name>.csv. No md5 is published for the metadata, so each CSV is checked
# by the size the server announces and by its header, which must be exactly the columns
# the README documents (GLDV2_METADATA below), before it gets its final name.
# Override with `--base-url` or CASTLE_DREAMER_GLDV2_URL (same layout below it).
GLDV2_BASE_URL = "https://s3.amazonaws.com/google-landmark"
DATA_URL_ENV = "CASTLE_DREAMER_DATA_URL"
GLDV2_URL_ENV = "CASTLE_DREAMER_GLDV2_URL"
# ============================================================================

GLDV2_SHARDS = 500  # images_000.tar ... images_499.tar, ~1 GB each
# GLDv2 metadata files (URL/metadata/<name>) and their documented header, in order.
GLDV2_METADATA = {
    "train.csv": ("id", "url", "landmark_id"),
    "train_label_to_hierarchical.csv": ("landmark_id", "category", "supercategory",
                                        "hierarchical_label", "natural_or_human_made"),
}
DOWNLOADS = "downloads"  # sub-folder of the data root that holds the archives


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


# --------------------------------------------------------------------------- datasets


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} "
                         "(GLDv2 shards: fetch_gldv2_shards)")
    return DATASETS[name]


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
    if is_unpacked(target):
        return target
    base_url = base_url or os.environ.get(DATA_URL_ENV) or None
    count = len(spec.urls)
    archives = []
    for part in range(count):
        label = name if count == 1 else f"{name} (part {part + 1}/{count})"
        archives.append(download_file(
            spec.url(part, base_url), root / DOWNLOADS / spec.filename(part), label=label,
            md5=spec.part_md5(part), expected_size=None, progress=progress, timeout=60,
        ))
    extract_all(archives, target)
    if not keep_archives:
        for archive in archives:
            remove_download(archive)
    return target


def _gldv2_md5(base_url: str, folder: Path, shard: int) -> str:
    """The published md5 of a GLDv2 train shard, from its md5sum file (fetched once, then kept)."""
    tar_name = f"images_{shard:03d}.tar"
    path = folder / f"md5.images_{shard:03d}.txt"
    if not path.exists():
        download_file(f"{base_url}/md5sum/train/{path.name}", path, label=f"GLDv2 {path.name}",
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
        if extract and is_unpacked(unpacked):
            out.append(unpacked)
            continue
        md5 = _gldv2_md5(base_url, folder, shard)
        tar = download_file(f"{base_url}/train/{tar_name}", folder / tar_name,
                            label=f"GLDv2 {tar_name}", md5=md5, expected_size=None,
                            progress=progress, timeout=60)
        if extract:
            extract_all([tar], unpacked)
            if not keep_archives:
                remove_download(tar)
            out.append(unpacked)
        else:
            out.append(tar)
    return out


def check_csv_header(path: Path, columns: Iterable[str]) -> None:
    """Raise DownloadError unless `path` starts with the header `columns` and has a row after it.

    What stands in for an md5 where none is published: an error page, a truncated
    first block or another file under the same name fails it.
    """
    columns = list(columns)
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8-sig", errors="replace")
    first, _, rest = head.partition("\n")
    found = [c.strip().strip('"') for c in first.rstrip("\r").split(",")]
    if found != columns:
        shown = " ".join(first.split())[:80]
        raise DownloadError(f"header {shown!r} is not the documented {','.join(columns)!r}")
    if not rest.strip():
        raise DownloadError("no rows after its header")


def fetch_gldv2_metadata(root: Path, names: Iterable[str] = tuple(GLDV2_METADATA), *,
                         base_url: str | None = None, progress=True) -> list[Path]:
    """Download GLDv2 metadata CSVs into root/gldv2/metadata/, each checked by size and header.

    names: keys of GLDV2_METADATA (default: all of them).
    base_url: a mirror with the GLDv2 layout (metadata/); default
        $CASTLE_DREAMER_GLDV2_URL, else GLDV2_BASE_URL.
    Returns their paths, in the order of `names`. A file already there that passes
    its header check is kept as it is.
    """
    base_url = (base_url or os.environ.get(GLDV2_URL_ENV) or GLDV2_BASE_URL).rstrip("/")
    folder = Path(root) / "gldv2" / "metadata"
    names = list(names)
    for name in names:
        if name not in GLDV2_METADATA:
            raise ValueError(f"unknown GLDv2 metadata file {name!r}; known: {', '.join(GLDV2_METADATA)}")
    out = []
    for name in names:
        columns = GLDV2_METADATA[name]
        out.append(download_file(
            f"{base_url}/metadata/{name}", folder / name, label=f"GLDv2 {name}", md5=None,
            expected_size=None, progress=progress, timeout=60,
            check=lambda path, columns=columns: check_csv_header(path, columns),
        ))
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
    known = [*DATASETS, "gldv2", "gldv2_metadata"]
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description="Download, verify and unpack a dataset. "
                    + "; ".join(f"{k}: {v.description}" for k, v in DATASETS.items())
                    + "; gldv2: Google Landmarks v2 train shards (with --shards)"
                    + "; gldv2_metadata: GLDv2 " + " and ".join(GLDV2_METADATA) + ".",
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
        if args.name == "gldv2_metadata":
            paths = fetch_gldv2_metadata(Path(args.root), base_url=args.base_url,
                                         progress=progress)
        elif args.name == "gldv2":
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
