"""The curation without hand labels, end to end on a small fake GLDv2, through the real CLIs.

    fake GLDv2 (data.synthetic.write_gldv2): 4 tar shards + metadata CSVs; shards 0-1 train, 2-3 held out
    python -m transfer_learning.weak_labels   shards 0-1 -> pass-1 set (building / not_building)
    python transfer_learning/train.py         a pass-1 member on it (DenseNet121, random base)
    python -m transfer_learning.review        --auto-reject, then --sheet / --apply-sheet (no window)
                                              on the pass-1 set's building/ -> pass-2 set
    python transfer_learning/train.py         a pass-2 member on it, from pass 1's random base
    python transfer_learning/classify.py      shards 2-3 with both passes, through the shared trunk

The fake's photos show what their landmark is (façades of data/facades.py for buildings,
landscapes of data/scenes.py for natural landmarks), but 10 % show the other kind (weak
labels are about the landmark, not the photo) and a quarter of the façades are spoilt as
pass 2 must reject; truth.csv says what each photo really shows.

The members are DenseNet121, because the shared trunk ends at DenseNet's `pool4_pool`
(MobileNets would run whole). Building and tracing a DenseNet costs ~30 s of CPU per
member whatever the data, so each pass has one member: the shared trunk is then the one
that pass 2 reuses from pass 1, the engine's cross-pass path. With random weights at
32 px, one epoch of 20 steps at a raised learning rate already separates façades from
landscapes (the frozen random trunk's features plus a trained head).
"""

import hashlib
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data import synthetic
from transfer_learning import classify, review, weak_labels
from transfer_learning import train as train_cli
from transfer_learning.manifest import read_manifest

TRAIN_SHARDS, HELD_OUT_SHARDS = (0, 1), (2, 3)
THRESHOLD = 0.5  # members trained for seconds rarely reach the curation's 0.9
# Small enough for a busy 2-core CPU: one epoch of the frozen-base stage, and --learning-rate
# 1e-3 (the original's 5e-5 needs far more steps).
MEMBER = ["--backbone", "DenseNet121", "--image-size", "32", "--batch-size", "16", "--stages", "0",
          "--epochs-per-stage", "1", "--steps-per-epoch", "20", "--dense-layers", "1", "--dense-units", "16",
          "--learning-rate", "1e-3", "--quiet"]
# Thresholds of transfer_learning.quality for 64-px photos (scores at its 512-px working size):
# blurred photos and corner crops score blur < 0.9 and dark ones dark < 0.08, clean façades
# blur > 1.5 and dark > 0.37; occluded façades pass both and go to the sheet.
AUTO_REJECT = "blur<1.2,dark<0.2"


def _shard(gldv2: Path, index: int) -> str:
    return str(gldv2 / "train" / f"images_{index:03d}.tar")


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()  # as sha256sum gives it


def _fill_sheet(sheet: Path, truth: pd.DataFrame) -> int:
    """Play the person: decide every row of sheet.csv from what the photo really shows."""
    rows = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    suitable = dict(zip(truth["id"], truth["suitable"]))
    rows["decision"] = ["a" if suitable[Path(p).stem] else "r" for p in rows["path"]]
    rows.to_csv(sheet, index=False)
    return len(rows)


