"""Batches of decoded curation inputs, with every input that fails named and explained.

Files are read and decoded by tf.data in parallel, a chunk of `batch_size` inputs per
call (tar members' bytes come from a Python generator reading the shard in place).
A bad input must not stop the run nor vanish: a chunk whose decoding fails is dropped
(`ignore_errors`), the stream notices the gap in the items' running indices, and only
then are that chunk's inputs read and decoded again one by one, eagerly: those that
decode (the good ones, or a read that failed once, see `sources.ItemReader` for the
retries) are scored with the next batch, the others' reasons are named (bad inputs are
rare, so this costs little).
Poison inputs never reach a decoder: a file or tar member over `max_bytes`, or an
image whose header declares more than `max_pixels` (a decompression bomb: a few KB
of PNG can declare 40 000 × 40 000 pixels), becomes an error row. The sizes JPEG and
PNG headers declare are checked in the graph, before decoding (`declared_pixels`):
a chunk holding a bomb fails whole there and its inputs go the eager way, where each
header is read again first (`too_many_pixels`). The reader's Python thread opens a
header only for other formats.
With `scaled`, large JPEGs are decoded at 1/2, 1/4 or 1/8 scale
(`data.pipeline.decode_rgb`).
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from data.pipeline import declared_pixels, decode_and_resize, header_format, header_size
from transfer_learning.sources import Item, ItemReader, printable

log = logging.getLogger(__name__)


class Encoded(Sequence[bytes]):
    """A batch's encoded inputs as Python bytes, each converted when it is read (only kept
    images are): `tensor`'s strings, then `extra`."""

    def __init__(self, tensor: tf.Tensor, extra: Sequence[bytes] = ()):
        self._tensor, self._extra, self._count = tensor, list(extra), int(tensor.shape[0])

    def __len__(self) -> int:
        return self._count + len(self._extra)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = k + len(self) if k < 0 else k
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._tensor[k].numpy() if k < self._count else self._extra[k - self._count]

    def __add__(self, other: Sequence[bytes]) -> "Encoded":
        return Encoded(self._tensor, self._extra + list(other))


@dataclass
class Batch:
    """Decoded items, plus the inputs that failed since the previous batch; positions give the order."""

    items: list[Item]  # decoded, aligned with images and data
    images: tf.Tensor  # (B, S, S, 3) float32 in [0, 1]
    data: Sequence[bytes]  # each item's encoded bytes (a kept image is written from them)
    errors: list[tuple[int, Item, str]]  # (position in the item list, item, reason)
    positions: list[int]  # each decoded item's position in the item list


MAX_BYTES = 50_000_000  # per input; GLDv2 photos are well under 1 MB
MAX_PIXELS = 100_000_000  # per input, as declared by its header (PIL warns from 89 M)
GRAPH_CHECKED = (".jpg", ".jpeg", ".png")  # file names whose header the graph checks, not Python
DECODES_PER_CHUNK = 4  # decodes in flight within one chunk's call (several chunks run at once)


def _first_line(err: BaseException) -> str:
    message = getattr(err, "message", None) or str(err)
    # TensorFlow's wrapping: "{{function_node __wrapped__DecodeJpeg_device_…}} <message> [Op:DecodeJpeg] name:"
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]( name:.*)?$", "", message.strip())
    return message.splitlines()[0][:200] if message else type(err).__name__


def too_large(item: Item, max_bytes: int) -> str | None:
    """Why an input must not even be read into memory (more than `max_bytes`), else None."""
    try:
        size = item.size if item.tar else os.path.getsize(item.path)
    except OSError:
        return None  # the pipeline names the read error
    if size > max_bytes:
        return f"too large: {size} bytes (limit {max_bytes}, --max-image-bytes)"
    return None


def _other_decodable(head: bytes) -> bool:
    """Whether these first bytes are a GIF's, BMP's or WebP's: what else `decode_image` reads."""
    return head.startswith((b"GIF87a", b"GIF89a", b"BM")) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")


