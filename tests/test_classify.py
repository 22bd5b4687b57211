"""classify.py: the two-pass rule, a complete manifest with bad files, tar shards, kill -9 + restart.

The members here are tiny hand-set models with known answers (pass 1: "is the photo
bright?", pass 2: "is it reddish?"), so every status is predictable; the real
DenseNet members are tested in test_transfer_model.py and end to end in
test_transfer_train.py.
"""

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transfer_learning import classify
from transfer_learning.classify import accept
from transfer_learning.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
KEPT_RGB, GREY_RGB, DARK_RGB = (0.95, 0.75, 0.75), (0.9, 0.9, 0.9), (0.2, 0.2, 0.2)


def colour_member(path: Path, weights, bias: float) -> str:
    """A member scoring sigmoid(weights · mean colour + bias)."""
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x))
    model.get_layer("score").set_weights([np.asarray(weights, np.float32).reshape(3, 1),
                                          np.asarray([bias], np.float32)])
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    bright = [colour_member(folder / f"bright_{i}.keras", [20 / 3] * 3, b)
              for i, b in enumerate((-10.0, -9.0, -11.0))]
    red = [colour_member(folder / f"red_{i}.keras", [20.0, -20.0, 0.0], b)
           for i, b in enumerate((0.0, -0.5))]
    return {"pass1": bright, "pass2": red}


def photo(rgb, seed=0, size=40) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-3, 4, (size, size + 8, 3))
    return Image.fromarray(np.clip(np.asarray(rgb) * 255 + noise, 0, 255).astype(np.uint8))


