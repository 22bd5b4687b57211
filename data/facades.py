"""Procedural building façades with known generating factors: the embedded default dataset.

Every image is a pure function of its factor levels and its size, so the full
product of levels can be enumerated and any combination re-rendered on demand, as
disentanglement metrics need (cf. dSprites / 3D Shapes in disentanglement_lib).
Here: the factors (names, levels, enumeration, sampling), the building's geometry
and the renderer, fast enough to render the whole grid in memory.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from data.drawing import Colour, Pen, canvas_scale, check_size, lit, mix, shade

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

# --------------------------------------------------------------------------- palette

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
# The landscapes of data/scenes.py are drawn under the same skies.
SKIES: tuple[tuple[Colour, Colour], ...] = (
    ((58, 118, 196), (176, 212, 240)),  # clear blue
    ((100, 106, 118), (176, 180, 187)),  # overcast grey
    ((74, 58, 118), (252, 158, 76)),  # sunset orange
)
SKY_LIGHT = ((1.0, 1.0, 1.0), (0.92, 0.93, 0.96), (1.05, 0.92, 0.80))
_GRASS = ((104, 150, 70), (66, 112, 48))  # top, bottom of the ground strip
_PATH = (196, 186, 160)
GROUND_Y = 0.88  # top of the ground strip, as a fraction of the image height
_FLOOR_H = 0.13
_WIDTHS = (0.40, 0.54, 0.68)
_DOOR_X = (0.18, 0.5, 0.82)  # door centre as a fraction of the building width
_TOWER_W = 0.12
_TOWER_INSET = 0.02  # tower centre this far outside the block's edge


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
    return x0, GROUND_Y - floors * _FLOOR_H, x0 + width, GROUND_Y


def body_bounds(factors=None, nuisance: int | None = None) -> tuple[float, float, float, float]:
    """The building's main block (x0, y0, x1, y1) in unit coordinates (0..1 across the image).

    factors None: a box covering the block of every façade the renderer draws, at
    any nuisance shift.
    """
    if factors is None:  # the widest, tallest block at either extreme shift: covering it covers any
        widest = 0.5 * max(_WIDTHS) + 0.04
        return 0.5 - widest, GROUND_Y - FACTOR_SIZES[3] * _FLOOR_H, 0.5 + widest, GROUND_Y
    return _body(_as_levels(factors), _nuisance(nuisance)[0])


def building_box(factors, size: int = 128, nuisance: int | None = None) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), end-exclusive, of the building's main block (no roof, no towers)."""
    levels = _as_levels(factors)
    x0, y0, x1, y1 = _body(levels, _nuisance(nuisance)[0])
    return tuple(int(round(v * size)) for v in (x0, y0, x1, y1))  # type: ignore[return-value]


# --------------------------------------------------------------------------- façades


@functools.lru_cache(maxsize=16)
def _background(sky: int, canvas: int) -> Image.Image:
    """Sky (gradient, clouds or sun) and ground strip; shared by all façades with this sky."""
    top, horizon = SKIES[sky]
    t = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None] / GROUND_Y
    t = np.clip(t, 0, 1) ** 1.4
    rows = np.asarray(top, np.float32) * (1 - t) + np.asarray(horizon, np.float32) * t
    ground = int(round(GROUND_Y * canvas))
    g = np.linspace(0.0, 1.0, canvas - ground, dtype=np.float32)[:, None]
    grass = [lit(c, SKY_LIGHT[sky]) for c in _GRASS]
    rows[ground:] = np.asarray(grass[0], np.float32) * (1 - g) + np.asarray(grass[1], np.float32) * g
    array = np.repeat(rows[:, None, :], canvas, axis=1).round().astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    pen = Pen(image)
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
    pen.rect(0, GROUND_Y, 1, GROUND_Y + 0.008, shade(grass[0], 0.82))
    return image


