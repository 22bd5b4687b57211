"""Weak labels for pass 1: a balanced building / not_building training set from GLDv2's metadata.

Pass 1's members learn "is it a building?" from labelled photos. Rather than labelling
photos by hand, this program uses what GLDv2 already says about its landmarks:
train.csv gives each image's landmark, and train_label_to_hierarchical.csv describes
each landmark by a supercategory, a hierarchical label and whether it is natural or
human-made. A table, transfer_learning/weak_label_map.csv (its header explains how to
read and edit it), turns that description into building, not_building or ambiguous.
Ambiguous landmarks (bridges, statues, ruins, parks, ..., and whatever the table does
not know) are in neither class. The labels are weak: they describe the landmark, not
the photo, so a photo of a cathedral's altar is labelled building.

    python -m data.download gldv2 --shards 0-9 --root datasets
    python -m data.download gldv2_metadata --root datasets
    python -m transfer_learning.weak_labels datasets/gldv2/train --dry-run
    python -m transfer_learning.weak_labels datasets/gldv2/train --output weak_pass1 --per-class 6000
    python transfer_learning/train.py --data weak_pass1 --run-dir members/pass1

Which photos: only images inside the shards given are candidates. Each one gets a rank
from a hash of (--seed, its image id), so the draw depends neither on the order of the
shards nor on the order of their members. Walking each class in rank order, an image is
taken unless its landmark already has --per-landmark images or train.py's decoder cannot
read it, until --per-class images are taken. If one class runs short, both classes keep
the same, smaller number.

Output (--output):
    building/<id>.jpg, not_building/<id>.jpg   the shard's bytes, unchanged (train.py --data)
    manifest.csv       one row per image: output, id, landmark_id, label, shard, member,
                       supercategory, hierarchical_label, natural_or_human_made, and rule
                       (the row of the table that decided); written last, so its presence
                       means the folder is finished
    weak_labels.json   the settings and shards the folder is built from

Every file is written atomically. Kill a run and give the same command again: the images
already written are kept, the rest are written, and the folder ends exactly as an
uninterrupted run leaves it. A command with other settings or other shards is refused
rather than mixed into the same folder.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import sys
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

if __name__ == "__main__":  # as a program: quiet TensorFlow's C++ start-up logs, before it is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd

from common.cli import documented_parser, exit_code, log_to_stderr
from common.config import ConfigError
from common.files import atomic_write, first_line, write_json
from data.pipeline import DataError
from transfer_learning import config as cfg
from transfer_learning.config import WeakLabelConfig
from transfer_learning.sources import Item

log = logging.getLogger(__name__)

BUILDING, NOT_BUILDING, AMBIGUOUS = "building", "not_building", "ambiguous"
LABELS = (BUILDING, NOT_BUILDING, AMBIGUOUS)
CLASSES = (BUILDING, NOT_BUILDING)  # the class sub-folders train.py reads
EITHER = "either"  # a map row that looks at the supercategory and the hierarchical label
MAP_COLUMNS = ("natural_or_human_made", "supercategory", "hierarchical_label", "category", EITHER)
MAP_HEADER = ["column", "words", "label"]
DEFAULT_MAP = Path(__file__).with_name("weak_label_map.csv")
TRAIN_CSV = "train.csv"
HIERARCHY_CSV = "train_label_to_hierarchical.csv"
TRAIN_COLUMNS = ("id", "landmark_id")
HIERARCHY_COLUMNS = ("landmark_id", "supercategory", "hierarchical_label", "natural_or_human_made")
MANIFEST = "manifest.csv"
RECORD = "weak_labels.json"
MANIFEST_COLUMNS = ["output", "id", "landmark_id", "label", "shard", "member", "supercategory",
                    "hierarchical_label", "natural_or_human_made", "rule"]
_CHUNK_ROWS = 500_000  # rows of train.csv (4.1 M in all) read at a time


class WeakLabelError(ValueError):
    """Unusable metadata, label map, inputs or output folder; the message names the file."""


# --------------------------------------------------------------------------- the label map


@dataclass(frozen=True)
class Rule:
    """One row of the label map: `words` in `column` make a landmark `label`."""

    column: str  # one of MAP_COLUMNS
    words: tuple[str, ...]  # lower-case words that must appear together, in order
    label: str  # building | not_building | ambiguous
    line: int  # where it is in the map file

    def __str__(self) -> str:
        return f"{self.column}: {' '.join(self.words)}"


def words_of(text) -> list[str]:
    """The lower-case words of a metadata value: 'Bell_towers (Italy)' → bell, towers, italy."""
    return re.findall(r"[^\W_]+", str(text).lower())


def _same_word(word: str, token: str) -> bool:
    """`token` is `word` or a plural of it (-s, -es, -y → -ies)."""
    return (token == word or token in (word + "s", word + "es")
            or (word.endswith("y") and token == word[:-1] + "ies"))


def _contains(tokens: Sequence[str], words: Sequence[str]) -> bool:
    n = len(words)
    return any(all(_same_word(w, t) for w, t in zip(words, tokens[i:i + n]))
               for i in range(len(tokens) - n + 1))


def read_label_map(path) -> list[Rule]:
    """The rows of a label map file (weak_label_map.csv's format), in order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeakLabelError(f"--label-map: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise WeakLabelError(f"--label-map: {path}: cannot be read ({first_line(err)})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines or [f.strip() for f in lines[0][1].split(",")] != MAP_HEADER:
        raise WeakLabelError(f"{path}: the first line that is not a # comment must be the header "
                             f"{','.join(MAP_HEADER)!r}")
    rules = []
    for n, line in lines[1:]:
        fields = [f.strip() for f in next(csv.reader([line]))]
        where = f"{path}, line {n}"
        if len(fields) != 3:
            raise WeakLabelError(f"{where}: expected {','.join(MAP_HEADER)}, got {line.strip()!r}")
        column, words, label = fields
        if column not in MAP_COLUMNS:
            raise WeakLabelError(f"{where}: column {column!r} is not one of {', '.join(MAP_COLUMNS)}")
        if label not in LABELS:
            raise WeakLabelError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
        if not words_of(words):
            raise WeakLabelError(f"{where}: no words to look for")
        rules.append(Rule(column, tuple(words_of(words)), label, n))
    if not any(rule.label in CLASSES for rule in rules):
        raise WeakLabelError(f"{path}: no row gives {BUILDING} or {NOT_BUILDING}")
    return rules


def match(rules: Sequence[Rule], values: dict) -> Rule | None:
    """The first rule whose words appear in its column of `values` (one landmark's metadata)."""
    tokens = {c: words_of(values.get(c) or "") for c in MAP_COLUMNS if c != EITHER}
    for rule in rules:
        columns = ("supercategory", "hierarchical_label") if rule.column == EITHER else (rule.column,)
        if any(_contains(tokens[c], rule.words) for c in columns):
            return rule
    return None


# --------------------------------------------------------------------------- metadata


def _read_csv(path: Path, columns: Sequence[str], optional: Sequence[str] = (),
              chunksize: int | None = None):
    """A CSV's `columns` (and those of `optional` it has) as strings, after checking its header;
    chunks of rows if `chunksize`."""
    if not path.is_file():
        raise WeakLabelError(f"{path}: no such file; fetch it with `python -m data.download "
                             "gldv2_metadata` or point --metadata at the folder that holds it")
    try:
        header = list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise WeakLabelError(f"{path}: not a readable CSV ({first_line(err)})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        shown = ",".join(map(str, header))[:100]
        raise WeakLabelError(f"{path}: no {', '.join(missing)} column (its header is {shown!r}); "
                             f"expected GLDv2's {path.name} with {', '.join(columns)}")
    usecols = list(columns) + [c for c in optional if c in header]
    return pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False,
                       encoding="utf-8-sig", chunksize=chunksize)


def _landmark_ids(frame: pd.DataFrame, path: Path) -> pd.Series:
    """`frame.landmark_id` as canonical integer strings; raises naming the first bad row."""
    ids = frame["landmark_id"].str.strip()
    bad = ~ids.str.fullmatch(r"\d+")
    if bad.any():
        row = bad.idxmax()
        raise WeakLabelError(f"{path}: landmark_id {frame['landmark_id'][row]!r} on line {row + 2} "
                             "is not a whole number")
    return ids.map(lambda s: str(int(s)))


def read_train(path, ids: set[str]) -> pd.DataFrame:
    """(id, landmark_id) of the images of `ids` that train.csv lists (the first row of an id)."""
    path = Path(path)
    kept = []
    try:
        for chunk in _read_csv(path, TRAIN_COLUMNS, chunksize=_CHUNK_ROWS):
            chunk = chunk[chunk["id"].isin(ids)]
            if len(chunk):
                kept.append(chunk.assign(landmark_id=_landmark_ids(chunk, path)))
    except WeakLabelError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise WeakLabelError(f"{path}: not a readable CSV ({first_line(err)})") from None
    frame = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(TRAIN_COLUMNS))
    return frame.drop_duplicates("id").reset_index(drop=True)


