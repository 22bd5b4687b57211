"""Named datasets → train / validation / test sources.

`synthetic` renders (once, then reuses) procedural façades; `reduced_128` and
`reduced_256` are the original project's curated downloads with their separate
validation and test sets; anything else is a path: a folder (split by a hash of
each file name), a folder with `train/`, `validation/`, `test/` sub-folders, or
TFRecord shards laid out the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import pipeline
from data.pipeline import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Splits:
    """Each split is anything `data.pipeline.load_images` accepts (a path or a list of paths)."""

    train: object
    validation: object
    test: object
    factors_csv: Path | None = None  # ground-truth factors (synthetic data only)
    factors: dict | None = None  # split → (N, F) factor levels of in-memory splits (synthetic_grid)


def synthetic_folder(root, count: int, size: int, seed: int) -> Path:
    """Render `count` façades once into root/synthetic-…; later calls reuse the folder.

    Rendered into a temporary folder and renamed when complete, so an interrupted
    render is never mistaken for a finished one.
    """
    from data import synthetic

    folder = Path(root) / f"synthetic-{size}px-{count}-seed{seed}"
    if (folder / "factors.csv").exists():
        return folder
    # One temporary folder per process: several workers may render at once.
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("rendering %d synthetic façades at %d px into %s", count, size, folder)
    synthetic.write_facades(tmp, count, size=size, seed=seed, fmt="png")
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "factors.csv").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another worker finished first: same images
    return folder


def combination_key(levels) -> str:
    """The text a combination of factor levels is split by: "2-0-1-3-0-2-1-0"."""
    return "-".join(str(int(v)) for v in levels)


def _split_by_combination(folder: Path, validation: float, test: float) -> Splits:
    """Rendered façades split by a hash of their factor combination, not their file name.

    Random draws repeat combinations (15 552 exist), and a file-name split put the same
    image in train and test; here every copy of a combination lands in one split.
    """
    import pandas as pd

    frame = pd.read_csv(folder / "factors.csv")
    levels = frame.drop(columns=["file"]).to_numpy()
    fractions = np.array([pipeline.split_fraction(combination_key(row)) for row in levels])
    parts = {"test": fractions < test, "validation": (fractions >= test) & (fractions < test + validation),
             "train": fractions >= test + validation}
    splits = {name: [str(folder / f) for f in frame["file"][mask]] for name, mask in parts.items()}
    for name in SPLITS:
        if not splits[name]:
            raise DataError(f"{folder}: the {name} split is empty ({len(frame)} images); "
                            "add images or change --validation-fraction / --test-fraction")
    return Splits(**splits, factors_csv=folder / "factors.csv")


def synthetic_grid(size: int, validation: float, test: float) -> Splits:
    """Every factor combination of the synthetic façades once, rendered in memory at `size`.

    As disentanglement_lib trains on the whole of dSprites: 15 552 images, split by a
    hash of each combination (its row of factor levels), so the test split holds
    combinations that training never saw. Splits are (N, S, S, 3) uint8 arrays.
    """
    from data import facades

    factors = facades.all_factors()
    log.info("all %d synthetic façade combinations at %d px, in memory", len(factors), size)
    images = facades.render_grid(size)
    fractions = np.array([pipeline.split_fraction(combination_key(row)) for row in factors])
    masks = {"test": fractions < test, "validation": (fractions >= test) & (fractions < test + validation),
             "train": fractions >= test + validation}
    for name in SPLITS:
        if not masks[name].any():
            raise DataError(f"synthetic_grid: the {name} split is empty; raise --validation-fraction "
                            "/ --test-fraction")
    return Splits(**{name: images[masks[name]] for name in SPLITS},
                  factors={name: factors[masks[name]] for name in SPLITS})


def _split_folder(folder: Path) -> Splits | None:
    """A folder with train/ validation/ test/ sub-folders (images or TFRecords), if it is one."""
    parts = {name: folder / name for name in SPLITS}
    if all(p.is_dir() for p in parts.values()):
        return Splits(**{k: str(v) for k, v in parts.items()})
    return None


def hash_split(source, validation: float, test: float) -> Splits:
    """Split one image source by a hash of file names (stable as files come and go)."""
    if pipeline.is_tfrecord_source(source):
        raise DataError(
            f"{source}: TFRecords need train/, validation/ and test/ sub-folders "
            "(pack each split with `python -m data.pipeline to-tfrecords`)"
        )
    paths = pipeline.find_images(source)
    splits = pipeline.split_paths(paths, validation, test)
    for name in SPLITS:
        if not splits[name]:
            raise DataError(f"{source}: the {name} split is empty ({len(paths)} images); "
                            "add images or change --validation-fraction / --test-fraction")
    return Splits(**splits)


def resolve(
    name: str,
    root="datasets",
    *,
    image_size: int = 128,
    synthetic_count: int = 4000,
    seed: int = 0,
    validation: float = 0.05,
    test: float = 0.05,
    progress: bool = True,
) -> Splits:
    """Find (downloading or rendering if needed) the three splits of a dataset."""
    if name == "synthetic":
        folder = synthetic_folder(root, synthetic_count, image_size, seed)
        return _split_by_combination(folder, validation, test)
    if name == "synthetic_grid":
        return synthetic_grid(image_size, validation, test)
    if name in ("reduced_128", "reduced_256"):
        from data import download

        train = download.fetch_dataset(name, Path(root), progress=progress)
        val = download.fetch_dataset("validation", Path(root), progress=progress)
        test_dir = download.fetch_dataset("test", Path(root), progress=progress)
        return Splits(str(train), str(val), str(test_dir))
    path = Path(name)
    if not path.exists() and "*" not in name:
        raise DataError(f"{name}: unknown dataset and no such file or folder")
    if path.is_dir():
        split_dirs = _split_folder(path)
        if split_dirs is not None:
            return split_dirs
    return hash_split(name, validation, test)