def _wall_texture(pen: Pen, x0, y0, x1, y1, wall: int, light):
    spacing, colour, joint = _WALL_TEXTURE[wall]
    if spacing * pen.s < 4:  # too fine to draw at this size: leave the wall plain
        return
    colour = lit(colour, light)
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


def _tower(pen: Pen, cx: float, side: int, top: float, wall: Colour, texture_args, light, flag: bool):
    """A crenellated tower centred at cx; side -1/+1 is the outer side, lit less (it turns away)."""
    x0, x1 = cx - _TOWER_W / 2, cx + _TOWER_W / 2
    pen.rect(x0, top, x1, GROUND_Y, wall)
    _wall_texture(pen, x0, top + 0.03, x1, GROUND_Y, *texture_args)
    outer = (x0, x0 + 0.3 * _TOWER_W) if side < 0 else (x1 - 0.3 * _TOWER_W, x1)
    pen.rect(outer[0], top, outer[1], GROUND_Y, shade(wall, 0.7))
    dark = shade(wall, 0.6)
    # Corbelled parapet (machicolations) with three merlons on top.
    band0, band1 = x0 - 0.012, x1 + 0.012
    pen.rect(band0, top - 0.03, band1, top, shade(wall, 1.06))
    for i in range(5):
        bx = band0 + (i + 0.3) * (band1 - band0) / 5
        pen.rect(bx, top - 0.006, bx + 0.4 * (band1 - band0) / 5, top + 0.006, dark)
    merlon_w = (band1 - band0) / 5
    for i in (0, 2, 4):
        pen.rect(band0 + i * merlon_w, top - 0.058, band0 + (i + 1) * merlon_w, top - 0.029,
                 shade(wall, 1.06))
    # Arrow slits, one per storey, in the middle of the part not hidden by the block.
    slit_x = cx + side * (_TOWER_INSET - _TOWER_W / 2) / 2
    slit = lit((42, 36, 38), light)
    y = GROUND_Y - _FLOOR_H * 0.75
    while y - 0.055 > top + 0.01:
        pen.rect(slit_x - 0.008, y - 0.055, slit_x + 0.008, y, slit)
        y -= _FLOOR_H
    if flag:
        pen.line(((cx, top - 0.058), (cx, top - 0.13)), lit((60, 50, 45), light), width=max(1, pen.px(0.005)))
        pen.poly(((cx, top - 0.13), (cx + side * 0.06, top - 0.112), (cx, top - 0.094)),
                 lit((196, 36, 44), light))


def _window(pen: Pen, cx, y0, w, h, frame, glass, glass_hi, lintel, sill):
    x0, x1, y1 = cx - w / 2, cx + w / 2, y0 + h
    pen.rect(x0 - 0.006, y0 - 0.012, x1 + 0.006, y0 - 0.002, lintel)
    pen.rect(x0, y0, x1, y1, frame)
    f = 0.006
    pen.rect(x0 + f, y0 + f, x1 - f, y1 - f, glass)
    pen.rect(x0 + f, y0 + f, x1 - f, y0 + 0.35 * h, glass_hi)
    pen.rect(cx - 0.0025, y0, cx + 0.0025, y1, frame)  # mullion
    pen.rect(x0, y0 + 0.42 * h, x1, y0 + 0.42 * h + 0.005, frame)  # transom
    pen.rect(x0 - 0.007, y1, x1 + 0.007, y1 + 0.009, sill)


