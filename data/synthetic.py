"""Writing the synthetic datasets to disk, and their command line.

    python -m data.synthetic --out DIR --count 1000 --size 128 --kind all

`facades` writes the façades of data/facades.py with a factors.csv of their
factor levels; `pass1` and `pass2` write the curation classifiers' labelled sets
of data/scenes.py, one folder per class, with a labels.csv; `gldv2` writes a small
fake Google Landmarks v2 (tar shards and metadata CSVs, see `write_gldv2`) for the
curation's no-hand-label workflow. Each CSV is written last and atomically, so its
presence means every image it lists is complete.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from common.files import atomic_write
from data.drawing import check_size
from data.facades import FACTOR_NAMES, render_facade, sample_factors
from data.scenes import CLASS_NAMES, TASKS, labelled_examples, make_unsuitable, render_landscape

log = logging.getLogger(__name__)

IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}
CLI_KINDS = ("facades", "pass1", "pass2", "all", "gldv2")
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


# --------------------------------------------------------------------------- a fake GLDv2

# The fake GLDv2's landmarks as train_label_to_hierarchical.csv describes them:
# (supercategory, hierarchical_label, natural_or_human_made, what its photos show).
# transfer_learning/weak_label_map.csv makes the first four building, the next four
# not_building and the bridge ambiguous (in neither class).
GLDV2_LANDMARKS = (
    ("church", "church", "human-made", "facade"),
    ("castle", "castle / fort", "human-made", "facade"),
    ("palace", "palace", "human-made", "facade"),
    ("tower", "bell tower", "human-made", "facade"),
    ("mountain", "mountain / hill", "natural", "landscape"),
    ("lake", "lake", "natural", "landscape"),
    ("waterfall", "waterfall", "natural", "landscape"),
    ("forest", "forest", "natural", "landscape"),
    ("bridge", "bridge", "human-made", "landscape"),
)
GLDV2_TRUTH_COLUMNS = ["id", "landmark_id", "shard", "member", "kind", "building", "suitable"]


def gldv2_member(image_id: str) -> str:
    """An image's name inside a GLDv2 tar shard: <a>/<b>/<c>/<id>.jpg."""
    return f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    def write(tmp):
        with tarfile.open(tmp, "w") as archive:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))

    atomic_write(path, write)