def read_hierarchy(path) -> pd.DataFrame:
    """train_label_to_hierarchical.csv: one row per landmark (the first where one repeats);
    `category` is '' where the file has no such column."""
    path = Path(path)
    try:
        frame = _read_csv(path, HIERARCHY_COLUMNS, optional=["category"])
    except WeakLabelError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise WeakLabelError(f"{path}: not a readable CSV ({first_line(err)})") from None
    if "category" not in frame.columns:
        frame["category"] = ""
    frame["landmark_id"] = _landmark_ids(frame, path)
    return frame.drop_duplicates("landmark_id").reset_index(drop=True)


def label_landmarks(hierarchy: pd.DataFrame, rules: Sequence[Rule]) -> pd.DataFrame:
    """`hierarchy` with each landmark's `label` and the `rule` that gave it ('' for none: ambiguous)."""
    keys = ["supercategory", "hierarchical_label", "natural_or_human_made"]
    if any(rule.column == "category" for rule in rules):
        keys.append("category")  # unique per landmark: only looked at when a rule needs it
    decided: dict[tuple, tuple[str, str]] = {}  # few distinct descriptions: match each once
    labels, names = [], []
    for values in hierarchy[keys].itertuples(index=False, name=None):
        if values not in decided:
            rule = match(rules, dict(zip(keys, values)))
            decided[values] = (rule.label, str(rule)) if rule else (AMBIGUOUS, "")
        label, name = decided[values]
        labels.append(label)
        names.append(name)
    return hierarchy.assign(label=labels, rule=names)


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """An image of the given shards with its landmark's weak label."""

    rank: int  # position in the seeded draw (smaller first)
    id: str  # GLDv2 image id (the file name's stem)
    landmark_id: str  # '' when train.csv does not list the image
    label: str
    rule: str  # the map row that decided ('' for none)
    shard: str  # the .tar (or folder) it is in
    item: Item
    supercategory: str = ""
    hierarchical_label: str = ""
    natural_or_human_made: str = ""
    described: bool = False  # its landmark is in train_label_to_hierarchical.csv

    @property
    def output(self) -> str:
        """Its file in the output folder: <class>/<id><ext>."""
        ext = os.path.splitext(self.item.member or self.item.path)[1].lower()
        return f"{self.label}/{re.sub(r'[^A-Za-z0-9._-]+', '_', self.id)}{ext}"

    @property
    def member(self) -> str:
        return self.item.member or self.item.name


