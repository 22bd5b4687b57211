"""Procedural building façades with known generating factors: the embedded default dataset.

Every image is a pure function of its factor levels and its size, so the full
product of levels can be enumerated and any combination re-rendered on demand, as
disentanglement metrics need (cf. dSprites / 3D Shapes in disentanglement_lib).
Besides the façades themselves, the module makes the two curation tasks of the
original pipeline: pass 1 (building vs landscape) and pass 2 (suitable vs
unsuitable photo: blurred, occluded by a vehicle, cropped to a corner, too dark).

    python -m data.synthetic --out DIR --count 1000 --size 128 --kind all

Drawing uses PIL.ImageDraw on a 2x canvas that is box-reduced to the target size
(cheap antialiasing); several hundred 128-px images per second on one core.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

# Human names of the levels; the integer level is the index into each tuple.
FACTOR_LEVELS: dict[str, tuple[str, ...]] = {
    "wall_colour": ("sandstone", "red_brick", "white", "grey"),
    "roof": ("flat", "shallow_gable", "steep_gable", "dome"),
    "width": ("narrow", "medium", "wide"),
    "floors": ("1", "2", "3", "4"),
    "window_columns": ("2", "3", "4"),
    "door_position": ("left", "centre", "right"),
    "towers": ("0", "1", "2"),  # crenellated side towers: the "castle" factor
    "sky_colour": ("blue", "overcast", "sunset"),
}
FACTOR_NAMES: tuple[str, ...] = tuple(FACTOR_LEVELS)
FACTOR_SIZES: tuple[int, ...] = tuple(len(levels) for levels in FACTOR_LEVELS.values())

TASKS = ("pass1", "pass2")
CLASS_NAMES = {"pass1": ("not_building", "building"), "pass2": ("unsuitable", "suitable")}  # index = label
UNSUITABLE_KINDS = ("blur", "occluded", "corner", "dark")
IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}
CLI_KINDS = ("facades", "pass1", "pass2", "all")

# --------------------------------------------------------------------------- palette

Colour = tuple[int, int, int]

WALL_COLOURS: tuple[Colour, ...] = ((212, 184, 138), (158, 72, 52), (236, 233, 224), (128, 130, 134))
# Per wall colour: (course spacing as a fraction of the image, or 0 for smooth render;
# course-line colour; spacing of staggered vertical joints, or 0 for none).
_WALL_TEXTURE = (
    (0.030, (186, 158, 112), 0.070),  # sandstone ashlar
    (0.016, (184, 120, 100), 0.0),  # red brick, light mortar
    (0.0, (0, 0, 0), 0.0),  # white stucco
    (0.034, (104, 106, 110), 0.080),  # grey stone
)
# Sky: (top, horizon) gradient colours, and the light it casts on everything below.
_SKIES: tuple[tuple[Colour, Colour], ...] = (
    ((58, 118, 196), (176, 212, 240)),  # clear blue
    ((100, 106, 118), (176, 180, 187)),  # overcast grey
    ((74, 58, 118), (252, 158, 76)),  # sunset orange
)
_SKY_LIGHT = ((1.0, 1.0, 1.0), (0.92, 0.93, 0.96), (1.05, 0.92, 0.80))
_GRASS = ((104, 150, 70), (66, 112, 48))  # top, bottom of the ground strip
_PATH = (196, 186, 160)
_GROUND_Y = 0.88  # top of the ground strip, as a fraction of the image height
_FLOOR_H = 0.13
_WIDTHS = (0.40, 0.54, 0.68)
_DOOR_X = (0.18, 0.5, 0.82)  # door centre as a fraction of the building width
_TOWER_W = 0.12
_TOWER_INSET = 0.02  # tower centre this far outside the block's edge
_SUPERSAMPLE = 2


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> Colour:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _shade(c: Sequence[float], k: float) -> Colour:
    return tuple(int(min(255, max(0, round(x * k)))) for x in c)  # type: ignore[return-value]


def _lit(c: Sequence[float], light: Sequence[float]) -> Colour:
    return tuple(int(min(255, max(0, round(x * l)))) for x, l in zip(c, light))  # type: ignore[return-value]


class _Pen:
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


# --------------------------------------------------------------------------- factors


def num_combinations() -> int:
    """Size of the full product of factor levels."""
    return int(np.prod(FACTOR_SIZES))


def all_factors() -> np.ndarray:
    """Every combination of levels, (num_combinations(), F) int64, last factor fastest."""
    grids = np.meshgrid(*[np.arange(n) for n in FACTOR_SIZES], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)


def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """n independent, uniformly drawn combinations of levels, (n, F) int64."""
    return rng.integers(0, np.asarray(FACTOR_SIZES), size=(int(n), len(FACTOR_SIZES))).astype(np.int64)


def _as_levels(factors) -> tuple[int, ...]:
    """Validate one combination given as a sequence of F levels or a {name: level} mapping."""
    if isinstance(factors, Mapping):
        unknown = set(factors) - set(FACTOR_NAMES)
        missing = set(FACTOR_NAMES) - set(factors)
        if unknown or missing:
            raise ValueError(f"factors mapping must have exactly the keys {FACTOR_NAMES}; "
                             f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        factors = [factors[name] for name in FACTOR_NAMES]
    levels = tuple(int(v) for v in np.asarray(factors).reshape(-1))
    if len(levels) != len(FACTOR_SIZES):
        raise ValueError(f"expected {len(FACTOR_SIZES)} factor levels {FACTOR_NAMES}, got {len(levels)}")
    for name, level, n in zip(FACTOR_NAMES, levels, FACTOR_SIZES):
        if not 0 <= level < n:
            raise ValueError(f"factor {name!r} level {level} out of range 0..{n - 1}")
    return levels


def _check_size(size: int) -> int:
    size = int(size)
    if not 8 <= size <= 2048:
        raise ValueError(f"image size must be between 8 and 2048 pixels, got {size}")
    return size


# --------------------------------------------------------------------------- geometry


def _nuisance(nuisance: int | None) -> tuple[float, float]:
    """(horizontal shift, brightness gain) for a nuisance seed; none for None."""
    if nuisance is None:
        return 0.0, 1.0
    rng = np.random.default_rng(nuisance)
    return float(rng.uniform(-0.04, 0.04)), float(rng.uniform(0.94, 1.06))


def _body(levels: Sequence[int], dx: float = 0.0) -> tuple[float, float, float, float]:
    """Main building block (x0, y0, x1, y1) in unit coordinates."""
    width = _WIDTHS[levels[2]]
    floors = levels[3] + 1
    x0 = 0.5 + dx - width / 2
    return x0, _GROUND_Y - floors * _FLOOR_H, x0 + width, _GROUND_Y


def building_box(factors, size: int = 128, nuisance: int | None = None) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), end-exclusive, of the building's main block (no roof, no towers)."""
    levels = _as_levels(factors)
    x0, y0, x1, y1 = _body(levels, _nuisance(nuisance)[0])
    return tuple(int(round(v * size)) for v in (x0, y0, x1, y1))  # type: ignore[return-value]


