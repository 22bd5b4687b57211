"""train.py: class folders, augmentation, the staged schedule, and members classify.py uses end to end."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from data import synthetic
from data.pipeline import DataError
from transfer_learning import classify
from transfer_learning import train as train_cli
from transfer_learning.augment import RandomBrightnessScale, augmentation
from common.config import ConfigError
from transfer_learning.config import TrainConfig
from transfer_learning.manifest import read_manifest
from transfer_learning.loading import load_member

SMALL = ["--backbone", "MobileNet", "--weights", "none", "--image-size", "32", "--batch-size", "8",
         "--epochs-per-stage", "1", "--steps-per-epoch", "2", "--dense-units", "16", "--quiet"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    for task in ("pass1", "pass2"):
        synthetic.write_labelled(root, task, 48, size=32, seed=1)
    return root


def test_class_folders_know_the_positive_class(labelled, tmp_path):
    assert train_cli.class_folders(labelled / "pass1") == (["not_building", "building"], "building")
    assert train_cli.class_folders(labelled / "pass2") == (["unsuitable", "suitable"], "suitable")
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
    with pytest.raises(ConfigError, match="--positive-class"):
        train_cli.class_folders(tmp_path)
    assert train_cli.class_folders(tmp_path, "dogs") == (["cats", "dogs"], "dogs")
    (tmp_path / "birds").mkdir()
    with pytest.raises(DataError, match="expected two class sub-folders"):
        train_cli.class_folders(tmp_path)


def test_dataset_labels_follow_the_folders_and_the_split_is_stable(labelled):
    config = TrainConfig(data=str(labelled / "pass1"), image_size=32, batch_size=4, augment=False)
    train_p, train_l, val_p, val_l, classes, _ = train_cli.split_data(config)
    assert len(train_p) + len(val_p) == 48 and 0 < len(val_p) < 24
    assert not set(train_p) & set(val_p)
    assert all((Path(p).parent.name == "building") == bool(y) for p, y in zip(train_p + val_p, train_l + val_l))
    assert train_cli.split_data(config)[2] == val_p  # the same split every time
    images, labels = next(iter(train_cli.make_dataset(val_p, val_l, config, training=False, seed=0)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 1)
    assert labels.numpy().ravel().tolist() == [float(y) for y in val_l[:4]]


def test_augmentation_is_the_originals_and_brightness_multiplies():
    layers = [type(layer).__name__ for layer in augmentation(0).layers]
    assert layers == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomShear", "RandomBrightnessScale"]
    grey = np.full((64, 2, 2, 3), 0.5, np.float32)
    factors = RandomBrightnessScale(0.8, 1.2, seed=1)(grey, training=True).numpy()[:, 0, 0, 0] / 0.5
    assert 0.8 <= factors.min() < 0.85 and 1.15 < factors.max() <= 1.2
    bright = RandomBrightnessScale(0.8, 1.2, seed=1)(np.ones((8, 2, 2, 3), np.float32)).numpy()
    assert bright.max() <= 1.0  # clipped like the original's PIL brightness
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(augmentation(0)(x, training=False).numpy(), x)
    assert not np.allclose(augmentation(0)(x, training=True).numpy(), x)


def test_usage_errors_are_one_line_with_exit_code_2(labelled, tmp_path, capsys):
    for argv, flag in [(["--data", str(tmp_path / "nope")], "--data"),
                       (["--data", str(labelled / "pass1"), "--stages", "2", "1"], "--stages"),
                       (["--data", str(labelled / "pass1"), "--backbone", "ResNet9000", *SMALL[2:]],
                        "--backbone")]:
        code = train_cli.main(argv + ["--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"error: {flag}") and "\n" not in err, err


def _scalars(folder: Path) -> set[str]:
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.PluginTagToContent("scalars"))


@pytest.mark.slow
def test_trained_members_are_used_by_classify_end_to_end(labelled, tmp_path, caplog):
    runs = tmp_path / "runs"
    assert train_cli.main(["--data", str(labelled / "pass1"), "--run-dir", str(runs / "pass1"),
                           "--members", "2", "--stages", "0", "1", *SMALL]) == 0
    # Pass 2 starts from pass 1's random base, as both would start from ImageNet; it trains on
    # two (logical) devices, as on two GPUs.
    with caplog.at_level(logging.INFO):
        assert train_cli.main(["--data", str(labelled / "pass2"), "--run-dir", str(runs / "pass2"),
                               "--members", "1", "--stages", "0", "--strategy", "mirrored",
                               *SMALL[:2], "--weights", str(runs / "pass1" / "base_init.weights.h5"),
                               *SMALL[4:]]) == 0
    assert "global batch 8 over 2 replica(s)" in caplog.text
    files = sorted(p.name for p in (runs / "pass1").iterdir())
    assert {"config.json", "base_init.weights.h5", "member_0.keras", "member_0.json",
            "member_1.keras", "member_1.json", "logs", "progress"} <= set(files)
    info = json.loads((runs / "pass1" / "member_1.json").read_text())
    assert info["positive_class"] == "building" and info["seed"] == 1 and info["image_size"] == 32
    assert 0 <= info["val_accuracy"] <= 1 and info["stage"] in (0, 1) and info["epoch"] in (1, 2)
    assert {"epoch_loss", "epoch_accuracy", "epoch_stage"} <= _scalars(runs / "pass1/logs/member_0/train")
    assert "epoch_accuracy" in _scalars(runs / "pass1/logs/member_0/validation")

    # The saved member is a plain Keras model: it loads and scores like itself.
    member = load_member(runs / "pass1" / "member_0.keras")
    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    scores = member.model(x).numpy()
    assert scores.shape == (3, 1) and np.all((0 <= scores) & (scores <= 1))

    # Running the same command again keeps finished members and resumes an unfinished one after
    # its last finished stage (here: member 1 as if killed during stage 1).
    progress = runs / "pass1" / "progress" / "member_1.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "stages_done": [0],
                                    "complete": False}))
    before = os.stat(runs / "pass1" / "member_0.keras").st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train_cli.main(["--data", str(labelled / "pass1"), "--run-dir", str(runs / "pass1"),
                               "--members", "2", "--stages", "0", "1", *SMALL]) == 0
    assert "member_0: already trained" in caplog.text and "member_1: resuming after stage 0" in caplog.text
    assert "member_1 stage 1:" in caplog.text and "member_1 stage 0:" not in caplog.text
    assert json.loads(progress.read_text())["complete"] is True
    assert os.stat(runs / "pass1" / "member_0.keras").st_mtime_ns == before
    assert train_cli.main(["--data", str(labelled / "pass1"), "--run-dir", str(runs / "pass1"),
                           "--members", "2", "--stages", "0", "1", *SMALL[:4], "--image-size", "48",
                           *SMALL[6:]]) == 2  # a started run keeps its settings

    photos = labelled / "pass1" / "building"
    output = tmp_path / "curated"
    # A low threshold keeps most images, so that pass 2 and the copies run too.
    assert classify.main([str(photos), "--pass1", str(runs / "pass1"), "--pass2", str(runs / "pass2"),
                          "--output", str(output), "--threshold", "0.05", "--quiet"]) == 0
    frame = read_manifest(output / "manifest.csv")
    assert sorted(frame["path"]) == sorted(str(p) for p in photos.iterdir())
    assert list(frame.columns[4:]) == ["pass1_0", "pass1_1", "pass2_0"]
    assert set(frame["status"]) <= {"kept", "rejected_pass1", "rejected_pass2"}
    for row in frame[frame["status"] == "kept"].itertuples():
        assert (output / row.output).read_bytes() == Path(row.path).read_bytes()
    # The manifest's scores are the members' own.
    images = tf.stack([tf.image.resize(tf.io.decode_png(tf.io.read_file(p)), (32, 32)) / 255.0
                       for p in frame["path"][:4]])
    direct = load_member(runs / "pass1" / "member_1.keras").model(images).numpy().ravel()
    np.testing.assert_allclose(frame["pass1_1"][:4].to_numpy(), direct, atol=1e-4)