def write_gldv2(out_dir, count: int, size: int = 64, seed: int = 0, shards: int = 4,
                per_landmark: int = 6, noise: float = 0.1, unsuitable: float = 0.25) -> Path:
    """Write a small fake Google Landmarks v2 to out_dir/gldv2; returns that folder.

    The layout of `python -m data.download gldv2` and `gldv2_metadata`:
        train/images_000.tar, ...     `count` JPEGs (size x size) spread evenly over
                                      `shards` tars, at <a>/<b>/<c>/<id>.jpg
        metadata/train.csv            id, url, landmark_id
        metadata/train_label_to_hierarchical.csv
                                      landmark_id, category, supercategory,
                                      hierarchical_label, natural_or_human_made
        truth.csv                     what each photo really shows (GLDV2_TRUTH_COLUMNS:
                                      kind facade, landscape or how a façade was spoilt;
                                      building and suitable 0/1); written last
    Landmarks cycle through GLDV2_LANDMARKS with about `per_landmark` photos each. A
    photo shows what its landmark shows (a façade of data/facades.py or a landscape of
    data/scenes.py), except a fraction `noise` that shows the other (a palace's park, a
    chapel by a lake): a landmark's label describes the landmark, not the photo, as in
    GLDv2. A fraction `unsuitable` of the façades is spoilt as pass 2 must reject
    (scenes.make_unsuitable: blurred, occluded, cut to a corner or dark).
    """
    import pandas as pd  # here, not at the top: importing this module stays light

    if count < 1 or shards < 1 or per_landmark < 1:
        raise ValueError(f"count, shards and per_landmark must be at least 1, got {count}, {shards}, "
                         f"{per_landmark}")
    if not (0 <= noise <= 1 and 0 <= unsuitable <= 1):
        raise ValueError(f"noise and unsuitable are fractions in [0, 1], got {noise}, {unsuitable}")
    size = check_size(size)
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "gldv2"
    n_landmarks = max(len(GLDV2_LANDMARKS), -(-count // per_landmark))
    landmark_ids = [int(v) for v in rng.choice(200_000, n_landmarks, replace=False) + 1]
    described = [GLDV2_LANDMARKS[k % len(GLDV2_LANDMARKS)] for k in range(n_landmarks)]
    shard_of = rng.permutation(count) % shards  # even shards, each landmark spread over them
    ids: set[str] = set()
    members: list[list[tuple[str, bytes]]] = [[] for _ in range(shards)]
    rows = []
    for i in range(count):
        k = i % n_landmarks
        image_id = f"{int(rng.integers(1 << 62)):016x}"
        while image_id in ids:
            image_id = f"{int(rng.integers(1 << 62)):016x}"
        ids.add(image_id)
        shows = described[k][3]
        if rng.random() < noise:
            shows = "landscape" if shows == "facade" else "facade"
        if shows == "facade":
            factors, nuisance = sample_factors(1, rng)[0], int(rng.integers(2**31))
            image, kind = render_facade(factors, size, nuisance), "facade"
            if rng.random() < unsuitable:
                image, kind = make_unsuitable(image, rng, factors=factors, nuisance=nuisance)
        else:
            image, kind = render_landscape(rng, size), "landscape"
        shard = f"images_{int(shard_of[i]):03d}.tar"
        members[int(shard_of[i])].append((gldv2_member(image_id), _jpeg(image)))
        rows.append((image_id, landmark_ids[k], shard, gldv2_member(image_id), kind,
                     int(kind != "landscape"), int(kind == "facade")))
    for s, shard_members in enumerate(members):
        _write_tar(root / "train" / f"images_{s:03d}.tar", shard_members)
    truth = pd.DataFrame(rows, columns=GLDV2_TRUTH_COLUMNS)
    train = pd.DataFrame({"id": truth["id"], "url": [f"https://example.org/{i}.jpg" for i in truth["id"]],
                          "landmark_id": truth["landmark_id"]})
    hierarchy = pd.DataFrame(
        [(lm, f"http://commons.wikimedia.org/wiki/Category:{sup.title()}_{lm}", sup, label, made)
         for lm, (sup, label, made, _) in zip(landmark_ids, described)],
        columns=["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"])
    for name, frame in (("train.csv", train), ("train_label_to_hierarchical.csv", hierarchy)):
        atomic_write(root / "metadata" / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))
    atomic_write(root / "truth.csv", lambda tmp: truth.to_csv(tmp, index=False))
    return root


# --------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    """Write façades, the two classifier sets or a fake GLDv2 to --out; returns an exit code."""
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=_DESCRIPTION)
    parser.add_argument("--out", required=True, help="output folder; each kind goes to OUT/<kind>/")
    parser.add_argument("--count", type=int, default=1000, help="images per kind")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (16..1024)")
    parser.add_argument("--kind", choices=CLI_KINDS, default="facades",
                        help="facades (with factors.csv), pass1, pass2, or all three; gldv2: a fake "
                             "GLDv2 (tar shards of JPEGs, metadata CSVs, truth.csv) for weak labels")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same images")
    parser.add_argument("--format", choices=("png", "jpg"), default="png",
                        help="image files (gldv2: always JPEG inside its tars)")
    parser.add_argument("--shards", type=int, default=4, help="gldv2 only: tar shards the JPEGs are spread over")
    args = parser.parse_args(None if argv is None else list(argv))
    if not 16 <= args.size <= 1024:
        parser.error(f"--size must be between 16 and 1024, got {args.size}")
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    if args.shards < 1:
        parser.error(f"--shards must be at least 1, got {args.shards}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    kinds = ("facades", "pass1", "pass2") if args.kind == "all" else (args.kind,)
    try:
        for kind in kinds:
            start = time.perf_counter()
            if kind == "facades":
                write_facades(out / "facades", args.count, args.size, args.seed, args.format)
            elif kind == "gldv2":
                write_gldv2(out, args.count, args.size, args.seed, shards=args.shards)
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
