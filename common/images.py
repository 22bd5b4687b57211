"""Image grids, labelled grids, PNG and GIF files, and matplotlib figures as arrays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.files import atomic_write


def make_grid(images, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] → one (rows·H, cols·W, 3) uint8 image with white gaps."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    count, height, width, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.ones((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top:top + height, left:left + width] = image
    return np.round(grid * 255).astype(np.uint8)


def labelled_grid(images: np.ndarray, labels, label_width: int = 64, pad: int = 2) -> np.ndarray:
    """(R, C, H, W, 3) floats → a uint8 grid with one text label left of each row."""
    rows, cols = images.shape[:2]
    grid = make_grid(images.reshape(rows * cols, *images.shape[2:]), columns=cols, pad=pad)
    canvas = Image.new("RGB", (grid.shape[1] + label_width, grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    height = images.shape[2]
    for r, text in enumerate(labels):
        draw.text((2, pad + r * (height + pad) + max(height // 2 - 6, 0)), str(text), fill=(0, 0, 0))
    return np.asarray(canvas)


def save_png(array: np.ndarray, path) -> Path:
    """Write a uint8 image atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_gif(frames, path, duration_ms: int = 120, bounce: bool = True) -> Path:
    """Frames (uint8 arrays, same shape) as a looping GIF; `bounce` plays forward then back."""
    frames = list(frames)
    if not frames:
        raise ValueError("save_gif: no frames")
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    pil = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    return atomic_write(path, lambda tmp: pil[0].save(
        tmp, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms, loop=0))


def figure_to_array(fig) -> np.ndarray:
    """Render a Figure to an (H, W, 3) uint8 array (Agg canvas, any backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
