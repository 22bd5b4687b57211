"""transfer_learning.weak_labels on a small fake GLDv2: metadata CSVs and three tar shards of tiny JPEGs."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transfer_learning import weak_labels
from transfer_learning.weak_labels import (AMBIGUOUS, BUILDING, NOT_BUILDING, WeakLabelError, main,
                                           match, read_label_map)

HIERARCHY_HEADER = "landmark_id,category,supercategory,hierarchical_label,natural_or_human_made\n"
# landmark: (supercategory, hierarchical_label, natural_or_human_made, images, expected label)
LANDMARKS = {
    10: ("cathedral", "Cathedrals", "human-made", 8, BUILDING),  # a famous place: many photos
    11: ("castle", "castle / fort", "human-made", 3, BUILDING),
    12: ("tower", "Bell_towers", "human-made", 3, BUILDING),
    13: ("house", "house", "human-made", 2, BUILDING),
    20: ("mountain", "mountain / hill", "natural", 8, NOT_BUILDING),
    21: ("lake", "lake", "natural", 3, NOT_BUILDING),
    22: ("waterfall", "waterfall", "natural", 3, NOT_BUILDING),
    23: ("glacier", "glacier", "", 1, NOT_BUILDING),  # no natural_or_human_made: the word decides
    30: ("bridge", "bridge", "human-made", 4, AMBIGUOUS),
    31: ("castle", "castle ruins", "human-made", 3, AMBIGUOUS),  # "ruin" comes before "castle"
    32: ("airport", "airport", "human-made", 2, AMBIGUOUS),  # no row: ambiguous
    33: None,  # in train.csv, not in the hierarchy: ambiguous
}
CORRUPT = "f0000000000000bad"  # a building photo that no decoder reads
UNLISTED = ("e00000000000000a", "e00000000000000b")  # in a shard, not in train.csv


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _member(image_id: str) -> str:
    return f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"  # GLDv2's layout


def make_gldv2(root: Path) -> dict:
    """Write root/metadata/*.csv and root/shards/images_00{0,1,2}.tar; return {image id: landmark}."""
    landmark_of = {}
    for landmark, spec in LANDMARKS.items():
        for k in range(2 if spec is None else spec[3]):
            landmark_of[f"{landmark:04x}{k:012x}"] = landmark
    landmark_of[CORRUPT] = 11
    meta = root / "metadata"
    meta.mkdir(parents=True)
    rows = "".join(f"{i},https://example.org/{i}.jpg,{lm}\n" for i, lm in landmark_of.items())
    (meta / "train.csv").write_text("id,url,landmark_id\n" + rows)
    (meta / "train_label_to_hierarchical.csv").write_text(HIERARCHY_HEADER + "".join(
        f"{lm},http://commons.wikimedia.org/wiki/Category:L{lm},{s[0]},{s[1]},{s[2]}\n"
        for lm, s in LANDMARKS.items() if s is not None))
    shards = root / "shards"
    shards.mkdir()
    ids = sorted(landmark_of) + list(UNLISTED)
    for s in range(3):
        with tarfile.open(shards / f"images_{s:03d}.tar", "w") as tf:
            for n, image_id in enumerate(ids):
                if n % 3 != s:
                    continue
                data = b"\xff\xd8\xff not a JPEG after all" if image_id == CORRUPT else _jpeg(n)
                info = tarfile.TarInfo(_member(image_id))
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return landmark_of


@pytest.fixture(scope="module")
def gldv2(tmp_path_factory):
    root = tmp_path_factory.mktemp("gldv2")
    return root, make_gldv2(root)


def _run(root, out, *flags, shards=None):
    shards = shards or [str(root / "shards")]
    return main([*shards, "--metadata", str(root / "metadata"), "--output", str(out), "--quiet", *flags])


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


# --------------------------------------------------------------------------- the label map


def test_label_map_first_matching_row_decides_and_unknown_is_ambiguous():
    rules = read_label_map(weak_labels.DEFAULT_MAP)

    def label(**values):
        rule = match(rules, values)
        return rule.label if rule else AMBIGUOUS

    assert label(supercategory="church", natural_or_human_made="human-made") == BUILDING
    assert label(hierarchical_label="Bell_towers") == BUILDING  # case, "_" and plural ignored
    assert label(supercategory="libraries") == BUILDING  # -y → -ies
    assert label(supercategory="lake", natural_or_human_made="natural") == NOT_BUILDING
    assert label(supercategory="church", natural_or_human_made="natural") == NOT_BUILDING
    assert label(supercategory="castle", hierarchical_label="castle ruins") == AMBIGUOUS
    assert label(supercategory="statue") == AMBIGUOUS
    assert label(supercategory="lighthouse") == BUILDING and label(supercategory="bridge") == AMBIGUOUS
    assert label(supercategory="greenhouses") == AMBIGUOUS  # "house" is a whole word, not a suffix
    assert label(supercategory="airport", natural_or_human_made="human-made") == AMBIGUOUS
    assert label() == AMBIGUOUS


def test_a_broken_label_map_names_its_file_and_line(tmp_path):
    bad = tmp_path / "map.csv"
    bad.write_text("# a comment\ncolumn,words,label\neither,church,building\neither,tower,castle\n")
    with pytest.raises(WeakLabelError, match=r"map\.csv, line 4: label 'castle' is not one of"):
        read_label_map(bad)
    bad.write_text("either,church,building\n")
    with pytest.raises(WeakLabelError, match="header 'column,words,label'"):
        read_label_map(bad)


# --------------------------------------------------------------------------- which photos


def test_picks_buildings_and_natural_landmarks_balanced_and_capped(gldv2, tmp_path):
    root, landmark_of = gldv2
    out = tmp_path / "out"
    assert _run(root, out, "--per-class", "6", "--per-landmark", "2") == 0
    frame = _manifest(out)
    assert list(frame.columns) == weak_labels.MANIFEST_COLUMNS
    assert (frame["label"].value_counts() == 6).all() and set(frame["label"]) == {BUILDING, NOT_BUILDING}
    expected = {str(lm): spec[4] for lm, spec in LANDMARKS.items() if spec}
    assert all(expected[lm] == label for lm, label in zip(frame["landmark_id"], frame["label"]))
    assert all(landmark_of[i] == int(lm) for i, lm in zip(frame["id"], frame["landmark_id"]))
    assert frame["landmark_id"].value_counts().max() == 2  # the famous places are capped
    assert CORRUPT not in set(frame["id"])
    # the files are exactly the manifest's, the shard's bytes unchanged
    assert sorted(frame["output"]) == sorted(k for k in _tree(out) if k.startswith(("building/", "not_building/")))
    row = frame.iloc[0]
    with tarfile.open(root / "shards" / row["shard"]) as tf:
        assert tf.extractfile(row["member"]).read() == (out / row["output"]).read_bytes()
    assert row["member"] == _member(row["id"])
    # what train.py reads: two class folders, every image decodable
    from transfer_learning.train import class_folders, labelled_files

    classes, positive = class_folders(out)
    assert classes == [NOT_BUILDING, BUILDING] and positive == BUILDING
    assert sorted(labelled_files(out, classes)[1]) == [0] * 6 + [1] * 6


def test_only_images_of_the_given_shards_are_candidates(gldv2, tmp_path):
    root, _ = gldv2
    out = tmp_path / "one"
    shard = root / "shards" / "images_001.tar"
    assert _run(root, out, "--per-class", "50", "--per-landmark", "50", shards=[str(shard)]) == 0
    frame = _manifest(out)
    with tarfile.open(shard) as tf:
        members = set(tf.getnames())
    assert set(frame["shard"]) == {"images_001.tar"} and set(frame["member"]) <= members
    assert len(frame) > 0


def test_a_short_class_makes_both_classes_smaller_and_bad_images_are_left_out(gldv2, tmp_path):
    root, _ = gldv2
    result = weak_labels.build(weak_labels.WeakLabelConfig(
        input=(str(root / "shards"),), metadata=str(root / "metadata"), output=str(tmp_path / "a"),
        per_class=100, per_landmark=3).validate())
    # building: 3 + 3 + 3 + 2 under the cap; not_building: 3 + 3 + 3 + 1
    assert result["per_class"] == 10
    assert result["candidates_building"] == 17 and result["candidates_not_building"] == 15
    frame = _manifest(tmp_path / "a")
    assert (frame["label"].value_counts() == 10).all()
    result = weak_labels.build(weak_labels.WeakLabelConfig(
        input=(str(root / "shards"),), metadata=str(root / "metadata"), output=str(tmp_path / "b"),
        per_class=100, per_landmark=100).validate())
    assert result["unusable"] == 1 and result["per_class"] == 15  # 16 decodable buildings, 15 natural
    assert CORRUPT not in set(_manifest(tmp_path / "b")["id"])


def test_same_seed_same_set_whatever_the_shard_order_another_seed_another_set(gldv2, tmp_path):
    root, _ = gldv2
    shards = [str(root / "shards" / f"images_{s:03d}.tar") for s in range(3)]
    flags = ("--per-class", "5", "--per-landmark", "2")
    assert _run(root, tmp_path / "a", *flags, shards=shards) == 0
    assert _run(root, tmp_path / "b", *flags, shards=shards[::-1]) == 0
    assert _run(root, tmp_path / "c", *flags, "--seed", "1", shards=shards) == 0
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert set(_manifest(tmp_path / "a")["id"]) != set(_manifest(tmp_path / "c")["id"])
    assert len(_manifest(tmp_path / "c")) == 10


# --------------------------------------------------------------------------- resuming


def test_an_interrupted_run_resumes_to_the_same_folder_as_an_uninterrupted_one(gldv2, tmp_path, monkeypatch):
    root, _ = gldv2
    flags = ("--per-class", "6", "--per-landmark", "2")
    assert _run(root, tmp_path / "whole", *flags) == 0

    real = weak_labels.atomic_write
    written = []

    def dies_after_three(path, write, durable=False):
        if len(written) == 3:
            raise KeyboardInterrupt  # a kill between two images
        written.append(path)
        return real(path, write, durable)

    monkeypatch.setattr(weak_labels, "atomic_write", dies_after_three)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _run(root, out, *flags)
    monkeypatch.setattr(weak_labels, "atomic_write", real)
    assert not (out / "manifest.csv").exists()  # not finished, and it does not look finished
    assert len(list((out / "building").iterdir())) == 3
    (out / "building" / "tmp-999-0123456789abcdef.jpg").write_bytes(b"\xff\xd8half")  # a kill mid-write
    (out / "tmp-999-manifest.csv").write_text("output,id\n")  # ... or while writing the manifest

    config = weak_labels.WeakLabelConfig(input=(str(root / "shards"),), metadata=str(root / "metadata"),
                                         output=str(out), per_class=6, per_landmark=2).validate()
    result = weak_labels.build(config)
    assert result["kept_from_earlier_run"] == 3 and result["written"] == 9 and result["removed"] == 1
    assert _tree(out) == _tree(tmp_path / "whole")
    assert weak_labels.build(config)["written"] == 0  # finished: the same command changes nothing
    assert _tree(out) == _tree(tmp_path / "whole")


def test_a_restart_with_other_settings_or_shards_is_refused(gldv2, tmp_path, capsys):
    root, _ = gldv2
    out = tmp_path / "out"
    assert _run(root, out, "--per-class", "4") == 0
    before = _tree(out)
    capsys.readouterr()
    assert _run(root, out, "--per-class", "4", "--seed", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "weak_labels.json" in err and "--seed 0, not --seed 1" in err
    assert _run(root, out, "--per-class", "4", shards=[str(root / "shards" / "images_000.tar")]) == 2
    assert "shards images_000.tar, images_001.tar, images_002.tar, not shards images_000.tar" \
        in capsys.readouterr().err
    assert _tree(out) == before


def test_a_kill_while_the_record_was_written_does_not_block_the_restart(gldv2, tmp_path):
    root, _ = gldv2
    out = tmp_path / "out"
    out.mkdir()
    (out / "tmp-999-weak_labels.json").write_text('{"per_cl')
    assert _run(root, out, "--per-class", "3") == 0
    assert sorted(p.name for p in out.iterdir()) == ["building", "manifest.csv", "not_building",
                                                     "weak_labels.json"]
    assert len(_manifest(out)) == 6


def test_a_folder_this_program_did_not_write_is_never_touched(gldv2, tmp_path, capsys):
    root, _ = gldv2
    out = tmp_path / "hand_labelled"
    (out / "building").mkdir(parents=True)
    (out / "building" / "mine.jpg").write_bytes(b"my own photo")
    assert _run(root, out) == 2
    assert "holds files but no weak_labels.json" in capsys.readouterr().err
    assert _tree(out) == {"building/mine.jpg": b"my own photo"}


# --------------------------------------------------------------------------- bad input


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_missing_or_malformed_metadata_is_one_line_naming_the_file(gldv2, tmp_path, capsys):
    root, _ = gldv2
    shards = str(root / "shards")
    meta = tmp_path / "meta"
    meta.mkdir()
    args = [shards, "--metadata", str(meta), "--output", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 2
    assert f"{meta / 'train_label_to_hierarchical.csv'}: no such file" in _one_error(capsys)
    hierarchy = (root / "metadata" / "train_label_to_hierarchical.csv").read_text()
    (meta / "train_label_to_hierarchical.csv").write_text(hierarchy)
    assert main(args) == 2
    assert f"{meta / 'train.csv'}: no such file" in _one_error(capsys)
    (meta / "train.csv").write_text("image,landmark\nabc,1\n")
    assert main(args) == 2
    assert "train.csv: no id, landmark_id column" in _one_error(capsys)
    (meta / "train_label_to_hierarchical.csv").write_text(HIERARCHY_HEADER + "10,c,church,church,human-made\n"
                                                          "ten,c,church,church,human-made\n")
    assert main(args) == 2
    assert "train_label_to_hierarchical.csv: landmark_id 'ten' on line 3 is not a whole number" \
        in _one_error(capsys)
    (meta / "train_label_to_hierarchical.csv").write_bytes(b"")
    assert main(args) == 2
    assert "train_label_to_hierarchical.csv: not a readable CSV" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_no_shards_or_a_missing_shard_is_one_line(gldv2, tmp_path, capsys):
    root, _ = gldv2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(root, tmp_path / "out", shards=[str(empty)]) == 2
    assert f"{empty}: no images" in _one_error(capsys)
    assert _run(root, tmp_path / "out", shards=[str(tmp_path / "images_404.tar")]) == 2
    assert "images_404.tar: no such file or folder" in _one_error(capsys)
    assert main(["--metadata", str(root / "metadata")]) == 2
    assert "--input: required" in _one_error(capsys)
    assert _run(root, tmp_path / "out", "--per-landmark", "0") == 2
    assert "--per-landmark: must be at least 1" in _one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_dry_run_reports_what_each_row_decides_and_writes_nothing(gldv2, tmp_path, capsys):
    root, _ = gldv2
    assert _run(root, tmp_path / "out", "--dry-run", "--per-class", "6", "--per-landmark", "2") == 0
    report = capsys.readouterr().out
    assert "either: cathedral" in report and "natural_or_human_made: natural" in report
    assert "(landmark not in train_label_to_hierarchical.csv)" in report
    assert "airport | airport | human-made: 2" in report
    assert "building: 17 images of 4 landmarks, 8 under --per-landmark 2" in report
    assert "per class: 6" in report
    assert not (tmp_path / "out").exists()