# --------------------------------------------------------------------------- façades


@functools.lru_cache(maxsize=16)
def _background(sky: int, canvas: int) -> Image.Image:
    """Sky (gradient, clouds or sun) and ground strip; shared by all façades with this sky."""
    top, horizon = _SKIES[sky]
    t = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None] / _GROUND_Y
    t = np.clip(t, 0, 1) ** 1.4
    rows = np.asarray(top, np.float32) * (1 - t) + np.asarray(horizon, np.float32) * t
    ground = int(round(_GROUND_Y * canvas))
    g = np.linspace(0.0, 1.0, canvas - ground, dtype=np.float32)[:, None]
    grass = [_lit(c, _SKY_LIGHT[sky]) for c in _GRASS]
    rows[ground:] = np.asarray(grass[0], np.float32) * (1 - g) + np.asarray(grass[1], np.float32) * g
    array = np.repeat(rows[:, None, :], canvas, axis=1).round().astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    pen = _Pen(image)
    if sky == 0:  # two fair-weather clouds
        for cx, cy, k in ((0.2, 0.16, 1.0), (0.74, 0.1, 0.8)):
            for ox, oy, rx, ry in ((-0.07, 0.015, 0.06, 0.03), (0.0, 0.0, 0.07, 0.045),
                                   (0.07, 0.015, 0.055, 0.03)):
                pen.ellipse(cx + k * (ox - rx), cy + k * (oy - ry), cx + k * (ox + rx),
                            cy + k * (oy + ry), (246, 248, 252))
            pen.rect(cx - 0.12 * k, cy + 0.028 * k, cx + 0.12 * k, cy + 0.045 * k, (246, 248, 252))
    elif sky == 1:  # low cloud banks
        for cx, cy, rx, ry, c in ((0.25, 0.12, 0.35, 0.07, (150, 154, 162)),
                                  (0.8, 0.2, 0.3, 0.05, (164, 168, 175)),
                                  (0.45, 0.32, 0.45, 0.045, (172, 175, 181)),
                                  (0.1, 0.42, 0.3, 0.035, (180, 183, 188))):
            pen.ellipse(cx - rx, cy - ry, cx + rx, cy + ry, c)
    else:  # low sun with a halo, thin violet streaks
        pen.ellipse(0.84 - 0.085, 0.22 - 0.085, 0.84 + 0.085, 0.22 + 0.085, (250, 176, 104))
        pen.ellipse(0.84 - 0.055, 0.22 - 0.055, 0.84 + 0.055, 0.22 + 0.055, (255, 226, 150))
        for cx, cy, rx, ry in ((0.25, 0.14, 0.28, 0.012), (0.55, 0.3, 0.22, 0.01), (0.15, 0.36, 0.2, 0.009)):
            pen.ellipse(cx - rx, cy - ry, cx + rx, cy + ry, (176, 98, 120))
    # Contact shadow where the ground meets the horizon.
    pen.rect(0, _GROUND_Y, 1, _GROUND_Y + 0.008, _shade(grass[0], 0.82))
    return image