@pytest.mark.slow
def test_curation_without_hand_labels_end_to_end(tmp_path, caplog):
    gldv2 = synthetic.write_gldv2(tmp_path, 240, size=64, seed=0, shards=4)
    truth = pd.read_csv(gldv2 / "truth.csv", dtype={"id": str})
    by_id = truth.set_index("id")

    # 1. Pass-1 set from the training shards' metadata only.
    weak = tmp_path / "weak_pass1"
    assert weak_labels.main([*(_shard(gldv2, s) for s in TRAIN_SHARDS), "--metadata", str(gldv2 / "metadata"),
                             "--output", str(weak), "--quiet"]) == 0
    chosen = pd.read_csv(weak / "manifest.csv", dtype=str, keep_default_na=False)
    assert set(chosen["shard"]) == {f"images_{s:03d}.tar" for s in TRAIN_SHARDS}
    counts = chosen["label"].value_counts()
    assert set(counts.index) == {"building", "not_building"} and counts.nunique() == 1 and counts.iloc[0] >= 30
    hierarchy = pd.read_csv(gldv2 / "metadata" / "train_label_to_hierarchical.csv", dtype=str)
    supercategory = dict(zip(hierarchy["landmark_id"], hierarchy["supercategory"]))
    kinds = {row[0]: row[3] for row in synthetic.GLDV2_LANDMARKS}
    for row in chosen.itertuples():  # the label is the landmark's, whatever the photo shows
        assert supercategory[row.landmark_id] != "bridge"  # ambiguous: in neither class
        assert row.label == ("building" if kinds[supercategory[row.landmark_id]] == "facade" else "not_building")
        assert (weak / row.output).read_bytes()[:2] == b"\xff\xd8"
    shows = by_id.loc[chosen["id"], "building"].to_numpy()
    agreement = float(np.mean(shows == (chosen["label"] == "building").to_numpy()))
    assert 0.75 <= agreement < 1.0  # weak: a few photos show the other kind

    # 2. A pass-1 member, from a random base that the run keeps for pass 2.
    runs = tmp_path / "runs"
    assert train_cli.main(["--data", str(weak), "--run-dir", str(runs / "pass1"), "--members", "1",
                           "--weights", "none", *MEMBER]) == 0
    pass1 = sorted((runs / "pass1").glob("member_*.keras"))
    assert [p.name for p in pass1] == ["member_0.keras"]

    # 3. Pass-2 set without a window: thresholds reject the obvious, a contact sheet the rest.
    reviewed, sheets = tmp_path / "review", tmp_path / "sheets"
    source = weak / "building"
    assert review.main([str(source), str(reviewed), "--auto-reject", AUTO_REJECT, "--sheet", str(sheets)]) == 0
    assert _fill_sheet(sheets / "sheet.csv", truth) > 0
    assert review.main([str(source), str(reviewed), "--apply-sheet", str(sheets / "sheet.csv"),
                        "--sheet", str(sheets)]) == 0
    record = pd.read_csv(reviewed / "review.csv", dtype=str, keep_default_na=False)
    photos = sorted(p.stem for p in source.iterdir())
    assert sorted(Path(p).stem for p in record["path"]) == photos  # each photo decided once
    record["truth"] = [int(by_id.loc[Path(p).stem, "suitable"]) for p in record["path"]]
    auto = record[record["by"] == "auto"]
    assert len(auto) > 0 and set(record["by"]) == {"auto", "sheet"}
    assert (auto["decision"] == "unsuitable").all() and (auto["truth"] == 0).all()  # no clean façade
    dark = by_id.loc[photos][by_id.loc[photos, "kind"] == "dark"].index
    assert len(dark) > 0 and set(dark) <= {Path(p).stem for p in auto["path"]}
    assert ((record["decision"] == "suitable") == (record["truth"] == 1)).all()
    for name in ("suitable", "unsuitable"):
        files = sorted(p.name for p in (reviewed / name).iterdir())
        assert files == sorted(record.loc[record["decision"] == name, "file"])

    # 4. A pass-2 member on the reviewed set, from pass 1's base so that all share one trunk.
    assert train_cli.main(["--data", str(reviewed), "--run-dir", str(runs / "pass2"), "--members", "1",
                           "--weights", str(runs / "pass1" / "base_init.weights.h5"), *MEMBER]) == 0
    info2 = json.loads((runs / "pass2" / "member_0.json").read_text())
    assert info2["positive_class"] == "suitable"
    assert info2["train_counts"]["suitable"] + info2["validation_counts"]["suitable"] == \
        int((record["decision"] == "suitable").sum())

    # 5. The curation of the held-out shards, both passes, through the shared-trunk engine.
    curated = tmp_path / "curated"
    held_out = [_shard(gldv2, s) for s in HELD_OUT_SHARDS]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert classify.main([*held_out, "--pass1", str(runs / "pass1"), "--pass2", str(runs / "pass2"),
                              "--output", str(curated), "--threshold", str(THRESHOLD), "--quiet"]) == 0
    assert "ensemble of 2: 1 shared trunk(s) feeding 2 members, 0 members run whole" in caplog.text

    frame = read_manifest(curated / "manifest.csv")
    members = {}
    for shard in held_out:
        with tarfile.open(shard) as archive:
            members.update({f"{shard}/{m.name}": archive.extractfile(m).read()
                            for m in archive.getmembers() if m.isfile()})
    assert len(frame) == len(members) and sorted(frame["path"]) == sorted(members)  # one row per input
    assert list(frame.columns[4:]) == ["pass1_0", "pass2_0"]
    assert set(frame["status"]) <= {"kept", "rejected_pass1", "rejected_pass2"}
    scores1 = frame[["pass1_0"]].to_numpy()
    assert np.isfinite(scores1).all() and ((scores1 >= 0) & (scores1 <= 1)).all()
    passed = (scores1 > THRESHOLD).all(axis=1)
    assert (passed == frame["status"].isin(["kept", "rejected_pass2"])).all()
    scores2 = frame["pass2_0"].to_numpy()
    assert np.isnan(scores2[~passed]).all()  # pass 2 runs on pass 1's survivors only
    assert ((scores2[passed] >= 0) & (scores2[passed] <= 1)).all()
    kept = frame[frame["status"] == "kept"]
    assert (kept["pass2_0"] > THRESHOLD).all()
    assert sorted(p.name for p in curated.iterdir()) == sorted([*kept["output"], "manifest.csv", "manifest.json"])
    for row in kept.itertuples():
        assert (curated / row.output).read_bytes() == members[row.path]

    # The manifest names exactly the trained member files.
    settings = json.loads((curated / "manifest.json").read_text())["settings"]
    files = [*pass1, runs / "pass2" / "member_0.keras"]
    assert settings["pass1_members"] + settings["pass2_members"] == [str(p) for p in files]
    assert settings["member_sha256"] == [_sha256(p) for p in files]
    assert settings["member_sha256"] == [json.loads(p.with_suffix(".json").read_text())["sha256"] for p in files]

    # What the members learnt: held-out façades are kept far more often than landscapes.
    frame["id"] = [Path(p).stem for p in frame["path"]]
    frame["kind"] = by_id.loc[frame["id"], "kind"].to_numpy()
    facades, landscapes = frame[frame["kind"] == "facade"], frame[frame["kind"] == "landscape"]
    assert facades[["pass1_0"]].to_numpy().mean() > landscapes[["pass1_0"]].to_numpy().mean()
    kept_facades = float((facades["status"] == "kept").mean())
    kept_landscapes = float((landscapes["status"] == "kept").mean())
    print(f"held out: kept {kept_facades:.2f} of {len(facades)} façades, {kept_landscapes:.2f} of "
          f"{len(landscapes)} landscapes")
    assert kept_facades > kept_landscapes + 0.2
