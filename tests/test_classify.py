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

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
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