def _rank(seed: int, image_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{image_id}".encode("utf-8"),
                                          digest_size=8).digest(), "big")


def image_id(item: Item) -> str:
    return os.path.splitext(os.path.basename(item.member or item.name))[0]


def list_shard_images(inputs: Sequence[str], exclude: Sequence[str] = ()) -> list[tuple[str, Item]]:
    """(shard name, item) of every image in `inputs`, sorted by shard and member name."""
    from transfer_learning.sources import list_items

    found: dict[str, tuple[str, Item]] = {}
    for source in inputs:
        folder = os.path.basename(os.path.realpath(source).rstrip(os.sep))
        for item in list_items([source], exclude=exclude):
            if item.error:
                log.warning("%s: %s; left out", item.key, item.error)
                continue
            shard = os.path.basename(item.tar) if item.tar else folder
            found.setdefault(item.key, (shard, item))
    return sorted(found.values(), key=lambda pair: (pair[0], pair[1].name))


def candidates(images: Sequence[tuple[str, Item]], train: pd.DataFrame, hierarchy: pd.DataFrame,
               seed: int) -> list[Candidate]:
    """Every image with its landmark's label, in the seeded rank order (an id seen twice: once)."""
    landmark_of = dict(zip(train["id"], train["landmark_id"]))
    described = hierarchy.set_index("landmark_id")[
        ["label", "rule", "supercategory", "hierarchical_label", "natural_or_human_made"]]
    about = dict(zip(described.index, described.itertuples(index=False, name=None)))
    out: dict[str, Candidate] = {}
    for shard, item in images:
        key = image_id(item)
        if key in out:
            continue
        landmark = landmark_of.get(key, "")
        described = landmark in about
        label, rule, *text = about[landmark] if described else (AMBIGUOUS, "", "", "", "")
        out[key] = Candidate(_rank(seed, key), key, landmark, label, rule, shard, item, *text,
                             described=described)
    return sorted(out.values(), key=lambda c: (c.rank, c.id))