def _roof(pen: Pen, kind: int, x0, y0, x1, wall: Colour, wall_i: int, light):
    stone = lit((196, 194, 186) if wall_i == 2 else (226, 220, 204), light)
    cx, half = (x0 + x1) / 2, (x1 - x0) / 2
    if kind == 0:  # flat: cornice and parapet with a coping
        pen.rect(x0, y0 - 0.045, x1, y0 - 0.012, wall)
        pen.rect(x0 - 0.01, y0 - 0.052, x1 + 0.01, y0 - 0.042, stone)
        pen.rect(x0 - 0.016, y0 - 0.016, x1 + 0.016, y0, stone)
        for i in range(1, int((x1 - x0) / 0.04)):
            bx = x0 + i * (x1 - x0) / int((x1 - x0) / 0.04)
            pen.rect(bx - 0.004, y0 - 0.042, bx + 0.004, y0 - 0.016, shade(wall, 0.85))
        return
    if kind in (1, 2):  # gables: terracotta shallow, slate steep
        pitch, colour, lines = ((0.34, (190, 96, 58), (160, 74, 44)) if kind == 1
                                else (0.72, (72, 80, 96), (98, 106, 124)))
        colour, lines = lit(colour, light), lit(lines, light)
        over = 0.025
        rise = pitch * (half + over)
        ex0, ex1, apex = x0 - over, x1 + over, y0 - rise
        if kind == 2:  # chimney behind the slope
            chim_x = cx + 0.5 * half
            chim_top = apex + rise * 0.35
            pen.rect(chim_x - 0.018, chim_top, chim_x + 0.018, y0 - 0.01, lit((150, 72, 52), light))
            pen.rect(chim_x - 0.023, chim_top - 0.012, chim_x + 0.023, chim_top, lit((110, 110, 114), light))
        pen.poly(((ex0, y0), (cx, apex), (ex1, y0)), colour)
        step = 0.022
        y = y0 - step
        while y > apex + step * 0.5:  # tile courses: chords of the triangle
            t = (y0 - y) / rise
            pen.hline(ex0 + t * (cx - ex0), ex1 - t * (ex1 - cx), y, lines)
            y -= step
        pen.line(((ex0, y0), (cx, apex), (ex1, y0)), shade(colour, 0.7), width=max(1, pen.px(0.008)))
        pen.rect(ex0, y0 - 0.004, ex1, y0 + 0.006, shade(colour, 0.6))  # eave board
        return
    # Dome on a drum with a lantern spire, copper-green.
    copper = lit((84, 150, 128), light)
    rib = shade(copper, 0.78)
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
    pen.ellipse(cx - 0.5 * r, base - 0.8 * h, cx - 0.2 * r, base - 0.45 * h, mix(copper, (220, 240, 230), 0.35))
    pen.poly(((cx - 0.02, base - 0.98 * h), (cx, base - h - 0.07), (cx + 0.02, base - 0.98 * h)), rib)
    pen.ellipse(cx - 0.01, base - h - 0.085, cx + 0.01, base - h - 0.065, lit((230, 190, 80), light))


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
    light = tuple(l * gain for l in SKY_LIGHT[sky])  # nuisance gain folds into the light
    pen = Pen(image)
    x0, y0, x1, y1 = _body(levels, dx)
    width = x1 - x0
    wall = lit(WALL_COLOURS[wall_i], light)
    tex = (wall_i, light)

    # Towers stand just behind the block, a storey-ish taller.
    tower_top = y0 - 0.1
    tower_wall = shade(wall, 0.86)
    if towers >= 1:
        _tower(pen, x0 - _TOWER_INSET, -1, tower_top, tower_wall, tex, light, flag=True)
    if towers == 2:
        _tower(pen, x1 + _TOWER_INSET, +1, tower_top, tower_wall, tex, light, flag=False)

    pen.rect(x0, y0, x1, y1, wall)
    _wall_texture(pen, x0, y0, x1, y1, *tex)
    trim = shade(wall, 1.08) if wall_i != 2 else shade(wall, 0.86)
    for f in range(1, floors_i + 1):  # string courses between storeys
        pen.rect(x0, y1 - f * _FLOOR_H - 0.004, x1, y1 - f * _FLOOR_H + 0.004, trim)
    pen.rect(x0, y1 - 0.022, x1, y1, shade(wall, 0.78))  # plinth
    pen.rect(x0, y0, x1, y0 + 0.012, shade(wall, 0.8))  # shadow under the eaves

    # Path and door on the ground floor.
    door_cx = x0 + _DOOR_X[door_i] * width
    door_w, door_h = 0.085, 0.8 * _FLOOR_H
    path = lit(_PATH, light)
    pen.poly(((door_cx - door_w / 2, y1), (door_cx + door_w / 2, y1),
              (door_cx + 0.09, 1.0), (door_cx - 0.09, 1.0)), path)
    pen.rect(door_cx - door_w / 2 - 0.01, y1 - 0.004, door_cx + door_w / 2 + 0.01, y1 + 0.008,
             lit((150, 150, 150), light))  # step
    frame = lit((226, 220, 204), light) if wall_i != 2 else lit((150, 140, 128), light)
    d0, d1, dt = door_cx - door_w / 2, door_cx + door_w / 2, y1 - door_h
    pen.rect(d0 - 0.008, dt + door_w / 2 - 0.008, d1 + 0.008, y1 - 0.004, frame)
    pen.ellipse(d0 - 0.008, dt - 0.008, d1 + 0.008, dt + door_w + 0.008, frame)
    wood = lit((104, 62, 36), light)
    pen.rect(d0, dt + door_w / 2, d1, y1 - 0.004, wood)
    pen.ellipse(d0, dt, d1, dt + door_w, wood)
    pen.rect(door_cx - 0.002, dt + 0.01, door_cx + 0.002, y1 - 0.004, shade(wood, 0.7))
    pen.ellipse(door_cx + 0.012, y1 - 0.05, door_cx + 0.02, y1 - 0.042, lit((220, 190, 90), light))

    # Windows: window_columns per storey. The ground floor keeps all of them too, spread
    # over the wall either side of the door, so that the count shows even on one storey.
    cols = (2, 3, 4)[cols_i]
    cell = width / cols
    win_w = min(0.6 * cell, 0.085)
    win_h = 0.56 * _FLOOR_H
    sky_horizon = SKIES[sky][1]
    glass = mix(lit((36, 48, 70), light), sky_horizon, 0.22)
    glass_hi = mix(glass, sky_horizon, 0.3)
    lintel = shade(wall, 0.84)
    for f in range(1, floors_i + 1):
        wy = y1 - (f + 1) * _FLOOR_H + 0.25 * _FLOOR_H
        for c in range(cols):
            _window(pen, x0 + (c + 0.5) * cell, wy, win_w, win_h, frame, glass, glass_hi, lintel, frame)
    for wx, w in _ground_windows(x0, x1, door_cx - door_w / 2, door_cx + door_w / 2, cols, win_w):
        _window(pen, wx, y1 - 0.75 * _FLOOR_H, w, win_h, frame, glass, glass_hi, lintel, frame)

    _roof(pen, roof, x0, y0, x1, wall, wall_i, light)