def _wall_texture(pen: _Pen, x0, y0, x1, y1, wall: int, light):
    spacing, colour, joint = _WALL_TEXTURE[wall]
    if spacing * pen.s < 4:  # too fine to draw at this size: leave the wall plain
        return
    colour = _lit(colour, light)
    y = y1 - spacing
    row = 0
    while y > y0 + spacing * 0.3:
        pen.hline(x0, x1, y, colour)
        if joint:
            x = x0 + (joint / 2 if row % 2 else joint)
            while x < x1 - 0.01:
                pen.line(((x, y - spacing), (x, y)), colour)
                x += joint
        y -= spacing
        row += 1


def _tower(pen: _Pen, cx: float, side: int, top: float, wall: Colour, texture_args, light, flag: bool):
    """A crenellated tower centred at cx; side -1/+1 is the outer side, lit less (it turns away)."""
    x0, x1 = cx - _TOWER_W / 2, cx + _TOWER_W / 2
    pen.rect(x0, top, x1, _GROUND_Y, wall)
    _wall_texture(pen, x0, top + 0.03, x1, _GROUND_Y, *texture_args)
    outer = (x0, x0 + 0.3 * _TOWER_W) if side < 0 else (x1 - 0.3 * _TOWER_W, x1)
    pen.rect(outer[0], top, outer[1], _GROUND_Y, _shade(wall, 0.7))
    dark = _shade(wall, 0.6)
    # Corbelled parapet (machicolations) with three merlons on top.
    band0, band1 = x0 - 0.012, x1 + 0.012
    pen.rect(band0, top - 0.03, band1, top, _shade(wall, 1.06))
    for i in range(5):
        bx = band0 + (i + 0.3) * (band1 - band0) / 5
        pen.rect(bx, top - 0.006, bx + 0.4 * (band1 - band0) / 5, top + 0.006, dark)
    merlon_w = (band1 - band0) / 5
    for i in (0, 2, 4):
        pen.rect(band0 + i * merlon_w, top - 0.058, band0 + (i + 1) * merlon_w, top - 0.029,
                 _shade(wall, 1.06))
    # Arrow slits, one per storey, in the middle of the part not hidden by the block.
    slit_x = cx + side * (_TOWER_INSET - _TOWER_W / 2) / 2
    slit = _lit((42, 36, 38), light)
    y = _GROUND_Y - _FLOOR_H * 0.75
    while y - 0.055 > top + 0.01:
        pen.rect(slit_x - 0.008, y - 0.055, slit_x + 0.008, y, slit)
        y -= _FLOOR_H
    if flag:
        pen.line(((cx, top - 0.058), (cx, top - 0.13)), _lit((60, 50, 45), light), width=max(1, pen.px(0.005)))
        pen.poly(((cx, top - 0.13), (cx + side * 0.06, top - 0.112), (cx, top - 0.094)),
                 _lit((196, 36, 44), light))


def _window(pen: _Pen, cx, y0, w, h, frame, glass, glass_hi, lintel, sill):
    x0, x1, y1 = cx - w / 2, cx + w / 2, y0 + h
    pen.rect(x0 - 0.006, y0 - 0.012, x1 + 0.006, y0 - 0.002, lintel)
    pen.rect(x0, y0, x1, y1, frame)
    f = 0.006
    pen.rect(x0 + f, y0 + f, x1 - f, y1 - f, glass)
    pen.rect(x0 + f, y0 + f, x1 - f, y0 + 0.35 * h, glass_hi)
    pen.rect(cx - 0.0025, y0, cx + 0.0025, y1, frame)  # mullion
    pen.rect(x0, y0 + 0.42 * h, x1, y0 + 0.42 * h + 0.005, frame)  # transom
    pen.rect(x0 - 0.007, y1, x1 + 0.007, y1 + 0.009, sill)


