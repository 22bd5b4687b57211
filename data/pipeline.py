"""tf.data input pipelines: image folders, path lists and TFRecord shards.

Every source ends as a `tf.data.Dataset` of float32 images in [0, 1], shape
(size, size, 3), decoded in parallel and prefetched. Bad files never crash a run:
they are found before training by a structural check (signature and complete ending,
two small reads per file), logged by path, counted and left out; a file that passes
and still fails to decode is dropped with a warning.

    python -m data.pipeline to-tfrecords PHOTOS_DIR OUT_DIR --size 128
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from common.cli import exit_code
from common.files import first_line, write_text

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecords")
CROP_MODES = ("center", "stretch")  # centre crop to square then resize | plain resize (original)
AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """A data source that cannot be used; the message names it and says why."""


@dataclass
class ImageScan:
    """Result of checking a list of image files: what decodes and what does not."""

    good: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass(frozen=True)
class ReadOptions:
    """How a source is read; every dataset function takes these as keyword arguments."""

    batch_size: int | None = 32  # None: unbatched images
    shuffle: bool = True  # reshuffled every epoch, seeded
    seed: int | None = 0
    crop: str = "center"  # center | stretch (the original's plain resize)
    cache: bool | str = False  # True: in memory; a path: on disk
    repeat: bool = False
    drop_remainder: bool = False
    with_paths: bool = False  # (image, path) pairs instead of images
    num_shards: int = 1  # split the images over this many workers...
    shard_index: int = 0  # ...and read this worker's part
    start: int = 0  # with shuffle and repeat: the element of the endless seeded stream to begin at

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise DataError(f"unknown crop mode {self.crop!r}; use one of {CROP_MODES}")
        if not 0 <= self.shard_index < self.num_shards:
            raise DataError(f"shard_index {self.shard_index} is not in [0, {self.num_shards})")


# --------------------------------------------------------------------------- sources


def is_tfrecord_source(source) -> bool:
    """True for a .tfrecord file, a glob of them, or a folder holding them (not images)."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(str(s).endswith(TFRECORD_EXTENSIONS) for s in source)
    path = Path(source)
    if str(source).endswith(TFRECORD_EXTENSIONS) or "*" in str(source):
        return True
    return path.is_dir() and bool(_tfrecord_files(path)) and not _has_images(path)


