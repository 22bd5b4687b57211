"""Batches of decoded curation inputs, with every input that fails named and explained.

Files are read and decoded by tf.data in parallel (tar members' bytes come from a
Python generator reading the shard in place). A bad input must not stop the run
nor vanish: decoding errors drop the element (`ignore_errors`), the stream notices
the gap in the items' running indices, and only then is that one input decoded
again eagerly to name the reason (bad inputs are rare, so this costs nothing).
Poison inputs never reach a decoder: a file or tar member over `max_bytes`, or an
image whose header declares more than `max_pixels` (a decompression bomb: a few KB
of PNG can declare 40 000 × 40 000 pixels), becomes an error row at once.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import tensorflow as tf
from PIL import Image

from data.pipeline import decode_and_resize
from transfer_learning.sources import Item, ItemReader, printable

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Decoded items in input order, plus the inputs that failed since the previous batch."""

    items: list[Item]  # decoded, aligned with images and data
    images: tf.Tensor  # (B, S, S, 3) float32 in [0, 1]
    data: list[bytes]  # each item's encoded bytes (a kept image is written from them)
    errors: list[tuple[int, Item, str]]  # (position in the item list, item, reason)
    positions: list[int]  # each decoded item's position in the item list


MAX_BYTES = 50_000_000  # per input; GLDv2 photos are well under 1 MB
MAX_PIXELS = 100_000_000  # per input, as declared by its header (PIL warns from 89 M)


def _first_line(err: BaseException) -> str:
    message = getattr(err, "message", None) or str(err)
    message = message.strip()
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


def too_many_pixels(item: Item, data: bytes, max_pixels: int) -> str | None:
    """Why an image must not be decoded (its header declares more than `max_pixels`), else None.

    Reads only the header (PIL opens lazily): `data` when given, else the file.
    """
    try:
        with Image.open(io.BytesIO(data) if data else item.path) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:  # PIL's own check, at twice its warning limit
        return f"too many pixels ({_first_line(err)}); a decompression bomb?"
    except Exception:  # noqa: BLE001 — not an image PIL knows: the decoder names the reason
        return None
    if width * height > max_pixels:
        return (f"too many pixels: {width} x {height} declared (limit {max_pixels}, "
                "--max-image-pixels; a decompression bomb?)")
    return None


def image_error(data: bytes, image_size: int = 32, crop: str = "stretch") -> str | None:
    """None if the pipeline's decoder reads these bytes, else the reason it cannot."""
    if not data:
        return "empty file"
    try:
        decode_and_resize(tf.constant(data), image_size, crop)
    except tf.errors.InvalidArgumentError as err:
        message = _first_line(err)
        if "Unknown image file format" in message:
            return "not an image (unknown format)"
        return f"corrupt or truncated: {message}"
    except tf.errors.OpError as err:
        return f"cannot be decoded: {_first_line(err)}"
    return None


def failure_reason(item: Item, reader: ItemReader, image_size: int, crop: str) -> str:
    """Why an item that dropped out of the pipeline cannot be used."""
    try:
        data = reader.read(item)
    except FileNotFoundError:
        return "unreadable: no such file"
    except IsADirectoryError:
        return "unreadable: a folder, not a file"
    except PermissionError:
        return "unreadable: permission denied"
    except Exception as err:  # noqa: BLE001 — any read failure is this input's error
        return f"unreadable: {_first_line(err)}"
    reason = image_error(data, image_size, crop)
    return reason or "could not be decoded during the run (changed since?)"


def read_batches(items: Sequence[Item], image_size: int, crop: str = "stretch",
                 batch_size: int = 32, max_bytes: int = MAX_BYTES,
                 max_pixels: int = MAX_PIXELS) -> Iterator[Batch]:
    """Decoded batches of `items` (none of which may carry an `error`), in order."""
    items = list(items)
    if not items:
        return
    read_errors: dict[int, str] = {}

    def generate():
        reader = ItemReader()
        try:
            for index, item in enumerate(items):
                # Never decoded, nor even read: the gap each leaves reports its reason.
                reason = too_large(item, max_bytes)
                # Python reads tar members, and files whose names TensorFlow cannot take
                # (not UTF-8); tf.data reads the rest.
                in_python = bool(item.tar) or item.path != printable(item.path)
                data = b""
                if not reason and in_python:
                    try:
                        data = reader.read(item)
                    except Exception as err:  # noqa: BLE001 — this input's error
                        reason = f"unreadable: {_first_line(err)}"
                reason = reason or too_many_pixels(item, data, max_pixels)
                if reason:
                    read_errors[index] = reason
                    continue
                yield index, "" if in_python else item.path, data
        finally:
            reader.close()

    def load(index, path, data):
        data = tf.cond(tf.strings.length(path) > 0, lambda: tf.io.read_file(path), lambda: data)
        return index, decode_and_resize(data, image_size, crop), data

    ds = (tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.string)))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .batch(batch_size)
        .prefetch(2))
    reader = ItemReader()
    expected = 0

    def failed(upto: int) -> list[tuple[int, Item, str]]:
        nonlocal expected
        errors = []
        for k in range(expected, upto):
            reason = read_errors.pop(k, None) or failure_reason(items[k], reader, image_size, crop)
            errors.append((k, items[k], reason))
        expected = max(expected, upto)
        return errors

    try:
        for indices, images, data in ds:
            positions = [int(i) for i in indices.numpy()]
            errors = []
            for position in positions:
                errors += failed(position)
                expected = position + 1
            yield Batch([items[p] for p in positions], images, list(data.numpy()), errors, positions)
        errors = failed(len(items))
        if errors:
            yield Batch([], tf.zeros((0, image_size, image_size, 3)), [], errors, [])
    finally:
        reader.close()