def capped_count(pool: Sequence[Candidate], per_landmark: int) -> int:
    """How many images of `pool` the per-landmark cap leaves."""
    return sum(min(n, per_landmark) for n in Counter(c.landmark_id for c in pool).values())


# --------------------------------------------------------------------------- the run


def _load(config: WeakLabelConfig):
    """(rules, map path, candidates, images listed) of a configuration; checks every input first."""
    map_path = Path(config.label_map) if config.label_map else DEFAULT_MAP
    rules = read_label_map(map_path)
    images = list_shard_images(config.input, exclude=[config.output])
    if not images:
        raise WeakLabelError(f"{', '.join(config.input)}: no images; expected GLDv2 .tar shards, "
                             "unpacked shard folders or folders of .tar shards")
    metadata = Path(config.metadata)
    hierarchy = read_hierarchy(metadata / HIERARCHY_CSV)  # the small file first: its errors come fast
    train = read_train(metadata / TRAIN_CSV, {image_id(item) for _, item in images})
    pool = candidates(images, train, label_landmarks(hierarchy, rules), config.seed)
    return rules, map_path, pool, images


def _settings_record(config: WeakLabelConfig, map_path: Path, images) -> dict:
    """What decides the folder's content; a restart must match it."""
    return {"program": "transfer_learning.weak_labels", "per_class": config.per_class,
            "per_landmark": config.per_landmark, "seed": config.seed,
            "label_map_sha256": hashlib.sha256(map_path.read_bytes()).hexdigest(),
            "shards": sorted({shard for shard, _ in images})}


def _describe(record: dict, key: str) -> str:
    value = record.get(key)
    if key == "shards" and isinstance(value, list):
        shown = ", ".join(value[:3]) + (f", ... ({len(value)} in all)" if len(value) > 3 else "")
        return f"shards {shown}"
    if key == "label_map_sha256":
        return f"a --label-map with sha256 {str(value)[:12]}"
    return f"--{key.replace('_', '-')} {value}"


def _remove_temporaries(out: Path) -> None:
    """Delete the manifest or record that a kill left half-written (common.files' temporary names)."""
    pattern = re.compile(rf"tmp-\d+-({re.escape(MANIFEST)}|{re.escape(RECORD)})")
    for path in out.iterdir():
        if pattern.fullmatch(path.name) and path.is_file():
            path.unlink()


def prepare_output(out: Path, record: dict) -> None:
    """Make `out` ready: new (record written) or a restart with the same record; else refuse."""
    path = out / RECORD
    if out.exists() and not out.is_dir():
        raise WeakLabelError(f"--output: {out} is a file, not a folder")
    if out.is_dir():
        _remove_temporaries(out)
    if path.exists():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeakLabelError(f"{path}: unreadable ({first_line(err)}); remove {out} or use "
                                 "another --output") from None
        changed = [key for key in record if earlier.get(key) != record[key]]
        if changed:
            was = ", ".join(_describe(earlier, k) for k in changed)
            now = ", ".join(_describe(record, k) for k in changed)
            raise WeakLabelError(f"{path}: {out} was built with {was}, not {now}; give the same "
                                 "settings and shards, or another --output")
    elif out.exists() and any(out.iterdir()):
        raise WeakLabelError(f"--output: {out} holds files but no {RECORD}, so this program did "
                             "not write it; use another --output")
    else:
        write_json(path, record)
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)