def _tfrecord_files(folder: Path) -> list[str]:
    """A folder's shards: those its index.json lists (a packing's own), else every .tfrecord."""
    index = folder / "index.json"
    if index.exists():
        return [str(folder / name) for name in json.loads(index.read_text())["shards"]]
    return sorted(str(p) for p in folder.iterdir() if p.name.endswith(TFRECORD_EXTENSIONS))


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def find_images(source) -> list[str]:
    """Image paths from a folder (recursive), a .txt/.csv list of paths, or a sequence.

    A .txt list has one path per line; a .csv list has a `path` (or `file`) column.
    Relative paths in a list file are relative to the list file's folder. The
    result is sorted so that splits and shards are reproducible.
    """
    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
        if not paths:
            raise DataError("the list of image paths is empty")
        return paths
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        # os.walk reads each folder once and knows files from folders without a stat.
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(path, followlinks=True) for name in names
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
        if not paths:
            raise DataError(
                f"{path}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)} recursively)"
            )
        return paths
    if path.suffix.lower() == ".csv":
        import pandas as pd

        table = pd.read_csv(path)
        column = next((c for c in ("path", "file", "filename") if c in table.columns), None)
        if column is None:
            raise DataError(f"{path}: a CSV list needs a 'path' or 'file' column")
        entries = [str(v) for v in table[column].dropna()]
    elif path.suffix.lower() == ".txt":
        entries = [line.strip() for line in path.read_text().splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    else:
        raise DataError(f"{path}: expected a folder, a .txt or .csv list, or TFRecords")
    if not entries:
        raise DataError(f"{path}: the list of image paths is empty")
    return [e if os.path.isabs(e) else str(path.parent / e) for e in entries]


# --------------------------------------------------------------------------- checking
# A structural check reads a file's first and last bytes: the format's signature and
# its complete ending. That finds empty, truncated and non-image files (what a crawl
# or an interrupted copy leaves) at the cost of two small reads, so a start over
# 100 000 files takes seconds instead of decoding them all. A file that passes and
# still fails to decode is dropped by the pipeline with a warning (ignore_errors).

_TAIL = 1024  # bytes searched for the format's end marker (allows a little trailing padding)


def _structure(head: bytes, tail: bytes, size: int) -> str | None:
    """None if the bytes look like a complete image file, else the reason they do not."""
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail else "corrupt or truncated: JPEG without its end marker"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if b"IEND" in tail else "corrupt or truncated: PNG without its IEND chunk"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return None if b";" in tail[-16:] else "corrupt or truncated: GIF without its trailer"
    if head.startswith(b"BM") and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        return None if declared <= size else f"corrupt or truncated: BMP of {size} of {declared} bytes"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        return None if declared <= size else f"corrupt or truncated: WebP of {size} of {declared} bytes"
    return "not an image (unknown format)"


def _check_structure(path: str) -> str | None:
    """None if the file is a complete image by its first and last bytes, else why not."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return "empty file"
            head = f.read(16)
            f.seek(max(0, size - _TAIL))
            tail = f.read(_TAIL)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    return _structure(head, tail, size)


def _check_decode(path: str) -> str | None:
    """None if TensorFlow's decoder reads the file, else the reason it cannot."""
    try:
        data = tf.io.read_file(path)
    except (tf.errors.OpError, OSError) as err:
        return f"unreadable: {first_line(err)}"
    if int(tf.strings.length(data)) == 0:
        return "empty file"
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as err:
        message = first_line(err)
        if "Unknown image file format" in message:
            return "not an image (unknown format)"
        return f"corrupt or truncated: {message}"
    return None


# (path, size, mtime_ns, decode) → reason: a second check of an unchanged file in the same
# process (the step count, then the dataset) costs a stat, not another read.
_checked: dict[tuple[str, int, int, bool], str | None] = {}


_checks_file: Path | None = None  # where checks persist across processes (checks_kept_in)


@contextlib.contextmanager
def checks_kept_in(path):
    """Within the block, file checks persist in `path` (JSON) across processes.

    The checks it holds are loaded, and it is rewritten after every check that found
    new files, so a resumed run stats its files instead of reading them again. A
    damaged or missing file only costs a new check.
    """
    global _checks_file
    previous, _checks_file = _checks_file, Path(path)
    try:
        entries = json.loads(_checks_file.read_text())
    except (OSError, ValueError):
        entries = []
    for entry in entries:
        if isinstance(entry, list) and len(entry) == 5:
            name, size, mtime, decode, reason = entry
            _checked[(name, size, mtime, bool(decode))] = reason
    try:
        yield
    finally:
        _checks_file = previous


def forget_checks() -> None:
    """Forget every file checked in this process (the next check reads them again)."""
    _checked.clear()


def _key(path: str, decode: bool) -> tuple | str:
    """The memo key of a file as it is now, or why it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    return (path, stat.st_size, stat.st_mtime_ns, decode)


def check_images(paths: Sequence[str], workers: int | None = None, *, decode: bool = False) -> ImageScan:
    """Check every file once: by its structure (default), or by decoding it (`decode`).

    Each rejected file is logged with its path and reason. `decode` uses the pipeline's
    own TensorFlow decoder (threads run in parallel: it releases the GIL), so the files
    kept are exactly the files the pipeline can read; it costs a full decode per file.
    Files already checked (unchanged size and modification time) cost a stat; the rest
    are checked by `workers` threads, each over its own contiguous share of them.
    """
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    keys = [_key(p, decode) for p in paths]
    todo = sorted({k for k in keys if not isinstance(k, str) and k not in _checked})
    if todo:
        check = _check_decode if decode else _check_structure
        chunks = [todo[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for chunk, reasons in zip(chunks, pool.map(lambda c: [check(k[0]) for k in c], chunks)):
                _checked.update(zip(chunk, reasons))
    scan = ImageScan()
    for path, key in zip(paths, keys):
        reason = key if isinstance(key, str) else _checked[key]
        if reason is None:
            scan.good.append(path)
        else:
            scan.bad.append((path, reason))
            log.warning("skipping bad image %s: %s", path, reason)
    if scan.bad:
        log.warning("skipped %d of %d images that cannot be decoded", len(scan.bad), len(paths))
    if _checks_file is not None and todo:
        write_text(_checks_file, json.dumps([[*key, reason] for key, reason in _checked.items()]))
    return scan


# --------------------------------------------------------------------------- decoding


JPEG_SCALES = (1, 2, 4, 8)  # the scale-downs libjpeg decodes directly, from the DCT coefficients


def jpeg_scale(height: int, width: int, image_size: int) -> int:
    """The largest of 2, 4, 8 by which libjpeg can shrink a `height` x `width` JPEG while
    both sides stay >= `image_size` (libjpeg rounds a scaled side up); else 1."""
    side = min(height, width)
    return max(r for r in JPEG_SCALES if -(-side // r) >= image_size or r == 1)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def header_format(head: bytes) -> str:
    """"jpeg" or "png" when `declared_pixels` can read these first bytes' image size, else ""."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return "png"
    return ""


def declared_size(data: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 that a JPEG's or PNG's header declares, read without decoding
    anything; (-1, -1) for any other bytes. A malformed JPEG header raises
    InvalidArgumentError, as its decoding would.

    JPEG: the frame header, through `extract_jpeg_shape` (the decoder's own libjpeg).
    PNG: the IHDR chunk, which the format requires first (libpng reads it there): width
    and height as big-endian 32-bit integers at bytes 16-23.
    """
    def unknown():
        return tf.constant([-1, -1], tf.int64)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        digits = tf.reshape(tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64), (2, 4))
        width_height = tf.reduce_sum(digits * tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64), axis=1)
        return tf.reverse(width_height, [0])

    def other():  # a PNG's IHDR, else unknown (`substr` past the end would raise: check the length first)
        def header():
            is_png = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 8), PNG_SIGNATURE),
                                    tf.equal(tf.strings.substr(data, 12, 4), b"IHDR"))
            return tf.cond(is_png, png, unknown)
        return tf.cond(tf.strings.length(data) >= 24, header, unknown)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def header_size(data: bytes) -> tuple[int, int] | None:
    """`declared_size` of Python bytes, at a tenth of its eager cost: (height, width) of a
    JPEG (`extract_jpeg_shape`) or PNG (its IHDR), else None. A malformed JPEG header raises
    InvalidArgumentError."""
    kind = header_format(data[:16])
    if kind == "jpeg":
        height, width, _ = tf.image.extract_jpeg_shape(data).numpy().tolist()
        return height, width
    if kind == "png" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    return None


def declared_pixels(data: tf.Tensor) -> tf.Tensor:
    """The pixel count (int64 scalar) a JPEG's or PNG's header declares (`declared_size`),
    -1 for any other bytes."""
    size = declared_size(data)
    return tf.where(size[0] < 0, tf.constant(-1, tf.int64), size[0] * size[1])


def _decode(data: tf.Tensor, scale_to: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(image (H', W', 3) uint8, the scale it was decoded at, the full height, the full width)."""
    def whole():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        shape = tf.shape(image)
        return image, tf.constant(1), shape[0], shape[1]

    if not scale_to:
        return whole()

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)  # (height, width, channels): the header only
        side = tf.minimum(shape[0], shape[1])
        # `jpeg_scale` in the graph: the scales are powers of two (if 8 keeps the side, 4 and
        # 2 do too), so the number that keep it is the index of the largest.
        index = tf.add_n([tf.cast((side + r - 1) // r >= scale_to, tf.int32) for r in JPEG_SCALES[1:]])
        image = tf.switch_case(index, [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r)
                                       for r in JPEG_SCALES])
        return image, tf.gather(JPEG_SCALES, index), shape[0], shape[1]

    return tf.cond(tf.io.is_jpeg(data), jpeg, whole)


def decode_rgb(data: tf.Tensor, scale_to: int = 0) -> tf.Tensor:
    """Encoded bytes -> (H, W, 3) uint8.

    With `scale_to`, a JPEG at least twice `scale_to` on both sides is decoded at 1/2,
    1/4 or 1/8 scale (`jpeg_scale`): libjpeg then skips most of the inverse DCT and
    colour conversion, and the resize that follows has less to filter. Other images,
    and JPEGs smaller than that, decode exactly as without it.
    """
    image = _decode(data, scale_to)[0]
    image.set_shape([None, None, 3])
    return image


def _resize(image: tf.Tensor, image_size: int, crop: str) -> tf.Tensor:
    if crop == "center":
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        side = tf.minimum(height, width)
        image = tf.image.crop_to_bounding_box(
            image, (height - side) // 2, (width - side) // 2, side, side
        )
    return tf.image.resize(image, [image_size, image_size], antialias=True)


def _resize_scaled(image, scale, height, width, image_size: int, crop: str) -> tf.Tensor:
    """Resize an image decoded at 1/`scale` as `_resize` does the full `height` x `width` one.

    The crop is placed in full-size pixels and mapped exactly: a centre crop 100 px from the
    edge starts 12.5 px in at 1/8 scale, which no integer crop can hit. libjpeg's scaled
    inverse DCT has already low-passed the image, so when what is left to shrink is less
    than 2x on both axes (always for a centre crop, whose scale `jpeg_scale` chose), plain
    bilinear sampling (`crop_and_resize`, far cheaper than the antialiased
    `ScaleAndTranslate`) follows it; a longer shrink (the long side of a panorama, stretched)
    keeps the antialiased filter. When the crop falls on whole decoded pixels (the usual
    case: 800x600 at 1/2, stretched or centre-cropped), that sampling is `ResizeBilinear`
    on the cropped pixels, the same positions at under half `crop_and_resize`'s cost.
    """
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    top = left = tf.constant(0.0)
    if crop == "center":
        side = tf.minimum(height, width)
        top, left = tf.floor((height - side) / 2), tf.floor((width - side) / 2)
        height = width = side
    scale = tf.cast(scale, tf.float32)
    sy, sx = image_size * scale / height, image_size * scale / width  # output px per decoded px

    def antialiased():
        return tf.raw_ops.ScaleAndTranslate(
            images=image[None], size=[image_size, image_size], scale=tf.stack([sy, sx]),
            translation=tf.stack([-top / scale * sy, -left / scale * sx]), kernel_type="triangle",
            antialias=True)[0]

    def bilinear():
        # Output pixel i samples decoded row (top / scale + (i + 0.5) / sy - 0.5): half-pixel
        # centres, as `tf.image.resize`. crop_and_resize places row i at
        # y1 * (H' - 1) + i * (y2 - y1) * (H' - 1) / (size - 1); solve for y1 and y2.
        shape = tf.cast(tf.shape(image)[:2], tf.float32) - 1.0
        first = tf.stack([top / scale + 0.5 / sy - 0.5, left / scale + 0.5 / sx - 0.5])
        last = first + (image_size - 1) / tf.stack([sy, sx])
        # libjpeg rounds a scaled side up, so an end sample can fall up to 0.5 / size px
        # outside the decoded image, where crop_and_resize would write 0: clamp it, as
        # resize does.
        first, last = tf.maximum(first, 0.0), tf.minimum(last, shape)
        box = tf.concat([first / shape, last / shape], 0)
        return tf.image.crop_and_resize(image[None], box[None], [0], [image_size, image_size])[0]

    def whole_pixels():  # the crop is whole decoded pixels: resize them, half-pixel centres
        box = tf.cast(tf.stack([top, left, height, width]), tf.int32) // tf.cast(scale, tf.int32)
        crop = tf.image.crop_to_bounding_box(image, box[0], box[1], box[2], box[3])
        return tf.image.resize(crop, [image_size, image_size], method="bilinear")

    if image_size < 2:
        return antialiased()
    aligned = tf.reduce_all(tf.equal(tf.math.floormod(tf.stack([top, left, height, width]), scale), 0.0))
    return tf.cond(tf.minimum(sy, sx) > 0.5, lambda: tf.cond(aligned, whole_pixels, bilinear), antialiased)


def decode_and_resize(data: tf.Tensor, image_size: int, crop: str = "center", scaled: bool = False) -> tf.Tensor:
    """Encoded bytes → (size, size, 3) float32 in [0, 1].

    Grey, RGBA, CMYK, palette and 16-bit images all come out RGB; GIFs give their
    first frame. `crop="center"` keeps the aspect ratio (centre square, then resize);
    `crop="stretch"` resizes the whole image, as the original project did. `scaled`:
    a JPEG at least twice `image_size` on both sides is decoded at a reduced scale
    first (`decode_rgb`); its pixels then differ slightly from a full decode
    (tests/test_pipeline.py states by how much), all other images' not at all.
    """
    if crop not in CROP_MODES:
        raise DataError(f"unknown crop mode {crop!r}; use one of {CROP_MODES}")
    if not scaled:
        image = _resize(decode_rgb(data), image_size, crop)
    else:
        image, scale, height, width = _decode(data, image_size)
        image.set_shape([None, None, 3])
        image = tf.cond(scale > 1, lambda: _resize_scaled(image, scale, height, width, image_size, crop),
                        lambda: _resize(image, image_size, crop))
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


# --------------------------------------------------------------------------- splitting


def split_fraction(name: str) -> float:
    """A number in [0, 1) fixed by a file's base name, independent of folder and order."""
    digest = hashlib.md5(os.path.basename(name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_paths(
    paths: Sequence[str], validation: float = 0.1, test: float = 0.1
) -> dict[str, list[str]]:
    """Deterministic train/validation/test split by a hash of each file's name.

    Adding or removing files never moves another file between splits.
    """
    if validation < 0 or test < 0 or validation + test >= 1:
        raise DataError(f"bad split fractions: validation={validation}, test={test}")
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for path in paths:
        u = split_fraction(path)
        key = "test" if u < test else "validation" if u < test + validation else "train"
        splits[key].append(path)
    return splits


# --------------------------------------------------------------------------- datasets


def _finish(ds: tf.data.Dataset, options: ReadOptions, shuffle_buffer: int) -> tf.data.Dataset:
    if options.cache:
        ds = ds.cache("" if options.cache is True else str(options.cache))
        if options.shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=options.seed, reshuffle_each_iteration=True)
    if options.repeat:
        ds = ds.repeat()
    if options.batch_size:
        ds = ds.batch(options.batch_size, drop_remainder=options.drop_remainder,
                      num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def shuffled_stream(count: int, seed: int, start: int = 0) -> tf.data.Dataset:
    """Endless sample indices: epoch e is a permutation of range(count) seeded by (seed, e).

    Element g of the stream is a pure function of (seed, g), so a run resumed at step s
    starts at element s·batch and sees exactly the images the uninterrupted run saw;
    a shuffle buffer's state would be lost with the process.
    """
    seed = tf.constant(int(seed or 0), tf.int64)
    last = tf.constant(count - 1, tf.int64)

    def index(g):
        epoch, position = g // count, g % count
        return tf.raw_ops.RandomIndexShuffle(
            index=position, seed=tf.stack([seed, epoch, tf.constant(0, tf.int64)]), max_index=last)

    return tf.data.Dataset.counter(int(start)).map(index, num_parallel_calls=AUTOTUNE)  # infinite cardinality


def dataset_from_paths(paths: Sequence[str], image_size: int = 128, **options) -> tf.data.Dataset:
    """Images (or (image, path) pairs) from files already known to decode; see ReadOptions."""
    opts = ReadOptions(**options)
    if not paths:
        raise DataError("no images to read")
    stream = opts.shuffle and opts.repeat and not opts.cache
    if stream:  # an endless, exactly resumable order (see shuffled_stream)
        table = tf.constant(list(paths))
        ds = shuffled_stream(len(paths), opts.seed, opts.start).map(lambda i: tf.gather(table, i))
        opts = dataclasses.replace(opts, repeat=False)
    else:
        ds = tf.data.Dataset.from_tensor_slices(list(paths))
    if opts.num_shards > 1:
        ds = ds.shard(opts.num_shards, opts.shard_index)
    if opts.shuffle and not opts.cache and not stream:
        # Shuffling paths is free; shuffling decoded images would need a big buffer.
        ds = ds.shuffle(len(paths), seed=opts.seed, reshuffle_each_iteration=True)

    def load(path):
        image = decode_and_resize(tf.io.read_file(path), image_size, opts.crop)
        return (image, path) if opts.with_paths else image

    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    # Safety net for files that pass the up-front check but fail later (e.g. changed
    # on disk): drop them rather than kill a multi-hour run.
    ds = ds.ignore_errors(log_warning=True)
    return _finish(ds, opts, shuffle_buffer=min(len(paths), 10_000))


def dataset_from_array(images: np.ndarray, image_size: int = 128, **options) -> tf.data.Dataset:
    """Images from an in-memory (N, S, S, 3) uint8 array already at `image_size`; see ReadOptions."""
    opts = ReadOptions(**options)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or images.dtype != np.uint8:
        raise DataError(f"an in-memory source must be (N, {image_size}, {image_size}, 3) uint8, "
                        f"got {images.shape} {images.dtype}")
    if not len(images):
        raise DataError("no images to read")
    # Shuffle and batch indices, then gather whole batches: per-image map calls would
    # cost as much as a small model's training step.
    count = len(images)
    if opts.shuffle and opts.repeat:  # an endless, exactly resumable order
        ds = shuffled_stream(count, opts.seed, opts.start)
    else:
        ds = tf.data.Dataset.range(count)
        if opts.shuffle:
            ds = ds.shuffle(count, seed=opts.seed, reshuffle_each_iteration=True)
        if opts.repeat:
            ds = ds.repeat()
    if opts.num_shards > 1:
        ds = ds.shard(opts.num_shards, opts.shard_index)
    table = tf.constant(images)

    def gather(index):
        return tf.cast(tf.gather(table, index), tf.float32) / 255.0

    if opts.batch_size:
        ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_remainder)
    return ds.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def load_images(source, image_size: int = 128, *, check: bool = True, **options) -> tf.data.Dataset:
    """A batched, prefetched dataset of (size, size, 3) float32 images in [0, 1].

    `source`: a folder (recursive), a .txt/.csv list of paths, a list of paths, an
    in-memory (N, S, S, 3) uint8 array, or TFRecord shards (a folder of them, a glob, a file or a list). Bad image files
    are logged and skipped (`check`); a source with no usable image raises DataError.
    `options`: see ReadOptions (batching, shuffling, crop, cache, worker shards).
    """
    ReadOptions(**options)  # bad options fail before any file is read
    if isinstance(source, np.ndarray):
        return dataset_from_array(source, image_size, **options)
    if isinstance(source, CheckedFiles):
        return dataset_from_paths(source, image_size, **options)
    if is_tfrecord_source(source):
        return tfrecord_dataset(source, image_size, **options)
    paths = checked_files(source) if check else find_images(source)
    return dataset_from_paths(paths, image_size, **options)


def _describe(source) -> str:
    return "the list of paths" if isinstance(source, (list, tuple)) else str(source)


# --------------------------------------------------------------------------- TFRecords

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),  # encoded PNG or JPEG, pre-resized
    "name": tf.io.FixedLenFeature([], tf.string),  # source path relative to the folder
}


def _record(encoded: bytes, name: str) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(
    source,
    out_dir,
    image_size: int = 128,
    *,
    images_per_shard: int = 2000,
    crop: str = "center",
    image_format: str = "jpeg",
    quality: int = 95,
) -> dict:
    """Pack a folder or list of images into sharded, pre-resized TFRecords.

    Shards are written under temporary names and renamed when complete, and
    `index.json` (counts, size, skipped files, the shards) is written last, so an
    interrupted conversion never looks finished; then the shards of an earlier packing
    into the same folder are deleted, and readers only ever read the shards the index
    lists. Returns the index.
    """
    if image_format not in ("jpeg", "png"):
        raise DataError(f"unknown image format {image_format!r}; use jpeg or png")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").unlink(missing_ok=True)  # the folder is unfinished until the new one
    paths = find_images(source)
    scan = check_images(paths, decode=True)  # packing decodes every file anyway: be exact
    if not scan.good:
        raise DataError(f"{_describe(source)}: none of the {len(paths)} image files can be decoded")
    root = Path(source) if not isinstance(source, (list, tuple)) and Path(source).is_dir() else None
    names = [os.path.relpath(p, root) if root else os.path.basename(p) for p in scan.good]

    def encode(path):
        image = decode_and_resize(tf.io.read_file(path), image_size, crop)
        pixels = tf.cast(tf.round(image * 255.0), tf.uint8)
        if image_format == "png":
            return tf.io.encode_png(pixels)
        return tf.io.encode_jpeg(pixels, quality=quality)

    encoded = (
        tf.data.Dataset.from_tensor_slices(scan.good)
        .map(encode, num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
        .as_numpy_iterator()
    )
    num_shards = max(1, -(-len(names) // images_per_shard))
    shard_files = []
    for shard in range(num_shards):
        final = out / f"images-{shard:05d}-of-{num_shards:05d}.tfrecord"
        partial = final.with_name(final.name + ".partial")
        chunk = names[shard * images_per_shard:(shard + 1) * images_per_shard]
        with tf.io.TFRecordWriter(str(partial)) as writer:
            for name in chunk:
                writer.write(_record(next(encoded), name))
        os.replace(partial, final)
        shard_files.append(final.name)
    index = {
        "count": len(names),
        "image_size": image_size,
        "crop": crop,
        "image_format": image_format,
        "shards": shard_files,
        "skipped": [{"path": p, "reason": r} for p, r in scan.bad],
    }
    write_text(out / "index.json", json.dumps(index, indent=2))
    for stale in out.glob("images-*-of-*.tfrecord"):
        if stale.name not in shard_files:
            stale.unlink()
    log.info("wrote %d images in %d shards to %s (%d skipped)",
             len(names), num_shards, out, len(scan.bad))
    return index


def tfrecord_files(source) -> list[str]:
    """The shard files named by a folder, glob, file or list."""
    if isinstance(source, (list, tuple)):
        files = [str(s) for s in source]
    elif Path(source).is_dir():
        files = _tfrecord_files(Path(source))
    elif "*" in str(source):
        files = sorted(tf.io.gfile.glob(str(source)))
    else:
        files = [str(source)]
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if not files or missing:
        raise DataError(f"{missing[0] if missing else source}: no TFRecord shards found")
    return files


def tfrecord_dataset(source, image_size: int = 128, **options) -> tf.data.Dataset:
    """Images from TFRecord shards written by `write_tfrecords` (resized again if needed)."""
    opts = ReadOptions(**options)
    files = tfrecord_files(source)
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    # Enough files: each worker reads whole files; otherwise every worker reads all
    # files and keeps every n-th record.
    by_file = len(files) >= opts.num_shards
    if opts.num_shards > 1 and by_file:
        files_ds = files_ds.shard(opts.num_shards, opts.shard_index)
    if opts.shuffle:
        files_ds = files_ds.shuffle(len(files), seed=opts.seed, reshuffle_each_iteration=True)
    ds = files_ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE, deterministic=not opts.shuffle,
    )
    if opts.num_shards > 1 and not by_file:
        ds = ds.shard(opts.num_shards, opts.shard_index)
    if opts.shuffle and not opts.cache:
        ds = ds.shuffle(10_000, seed=opts.seed, reshuffle_each_iteration=True)

    def parse(record):
        example = tf.io.parse_single_example(record, _FEATURES)
        image = decode_and_resize(example["image"], image_size, opts.crop)
        return (image, example["name"]) if opts.with_paths else image

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    return _finish(ds, opts, shuffle_buffer=10_000)


class CheckedFiles(list):
    """Image files already listed and checked: `load_images` and `count_images` take them as
    they are (no listing, no check, not even a stat)."""


def checked_files(source):
    """A folder or list source as `CheckedFiles` (listed and checked once, for a caller that
    both counts and reads it); an array or TFRecord source unchanged."""
    if isinstance(source, (np.ndarray, CheckedFiles)) or is_tfrecord_source(source):
        return source
    paths = find_images(source)
    good = check_images(paths).good
    if not good:
        raise DataError(f"{_describe(source)}: none of the {len(paths)} image files can be decoded")
    return CheckedFiles(good)


def count_images(source) -> int:
    """Number of usable images in a source (reads index.json for TFRecords when present)."""
    if isinstance(source, (np.ndarray, CheckedFiles)):
        return len(source)
    if is_tfrecord_source(source):
        files = tfrecord_files(source)
        index = Path(files[0]).parent / "index.json"
        if index.exists():
            return int(json.loads(index.read_text())["count"])
        return sum(1 for _ in tf.data.TFRecordDataset(files))
    return len(check_images(find_images(source)).good)


def to_numpy(ds: tf.data.Dataset, limit: int | None = None) -> np.ndarray:
    """Stack a dataset of images (batched or not) into one array, at most `limit` images."""
    arrays: list[np.ndarray] = []
    total = 0
    for item in ds.as_numpy_iterator():
        item = item[0] if isinstance(item, tuple) else item
        item = item if item.ndim == 4 else item[None]
        arrays.append(item)
        total += len(item)
        if limit is not None and total >= limit:
            break
    if not arrays:
        raise DataError("the dataset is empty")
    stacked = np.concatenate(arrays)
    return stacked[:limit] if limit is not None else stacked


# --------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("to-tfrecords", help="pack an image folder or list into TFRecord shards")
    pack.add_argument("source", help="image folder (recursive) or .txt/.csv list of paths")
    pack.add_argument("out", help="output folder for the shards and index.json")
    pack.add_argument("--size", type=int, default=128, help="image side in pixels")
    pack.add_argument("--images-per-shard", type=int, default=2000, help="images per TFRecord shard")
    pack.add_argument("--crop", choices=CROP_MODES, default="center",
                      help="center: crop to a square, then resize | stretch: plain resize")
    pack.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="how each image is encoded")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.size < 8:
        parser.error(f"--size must be at least 8, got {args.size}")
    if args.images_per_shard < 1:
        parser.error("--images-per-shard must be at least 1")
    return exit_code(lambda: write_tfrecords(
        args.source, args.out, args.size, images_per_shard=args.images_per_shard,
        crop=args.crop, image_format=args.format), usage=(DataError,))


if __name__ == "__main__":
    sys.exit(main())