def too_many_pixels(item: Item, data: bytes, max_pixels: int) -> str | None:
    """Why an image must not be decoded (its header declares more than `max_pixels`), else None.

    Reads only the header: of `data`, or of the file when no bytes are given for a plain
    file (an OSError reading it is raised: the caller may read it again). JPEG and PNG
    headers are read as the graph reads them (`header_size`: the decoder's own libjpeg,
    the PNG's IHDR), other formats' by PIL. A GIF, BMP or WebP header PIL cannot parse is
    refused (TensorFlow might still decode it, at any size); anything else that is not
    an image is left for the decoder to name.
    """
    from_file = not data and not item.tar
    if from_file:
        with open(item.path, "rb") as f:
            head = f.read(32)
            if header_format(head):
                data = head + f.read()
    else:
        head = data[:32]
    if header_format(head):
        try:
            height, width = header_size(data) or (0, 0)  # (a PNG cut short in its IHDR: no size)
        except tf.errors.OpError:
            return None  # a malformed JPEG header: decoding it fails the same way and names why
    else:
        try:
            with Image.open(item.path if from_file else io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError as err:  # PIL's own check, at twice its warning limit
            return f"too many pixels ({_first_line(err)}); a decompression bomb?"
        except Exception as err:  # noqa: BLE001 — a header PIL cannot parse
            if from_file and isinstance(err, OSError) and not isinstance(err, Image.UnidentifiedImageError):
                raise
            if _other_decodable(head):
                return f"cannot read its header to check its size: {_first_line(err)}"
            return None  # not an image: the decoder names the reason
    if width * height > max_pixels:
        return (f"too many pixels: {width} x {height} declared (limit {max_pixels}, "
                "--max-image-pixels; a decompression bomb?)")
    return None


def unreadable(err: BaseException) -> str:
    """An error row's reason for an input whose bytes cannot be read."""
    if isinstance(err, FileNotFoundError):
        return "unreadable: no such file"
    if isinstance(err, IsADirectoryError):
        return "unreadable: a folder, not a file"
    if isinstance(err, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {_first_line(err)}"


def decode(data: bytes, image_size: int, crop: str = "stretch", scaled: bool = False
           ) -> tuple[tf.Tensor | None, str | None]:
    """(image (S, S, 3) float32, None) if the pipeline's decoder reads these bytes, else (None, reason)."""
    if not data:
        return None, "empty file"
    try:
        return decode_and_resize(tf.constant(data), image_size, crop, scaled), None
    except tf.errors.InvalidArgumentError as err:
        message = _first_line(err)
        if "Unknown image file format" in message:
            return None, "not an image (unknown format)"
        return None, f"corrupt or truncated: {message}"
    except tf.errors.OpError as err:
        return None, f"cannot be decoded: {_first_line(err)}"


def image_error(data: bytes, image_size: int = 32, crop: str = "stretch", scaled: bool = False) -> str | None:
    """None if the pipeline's decoder reads these bytes, else the reason it cannot."""
    return decode(data, image_size, crop, scaled)[1]


def _admit(item: Item, reader: ItemReader, max_bytes: int, max_pixels: int
           ) -> tuple[str, str, bytes, bool]:
    """(reason, path, data, checked): why `item` must not be decoded ("" if it may be), else
    what to decode: a `path` for tf.data to read, or the `data` read here; `checked` when
    its pixel count was checked here (else `decode_chunk` checks its JPEG or PNG header).

    Python reads tar members, files whose names TensorFlow cannot take (not UTF-8) and
    files whose header could not be read (with the reader's retries); tf.data reads the
    rest. A file named as a JPEG or PNG is not opened here at all: if it is something
    else, the graph's check fails its chunk and it is read again eagerly (`_recover`).
    """
    reason = too_large(item, max_bytes)
    if reason:
        return reason, "", b"", True
    if not item.tar and item.path == printable(item.path):
        if item.path.lower().endswith(GRAPH_CHECKED):
            return "", item.path, b"", False
        try:
            reason = too_many_pixels(item, b"", max_pixels)
        except OSError:
            pass  # read it below, with retries, and check the bytes
        else:
            return (reason, "", b"", True) if reason else ("", item.path, b"", True)
    try:
        data = reader.read(item)
    except Exception as err:  # noqa: BLE001 — any read failure is this input's error
        return unreadable(err), "", b"", True
    if not data:
        return "empty file", "", b"", True
    if header_format(data[:16]):
        return "", "", data, False
    return too_many_pixels(item, data, max_pixels) or "", "", data, True


def _recover(item: Item, reader: ItemReader, image_size: int, crop: str, scaled: bool,
             max_pixels: int = MAX_PIXELS):
    """An item that dropped out of the pipeline, read, checked (`too_many_pixels`) and
    decoded again: (image, data, reason)."""
    try:
        data = reader.read(item)
    except Exception as err:  # noqa: BLE001 — any read failure is this input's error
        return None, b"", unreadable(err)
    reason = too_many_pixels(item, data, max_pixels)
    if reason:
        return None, data, reason
    image, reason = decode(data, image_size, crop, scaled)
    return image, data, reason


def _batch(decoded: list[tuple[int, Item, tf.Tensor, bytes]], errors, image_size: int) -> Batch:
    if not decoded:
        return Batch([], tf.zeros((0, image_size, image_size, 3)), [], errors, [])
    return Batch([d[1] for d in decoded], tf.stack([d[2] for d in decoded]), [d[3] for d in decoded],
                 errors, [d[0] for d in decoded])


def decode_chunk(paths: tf.Tensor, datas: tf.Tensor, image_size: int, crop: str = "stretch",
                 scaled: bool = False, checked: tf.Tensor | None = None, max_pixels: int | None = None
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    """(images (n, S, S, 3) float32, encoded bytes (n,)) of n inputs, each read from its path,
    or given as its bytes where its path is "". Fails whole if one input fails.

    With `max_pixels`, every JPEG or PNG must declare at most that many pixels in its
    header (`declared_pixels`), and any other input must be `checked` already (bool (n,):
    its header read by PIL), checked before anything is decoded; otherwise the chunk
    fails (InvalidArgumentError).
    One call per chunk (`map_fn`, a few decodes in flight) costs tf.data less per image
    than one call per image; several chunks are decoded at once.
    """
    if checked is None:
        checked = tf.ones(tf.shape(paths), tf.bool)

    def load(path, data, done):
        data = tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: data)
        if max_pixels is not None:
            pixels = declared_pixels(data)
            admitted = tf.logical_and(pixels <= max_pixels, tf.logical_or(done, pixels >= 0))
            with tf.control_dependencies([tf.debugging.Assert(admitted, [
                    "more pixels declared than max_pixels, or a header not checked; declared:", pixels])]):
                data = tf.identity(data)
        return decode_and_resize(data, image_size, crop, scaled), data

    return tf.map_fn(lambda x: load(*x), (paths, datas, checked), parallel_iterations=DECODES_PER_CHUNK,
                     fn_output_signature=(tf.TensorSpec((image_size, image_size, 3)), tf.string))


def read_alone(item: Item, image_size: int, crop: str = "stretch", max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, *, scaled: bool = False, retries: int = 0) -> Batch:
    """One item read and decoded here and now, with nothing else in flight (no pipeline)."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels}")
    reader = ItemReader(retries)
    try:
        reason, path, data, checked = _admit(item, reader, max_bytes, max_pixels)
        image = None
        if not reason and path:
            image, data, reason = _recover(item, reader, image_size, crop, scaled, max_pixels)
        elif not reason and not checked:
            reason = too_many_pixels(item, data, max_pixels)
        if not reason and not path:
            image, reason = decode(data, image_size, crop, scaled)
    finally:
        reader.close()
    if image is None:
        return _batch([], [(0, item, reason)], image_size)
    return _batch([(0, item, image, data)], [], image_size)


def read_batches(items: Sequence[Item], image_size: int, crop: str = "stretch",
                 batch_size: int = 32, max_bytes: int = MAX_BYTES,
                 max_pixels: int = MAX_PIXELS, *, scaled: bool = False, retries: int = 0,
                 before_read: Callable[[int], None] | None = None) -> Iterator[Batch]:
    """Decoded batches of `items` (none of which may carry an `error`), in order.

    `retries`: more attempts for a read failing with a transient error (`sources.ItemReader`).
    `before_read(stop)` is called before the pipeline reads the first of each run of
    `batch_size` items, ending at position `stop`: everything the pipeline may be
    reading, decoding or scoring then lies before `stop` (the in-flight marker).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels}")
    items = list(items)
    if not items:
        return
    read_errors: dict[int, str] = {}
    hook_errors: list[BaseException] = []
    finished: list[bool] = []

    def generate():
        # One chunk of `batch_size` items per call: tf.data calls a generator through the
        # GIL once per element, a large share of the reader's time when called per item.
        # An exception here would end the stream early (tf.data's `ignore_errors` takes it
        # for the last element's), so each input's failure is caught and recorded.
        reader = ItemReader(retries)
        try:
            for start in range(0, len(items), batch_size):
                stop = min(start + batch_size, len(items))
                if before_read is not None:
                    try:
                        before_read(stop)
                    except Exception as err:  # noqa: BLE001 — raised in the caller's thread below
                        hook_errors.append(err)
                        return
                indices, paths, datas, checked = [], [], [], []
                for index in range(start, stop):
                    # Never decoded, nor even read: the gap each leaves reports its reason.
                    try:
                        reason, path, data, done = _admit(items[index], reader, max_bytes, max_pixels)
                    except Exception as err:  # noqa: BLE001 — this input's error, not the stream's end
                        reason = f"cannot be read: {_first_line(err)}"
                    if reason:
                        read_errors[index] = reason
                        continue
                    indices.append(index)
                    paths.append(path)
                    datas.append(data)
                    checked.append(done)
                if indices:
                    yield np.array(indices, np.int64), paths, datas, np.array(checked, bool)
            finished.append(True)
        finally:
            reader.close()

    def load_chunk(indices, paths, datas, checked):
        return (indices, *decode_chunk(paths, datas, image_size, crop, scaled, checked, max_pixels))

    ds = (tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.string),
        tf.TensorSpec((None,), tf.bool)))
        .map(load_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .rebatch(batch_size)
        .prefetch(2))
    reader = ItemReader(retries)
    expected = 0

    def gaps(upto: int) -> tuple[list, list]:
        """The items before `upto` the pipeline dropped: (recovered, errors)."""
        nonlocal expected
        recovered, errors = [], []
        for k in range(expected, upto):
            reason = read_errors.pop(k, None)
            if not reason:
                image, data, reason = _recover(items[k], reader, image_size, crop, scaled, max_pixels)
                if image is not None:
                    recovered.append((k, items[k], image, data))
                    continue
            errors.append((k, items[k], reason))
        expected = max(expected, upto)
        return recovered, errors

    try:
        for indices, images, data in ds:
            positions = [int(i) for i in indices.numpy()]
            recovered, errors = [], []
            for position in positions:
                more, failed = gaps(position)
                recovered += more
                errors += failed
                expected = position + 1
            batch = Batch([items[p] for p in positions], images, Encoded(data), errors, positions)
            if recovered:  # scored with this batch
                extra = _batch(recovered, [], image_size)
                batch = Batch(batch.items + extra.items, tf.concat([images, extra.images], axis=0),
                              batch.data + extra.data, errors, positions + extra.positions)
            yield batch
        if hook_errors:  # the in-flight marker could not be written: read nothing more
            raise hook_errors[0]
        if not finished:  # never expected: read the rest one by one here instead? no: say so
            raise RuntimeError(f"the input pipeline stopped after {expected} of {len(items)} inputs")
        recovered, errors = gaps(len(items))
        if recovered or errors:
            yield _batch(recovered, errors, image_size)
    finally:
        reader.close()