def _roof(pen: _Pen, kind: int, x0, y0, x1, wall: Colour, wall_i: int, light):
    stone = _lit((196, 194, 186) if wall_i == 2 else (226, 220, 204), light)
    cx, half = (x0 + x1) / 2, (x1 - x0) / 2
    if kind == 0:  # flat: cornice and parapet with a coping
        pen.rect(x0, y0 - 0.045, x1, y0 - 0.012, wall)
        pen.rect(x0 - 0.01, y0 - 0.052, x1 + 0.01, y0 - 0.042, stone)
        pen.rect(x0 - 0.016, y0 - 0.016, x1 + 0.016, y0, stone)
        for i in range(1, int((x1 - x0) / 0.04)):
            bx = x0 + i * (x1 - x0) / int((x1 - x0) / 0.04)
            pen.rect(bx - 0.004, y0 - 0.042, bx + 0.004, y0 - 0.016, _shade(wall, 0.85))
        return
    if kind in (1, 2):  # gables: terracotta shallow, slate steep
        pitch, colour, lines = ((0.34, (190, 96, 58), (160, 74, 44)) if kind == 1
                                else (0.72, (72, 80, 96), (98, 106, 124)))
        colour, lines = _lit(colour, light), _lit(lines, light)
        over = 0.025
        rise = pitch * (half + over)
        ex0, ex1, apex = x0 - over, x1 + over, y0 - rise
        if kind == 2:  # chimney behind the slope
            chim_x = cx + 0.5 * half
            chim_top = apex + rise * 0.35
            pen.rect(chim_x - 0.018, chim_top, chim_x + 0.018, y0 - 0.01, _lit((150, 72, 52), light))
            pen.rect(chim_x - 0.023, chim_top - 0.012, chim_x + 0.023, chim_top, _lit((110, 110, 114), light))
        pen.poly(((ex0, y0), (cx, apex), (ex1, y0)), colour)
        step = 0.022
        y = y0 - step
        while y > apex + step * 0.5:  # tile courses: chords of the triangle
            t = (y0 - y) / rise
            pen.hline(ex0 + t * (cx - ex0), ex1 - t * (ex1 - cx), y, lines)
            y -= step
        pen.line(((ex0, y0), (cx, apex), (ex1, y0)), _shade(colour, 0.7), width=max(1, pen.px(0.008)))
        pen.rect(ex0, y0 - 0.004, ex1, y0 + 0.006, _shade(colour, 0.6))  # eave board
        return
    # Dome on a drum with a lantern spire, copper-green.
    copper = _lit((84, 150, 128), light)
    rib = _shade(copper, 0.78)
    drum_half = max(0.09, 0.25 * (x1 - x0))
    pen.rect(cx - drum_half - 0.012, y0 - 0.012, cx + drum_half + 0.012, y0, stone)
    pen.rect(cx - drum_half, y0 - 0.05, cx + drum_half, y0 - 0.012, wall)
    for i in range(-2, 3):  # drum pilasters
        pen.rect(cx + i * drum_half / 2.5 - 0.004, y0 - 0.05, cx + i * drum_half / 2.5 + 0.004, y0 - 0.012, stone)
    pen.rect(cx - drum_half - 0.008, y0 - 0.058, cx + drum_half + 0.008, y0 - 0.048, stone)
    r = drum_half
    base = y0 - 0.056
    h = 1.0 * r
    pen.chord(cx - r, base - h, cx + r, base + h, 180, 360, copper)
    for k in (-0.5, 0.0, 0.5):  # ribs: meridians seen from the front
        top = base - h * (1 - k * k) ** 0.5
        pen.line(((cx + k * r * 0.75, top + 0.006), (cx + k * r, base)), rib, width=max(1, pen.px(0.006)))
    pen.ellipse(cx - 0.5 * r, base - 0.8 * h, cx - 0.2 * r, base - 0.45 * h, _mix(copper, (220, 240, 230), 0.35))
    pen.poly(((cx - 0.02, base - 0.98 * h), (cx, base - h - 0.07), (cx + 0.02, base - 0.98 * h)), rib)
    pen.ellipse(cx - 0.01, base - h - 0.085, cx + 0.01, base - h - 0.065, _lit((230, 190, 80), light))


def _ground_windows(x0, x1, door0, door1, count, win_w) -> list[tuple[float, float]]:
    """(centre, width) of `count` ground-floor windows shared out between the walls beside the door."""
    gap, margin = 0.018, 0.012
    spans = [(x0 + margin, door0 - gap), (door1 + gap, x1 - margin)]
    lengths = [max(0.0, b - a) for a, b in spans]
    left = int(count * lengths[0] / sum(lengths) + 0.5)
    counts = (left, count - left)
    cells = [length / n for length, n in zip(lengths, counts) if n]
    w = min(win_w, 0.7 * min(cells))
    return [(a + (i + 0.5) * (b - a) / n, w) for (a, b), n in zip(spans, counts) for i in range(n)]


