"""Writing the synthetic datasets to disk, and their command line.

    python -m data.synthetic --out DIR --count 1000 --size 128 --kind all

`facades` writes the façades of data/facades.py with a factors.csv of their
factor levels; `pass1` and `pass2` write the curation classifiers' labelled sets
of data/scenes.py, one folder per class, with a labels.csv. Each CSV is written
last and atomically, so its presence means every image it lists is complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from common.files import atomic_write
from data.drawing import check_size
from data.facades import FACTOR_NAMES, render_facade, sample_factors
from data.scenes import CLASS_NAMES, TASKS, labelled_examples

log = logging.getLogger(__name__)

IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}
CLI_KINDS = ("facades", "pass1", "pass2", "all")
_DESCRIPTION = "Procedural building façades with known generating factors: the embedded default dataset."


# --------------------------------------------------------------------------- files


def _image_format(fmt: str) -> tuple[str, str]:
    try:
        return IMAGE_FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}; choose png or jpg") from None


def _save(image: np.ndarray, path: Path, pil_format: str) -> None:
    options = {"compress_level": 3} if pil_format == "PNG" else {"quality": 95}
    Image.fromarray(image, "RGB").save(path, pil_format, **options)


def _digits(count: int) -> int:
    return max(6, len(str(max(count - 1, 0))))


def write_facades(out_dir, count: int, size: int = 128, seed: int = 0, fmt: str = "png") -> Path:
    """Write facades.make_facades(count, size, seed) as out_dir/facade_NNNNNN.<fmt> plus factors.csv.

    factors.csv (columns: file, then one per factor) is written last and atomically,
    so its presence means every image listed in it is complete. Returns its path.
    """
    import pandas as pd  # here, not at the top: importing this module stays light

    pil_format, ext = _image_format(fmt)
    size = check_size(size)
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
    return atomic_write(out / "factors.csv", lambda tmp: frame.to_csv(tmp, index=False))


def write_labelled(out_dir, task: str, count: int, size: int = 128, seed: int = 0, fmt: str = "png") -> None:
    """Write scenes.make_labelled(count, task, size, seed) as out_dir/<task>/<class>/<class>_NNNNNN.<fmt>.

    Also writes out_dir/<task>/labels.csv (file relative to out_dir/<task>, label,
    class, kind — the unsuitable kind for pass 2), last and atomically.
    """
    import pandas as pd  # here, not at the top: importing this module stays light

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    pil_format, ext = _image_format(fmt)
    size = check_size(size)
    root = Path(out_dir) / task
    for name in CLASS_NAMES[task]:
        (root / name).mkdir(parents=True, exist_ok=True)
    width = _digits(count)
    seen = [0, 0]
    rows = []
    for image, label, kind in labelled_examples(count, task, size, seed):
        cls = CLASS_NAMES[task][label]
        rel = f"{cls}/{cls}_{seen[label]:0{width}d}{ext}"
        seen[label] += 1
        _save(image, root / rel, pil_format)
        rows.append((rel, label, cls, kind))
    frame = pd.DataFrame(rows, columns=["file", "label", "class", "kind"])
    atomic_write(root / "labels.csv", lambda tmp: frame.to_csv(tmp, index=False))


# --------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    """Write façades and/or the two classifier sets to --out; returns an exit code."""
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=_DESCRIPTION)
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
