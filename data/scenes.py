"""The curation classifiers' scenes: landscapes without a building, spoilt photos, labelled sets.

The original pipeline's two curation tasks, built on the façades of data/facades.py:
pass 1 tells a building from a landscape, pass 2 a suitable photo from an unsuitable
one (blurred, occluded by a vehicle, cropped to a corner, too dark).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from data.drawing import Pen, canvas_scale, check_size, lit, mix, shade
from data.facades import GROUND_Y, SKIES, SKY_LIGHT, body_bounds, render_facade, sample_factors

TASKS = ("pass1", "pass2")
CLASS_NAMES = {"pass1": ("not_building", "building"), "pass2": ("unsuitable", "suitable")}  # index = label
UNSUITABLE_KINDS = ("blur", "occluded", "corner", "dark")


# --------------------------------------------------------------------------- landscapes


def _ridge(rng: np.random.Generator, base: float, amp: float, n: int = 33) -> list[tuple[float, float]]:
    x = np.linspace(-0.02, 1.02, n)
    y = np.full(n, base)
    for k in (1, 2, 4):
        y -= amp / k * np.sin(2 * np.pi * (k * x * rng.uniform(0.5, 1.2) + rng.uniform(0, 1)))
    return [(-0.02, 1.02)] + list(zip(x.tolist(), y.tolist())) + [(1.02, 1.02)]


def render_landscape(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A scene without any building: sky, hills, trees and sometimes a lake; (size, size, 3) uint8."""
    size = check_size(size)
    scale = canvas_scale(size)
    canvas = size * scale
    sky = int(rng.integers(len(SKIES)))
    light = SKY_LIGHT[sky]
    top, horizon = (np.asarray(c, np.float32) + rng.normal(0, 8, 3) for c in SKIES[sky])
    t = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None] ** 1.3
    rows = np.clip(top * (1 - t) + horizon * t, 0, 255)
    image = Image.fromarray(np.repeat(rows[:, None, :], canvas, axis=1).round().astype(np.uint8), "RGB")
    pen = Pen(image)
    horizon_c = tuple(int(v) for v in np.clip(horizon, 0, 255))
    if sky == 2:
        sx, sy, r = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.45), rng.uniform(0.04, 0.07)
        pen.ellipse(sx - r, sy - r, sx + r, sy + r, (255, 224, 150))
    for _ in range(int(rng.integers(0, 4))):  # clouds
        cx, cy, rx = rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.15)
        pen.ellipse(cx - rx, cy - rx * 0.35, cx + rx, cy + rx * 0.35, ((244, 246, 250), (170, 172, 178), (190, 120, 130))[sky])

    level = rng.uniform(0.48, 0.6)
    far = mix(lit((96, 132, 120), light), horizon_c, 0.35)
    pen.poly(_ridge(rng, level, rng.uniform(0.03, 0.08)), far)
    mid = lit(tuple(int(v) for v in rng.uniform((70, 110, 50), (100, 140, 70))), light)
    pen.poly(_ridge(rng, level + rng.uniform(0.08, 0.14), rng.uniform(0.02, 0.05)), mid)
    if rng.random() < 0.5:  # lake across the valley, mirroring the sky a little
        ly = rng.uniform(0.7, 0.8)
        water = mix(lit((40, 96, 170), light), horizon_c, 0.12)
        pen.ellipse(rng.uniform(-0.6, 0.1), ly - 0.05, rng.uniform(0.9, 1.6), ly + 0.07, water)
        for _ in range(5):
            wy, wx = rng.uniform(ly - 0.02, ly + 0.05), rng.uniform(0.1, 0.8)
            pen.hline(wx, wx + rng.uniform(0.05, 0.15), wy, mix(water, (230, 240, 250), 0.4))
    near = lit(tuple(int(v) for v in rng.uniform((80, 130, 50), (110, 160, 75))), light)
    pen.poly(_ridge(rng, rng.uniform(0.86, 0.9), 0.02), near)

    trees = sorted(rng.uniform((0.0, 0.62), (1.0, 1.02), size=(int(rng.integers(3, 11)), 2)).tolist(),
                   key=lambda p: p[1])
    for tx, ty in trees:  # far to near, each scaled by its depth
        h = 0.1 + 0.35 * (ty - 0.6)
        trunk = lit((84, 58, 40), light)
        pen.rect(tx - 0.06 * h, ty - 0.45 * h, tx + 0.06 * h, ty, trunk)
        leaf = lit(tuple(int(v) for v in rng.uniform((30, 80, 30), (80, 130, 60))), light)
        if rng.random() < 0.5:  # conifer
            for k in range(3):
                yk = ty - 0.3 * h - k * 0.25 * h
                pen.poly(((tx - 0.35 * h * (1 - 0.2 * k), yk), (tx, yk - 0.5 * h), (tx + 0.35 * h * (1 - 0.2 * k), yk)), leaf)
        else:
            pen.ellipse(tx - 0.35 * h, ty - 1.1 * h, tx + 0.35 * h, ty - 0.4 * h, leaf)
            pen.ellipse(tx - 0.25 * h, ty - 1.25 * h, tx + 0.15 * h, ty - 0.8 * h, shade(leaf, 1.15))
    if scale > 1:
        image = image.reduce(scale)
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------- unsuitable photos


def _vehicle(image: Image.Image, box: tuple[float, float, float, float], rng: np.random.Generator) -> None:
    """A bus-like box on wheels filling `box` (unit coordinates, wheels hang below it)."""
    pen = Pen(image)
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
    bx0, by0, bx1, by1 = body_bounds(factors, nuisance)
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
        _vehicle(big, (vx0, top, vx1, GROUND_Y + 0.06), rng)
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


def labelled_examples(n: int, task: str, size: int, seed: int):
    """Yield (image, label, kind) for a balanced, shuffled classifier set.

    kind: "facade", "landscape", or which of UNSUITABLE_KINDS spoilt the photo.
    """
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
    size = check_size(size)
    images = np.empty((int(n), size, size, 3), np.uint8)
    labels = np.empty(int(n), np.int64)
    for i, (image, label, _) in enumerate(labelled_examples(n, task, size, seed)):
        images[i], labels[i] = image, label
    return images, labels

