"""Soak: a curation of GLDv2-like shards, killed with SIGKILL at five random moments and
restarted each time, ends with the manifest and files of a run that was never killed.

The inputs are 10 tar shards of 640-800 px JPEGs with bad members mixed in (truncated,
not an image, zero bytes) plus an extracted folder of loose JPEGs (the only inputs a
move can move). The members are test_classify.py's hand-set colour members, so every
status is known and the time goes to reading, decoding, writing and restarting.
"""

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_classify import (DARK_RGB, GREY_RGB, KEPT_RGB, ROOT, _data_rows, argv_for, json_of,  # noqa: F401
                           members, python_path)
from transfer_learning import classify
from transfer_learning.manifest import read_manifest

pytestmark = pytest.mark.slow

SHARDS, PER_SHARD, LOOSE = 10, 4, 8
KILLS = 5


def _jpeg(rgb, width: int, seed: int) -> bytes:
    """A GLDv2-sized photo of one colour (what the members score) with texture and noise."""
    rng = np.random.default_rng(seed)
    height = width * 3 // 4
    shade = np.linspace(-0.04, 0.04, width)[None, :, None]
    image = np.asarray(rgb)[None, None, :] + shade + rng.normal(0, 0.02, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_gldv2_like(root: Path) -> dict[str, str]:
    """The inputs under `root` (the same bytes every time); their names → expected status."""
    kinds = [(KEPT_RGB, "kept"), (GREY_RGB, "rejected_pass2"), (DARK_RGB, "rejected_pass1")]
    rng = random.Random(0)
    expected, seed = {}, 0
    good = _jpeg(KEPT_RGB, 640, 0)
    bad = [("truncated", good[: len(good) // 2]), ("text", b"<html>not an image</html>\n" * 8), ("zero", b"")]
    shards = root / "gldv2"
    shards.mkdir(parents=True)
    for s in range(SHARDS):
        with tarfile.open(shards / f"images_{s:03d}.tar", "w") as tar:
            members_ = []
            for k in range(PER_SHARD):
                rgb, status = kinds[seed % 3]
                members_.append((f"{s}/{k}/{seed:04d}.jpg", _jpeg(rgb, rng.randrange(640, 801, 16), seed), status))
                seed += 1
            kind, data = bad[s % 3]
            members_.insert(rng.randrange(PER_SHARD), (f"{s}/x/{kind}{s}.jpg", data, "error"))
            for name, data, status in members_:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                expected[f"gldv2/images_{s:03d}.tar/{name}"] = status
    loose = root / "train" / "a" / "b" / "c"
    loose.mkdir(parents=True)
    for k in range(LOOSE):
        rgb, status = kinds[seed % 3]
        (loose / f"{seed:04d}.jpg").write_bytes(_jpeg(rgb, rng.randrange(640, 801, 16), seed))
        expected[f"train/a/b/c/{seed:04d}.jpg"] = status
        seed += 1
    for kind, data in bad[:2]:
        (loose / f"{kind}.jpg").write_bytes(data)
        expected[f"train/a/b/c/{kind}.jpg"] = "error"
    return expected


def _marker(path: Path) -> dict:
    try:
        return json_of(path)
    except (FileNotFoundError, ValueError):
        return {}


def kill_and_restart(argv, output: Path, inputs: int, rng: random.Random) -> list[int]:
    """Start classify.py KILLS times, each SIGKILLed at a random moment; rows at each kill.

    A kill waits for the batch phase of its run (the marker written by that process and
    naming no input alone): a kill while a suspect is read alone would, by design, make
    that suspect an error row (transfer_learning/inflight.py), which an uninterrupted run
    does not have.
    """
    manifest, marker = output / "manifest.csv", output / "manifest.inflight.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": python_path()}
    points = sorted(rng.sample(range(2, inputs - 20), KILLS))  # each run still has >= 10 batches to do
    at_kill = []
    for point in points:
        process = subprocess.Popen([sys.executable, str(ROOT / "transfer_learning" / "classify.py"), *argv],
                                   cwd=output.parent, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        try:
            while True:
                state = _marker(marker)
                if _data_rows(manifest) >= point and state.get("pid") == process.pid and not state["alone"]:
                    break
                assert process.poll() is None, "the run ended before it could be killed"
                assert time.time() < deadline, "no progress"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.01))
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
        assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
        at_kill.append(_data_rows(manifest))
    return at_kill


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.name not in ("manifest.csv", "manifest.json")}


def _inputs(root: Path) -> dict[str, bytes]:
    """Every file under `root` but the output folder: relative path → bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "out"}


@pytest.mark.parametrize("mode", ["move", "copy"])
def test_killed_five_times_at_random_ends_like_an_uninterrupted_run(tmp_path, members, mode):
    run, clean = tmp_path / "run", tmp_path / "clean"
    expected = write_gldv2_like(run)
    inputs = len(expected)
    argv = argv_for([run / "gldv2", run / "train"], members, run / "out", "--batch-size", "2", "--mode", mode)
    # The run that is never killed, then moved aside: the killed one uses the same paths, so
    # the two manifests and output folders must be equal, names and all.
    assert classify.main(argv) == 0
    run.rename(clean)
    assert write_gldv2_like(run) == expected
    original = _inputs(run)
    at_kill = kill_and_restart(argv, run / "out", inputs, random.Random(f"soak-{mode}"))
    assert all(0 < n < inputs for n in at_kill) and at_kill == sorted(at_kill), at_kill
    assert classify.main(argv) == 0

    def rows(root):  # both ran in run/: paths relative to it
        frame = read_manifest(root / "out" / "manifest.csv")
        frame["path"] = frame["path"].str.replace(str(run) + os.sep, "", regex=False)
        return frame.set_index("path").sort_index()

    killed, uninterrupted = rows(run), rows(clean)
    assert len(killed) == inputs and killed.index.is_unique  # every input exactly one row
    assert killed.index.equals(uninterrupted.index)
    assert dict(killed["status"]) == expected == dict(uninterrupted["status"])
    for column in ("output", "reason"):
        assert killed[column].equals(uninterrupted[column]), column
    scores = [c for c in killed.columns if c.startswith("pass")]
    np.testing.assert_allclose(killed[scores].to_numpy(), uninterrupted[scores].to_numpy(), atol=1e-5)
    # The same files, byte for byte, each once, nothing half-written, no marker left.
    outputs = _outputs(run / "out")
    assert outputs == _outputs(clean / "out")
    assert sorted(outputs) == sorted(killed.loc[killed["output"] != "", "output"])
    # Inputs: shards untouched; a loose kept photo moved exactly once (gone from its place,
    # its bytes under its output name); everything else still in place.
    left = _inputs(run)
    assert left == _inputs(clean)
    for name, data in original.items():
        if mode == "move" and expected.get(name) == "kept":  # a loose photo (tar members are no files)
            assert name not in left and outputs[killed.loc[name, "output"]] == data, name
        else:
            assert left.get(name) == data, name
    if mode == "move":
        assert sum(1 for n, s in expected.items() if n.startswith("train/") and s == "kept") > 0