def _draw_facade(image: Image.Image, levels: Sequence[int], dx: float, gain: float) -> None:
    wall_i, roof, _, floors_i, cols_i, door_i, towers, sky = levels
    light = tuple(l * gain for l in _SKY_LIGHT[sky])  # nuisance gain folds into the light
    pen = _Pen(image)
    x0, y0, x1, y1 = _body(levels, dx)
    width = x1 - x0
    wall = _lit(WALL_COLOURS[wall_i], light)
    tex = (wall_i, light)

    # Towers stand just behind the block, a storey-ish taller.
    tower_top = y0 - 0.1
    tower_wall = _shade(wall, 0.86)
    if towers >= 1:
        _tower(pen, x0 - _TOWER_INSET, -1, tower_top, tower_wall, tex, light, flag=True)
    if towers == 2:
        _tower(pen, x1 + _TOWER_INSET, +1, tower_top, tower_wall, tex, light, flag=False)

    pen.rect(x0, y0, x1, y1, wall)
    _wall_texture(pen, x0, y0, x1, y1, *tex)
    trim = _shade(wall, 1.08) if wall_i != 2 else _shade(wall, 0.86)
    for f in range(1, floors_i + 1):  # string courses between storeys
        pen.rect(x0, y1 - f * _FLOOR_H - 0.004, x1, y1 - f * _FLOOR_H + 0.004, trim)
    pen.rect(x0, y1 - 0.022, x1, y1, _shade(wall, 0.78))  # plinth
    pen.rect(x0, y0, x1, y0 + 0.012, _shade(wall, 0.8))  # shadow under the eaves

    # Path and door on the ground floor.
    door_cx = x0 + _DOOR_X[door_i] * width
    door_w, door_h = 0.085, 0.8 * _FLOOR_H
    path = _lit(_PATH, light)
    pen.poly(((door_cx - door_w / 2, y1), (door_cx + door_w / 2, y1),
              (door_cx + 0.09, 1.0), (door_cx - 0.09, 1.0)), path)
    pen.rect(door_cx - door_w / 2 - 0.01, y1 - 0.004, door_cx + door_w / 2 + 0.01, y1 + 0.008,
             _lit((150, 150, 150), light))  # step
    frame = _lit((226, 220, 204), light) if wall_i != 2 else _lit((150, 140, 128), light)
    d0, d1, dt = door_cx - door_w / 2, door_cx + door_w / 2, y1 - door_h
    pen.rect(d0 - 0.008, dt + door_w / 2 - 0.008, d1 + 0.008, y1 - 0.004, frame)
    pen.ellipse(d0 - 0.008, dt - 0.008, d1 + 0.008, dt + door_w + 0.008, frame)
    wood = _lit((104, 62, 36), light)
    pen.rect(d0, dt + door_w / 2, d1, y1 - 0.004, wood)
    pen.ellipse(d0, dt, d1, dt + door_w, wood)
    pen.rect(door_cx - 0.002, dt + 0.01, door_cx + 0.002, y1 - 0.004, _shade(wood, 0.7))
    pen.ellipse(door_cx + 0.012, y1 - 0.05, door_cx + 0.02, y1 - 0.042, _lit((220, 190, 90), light))

    # Windows: window_columns per storey. The ground floor keeps all of them too, spread
    # over the wall either side of the door, so that the count shows even on one storey.
    cols = (2, 3, 4)[cols_i]
    cell = width / cols
    win_w = min(0.6 * cell, 0.085)
    win_h = 0.56 * _FLOOR_H
    sky_horizon = _SKIES[sky][1]
    glass = _mix(_lit((36, 48, 70), light), sky_horizon, 0.22)
    glass_hi = _mix(glass, sky_horizon, 0.3)
    lintel = _shade(wall, 0.84)
    for f in range(1, floors_i + 1):
        wy = y1 - (f + 1) * _FLOOR_H + 0.25 * _FLOOR_H
        for c in range(cols):
            _window(pen, x0 + (c + 0.5) * cell, wy, win_w, win_h, frame, glass, glass_hi, lintel, frame)
    for wx, w in _ground_windows(x0, x1, door_cx - door_w / 2, door_cx + door_w / 2, cols, win_w):
        _window(pen, wx, y1 - 0.75 * _FLOOR_H, w, win_h, frame, glass, glass_hi, lintel, frame)

    _roof(pen, roof, x0, y0, x1, wall, wall_i, light)


def _canvas_scale(size: int) -> int:
    return _SUPERSAMPLE if size <= 512 else 1


def render_facade(factors, size: int = 128, nuisance: int | None = None) -> np.ndarray:
    """One façade, (size, size, 3) uint8; a pure function of (factors, size, nuisance).

    factors: F integer levels in FACTOR_NAMES order, or a {name: level} mapping.
    nuisance: None (default) for the canonical image; an int seed for a small
    horizontal shift and brightness change, used for the classifier sets.
    """
    levels = _as_levels(factors)
    size = _check_size(size)
    scale = _canvas_scale(size)
    image = _background(levels[7], size * scale).copy()
    dx, gain = _nuisance(nuisance)
    _draw_facade(image, levels, dx, gain)
    if scale > 1:
        image = image.reduce(scale)
    return np.asarray(image, dtype=np.uint8)


def render_facades(factors: np.ndarray, size: int = 128) -> np.ndarray:
    """Façades for each row of `factors` (n, F) → (n, size, size, 3) uint8."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must have shape (n, {len(FACTOR_SIZES)}), got {factors.shape}")
    size = _check_size(size)
    images = np.empty((len(factors), size, size, 3), np.uint8)
    for i, row in enumerate(factors):
        images[i] = render_facade(row, size)
    return images


def make_facades(n: int, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n façades with uniformly drawn factors: images (n, size, size, 3) uint8, factors (n, F) int64."""
    factors = sample_factors(n, np.random.default_rng(seed))
    return render_facades(factors, size), factors


# --------------------------------------------------------------------------- landscapes


