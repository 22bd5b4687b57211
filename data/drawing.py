"""Drawing the procedural images: a pen in unit coordinates, colour arithmetic, canvas sizes.

Images are drawn with PIL.ImageDraw on a canvas SUPERSAMPLE times the target size
and box-reduced to it (cheap antialiasing).
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw

Colour = tuple[int, int, int]

SUPERSAMPLE = 2


def check_size(size: int) -> int:
    """`size` as an int, if it is a usable image side (8 to 2048 pixels); else ValueError."""
    size = int(size)
    if not 8 <= size <= 2048:
        raise ValueError(f"image size must be between 8 and 2048 pixels, got {size}")
    return size


def canvas_scale(size: int) -> int:
    """How many times larger than the target `size` to draw (no supersampling above 512 px)."""
    return SUPERSAMPLE if size <= 512 else 1


def mix(a: Sequence[float], b: Sequence[float], t: float) -> Colour:
    """The colour a fraction t of the way from a to b."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def shade(c: Sequence[float], k: float) -> Colour:
    """c darkened (k < 1) or lightened (k > 1), clipped to 0..255."""
    return tuple(int(min(255, max(0, round(x * k)))) for x in c)  # type: ignore[return-value]


def lit(c: Sequence[float], light: Sequence[float]) -> Colour:
    """c under a coloured light (one gain per channel), clipped to 0..255."""
    return tuple(int(min(255, max(0, round(x * l)))) for x, l in zip(c, light))  # type: ignore[return-value]


class Pen:
    """ImageDraw in unit coordinates (0..1 across the canvas), rounded to pixels."""

    def __init__(self, image: Image.Image):
        self.draw = ImageDraw.Draw(image)
        self.s = image.size[0]

    def px(self, v: float) -> int:
        return int(round(v * self.s))

    def rect(self, x0, y0, x1, y1, fill):
        s = self.s
        a, b, c, d = int(round(x0 * s)), int(round(y0 * s)), int(round(x1 * s)) - 1, int(round(y1 * s)) - 1
        if c >= a and d >= b:
            self.draw.rectangle((a, b, c, d), fill=fill)

    def poly(self, points, fill):
        s = self.s
        self.draw.polygon([(x * s, y * s) for x, y in points], fill=fill)

    def ellipse(self, x0, y0, x1, y1, fill):
        s = self.s
        self.draw.ellipse((x0 * s, y0 * s, max(x0, x1) * s, max(y0, y1) * s), fill=fill)

    def chord(self, x0, y0, x1, y1, start, end, fill):
        s = self.s
        self.draw.chord((x0 * s, y0 * s, x1 * s, y1 * s), start, end, fill=fill)

    def hline(self, x0, x1, y, fill, width=1):
        s = self.s
        self.draw.line((x0 * s, y * s, x1 * s, y * s), fill=fill, width=width)

    def line(self, points, fill, width=1):
        s = self.s
        self.draw.line([(x * s, y * s) for x, y in points], fill=fill, width=width)
