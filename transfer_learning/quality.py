"""Cheap label-free photo quality scores, to sort photos before a person judges them.

Pass 2 asks whether a photo is a *suitable* photo of a building: not blurred, not too
dark or washed out, large enough, not a sliver. No dataset labels that, so a person
does (`transfer_learning/review.py`); these scores only decide the order in which
photos are shown (the likely-unsuitable ones first, where one key after another
rejects them) and, optionally, pre-reject by explicit thresholds. They need only
numpy and PIL, and one decode of each photo at a small working size.

Every score except `size` and `aspect` is measured on the grey image (PIL's "L"
conversion, ITU-R 601-2 luma: 0.299 R + 0.587 G + 0.114 B, in 0–255) resized so
that its longer side is `WORK_SIZE` pixels: a fixed scale, so that a score means the
same thing for a 4000-px and a 400-px photo.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

WORK_SIZE = 512  # longer side, in pixels, of the grey image blur, dark and clipped are measured on

LAPLACIAN = ((0, 1, 0), (1, -4, 1), (0, 1, 0))  # the 4-neighbour kernel


@dataclass(frozen=True)
class Scores:
    """One photo's scores (each defined by the function of the same name)."""

    blur: float  # variance of the Laplacian (grey levels²); LOW means blurred
    dark: float  # mean luminance in [0, 1]; LOW means dark
    clipped: float  # fraction of pixels at 0 or 255; HIGH means badly exposed
    size: int  # shorter side in pixels; LOW means a small photo
    aspect: float  # width / height
    width: int  # pixels
    height: int  # pixels

    def as_dict(self) -> dict:
        return asdict(self)


NAMES = ("blur", "dark", "clipped", "size", "aspect")  # the scores a review can sort or threshold by


def working_grey(image: Image.Image, work_size: int = WORK_SIZE) -> np.ndarray:
    """The grey image (H, W) float64 in 0–255, resized so that its longer side is `work_size`."""
    grey = image.convert("L")
    width, height = grey.size
    scale = work_size / max(width, height)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    if shape != grey.size:
        grey = grey.resize(shape, Image.BILINEAR)
    return np.asarray(grey, np.float64)


def blur(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey image (0–255), over the pixels with four neighbours.

    Sharp edges give large second derivatives, blurring spreads them out: a photo
    out of focus or shaken scores low (Pech-Pacheco et al. 2000, "Diatom
    autofocusing in brightfield microscopy"). It grows with the square of the contrast,
    so a dark or hazy photo scores low too. A uniform image scores 0; a vertical step
    from 0 to 255 across a square image of side n scores 2·255²/(n−2).
    """
    grey = np.asarray(grey, np.float64)
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]) - 4 * centre
    return float(laplacian.var())


def dark(grey: np.ndarray) -> float:
    """Mean luminance of a grey image (0–255), scaled to [0, 1]: 0 black, 1 white."""
    return float(np.mean(grey) / 255.0)


def clipped(grey: np.ndarray) -> float:
    """Fraction of a grey image's pixels (0–255) that are exactly 0 or 255.

    Detail is lost in both: crushed shadows and blown highlights (a photo against the
    sun, a flash, a night shot). Black and white images score 1, a mid grey 0.
    """
    grey = np.asarray(grey)
    return float(np.mean((grey <= 0) | (grey >= 255)))


def size(width: int, height: int) -> int:
    """The shorter side in pixels: what is left after a crop to a square."""
    return int(min(width, height))


def aspect(width: int, height: int) -> float:
    """Width / height: above 1 landscape, below 1 portrait; a panorama or a sliver is far from 1."""
    return float(width) / float(height)


def extremity(value: float) -> float:
    """How far an aspect ratio is from square, the same either way: |log(aspect)|."""
    return abs(math.log(value)) if value > 0 else math.inf


def score_image(image: Image.Image, work_size: int = WORK_SIZE) -> Scores:
    """All scores of one PIL image (`size` and `aspect` from its full size)."""
    width, height = image.size
    grey = working_grey(image, work_size)
    return Scores(blur=blur(grey), dark=dark(grey), clipped=clipped(grey), size=size(width, height),
                  aspect=aspect(width, height), width=int(width), height=int(height))


def open_image(source, work_size: int = WORK_SIZE) -> tuple[Image.Image, tuple[int, int]]:
    """(image, upright, decoded at no less than `work_size`; its full upright (width, height)).

    `source` is a path or the encoded bytes. JPEGs are decoded at a reduced scale
    straight from the file (PIL's draft mode), which makes a large photo several times
    cheaper; the EXIF orientation is applied, so a portrait taken sideways is a portrait.
    """
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    width, height = image.size
    if image.format == "JPEG":
        image.draft("RGB", (work_size, work_size))
    image.load()
    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: turned by 90°
        width, height = height, width
    return ImageOps.exif_transpose(image), (width, height)


def score_file(source, work_size: int = WORK_SIZE) -> Scores:
    """All scores of one photo (a path or its encoded bytes). Raises OSError if it cannot be decoded."""
    image, (width, height) = open_image(source, work_size)
    with image:
        scores = score_image(image, work_size)
    return Scores(**{**scores.as_dict(), "size": size(width, height), "aspect": aspect(width, height),
                     "width": int(width), "height": int(height)})


# --------------------------------------------------------------------------- using the scores

# Per score, a value that is LOWER for a photo more likely to be unsuitable: sorting by it
# shows the suspects first.
_SUSPICION = {"blur": lambda s: s.blur, "dark": lambda s: s.dark, "clipped": lambda s: -s.clipped,
              "size": lambda s: s.size, "aspect": lambda s: -extremity(s.aspect)}


def suspicion(scores: Scores, name: str) -> float:
    """Sort key by score `name`: lowest for the blurriest, darkest, most clipped, smallest, least square."""
    return float(_SUSPICION[name](scores))


class ThresholdError(ValueError):
    """A threshold rule that cannot be read; the message says which part and why."""


@dataclass(frozen=True)
class Threshold:
    """One rule "score<value" or "score>value": true for a photo whose score passes it."""

    name: str
    op: str  # "<" or ">"
    value: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"

    def __call__(self, scores: Scores) -> bool:
        score = getattr(scores, self.name)
        return score < self.value if self.op == "<" else score > self.value


def parse_thresholds(text: str) -> tuple[Threshold, ...]:
    """Rules from "blur<50,dark<0.1" (comma-separated; "" gives none)."""
    rules = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"([a-z_]+)\s*([<>])\s*([-+0-9.eE]+)", part)
        if not match:
            raise ThresholdError(f"{part!r} is not a rule like blur<50 or clipped>0.3")
        name, op, value = match.groups()
        if name not in NAMES:
            raise ThresholdError(f"{part!r}: unknown score {name!r} (use {', '.join(NAMES)})")
        try:
            number = float(value)
        except ValueError:
            raise ThresholdError(f"{part!r}: {value!r} is not a number") from None
        rules.append(Threshold(name, op, number))
    return tuple(rules)