def render_facade(factors, size: int = 128, nuisance: int | None = None) -> np.ndarray:
    """One façade, (size, size, 3) uint8; a pure function of (factors, size, nuisance).

    factors: F integer levels in FACTOR_NAMES order, or a {name: level} mapping.
    nuisance: None (default) for the canonical image; an int seed for a small
    horizontal shift and brightness change, used for the classifier sets.
    """
    levels = _as_levels(factors)
    size = check_size(size)
    scale = canvas_scale(size)
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
    size = check_size(size)
    images = np.empty((len(factors), size, size, 3), np.uint8)
    for i, row in enumerate(factors):
        images[i] = render_facade(row, size)
    return images


@functools.lru_cache(maxsize=1)
def render_grid(size: int) -> np.ndarray:
    """`render_facades(all_factors(), size)`, rendered once per process and read-only.

    Training on the grid, its resume and the study's encoding of it all need the same
    15 552 images (about 6 s to render on 2 cores, 191 MB at 64 px).
    """
    images = render_facades(all_factors(), size)
    images.flags.writeable = False
    return images


def make_facades(n: int, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n façades with uniformly drawn factors: images (n, size, size, 3) uint8, factors (n, F) int64."""
    factors = sample_factors(n, np.random.default_rng(seed))
    return render_facades(factors, size), factors