def write_photos(folder: Path, count: int) -> dict[str, str]:
    """count photos cycling kept / rejected at pass 2 / rejected at pass 1; name → expected status."""
    expected = {}
    kinds = [(KEPT_RGB, "kept"), (GREY_RGB, "rejected_pass2"), (DARK_RGB, "rejected_pass1")]
    for i in range(count):
        rgb, status = kinds[i % 3]
        name = f"sub{i % 4}/photo_{i:04d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        photo(rgb, seed=i).save(folder / name)
        expected[name] = status
    return expected


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad inputs; name → a word the manifest's reason must contain."""
    buffer = io.BytesIO()
    photo(KEPT_RGB).save(buffer, "JPEG")
    bad = {"zero.jpg": (b"", "empty"),
           "truncated.jpg": (buffer.getvalue()[: len(buffer.getvalue()) // 2], "corrupt"),
           "text.jpg": (b"this is not an image\n" * 20, "not an image"),
           "sub0/garbage.png": (bytes(range(256)) * 8, "not an image")}
    for name, (data, _) in bad.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return {name: word for name, (_, word) in bad.items()}


def argv_for(inputs, members, output, *extra):
    return [*map(str, inputs), "--pass1", *members["pass1"], "--pass2", *members["pass2"],
            "--output", str(output), "--quiet", *extra]


def python_path() -> str:
    """PYTHONPATH for a child process: this checkout first (not an installed copy of the project)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def relative(frame: pd.DataFrame, root) -> dict[str, dict]:
    root = str(root) + os.sep
    return {row["path"].replace(root, ""): row for row in frame.to_dict("records")}


def test_accept_rules():
    scores = np.array([[0.95, 0.95, 0.95], [0.95, 0.95, 0.5], [0.99, 0.99, 0.8], [0.5, 0.5, 0.99]])
    assert accept(scores, 0.9, "all").tolist() == [True, False, False, False]
    assert accept(scores, 0.9, "majority").tolist() == [True, True, True, False]
    assert accept(scores, 0.9, "mean").tolist() == [True, False, True, False]
    assert accept(np.array([[0.9]]), 0.9, "all").tolist() == [False]  # strictly above, as the original


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, members):
    """One run over good photos, bad files and a list naming a missing file and a duplicate."""
    base = tmp_path_factory.mktemp("mixed")
    photos = base / "photos"
    expected = write_photos(photos, 12)
    bad = write_bad_files(photos)
    listing = base / "more.txt"
    listing.write_text(f"missing/nowhere.png\n{photos / 'sub0/photo_0000.png'}\n")
    output = base / "curated"
    assert classify.main(argv_for([photos, listing], members, output, "--batch-size", "5")) == 0
    return base, photos, expected, bad, output


def test_two_pass_rule_and_a_complete_manifest_with_bad_files(mixed_run):
    base, photos, expected, bad, output = mixed_run
    frame = read_manifest(output / "manifest.csv")
    assert frame["path"].is_unique
    rows = relative(frame, photos)
    missing = str(base / "missing/nowhere.png")
    assert set(rows) == set(expected) | set(bad) | {missing}  # every input exactly once
    for name, status in expected.items():
        assert rows[name]["status"] == status, name
    for name, word in bad.items():
        assert rows[name]["status"] == "error" and word in rows[name]["reason"], (name, rows[name]["reason"])
    assert rows[missing]["status"] == "error" and "no such file" in rows[missing]["reason"]
    # Pass 2 ran on pass-1 survivors only; every member's score is recorded.
    for row in rows.values():
        if row["status"] in ("kept", "rejected_pass2"):
            assert min(row["pass1_0"], row["pass1_1"], row["pass1_2"]) > 0.9
            assert not np.isnan(row["pass2_0"]) and not np.isnan(row["pass2_1"])
        elif row["status"] == "rejected_pass1":
            assert row["pass1_0"] < 0.9 and np.isnan(row["pass2_0"]) and np.isnan(row["pass2_1"])
        else:
            assert np.isnan(row["pass1_0"])


def test_kept_images_are_copied_under_unique_names(mixed_run):
    base, photos, expected, bad, output = mixed_run
    rows = relative(read_manifest(output / "manifest.csv"), photos)
    kept = {name: row["output"] for name, row in rows.items() if row["status"] == "kept"}
    assert len(kept) == 4
    written = sorted(p.name for p in output.iterdir() if p.suffix == ".png")
    assert written == sorted(kept.values()) and len(set(written)) == len(written)
    for name, out in kept.items():
        assert (output / out).read_bytes() == (photos / name).read_bytes()  # a copy: the source stays
        assert out.startswith(Path(name).stem + "-")


def test_running_the_same_command_again_does_nothing_new(mixed_run, members):
    base, photos, expected, bad, output = mixed_run
    before = (output / "manifest.csv").read_bytes()
    listing = base / "more.txt"
    assert classify.main(argv_for([photos, listing], members, output, "--batch-size", "5")) == 0
    assert (output / "manifest.csv").read_bytes() == before


def test_restarting_with_other_settings_is_refused(mixed_run, members, capsys):
    base, photos, expected, bad, output = mixed_run
    code = classify.main(argv_for([photos], members, output, "--threshold", "0.5"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --manifest:") and "threshold" in err and "\n" not in err


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _encoded(rgb, seed, fmt="JPEG") -> bytes:
    buffer = io.BytesIO()
    photo(rgb, seed).save(buffer, fmt)
    return buffer.getvalue()


def test_gldv2_tar_shards_are_read_in_place(tmp_path, members):
    shards = tmp_path / "gldv2"
    shards.mkdir()
    contents = {"0/1/2/012aaa.jpg": (_encoded(KEPT_RGB, 1), "kept"),
                "0/1/2/012bbb.jpg": (_encoded(DARK_RGB, 2), "rejected_pass1"),
                "0/1/3/013ccc.jpg": (_encoded(GREY_RGB, 3), "rejected_pass2"),
                "0/1/3/013ddd.jpg": (b"\xff\xd8\xff broken", "error"),
                "0/1/3/013zzz.jpg": (b"", "error"),  # a zero-byte member: its row, and the stream goes on
                "0/1/3/013eee.png": (_encoded(KEPT_RGB, 4, "PNG"), "kept")}
    with tarfile.open(shards / "images_000.tar", "w") as tar:
        _tar_member(tar, "README.txt", b"not an image, not an input")
        for name, (data, _) in contents.items():
            _tar_member(tar, name, data)
    # A second shard whose download stopped in the middle of its last image.
    last = _encoded(KEPT_RGB, 5)
    with tarfile.open(shards / "images_001.tar", "w") as tar:
        _tar_member(tar, "1/2/3/123fff.jpg", _encoded(KEPT_RGB, 6))
        _tar_member(tar, "1/2/3/123ggg.jpg", last)
    whole = (shards / "images_001.tar").read_bytes()
    cut = whole.index(last) + len(last) // 2
    (shards / "images_001.tar").write_bytes(whole[:cut])
    output = tmp_path / "curated"
    assert classify.main(argv_for([shards], members, output, "--batch-size", "3")) == 0
    rows = relative(read_manifest(output / "manifest.csv"), shards)
    expected = {f"images_000.tar/{k}": s for k, (_, s) in contents.items()}
    expected |= {"images_001.tar/1/2/3/123fff.jpg": "kept", "images_001.tar/1/2/3/123ggg.jpg": "error",
                 "images_001.tar": "error"}  # the shard itself: its end is missing
    assert {k: r["status"] for k, r in rows.items()} == expected
    assert "the tar ends" in rows["images_001.tar/1/2/3/123ggg.jpg"]["reason"]
    assert rows["images_000.tar/0/1/3/013zzz.jpg"]["reason"] == "empty file"
    assert rows["images_000.tar/0/1/3/013ddd.jpg"]["reason"] == "corrupt or truncated: Invalid JPEG data, size 10"
    assert "truncated tar after 2 images" in rows["images_001.tar"]["reason"]
    # Kept images are written from the shard's bytes; nothing else was extracted.
    for key, row in rows.items():
        if row["status"] == "kept":
            member = key.split("/", 1)[1]  # images_00N.tar/<member>
            data = contents[member][0] if member in contents else _encoded(KEPT_RGB, 6)
            assert (output / row["output"]).read_bytes() == data
    on_disk = sorted(p.name for p in output.iterdir())
    assert on_disk == sorted([r["output"] for r in rows.values() if r["output"]]
                             + ["manifest.csv", "manifest.json"])
    assert sorted(p.name for p in shards.iterdir()) == ["images_000.tar", "images_001.tar"]


def test_link_and_none_modes(tmp_path, members):
    photos = tmp_path / "photos"
    expected = write_photos(photos, 6)
    linked = tmp_path / "linked"
    assert classify.main(argv_for([photos], members, linked, "--mode", "link")) == 0
    rows = relative(read_manifest(linked / "manifest.csv"), photos)
    kept = [(name, row["output"]) for name, row in rows.items() if row["status"] == "kept"]
    assert len(kept) == sum(s == "kept" for s in expected.values()) == 2
    for name, out in kept:
        assert os.stat(linked / out).st_ino == os.stat(photos / name).st_ino
    nothing = tmp_path / "nothing"
    assert classify.main(argv_for([photos], members, nothing, "--mode", "none", "--rule", "mean")) == 0
    assert sorted(p.name for p in nothing.iterdir()) == ["manifest.csv", "manifest.json"]
    assert read_manifest(nothing / "manifest.csv")["output"].eq("").all()


def test_shards_split_the_work_and_their_manifests_merge(tmp_path, members, capsys):
    photos = tmp_path / "photos"
    expected = write_photos(photos, 9)
    output = tmp_path / "curated"
    for index in (0, 1):
        argv = argv_for([photos], members, output, "--num-shards", "2", "--shard-index", str(index))
        assert classify.main(argv) == 0
    parts = sorted(output.glob("manifest-*.csv"))
    assert [p.name for p in parts] == ["manifest-00000-of-00002.csv", "manifest-00001-of-00002.csv"]
    first, second = (set(read_manifest(p)["path"]) for p in parts)
    assert first and second and not first & second
    merged = tmp_path / "all.csv"
    assert classify.main(["merge", "--out", str(merged), *map(str, parts)]) == 0
    rows = relative(read_manifest(merged), photos)
    assert {k: r["status"] for k, r in rows.items()} == expected
    assert classify.main(["merge", "--out", str(merged), str(parts[0]), str(parts[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "same input" in err and "\n" not in err


@pytest.mark.parametrize("case, flag", [
    ("missing input", "no such file or folder"),
    ("empty input", "no images to classify"),
    ("missing member", "no such member"),
    ("folder without members", "holds no member_*.keras"),
    ("bad threshold", "--threshold"),
    ("no members", "--pass1"),
])
def test_usage_errors_are_one_line_with_exit_code_2(case, flag, tmp_path, members, capsys):
    photos = tmp_path / "photos"
    write_photos(photos, 1)
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "out")
    argv = {
        "missing input": argv_for([tmp_path / "nope"], members, tmp_path / "out"),
        "empty input": argv_for([tmp_path / "empty"], members, tmp_path / "out"),
        "missing member": [str(photos), "--pass1", str(tmp_path / "gone.keras"), "--output", out],
        "folder without members": [str(photos), "--pass1", str(tmp_path / "empty"), "--output", out],
        "bad threshold": argv_for([photos], members, tmp_path / "out", "--threshold", "1.5"),
        "no members": [str(photos), "--output", out],
    }[case]
    code = classify.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and flag in err and "\n" not in err, err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def _data_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("mode, kill_after", [("copy", 20), ("move", 150)])
def test_killed_run_restarted_ends_like_an_uninterrupted_one(tmp_path, members, monkeypatch, mode, kill_after):
    count = 400
    for run in ("clean", "killed"):
        write_photos(tmp_path / run / "photos", count)
        write_bad_files(tmp_path / run / "photos")
    inputs = count + 4  # and the bad files
    argv = argv_for(["photos"], members, "out", "--batch-size", "2", "--mode", mode)
    monkeypatch.chdir(tmp_path / "clean")
    assert classify.main(argv) == 0

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": python_path()}
    manifest = tmp_path / "killed" / "out" / "manifest.csv"
    process = subprocess.Popen([sys.executable, str(ROOT / "transfer_learning" / "classify.py"), *argv],
                               cwd=tmp_path / "killed", env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while _data_rows(manifest) < kill_after:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no progress"
            time.sleep(0.003)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    at_kill = _data_rows(manifest)
    assert kill_after <= at_kill < inputs, at_kill

    monkeypatch.chdir(tmp_path / "killed")
    assert classify.main(argv) == 0
    def by_path(path, run):  # keys are canonical absolute paths: compare them within each run's folder
        frame = read_manifest(path)
        frame["path"] = frame["path"].str.replace(str(tmp_path / run) + os.sep, "", regex=False)
        return frame.set_index("path").sort_index()

    clean = by_path(tmp_path / "clean" / "out" / "manifest.csv", "clean")
    killed = by_path(manifest, "killed")
    assert len(killed) == inputs and killed.index.is_unique  # nothing lost, nothing twice
    assert killed.index.equals(clean.index)
    for column in ("status", "reason"):
        assert killed[column].equals(clean[column]), column
    scores = [c for c in clean.columns if c.startswith("pass")]
    np.testing.assert_allclose(killed[scores].to_numpy(), clean[scores].to_numpy(), atol=1e-5)
    outputs = {run: {p.name: p.read_bytes() for p in (tmp_path / run / "out").iterdir()
                     if p.name not in ("manifest.csv", "manifest.json")} for run in ("clean", "killed")}
    # Output names hash the photo's canonical path, so they differ between the two folders:
    # the same kept photos, byte for byte, each under the name its row gives, no leftovers.
    assert (killed["output"] == "").equals(clean["output"] == "")
    pairs = [(k, c) for k, c in zip(killed["output"], clean["output"]) if c]
    assert {k for k, _ in pairs} == set(outputs["killed"]) and {c for _, c in pairs} == set(outputs["clean"])
    assert all(outputs["killed"][k] == outputs["clean"][c] for k, c in pairs)
    assert len(outputs["clean"]) == (count + 2) // 3
    left = {run: sorted(str(p.relative_to(tmp_path / run)) for p in (tmp_path / run / "photos").rglob("*"))
            for run in ("clean", "killed")}
    assert left["killed"] == left["clean"]
    if mode == "move":  # kept sources moved away; everything else still in place
        assert len([p for p in left["clean"] if "photo_" in p]) == count - len(outputs["clean"])


def test_manifest_recovers_from_a_torn_last_line(tmp_path):
    from transfer_learning.manifest import Manifest

    path = tmp_path / "manifest.csv"
    columns = ["path", "status", "output", "reason", "pass1_0"]
    with Manifest(path, columns) as manifest:
        manifest.append([{"path": "a, with comma.jpg", "status": "kept", "output": "a-1.jpg", "reason": "",
                          "pass1_0": 0.95},
                         {"path": "b.jpg", "status": "error", "output": "", "reason": "empty file"}])
    whole = path.read_bytes()
    path.write_bytes(whole + b'c.jpg,rejected_pa')  # killed in the middle of a row
    with Manifest(path, columns) as manifest:
        assert manifest.done["path"].tolist() == ["a, with comma.jpg", "b.jpg"]
        assert path.read_bytes() == whole
        manifest.append([{"path": "c.jpg", "status": "rejected_pass1", "output": "", "reason": "",
                          "pass1_0": 0.1}])
    frame = read_manifest(path)
    assert frame["path"].tolist() == ["a, with comma.jpg", "b.jpg", "c.jpg"]
    assert frame["pass1_0"].tolist()[::2] == [0.95, 0.1] and np.isnan(frame["pass1_0"][1])
    with pytest.raises(Exception, match="columns"):
        Manifest(path, columns + ["pass2_0"]).open()


def test_mixed_bfloat16_run_makes_the_same_decisions(tmp_path, members):
    photos = tmp_path / "photos"
    expected = write_photos(photos, 6)
    output = tmp_path / "curated"
    assert classify.main(argv_for([photos], members, output, "--precision", "mixed_bfloat16")) == 0
    rows = relative(read_manifest(output / "manifest.csv"), photos)
    assert {k: r["status"] for k, r in rows.items()} == expected


# --------------------------------------------------------------------------- identity, output, settings

def test_the_output_folder_inside_the_input_is_never_read_as_input(tmp_path, members, monkeypatch):
    root = tmp_path / "photos"
    expected = write_photos(root, 9)
    monkeypatch.chdir(root)
    argv = [".", "--pass1", *members["pass1"], "--pass2", *members["pass2"], "--quiet"]  # output: ./curated
    assert classify.main(argv) == 0
    first = (root / "curated" / "manifest.csv").read_bytes()
    files = sorted(p.name for p in (root / "curated").iterdir())
    assert classify.main(argv) == 0 and classify.main(argv) == 0
    assert (root / "curated" / "manifest.csv").read_bytes() == first
    assert sorted(p.name for p in (root / "curated").iterdir()) == files
    assert len(read_manifest(root / "curated" / "manifest.csv")) == len(expected)


def test_one_photo_is_one_row_however_its_path_is_spelled(tmp_path, members, monkeypatch):
    photos = tmp_path / "photos"
    write_photos(photos, 6)
    (tmp_path / "lists").mkdir()
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out"
    spellings = [str(photos), "photos", os.path.join("lists", "..", "photos")]
    assert classify.main(argv_for(spellings, members, output)) == 0
    frame = read_manifest(output / "manifest.csv")
    assert len(frame) == 6 and frame["path"].is_unique
    # A restart with another spelling finds every photo done.
    assert classify.main(argv_for(["./photos"], members, output)) == 0
    assert len(read_manifest(output / "manifest.csv")) == 6


def test_a_shard_still_downloading_is_refused(tmp_path, members, capsys):
    part = tmp_path / "images_005.tar.part"
    with tarfile.open(part, "w") as tar:
        tar.add(__file__, arcname="x.jpg")
    assert classify.main(argv_for([part], members, tmp_path / "out")) == 2
    assert "still downloading" in capsys.readouterr().err


def test_scores_are_written_exactly(tmp_path):
    from transfer_learning.manifest import Manifest

    path = tmp_path / "manifest.csv"
    score = float(np.float32(0.9000004))
    with Manifest(path, ["path", "status", "output", "reason", "pass1_0"]) as manifest:
        manifest.append([{"path": "a.jpg", "status": "kept", "output": "a.jpg", "reason": "", "pass1_0": score}])
    assert np.float32(read_manifest(path)["pass1_0"][0]) == np.float32(score) > 0.9


def test_a_restart_with_another_precision_or_retrained_members_is_refused(tmp_path, members, capsys):
    photos, output = tmp_path / "photos", tmp_path / "out"
    write_photos(photos, 3)
    own = {k: [] for k in members}
    for k, paths in members.items():  # private copies: one is retrained below
        for p in paths:
            own[k].append(str(tmp_path / Path(p).name))
            (tmp_path / Path(p).name).write_bytes(Path(p).read_bytes())
    assert classify.main(argv_for([photos], own, output)) == 0
    assert classify.main(argv_for([photos], own, output, "--precision", "mixed_bfloat16")) == 2
    assert "precision" in capsys.readouterr().err
    colour_member(Path(own["pass1"][0]), [1.0, 1.0, 1.0], 0.0)  # retrained in place
    assert classify.main(argv_for([photos], own, output)) == 2
    assert "member_sha256" in capsys.readouterr().err


def test_a_member_files_digest_is_its_sha256_and_a_folders_covers_names_and_bytes(tmp_path):
    import hashlib

    member = tmp_path / "member_0.keras"
    member.write_bytes(b"weights")
    assert classify.file_digest(member) == hashlib.sha256(b"weights").hexdigest()  # as sha256sum and member_0.json
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"values")
    before = classify.file_digest(folder)
    (folder / "variables" / "v.data").rename(folder / "variables" / "w.data")
    assert classify.file_digest(folder) != before  # same bytes, another layout: another member


def test_scaled_decode_is_a_result_setting_and_older_manifests_decoded_in_full(tmp_path, members, capsys):
    import json

    photos, output = tmp_path / "photos", tmp_path / "out"
    write_photos(photos, 3)
    assert classify.main(argv_for([photos], members, output)) == 0
    assert classify.main(argv_for([photos], members, output, "--no-scaled-decode")) == 2
    assert "scaled_decode" in capsys.readouterr().err
    # A manifest from before the setting existed was decoded in full: it resumes only so.
    sidecar = output / "manifest.json"
    saved = json.loads(sidecar.read_text())
    del saved["settings"]["scaled_decode"]
    sidecar.write_text(json.dumps(saved))
    assert classify.main(argv_for([photos], members, output)) == 2
    assert "scaled_decode" in capsys.readouterr().err
    assert classify.main(argv_for([photos], members, output, "--no-scaled-decode")) == 0


def _png_declaring(width: int, height: int) -> bytes:
    """A few-byte PNG whose header declares width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_a_decompression_bomb_and_an_oversized_member_become_error_rows(tmp_path, members):
    photos = tmp_path / "photos"
    expected = write_photos(photos, 3)
    (photos / "bomb.png").write_bytes(_png_declaring(40_000, 40_000))
    (photos / "wide.png").write_bytes(_png_declaring(20_000, 100))  # 2 M pixels: over the cap below
    shard = tmp_path / "images_000.tar"
    big = io.BytesIO()
    photo(KEPT_RGB, size=300).save(big, "PNG")
    with tarfile.open(shard, "w") as tar:
        for name, data in [("a/small.png", (photos / "sub0" / "photo_0000.png").read_bytes()),
                           ("a/big.png", big.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    output = tmp_path / "out"
    limit = str(len(big.getvalue()) - 1)
    assert classify.main(argv_for([photos, shard], members, output, "--max-image-bytes", limit,
                                  "--max-image-pixels", "1000000")) == 0
    rows = {Path(r["path"]).name: r for r in read_manifest(output / "manifest.csv").to_dict("records")}
    assert rows["bomb.png"]["status"] == "error" and "pixels" in rows["bomb.png"]["reason"]
    assert rows["wide.png"]["status"] == "error" and "20000 x 100" in rows["wide.png"]["reason"]
    assert rows["big.png"]["status"] == "error" and "too large" in rows["big.png"]["reason"]
    assert rows["small.png"]["status"] == "kept"
    assert len(rows) == len(expected) + 4


def test_the_pixel_check_reads_the_bytes_given_or_the_file(tmp_path):
    from transfer_learning.reader import too_many_pixels
    from transfer_learning.sources import Item

    bomb = _png_declaring(40_000, 40_000)
    (tmp_path / "bomb.png").write_bytes(bomb)
    on_disk = Item(key="k", name="n", path=str(tmp_path / "bomb.png"))
    in_tar = Item(key="t", name="t", tar=str(tmp_path / "x.tar"), member="m.png")
    assert "pixels" in too_many_pixels(on_disk, b"", 1000)  # the file's header
    assert "pixels" in too_many_pixels(in_tar, bomb, 1000)  # the bytes'
    assert too_many_pixels(in_tar, b"", 1000) is None  # an empty member: the decoder names it
    assert too_many_pixels(in_tar, b"not an image", 1000) is None
    with pytest.raises(FileNotFoundError):  # a file that cannot be read: the caller reads it again
        too_many_pixels(Item(key="g", name="g", path=str(tmp_path / "gone.png")), b"", 1000)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header declares width x height pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    photo(KEPT_RGB).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _over_the_limit() -> dict[str, bytes]:
    """Decodable 1100 x 1000 images (over a 1 M pixel limit): a JPEG and a PNG, then the
    same with a quirk PIL refuses and TensorFlow's decoders accept (a stray FF01 marker;
    an ancillary chunk with a bad CRC)."""
    flat = photo(KEPT_RGB, size=1)
    jpeg, png = io.BytesIO(), io.BytesIO()
    flat.resize((1100, 1000)).save(jpeg, "JPEG")
    flat.resize((1100, 1000)).save(png, "PNG")
    jpeg, png = jpeg.getvalue(), png.getvalue()
    return {"jpeg": jpeg, "png": png, "jpeg_quirk": jpeg[:2] + b"\xff\x01" + jpeg[2:],
            "png_quirk": png[:33] + (3).to_bytes(4, "big") + b"tEXtk\x00v" + bytes(4) + png[33:]}


def test_images_over_the_pixel_limit_are_refused_even_where_pil_cannot_read_them(tmp_path):
    import tensorflow as tf
    from transfer_learning.reader import read_alone, too_many_pixels
    from transfer_learning.sources import Item

    for name, data in _over_the_limit().items():
        assert tf.io.decode_image(data).shape == (1000, 1100, 3)  # each would decode
        if "quirk" in name:
            with pytest.raises(Image.UnidentifiedImageError):
                Image.open(io.BytesIO(data))
        for file in (f"{name}.{name[:3]}", f"{name}.gif"):  # a true name, and a misleading one
            (tmp_path / file).write_bytes(data)
            item = Item(key=file, name=file, path=str(tmp_path / file))
            assert "1100 x 1000 declared" in too_many_pixels(item, b"", 1_000_000), file
            assert too_many_pixels(item, b"", 1_100_000) is None, file
            batch = read_alone(item, 16, max_pixels=1_000_000, scaled=True)
            assert not batch.items and "1100 x 1000 declared" in batch.errors[0][2], file
    tar = Item(key="t", name="t", tar=str(tmp_path / "x.tar"), member="m.gif")
    assert "cannot read its header" in too_many_pixels(tar, b"GIF89a" + bytes(40), 10**8)
    assert too_many_pixels(tar, b"RIFF" + bytes(4) + b"WAVEfmt " + bytes(20), 10**8) is None  # not an image
    with pytest.raises(ValueError, match="max_pixels"):
        read_alone(tar, 16, max_pixels=0)


@pytest.mark.parametrize("scaled", [False, True])
def test_jpeg_and_png_headers_are_checked_in_the_graph_and_python_opens_only_the_rest(
        tmp_path, monkeypatch, scaled):
    from transfer_learning import reader
    from transfer_learning.sources import list_items

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        photo(KEPT_RGB, seed=i).save(photos / f"a{i}.{'JPEG' if i == 4 else 'jpg'}", "JPEG")
    photo(KEPT_RGB).save(photos / "b.png", "PNG")
    photo(KEPT_RGB).save(photos / "c.gif", "GIF")  # a format the graph cannot check: Python does
    photo(KEPT_RGB).save(photos / "d.jpg", "GIF")  # named as a JPEG: fails the graph's check
    (photos / "e.jpg").write_bytes(_jpeg_declaring(60_000, 60_000))
    (photos / "f.png").write_bytes(_png_declaring(40_000, 40_000))
    over = _over_the_limit()  # decodable, over the limit; PIL refuses the quirky ones
    for name, key in (("g.png", "png"), ("h.jpg", "jpeg"), ("i.png", "png_quirk"), ("j.jpg", "jpeg_quirk"),
                      ("k.gif", "png_quirk"), ("l.webp", "jpeg_quirk")):
        (photos / name).write_bytes(over[key])
    opened = []
    check = reader.too_many_pixels
    monkeypatch.setattr(reader, "too_many_pixels", lambda item, *a: opened.append(item.name) or check(item, *a))
    items = list_items([str(photos)])
    names = [Path(i.path).name for i in items]
    batches = list(reader.read_batches(items, 16, batch_size=3, max_pixels=1_000_000, scaled=scaled))

    decoded = sorted(Path(item.path).name for b in batches for item in b.items)
    errors = {Path(item.path).name: reason for b in batches for _, item, reason in b.errors}
    refused = {"e.jpg", "f.png", "g.png", "h.jpg", "i.png", "j.jpg", "k.gif", "l.webp"}
    assert decoded == sorted(set(names) - refused)
    assert set(errors) == refused
    assert all(reason.startswith("too many pixels") for reason in errors.values()), errors
    assert all(b.images.shape[1:] == (16, 16, 3) for b in batches)
    # Python read the headers of the names the graph does not check, then of every input
    # of the chunks (of 3) the graph refused; never a good JPEG's in another chunk.
    chunks = {k // 3 for k, name in enumerate(names) if name in refused - {"k.gif", "l.webp"} | {"d.jpg"}}
    expected = {name for k, name in enumerate(names) if k // 3 in chunks} | {"c.gif", "k.gif", "l.webp"}
    assert set(opened) == expected
    assert not {f"a{i}.jpg" for i in range(9)} & expected


def test_links_in_a_tar_and_names_that_are_not_utf8_get_rows(tmp_path, members):
    photos = tmp_path / "photos"
    write_photos(photos, 3)
    good = (photos / "sub0" / "photo_0000.png").read_bytes()
    with open(os.path.join(os.fsencode(photos), b"caf\xe9.png"), "wb") as f:  # a Latin-1 file name
        f.write(good)
    shard = tmp_path / "images_001.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("a/real.png")
        info.size = len(good)
        tar.addfile(info, io.BytesIO(good))
        link = tarfile.TarInfo("a/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "a/real.png"
        tar.addfile(link)
    output = tmp_path / "out"
    assert classify.main(argv_for([photos, shard], members, output)) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_manifest(output / "manifest.csv").to_dict("records")}
    assert rows["link.png"]["status"] == "error" and "symbolic link" in rows["link.png"]["reason"]
    assert rows["real.png"]["status"] == "kept"
    assert rows["caf\\xe9.png"]["status"] == "kept"  # classified like any photo, its name escaped
    assert len(rows) == 3 + 1 + 2


# --------------------------------------------------------------------------- transient read errors

def _flaky_open(monkeypatch, fail: dict[str, tuple[int, int]]):
    """Make `sources.open` fail on files whose name contains a key: (errno, times; -1 = always)."""
    from transfer_learning import sources

    calls: dict[str, int] = {}

    def fake(path, mode="r", *args, **kwargs):
        for word, (code, times) in fail.items():
            if word in os.fspath(path):
                calls[word] = calls.get(word, 0) + 1
                if times < 0 or calls[word] <= times:
                    raise OSError(code, os.strerror(code), os.fspath(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(sources, "open", fake, raising=False)
    waits: list[float] = []
    monkeypatch.setattr(sources, "_pause", waits.append)
    return calls, waits


def test_a_transient_read_error_is_retried_with_backoff_a_permanent_one_is_not(tmp_path, monkeypatch):
    import errno

    from transfer_learning.sources import Item, ItemReader, transient

    for name in ("flaky.jpg", "dead.jpg", "denied.jpg"):
        (tmp_path / name).write_bytes(b"bytes of " + name.encode())
    calls, waits = _flaky_open(monkeypatch, {"flaky": (errno.EIO, 2), "dead": (errno.ETIMEDOUT, -1),
                                             "denied": (errno.EACCES, -1)})
    reader = ItemReader(retries=3)
    item = lambda name: Item(key=name, name=name, path=str(tmp_path / name))  # noqa: E731
    assert reader.read(item("flaky.jpg")) == b"bytes of flaky.jpg"
    assert calls["flaky"] == 3 and waits == [0.1, 0.4]
    waits.clear()
    with pytest.raises(OSError, match=r"\(4 attempts\)") as caught:
        reader.read(item("dead.jpg"))
    assert caught.value.errno == errno.ETIMEDOUT and calls["dead"] == 4
    assert waits == pytest.approx([0.1, 0.4, 1.6])
    waits.clear()
    with pytest.raises(PermissionError):  # permanent: one attempt, no wait
        reader.read(item("denied.jpg"))
    with pytest.raises(FileNotFoundError):
        reader.read(item("missing.jpg"))
    with pytest.raises(IsADirectoryError):
        reader.read(Item(key="d", name="d", path=str(tmp_path)))
    assert calls["denied"] == 1 and waits == []
    assert transient(OSError(errno.EAGAIN, "")) and transient(TimeoutError(errno.ETIMEDOUT, ""))
    assert not transient(OSError(errno.ENOENT, "")) and not transient(OSError("the tar ends 3 bytes early"))
    assert not transient(ValueError("decode"))


def test_transient_read_errors_in_a_run_are_retried_then_scored_or_recorded(tmp_path, members, monkeypatch):
    """Plain files (read by tf.data, then again in Python when that fails) and tar members
    (read in Python): failing twice then reading is scored; failing always, an error row."""
    import errno

    import tensorflow as tf

    photos = tmp_path / "photos"
    expected = write_photos(photos, 6)
    for name in ("flaky_a.png", "dead_a.png"):
        photo(KEPT_RGB, seed=7).save(photos / name)
    shard = tmp_path / "images_000.tar"
    with tarfile.open(shard, "w") as tar:
        _tar_member(tar, "a/b/c/inside.png", _encoded(KEPT_RGB, 8, "PNG"))
    # tf.data's own read fails for the flaky and dead files: they drop out of the pipeline
    # and are read again in Python, where `open` fails as the table says.
    real_read = tf.io.read_file

    def failing_read(filename, name=None):
        bad = tf.strings.regex_full_match(filename, ".*(flaky|dead).*")
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(bad), ["simulated EIO"])]):
            return real_read(filename)

    monkeypatch.setattr(tf.io, "read_file", failing_read)
    calls, waits = _flaky_open(monkeypatch, {"flaky_a": (errno.EIO, 2), "dead_a": (errno.EIO, -1),
                                             "images_000.tar": (errno.ESTALE, 1)})
    output = tmp_path / "out"
    assert classify.main(argv_for([photos, shard], members, output, "--batch-size", "4")) == 0
    rows = {Path(r["path"]).name: r for r in read_manifest(output / "manifest.csv").to_dict("records")}
    assert rows["flaky_a.png"]["status"] == "kept" and rows["inside.png"]["status"] == "kept"
    assert rows["dead_a.png"]["status"] == "error"
    assert "Input/output error (4 attempts)" in rows["dead_a.png"]["reason"], rows["dead_a.png"]["reason"]
    assert {Path(k).name: rows[Path(k).name]["status"] for k in expected} == {Path(k).name: s for k, s in expected.items()}
    assert calls == {"flaky_a": 3, "dead_a": 4, "images_000.tar": 2}
    assert sorted(waits) == sorted([0.1, 0.4] + [0.1, 0.4, 1.6] + [0.1])
    # --read-retries 0: the first failure is final.
    calls.clear()
    output = tmp_path / "out0"
    assert classify.main(argv_for([photos], members, output, "--read-retries", "0")) == 0
    rows = {Path(r["path"]).name: r for r in read_manifest(output / "manifest.csv").to_dict("records")}
    assert rows["flaky_a.png"]["status"] == "error" and calls["flaky_a"] == 1
    assert "attempts" not in rows["flaky_a.png"]["reason"]


# --------------------------------------------------------------------------- a process that dies on an input

def test_the_inflight_marker_names_the_suspects_and_the_input_that_died_alone(tmp_path, caplog):
    from transfer_learning.inflight import InFlight, marker_path

    path = marker_path(tmp_path / "manifest-00001-of-00002.csv")
    assert path.name == "manifest-00001-of-00002.inflight.json"
    marker = InFlight(path)
    leftover = tmp_path / f"tmp-12345-{path.name}"  # a process killed while writing the marker
    leftover.write_text('{"pid": 12345, "alone": "", "ke')
    assert marker.left(set()) == ([], "") and not leftover.exists()
    marker.mark(["a", "b", "c"])
    assert json_of(path) == {"pid": os.getpid(), "alone": "", "keys": ["a", "b", "c"]}
    assert InFlight(path).left({"a"}) == (["b", "c"], "")  # a has its row: not a suspect
    marker.mark(["b", "c"], alone="b")
    assert InFlight(path).left({"a"}) == (["c"], "b")
    assert InFlight(path).left({"b"}) == (["c"], "")  # b got its row after all
    marker.interrupted()  # an exception while b was alone is not b's fault
    assert InFlight(path).left(set()) == (["b", "c"], "")
    marker.interrupted()  # an exception in the batch phase: nothing to retry alone
    assert not path.exists()
    path.write_text("{not json")
    assert InFlight(path).left(set()) == ([], "") and "unreadable in-flight marker" in caplog.text


def json_of(path):
    import json

    return json.loads(Path(path).read_text())


def _spy_reads(monkeypatch, marker_file):
    """Record which keys classify reads alone (with the marker's `alone` then) and in batches."""
    from transfer_learning import reader

    alone, batched = [], []
    real_alone, real_batches = reader.read_alone, reader.read_batches

    def read_alone(item, **kwargs):
        alone.append((item.key, json_of(marker_file)["alone"]))
        return real_alone(item, **kwargs)

    def read_batches(items, **kwargs):
        batched.extend(it.key for it in items)
        yield from real_batches(items, **kwargs)

    monkeypatch.setattr(reader, "read_alone", read_alone)
    monkeypatch.setattr(reader, "read_batches", read_batches)
    return alone, batched


def test_a_restart_reads_what_a_dead_process_had_in_flight_alone_first(tmp_path, members, monkeypatch):
    from transfer_learning.inflight import DIED, InFlight

    photos, output = tmp_path / "photos", tmp_path / "out"
    expected = write_photos(photos, 9)
    keys = {name: os.path.realpath(photos / name) for name in expected}
    names = sorted(expected)
    # As a process killed in the middle of a batch leaves it: three keys in flight, one with a row.
    output.mkdir()
    marker_file = output / "manifest.inflight.json"
    InFlight(marker_file).mark([keys[n] for n in names[2:5]])
    alone, batched = _spy_reads(monkeypatch, marker_file)
    assert classify.main(argv_for([photos], members, output, "--batch-size", "4")) == 0
    assert alone == [(keys[n], keys[n]) for n in names[2:5]]  # one at a time, each marked alone
    assert sorted(batched) == sorted(keys[n] for n in names[:2] + names[5:])
    rows = relative(read_manifest(output / "manifest.csv"), photos)
    assert {k: r["status"] for k, r in rows.items()} == expected
    assert not marker_file.exists()  # a finished run leaves no marker

    # The process died again on names[6] while reading it alone: an error row, never read again.
    output = tmp_path / "out2"
    output.mkdir()
    marker_file = output / "manifest.inflight.json"
    InFlight(marker_file).mark([keys[n] for n in names[6:9]], alone=keys[names[6]])
    monkeypatch.undo()
    alone, batched = _spy_reads(monkeypatch, marker_file)
    assert classify.main(argv_for([photos], members, output, "--batch-size", "4")) == 0
    assert [k for k, _ in alone] == [keys[n] for n in names[7:9]]
    assert keys[names[6]] not in batched and len(batched) == 6
    rows = relative(read_manifest(output / "manifest.csv"), photos)
    assert rows[names[6]]["status"] == "error" and rows[names[6]]["reason"] == DIED
    assert {k: r["status"] for k, r in rows.items() if k != names[6]} == \
        {k: s for k, s in expected.items() if k != names[6]}


def test_sigterm_while_an_input_is_read_alone_blames_no_input(tmp_path, members, monkeypatch):
    from transfer_learning import reader
    from transfer_learning.inflight import InFlight

    photos, output = tmp_path / "photos", tmp_path / "out"
    expected = write_photos(photos, 4)
    keys = sorted(os.path.realpath(photos / name) for name in expected)
    output.mkdir()
    marker_file = output / "manifest.inflight.json"
    InFlight(marker_file).mark(keys[:2])

    def terminated(item, **kwargs):  # a job scheduler stops the run while keys[0] is alone
        assert json_of(marker_file)["alone"] == item.key
        assert signal.getsignal(signal.SIGTERM) is classify._exit_on_sigterm  # else this would end pytest
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here

    monkeypatch.setattr(reader, "read_alone", terminated)
    with pytest.raises(SystemExit) as stopped:
        classify.main(argv_for([photos], members, output))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert json_of(marker_file)["alone"] == "" and json_of(marker_file)["keys"] == keys[:2]
    monkeypatch.undo()
    assert classify.main(argv_for([photos], members, output)) == 0
    assert {k: r["status"] for k, r in relative(read_manifest(output / "manifest.csv"), photos).items()} == expected


POISONED_RUN = """
import os, signal, sys
import numpy as np
import tensorflow as tf
from transfer_learning import classify, reader

real = reader.decode_and_resize

def poisoned(data, *args, **kwargs):  # a decoder that kills the process on one input
    def check(encoded):  # bytes in a graph, a 0-d object array when eager
        if b"POISON" in (encoded.item() if isinstance(encoded, np.ndarray) else encoded):
            os.kill(os.getpid(), signal.SIGKILL)
        return np.int64(0)
    with tf.control_dependencies([tf.numpy_function(check, [data], tf.int64)]):
        data = tf.identity(data)
    return real(data, *args, **kwargs)

reader.decode_and_resize = poisoned
sys.exit(classify.main(sys.argv[1:]))
"""


def _run_python(code: str, args, cwd) -> int:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": python_path()}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode


@pytest.mark.slow  # two Python processes started (and killed): ~20 s here
def test_an_input_the_process_dies_on_ends_as_an_error_row_and_the_others_are_scored(tmp_path, members):
    from PIL import PngImagePlugin

    from transfer_learning.inflight import DIED

    photos, output = tmp_path / "photos", tmp_path / "out"
    expected = write_photos(photos, 8)
    text = PngImagePlugin.PngInfo()
    text.add_text("note", "POISON")
    photo(KEPT_RGB, seed=99).save(photos / "sub1" / "photo_0004b.png", pnginfo=text)  # sorts mid-way
    argv = argv_for([photos], members, output, "--batch-size", "2")
    assert _run_python(POISONED_RUN, argv, tmp_path) == -signal.SIGKILL  # dies in a batch
    first = json_of(output / "manifest.inflight.json")
    poison = os.path.realpath(photos / "sub1" / "photo_0004b.png")
    assert poison in first["keys"] and first["alone"] == ""
    assert _run_python(POISONED_RUN, argv, tmp_path) == -signal.SIGKILL  # dies again, alone
    assert json_of(output / "manifest.inflight.json")["alone"] == poison
    assert classify.main(argv) == 0  # here, without the poisoned decoder: it must not read it again
    rows = relative(read_manifest(output / "manifest.csv"), photos)
    assert rows.pop("sub1/photo_0004b.png")["reason"] == DIED
    assert {k: r["status"] for k, r in rows.items()} == expected  # every batch-mate scored
    assert not (output / "manifest.inflight.json").exists()


# --------------------------------------------------------------------------- the engine: trunk reuse, scaled decode

def conv_members(size: int, count: int, seed: int = 0) -> list:
    """Random conv nets with one trunk (bit for bit) up to a layer named like DenseNet's
    split layer, and each its own random tail and head: a tiny shared-trunk ensemble."""
    from transfer_learning.member import SPLIT_LAYER

    rng = np.random.default_rng(seed)
    members = []
    for i in range(count):
        def init(k, member=0):  # the trunk's (and so its configuration) the same in every member
            return keras.initializers.HeNormal(seed=seed * 100 + member * 10 + k)

        inputs = keras.Input((size, size, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1", kernel_initializer=init(1))(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2", kernel_initializer=init(2))(x)
        x = keras.layers.AveragePooling2D(2, name=SPLIT_LAYER)(x)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="tail",
                                kernel_initializer=init(3, i))(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x), name=f"m{i}")
        kernel, bias = model.get_layer("score").get_weights()
        model.get_layer("score").set_weights([rng.normal(0, 30 / np.sqrt(16), kernel.shape), bias - 1.0])
        members.append(model)
    return members


def test_pass_2_scores_the_survivors_from_the_trunk_features_pass_1_computed():
    import tensorflow as tf

    from transfer_learning.ensemble import Ensemble

    members = conv_members(32, 4)
    ensemble = Ensemble(members)
    assert ensemble.shared and len(ensemble.sources) == 1
    images = np.random.default_rng(1).random((8, 32, 32, 3)).astype(np.float32)
    whole = np.concatenate([m(images, training=False).numpy() for m in members], axis=1)
    threshold = float(np.sort(whole[:, :2].min(axis=1))[3:5].mean())  # 4 of 8 survive pass 1
    trunk, seen = ensemble.sources[0].trunk, tf.Variable(0, dtype=tf.int64)

    class Counted:  # the trunk, counting the images it runs on
        outputs = trunk.outputs

        def __call__(self, x, training=False):
            seen.assign_add(tf.shape(x, out_type=tf.int64)[0])
            return trunk(x, training=training)

    ensemble.sources[0].trunk = Counted()
    scores1, scores2, passed, kept = classify.decide(ensemble, tf.constant(images), [0, 1], [2, 3],
                                                     threshold, "all")
    assert passed.sum() == 4 and int(seen.numpy()) == 8  # the trunk ran once per image, not 8 + 4
    np.testing.assert_allclose(scores1, whole[:, :2], atol=1e-5)
    np.testing.assert_allclose(scores2[passed], whole[passed, 2:], atol=1e-5)
    assert np.isnan(scores2[~passed]).all()


def test_a_chunk_with_a_bad_input_still_gives_every_good_input_its_own_image(tmp_path):
    """The reader decodes a chunk of `batch_size` inputs per call and drops a chunk that fails:
    the good inputs beside a corrupt one come back with the images a clean read gives them,
    each once, in order, the corrupt one as an error at its position."""
    from transfer_learning.reader import read_batches
    from transfer_learning.sources import list_items

    clean, mixed = tmp_path / "clean", tmp_path / "mixed"
    for folder in (clean, mixed):
        folder.mkdir()
        for i in range(10):
            photo(KEPT_RGB if i % 2 else GREY_RGB, seed=i).save(folder / f"p{i:02d}.png")
    (mixed / "p04.png").write_bytes((mixed / "p04.png").read_bytes()[:60])  # truncated
    (mixed / "p09.png").write_bytes(b"not an image at all" * 10)  # the last chunk's last input
    good = {i: b for b in read_batches(list_items([str(clean)]), 16, "stretch", 4)
            for i, b in zip(b.positions, b.images.numpy())}
    batches = list(read_batches(list_items([str(mixed)]), 16, "stretch", 4))
    images = {p: image for b in batches for p, image in zip(b.positions, b.images.numpy())}
    errors = {p: reason for b in batches for p, _, reason in b.errors}
    assert sorted(images) == [0, 1, 2, 3, 5, 6, 7, 8] and sorted(errors) == [4, 9]
    assert sum(len(b.items) + len(b.errors) for b in batches) == 10  # each input exactly once
    assert "corrupt" in errors[4] and "not an image" in errors[9]
    for position, image in images.items():
        np.testing.assert_array_equal(image, good[position])
    assert all(b.data[k] == (mixed / b.items[k].path.split("/")[-1]).read_bytes()
               for b in batches for k in range(len(b.items)))


@pytest.mark.parametrize("size, scale", [(64, 8), (160, 2)])
def test_scaled_decode_keeps_scores_within_the_bf16_tolerance(tmp_path, size, scale):
    """A random-weight ensemble on 800x600 JPEGs, decoded at 1/scale vs in full: scores within
    2e-2, the tolerance the engine's bf16 scores have against fp32 (test_transfer_model.py)."""
    from data.pipeline import jpeg_scale
    from transfer_learning.ensemble import Ensemble
    from transfer_learning.reader import read_batches
    from transfer_learning.sources import list_items

    assert jpeg_scale(600, 800, size) == scale
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:600, 0:800]
    for i in range(6):
        phase = rng.random(3) * 6.28
        image = np.stack([127 + 100 * np.sin(xx / (30 + 15 * c + 5 * i) + yy / (50 + 10 * i) + phase[c])
                          for c in range(3)], -1) + rng.normal(0, 8, (600, 800, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / f"p{i}.jpg", quality=90)
    items = list_items([str(tmp_path)])
    ensemble = Ensemble(conv_members(size, 3, seed=size))
    scores = {}
    for scaled in (False, True):
        images = np.concatenate([b.images.numpy() for b in read_batches(items, size, "stretch", 4, scaled=scaled)])
        scores[scaled] = ensemble(images)
    assert scores[False].std() > 0.05  # the scores vary: the comparison means something
    difference = np.abs(scores[True] - scores[False])
    assert 0 < difference.max() <= 2e-2, difference.max()  # measured: 7e-6 (antialiased, 160 px) and 4e-3 (bilinear, 64 px)