def _complete(path: Path, item: Item) -> bool:
    """Whether an earlier run wrote this image (files get their name only when complete)."""
    try:
        size = item.size if item.tar else os.path.getsize(item.path)
        return path.stat().st_size == size
    except OSError:
        return False


def _usable_bytes(item: Item, reader) -> tuple[bytes, str]:
    """(bytes, '') of an image train.py can decode, else (b'', the reason)."""
    from transfer_learning.reader import MAX_BYTES, MAX_PIXELS, image_error, too_large, too_many_pixels

    reason = too_large(item, MAX_BYTES)
    if reason:
        return b"", reason
    try:
        data = reader.read(item)
    except (OSError, tarfile.TarError, EOFError) as err:
        return b"", f"unreadable: {first_line(err)}"
    reason = too_many_pixels(item, data, MAX_PIXELS) or image_error(data)
    return (b"", reason) if reason else (data, "")


def _take(pool: Sequence[Candidate], count: int, per_landmark: int, out: Path, reader,
          tally: Counter) -> list[Candidate]:
    """The first `count` usable images of `pool` in rank order, at most `per_landmark` per
    landmark; each is written to `out` unless an earlier run already did."""
    taken: list[Candidate] = []
    per: Counter = Counter()
    for cand in pool:
        if len(taken) == count:
            break
        if per[cand.landmark_id] >= per_landmark:
            continue
        path = out / cand.output
        if _complete(path, cand.item):
            tally["kept"] += 1
        else:
            data, reason = _usable_bytes(cand.item, reader)
            if reason:
                log.warning("%s (landmark %s) left out: %s", cand.item.key, cand.landmark_id, reason)
                tally["unusable"] += 1
                continue
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
            tally["written"] += 1
            if tally["written"] % 1000 == 0:
                log.info("%d images written", tally["written"])
        taken.append(cand)
        per[cand.landmark_id] += 1
    return taken


def _remove_others(out: Path, keep: set[str]) -> int:
    """Delete files of the class folders that are not in `keep` (class/name), e.g. a kill's temporaries."""
    removed = 0
    for name in CLASSES:
        for path in (out / name).iterdir():
            if f"{name}/{path.name}" not in keep and path.is_file():
                path.unlink()
                removed += 1
    return removed


def write_manifest(path: Path, chosen: Sequence[Candidate]) -> None:
    """manifest.csv of the chosen images, sorted by output file, atomically."""
    rows = [{"output": c.output, "id": c.id, "landmark_id": c.landmark_id, "label": c.label,
             "shard": c.shard, "member": c.member, "supercategory": c.supercategory,
             "hierarchical_label": c.hierarchical_label,
             "natural_or_human_made": c.natural_or_human_made, "rule": c.rule} for c in chosen]
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("output", kind="stable")
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"), durable=True)


def build(config: WeakLabelConfig) -> dict:
    """Write (or finish) the weak-label training set of `config`; returns its counts."""
    from transfer_learning.sources import ItemReader

    _, map_path, pool, images = _load(config)
    by_label = defaultdict(list)
    for cand in pool:
        by_label[cand.label].append(cand)
    for name in CLASSES:
        if not by_label[name]:
            raise WeakLabelError(f"{', '.join(config.input)}: no {name} images in these shards "
                                 f"({len(pool)} images, {sum(1 for c in pool if c.landmark_id)} "
                                 "listed in train.csv); give more shards or check --label-map")
    out = Path(config.output)
    prepare_output(out, _settings_record(config, map_path, images))
    (out / MANIFEST).unlink(missing_ok=True)  # finished again only when rewritten below
    tally: Counter = Counter()
    reader = ItemReader()
    try:
        taken = {name: _take(by_label[name], config.per_class, config.per_landmark, out, reader, tally)
                 for name in CLASSES}
    finally:
        reader.close()
    count = min(len(v) for v in taken.values())
    if count == 0:
        empty = next(name for name in CLASSES if not taken[name])
        raise WeakLabelError(f"{', '.join(config.input)}: none of the {empty} images can be decoded")
    if count < config.per_class:
        log.warning("only %d images per class (%s); both classes get %d", count,
                    ", ".join(f"{n}: {len(v)} usable under --per-landmark {config.per_landmark}"
                              for n, v in taken.items()), count)
    chosen = [cand for name in CLASSES for cand in taken[name][:count]]
    removed = _remove_others(out, {c.output for c in chosen})
    write_manifest(out / MANIFEST, chosen)
    result = {"per_class": count, "written": tally["written"], "kept_from_earlier_run": tally["kept"],
              "unusable": tally["unusable"], "removed": removed, "images_in_shards": len(images),
              "listed_in_train_csv": sum(1 for c in pool if c.landmark_id),
              **{f"candidates_{name}": len(v) for name, v in by_label.items()}}
    log.info("%s: %d building + %d not_building images (%d written now, %d from an earlier run, "
             "%d undecodable left out) from %d images in %d shards", out, count, count,
             tally["written"], tally["kept"], tally["unusable"], len(images),
             len({shard for shard, _ in images}))
    return result