def _ridge(rng: np.random.Generator, base: float, amp: float, n: int = 33) -> list[tuple[float, float]]:
    x = np.linspace(-0.02, 1.02, n)
    y = np.full(n, base)
    for k in (1, 2, 4):
        y -= amp / k * np.sin(2 * np.pi * (k * x * rng.uniform(0.5, 1.2) + rng.uniform(0, 1)))
    return [(-0.02, 1.02)] + list(zip(x.tolist(), y.tolist())) + [(1.02, 1.02)]


def render_landscape(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A scene without any building: sky, hills, trees and sometimes a lake; (size, size, 3) uint8."""
    size = _check_size(size)
    scale = _canvas_scale(size)
    canvas = size * scale
    sky = int(rng.integers(len(_SKIES)))
    light = _SKY_LIGHT[sky]
    top, horizon = (np.asarray(c, np.float32) + rng.normal(0, 8, 3) for c in _SKIES[sky])
    t = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None] ** 1.3
    rows = np.clip(top * (1 - t) + horizon * t, 0, 255)
    image = Image.fromarray(np.repeat(rows[:, None, :], canvas, axis=1).round().astype(np.uint8), "RGB")
    pen = _Pen(image)
    horizon_c = tuple(int(v) for v in np.clip(horizon, 0, 255))
    if sky == 2:
        sx, sy, r = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.45), rng.uniform(0.04, 0.07)
        pen.ellipse(sx - r, sy - r, sx + r, sy + r, (255, 224, 150))
    for _ in range(int(rng.integers(0, 4))):  # clouds
        cx, cy, rx = rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.15)
        pen.ellipse(cx - rx, cy - rx * 0.35, cx + rx, cy + rx * 0.35, ((244, 246, 250), (170, 172, 178), (190, 120, 130))[sky])

    level = rng.uniform(0.48, 0.6)
    far = _mix(_lit((96, 132, 120), light), horizon_c, 0.35)
    pen.poly(_ridge(rng, level, rng.uniform(0.03, 0.08)), far)
    mid = _lit(tuple(int(v) for v in rng.uniform((70, 110, 50), (100, 140, 70))), light)
    pen.poly(_ridge(rng, level + rng.uniform(0.08, 0.14), rng.uniform(0.02, 0.05)), mid)
    if rng.random() < 0.5:  # lake across the valley, mirroring the sky a little
        ly = rng.uniform(0.7, 0.8)
        water = _mix(_lit((40, 96, 170), light), horizon_c, 0.12)
        pen.ellipse(rng.uniform(-0.6, 0.1), ly - 0.05, rng.uniform(0.9, 1.6), ly + 0.07, water)
        for _ in range(5):
            wy, wx = rng.uniform(ly - 0.02, ly + 0.05), rng.uniform(0.1, 0.8)
            pen.hline(wx, wx + rng.uniform(0.05, 0.15), wy, _mix(water, (230, 240, 250), 0.4))
    near = _lit(tuple(int(v) for v in rng.uniform((80, 130, 50), (110, 160, 75))), light)
    pen.poly(_ridge(rng, rng.uniform(0.86, 0.9), 0.02), near)

    trees = sorted(rng.uniform((0.0, 0.62), (1.0, 1.02), size=(int(rng.integers(3, 11)), 2)).tolist(),
                   key=lambda p: p[1])
    for tx, ty in trees:  # far to near, each scaled by its depth
        h = 0.1 + 0.35 * (ty - 0.6)
        trunk = _lit((84, 58, 40), light)
        pen.rect(tx - 0.06 * h, ty - 0.45 * h, tx + 0.06 * h, ty, trunk)
        leaf = _lit(tuple(int(v) for v in rng.uniform((30, 80, 30), (80, 130, 60))), light)
        if rng.random() < 0.5:  # conifer
            for k in range(3):
                yk = ty - 0.3 * h - k * 0.25 * h
                pen.poly(((tx - 0.35 * h * (1 - 0.2 * k), yk), (tx, yk - 0.5 * h), (tx + 0.35 * h * (1 - 0.2 * k), yk)), leaf)
        else:
            pen.ellipse(tx - 0.35 * h, ty - 1.1 * h, tx + 0.35 * h, ty - 0.4 * h, leaf)
            pen.ellipse(tx - 0.25 * h, ty - 1.25 * h, tx + 0.15 * h, ty - 0.8 * h, _shade(leaf, 1.15))
    if scale > 1:
        image = image.reduce(scale)
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------- unsuitable photos


def _vehicle(image: Image.Image, box: tuple[float, float, float, float], rng: np.random.Generator) -> None:
    """A bus-like box on wheels filling `box` (unit coordinates, wheels hang below it)."""
    pen = _Pen(image)
    x0, y0, x1, y1 = box
    paint = [(232, 184, 28), (36, 76, 168), (40, 128, 72), (44, 44, 50)][int(rng.integers(4))]
    r = 0.06 * (y1 - y0) + 0.015
    pen.ellipse(x0 - 0.02, y1 + 0.01, x1 + 0.02, y1 + 0.05, (40, 46, 36))  # shadow
    pen.draw.rounded_rectangle((pen.px(x0), pen.px(y0), pen.px(x1), pen.px(y1)), radius=pen.px(r), fill=paint)
    glass = (150, 190, 214)
    n = max(2, int((x1 - x0) / 0.12))
    wy0, wy1 = y0 + 0.12 * (y1 - y0), y0 + 0.45 * (y1 - y0)
    for i in range(n):
        a = x0 + 0.03 + i * (x1 - x0 - 0.06) / n
        pen.rect(a + 0.008, wy0, a + (x1 - x0 - 0.06) / n - 0.008, wy1, glass)
    pen.rect(x0, y0 + 0.6 * (y1 - y0), x1, y0 + 0.66 * (y1 - y0), (238, 238, 238))  # stripe
    pen.rect(x1 - 0.03, y1 - 0.06, x1 - 0.008, y1 - 0.035, (255, 236, 150))  # headlight
    wheel = 0.05
    for wx in (x0 + 0.12 * (x1 - x0), x1 - 0.12 * (x1 - x0)):
        pen.ellipse(wx - wheel, y1 - wheel * 0.6, wx + wheel, y1 + wheel * 1.4, (24, 24, 26))
        pen.ellipse(wx - wheel * 0.45, y1 - wheel * 0.05, wx + wheel * 0.45, y1 + wheel * 0.85, (150, 150, 156))


def make_unsuitable(image: np.ndarray, rng: np.random.Generator, kind: str | None = None,
                    factors=None, nuisance: int | None = None) -> tuple[np.ndarray, str]:
    """Spoil a façade photo the way pass 2 must reject; returns (image, kind used).

    kind: "blur" (strong Gaussian blur), "occluded" (a vehicle hides at least 40 %
    of the building), "corner" (a crop that shows only a corner, resized back) or
    "dark"; None picks one at random. factors/nuisance, when given, locate the
    building exactly; otherwise the largest building the renderer draws is assumed.
    """
    if kind is None:
        kind = UNSUITABLE_KINDS[int(rng.integers(len(UNSUITABLE_KINDS)))]
    if kind not in UNSUITABLE_KINDS:
        raise ValueError(f"unknown unsuitable kind {kind!r}; choose one of {UNSUITABLE_KINDS}")
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
        raise ValueError(f"expected a square RGB image (size, size, 3), got shape {image.shape}")
    size = image.shape[0]
    if factors is not None:
        bx0, by0, bx1, by1 = _body(_as_levels(factors), _nuisance(nuisance)[0])
    else:  # the widest, tallest block at either extreme shift: covering it covers any
        widest = 0.5 * max(_WIDTHS) + 0.04
        bx0, by0, bx1, by1 = 0.5 - widest, _GROUND_Y - FACTOR_SIZES[3] * _FLOOR_H, 0.5 + widest, _GROUND_Y
    pil = Image.fromarray(image, "RGB")

    if kind == "blur":
        out = pil.filter(ImageFilter.GaussianBlur(radius=max(2.0, 0.05 * size)))
    elif kind == "dark":
        dim = image.astype(np.float32) * rng.uniform(0.06, 0.14) + rng.normal(0, 1.5, image.shape)
        return np.clip(dim, 0, 255).round().astype(np.uint8), kind
    elif kind == "occluded":
        big = pil.resize((2 * size, 2 * size), Image.NEAREST)  # draw at 2x, reduce: untouched pixels stay exact
        cover = rng.uniform(0.55, 0.75)
        top = min(by1 - cover * (by1 - by0), by1 - 0.16)
        vx0 = max(0.02, bx0 - rng.uniform(0.03, 0.1))
        vx1 = min(0.98, bx1 + rng.uniform(0.03, 0.1))
        _vehicle(big, (vx0, top, vx1, _GROUND_Y + 0.06), rng)
        out = big.reduce(2)
    else:  # corner: a tight crop round a top corner of the block
        side = rng.uniform(0.28, 0.4)
        cx = (bx0 if rng.random() < 0.5 else bx1) + rng.uniform(-0.04, 0.04)
        cy = by0 + rng.uniform(-0.04, 0.04)
        left = float(np.clip(cx - side / 2, 0, 1 - side))
        upper = float(np.clip(cy - side / 2, 0, 1 - side))
        crop = tuple(round(v * size) for v in (left, upper, left + side, upper + side))
        out = pil.resize((size, size), Image.BILINEAR, box=crop)
    return np.asarray(out, dtype=np.uint8), kind


# --------------------------------------------------------------------------- classifier sets


def _labelled(n: int, task: str, size: int, seed: int):
    """Yield (image, label, kind) for a balanced, shuffled classifier set."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    rng = np.random.default_rng(seed)
    labels = np.zeros(int(n), np.int64)
    labels[: int(n) // 2] = 1  # odd n: the extra one is label 0
    labels = rng.permutation(labels)
    for label in labels:
        factors = sample_factors(1, rng)[0]
        nuisance = int(rng.integers(2**31))
        if task == "pass1" and label == 0:
            yield render_landscape(rng, size), 0, "landscape"
            continue
        facade = render_facade(factors, size, nuisance)
        if label == 1:
            yield facade, 1, "facade"
        else:
            spoilt, kind = make_unsuitable(facade, rng, factors=factors, nuisance=nuisance)
            yield spoilt, 0, kind


def make_labelled(n: int, task: str, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A balanced set for a curation classifier: images (n, size, size, 3) uint8, labels (n,) int64.

    task "pass1": 1 = building (a façade), 0 = not_building (a landscape).
    task "pass2": 1 = suitable (a clean façade), 0 = unsuitable (see make_unsuitable).
    """
    size = _check_size(size)
    images = np.empty((int(n), size, size, 3), np.uint8)
    labels = np.empty(int(n), np.int64)
    for i, (image, label, _) in enumerate(_labelled(n, task, size, seed)):
        images[i], labels[i] = image, label
    return images, labels


# --------------------------------------------------------------------------- files


def _image_format(fmt: str) -> tuple[str, str]:
    try:
        return IMAGE_FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}; choose png or jpg") from None


def _save(image: np.ndarray, path: Path, pil_format: str) -> None:
    options = {"compress_level": 3} if pil_format == "PNG" else {"quality": 95}
    Image.fromarray(image, "RGB").save(path, pil_format, **options)


def _write_csv_atomically(frame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _digits(count: int) -> int:
    return max(6, len(str(max(count - 1, 0))))


def write_facades(out_dir, count: int, size: int = 128, seed: int = 0, fmt: str = "png") -> Path:
    """Write make_facades(count, size, seed) as out_dir/facade_NNNNNN.<fmt> plus factors.csv.

    factors.csv (columns: file, then one per factor) is written last and atomically,
    so its presence means every image listed in it is complete. Returns its path.
    """
    import pandas as pd  # here, not at the top: importing this module stays light

    pil_format, ext = _image_format(fmt)
    size = _check_size(size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    factors = sample_factors(count, np.random.default_rng(seed))  # same draw as make_facades
    width = _digits(count)
    files = []
    for i, row in enumerate(factors):
        name = f"facade_{i:0{width}d}{ext}"
        _save(render_facade(row, size), out / name, pil_format)
        files.append(name)
    frame = pd.DataFrame(factors, columns=list(FACTOR_NAMES))
    frame.insert(0, "file", files)
    csv_path = out / "factors.csv"
    _write_csv_atomically(frame, csv_path)
    return csv_path


def write_labelled(out_dir, task: str, count: int, size: int = 128, seed: int = 0, fmt: str = "png") -> None:
    """Write make_labelled(count, task, size, seed) as out_dir/<task>/<class>/<class>_NNNNNN.<fmt>.

    Also writes out_dir/<task>/labels.csv (file relative to out_dir/<task>, label,
    class, kind — the unsuitable kind for pass 2), last and atomically.
    """
    import pandas as pd  # here, not at the top: importing this module stays light

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    pil_format, ext = _image_format(fmt)
    size = _check_size(size)
    root = Path(out_dir) / task
    for name in CLASS_NAMES[task]:
        (root / name).mkdir(parents=True, exist_ok=True)
    width = _digits(count)
    seen = [0, 0]
    rows = []
    for image, label, kind in _labelled(count, task, size, seed):
        cls = CLASS_NAMES[task][label]
        rel = f"{cls}/{cls}_{seen[label]:0{width}d}{ext}"
        seen[label] += 1
        _save(image, root / rel, pil_format)
        rows.append((rel, label, cls, kind))
    _write_csv_atomically(pd.DataFrame(rows, columns=["file", "label", "class", "kind"]), root / "labels.csv")


# --------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    """Write façades and/or the two classifier sets to --out; returns an exit code."""
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder; each kind goes to OUT/<kind>/")
    parser.add_argument("--count", type=int, default=1000, help="images per kind")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (16..1024)")
    parser.add_argument("--kind", choices=CLI_KINDS, default="facades",
                        help="facades (with factors.csv), pass1, pass2, or all three")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    args = parser.parse_args(None if argv is None else list(argv))
    if not 16 <= args.size <= 1024:
        parser.error(f"--size must be between 16 and 1024, got {args.size}")
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    kinds = ("facades", "pass1", "pass2") if args.kind == "all" else (args.kind,)
    try:
        for kind in kinds:
            start = time.perf_counter()
            if kind == "facades":
                write_facades(out / "facades", args.count, args.size, args.seed, args.format)
            else:
                write_labelled(out, kind, args.count, args.size, args.seed, args.format)
            elapsed = time.perf_counter() - start
            log.info("wrote %d images (%s, %d px) to %s in %.1f s (%.0f images/s)", args.count, kind,
                     args.size, out / kind, elapsed, args.count / max(elapsed, 1e-9))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