def dry_run(config: WeakLabelConfig) -> str:
    """What the label map decides in the given shards, and what each class could get: a table."""
    rules, map_path, pool, images = _load(config)
    listed = [c for c in pool if c.landmark_id]
    lines = [f"{map_path} on {len({s for s, _ in images})} shards: {len(pool)} images, "
             f"{len(listed)} of them listed in {TRAIN_CSV}",
             f"{'map row (the first that matches decides)':<52} {'label':<13} {'landmarks':>9} {'images':>8}"]
    landmarks: dict[str, set] = defaultdict(set)
    counts: Counter = Counter()
    for cand in listed:
        key = cand.rule or ("" if cand.described else "-")
        landmarks[key].add(cand.landmark_id)
        counts[key] += 1
    for rule in rules:
        if counts[str(rule)]:
            lines.append(f"{'line %d  %s' % (rule.line, rule):<52} {rule.label:<13} "
                         f"{len(landmarks[str(rule)]):>9} {counts[str(rule)]:>8}")
    for key, text in (("", "(no row matches)"), ("-", f"(landmark not in {HIERARCHY_CSV})")):
        if counts[key]:
            lines.append(f"{text:<52} {AMBIGUOUS:<13} {len(landmarks[key]):>9} {counts[key]:>8}")
    for name in CLASSES:
        group = [c for c in listed if c.label == name]
        capped = capped_count(group, config.per_landmark)
        lines.append(f"{name}: {len(group)} images of {len({c.landmark_id for c in group})} "
                     f"landmarks, {capped} under --per-landmark {config.per_landmark}")
    per_class = min([config.per_class] + [capped_count([c for c in listed if c.label == n],
                                                       config.per_landmark) for n in CLASSES])
    lines.append(f"per class: {per_class} (of --per-class {config.per_class}; fewer if some "
                 "images cannot be decoded)")
    unmatched = Counter(f"{c.supercategory} | {c.hierarchical_label} | {c.natural_or_human_made}"
                        for c in listed if c.described and not c.rule)
    if unmatched:
        lines.append("most common descriptions no row matches "
                     "(supercategory | hierarchical_label | natural_or_human_made: images):")
        lines += [f"  {text}: {n}" for text, n in unmatched.most_common(20)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser("python -m transfer_learning.weak_labels", __doc__)
    parser.add_argument("inputs", nargs="*", metavar="SHARD",
                        help="GLDv2 .tar shards, unpacked shard folders or folders of .tar shards "
                             "(also --input)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what each row of the label map decides in these shards and how "
                             "many images each class could get; write nothing")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    cfg.add_arguments(parser, WeakLabelConfig)
    return parser


def main(argv=None) -> int:
    """CLI: exit 0 done, 2 for a bad flag, input, metadata or output folder, 1 if writing fails."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    log_to_stderr(logging.WARNING if args.quiet else logging.INFO)

    def run() -> None:
        extra = tuple(args.inputs) + tuple(args.input or ())
        config = cfg.from_args(WeakLabelConfig, args, input=extra or None)
        if args.dry_run:
            print(dry_run(config))
        else:
            build(config)

    return exit_code(run, usage=(ConfigError, DataError, WeakLabelError), failure=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
