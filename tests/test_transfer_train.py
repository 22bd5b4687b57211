"""train.py: class folders, augmentation, the staged schedule, and members classify.py uses end to end."""

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from data import synthetic
from data.pipeline import DataError
from transfer_learning import classify, selection
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
                       (["--data", str(labelled / "pass1"), "--bn-mode", "batch"], "--bn-mode"),
                       (["--data", str(labelled / "pass1"), "--class-weight", "inverse"], "--class-weight"),
                       (["--data", str(labelled / "pass1"), "--threshold", "1.5"], "--threshold"),
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
    assert info["selection"] == [info["val_fbeta"], info["val_accuracy"]] and info["threshold"] == 0.9
    assert sum(info["train_counts"].values()) == info["train_images"]
    assert sum(info["validation_counts"].values()) == info["validation_images"]
    progress = json.loads((runs / "pass1" / "progress" / "member_1.json").read_text())
    assert progress["complete"] and progress["epoch"] == 2 and progress["stages_done"] == [0, 1]
    assert {"epoch_loss", "epoch_accuracy", "epoch_stage", "epoch_fbeta"} <= _scalars(
        runs / "pass1/logs/member_0/train")
    assert {"epoch_accuracy", "epoch_precision", "epoch_recall", "epoch_fbeta"} <= _scalars(
        runs / "pass1/logs/member_0/validation")

    # The saved member is a plain Keras model: it loads and scores like itself.
    member = load_member(runs / "pass1" / "member_0.keras")
    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    scores = member.model(x).numpy()
    assert scores.shape == (3, 1) and np.all((0 <= scores) & (scores <= 1))

    # Running the same command again keeps finished members (killed runs: see
    # test_killed_run_resumes_at_the_next_epoch_of_its_stage).
    before = os.stat(runs / "pass1" / "member_0.keras").st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train_cli.main(["--data", str(labelled / "pass1"), "--run-dir", str(runs / "pass1"),
                               "--members", "2", "--stages", "0", "1", *SMALL]) == 0
    assert "member_0: already trained" in caplog.text and "member_1: already trained" in caplog.text
    assert "stage 0:" not in caplog.text and "stage 1:" not in caplog.text
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


# --------------------------------------------------------------------------- choosing the best epoch


def test_class_weights_are_the_inverse_class_frequency():
    labels = [0] * 6 + [1] * 2
    weights = train_cli.class_weights(labels, "auto")
    assert weights == pytest.approx({0: 8 / 12, 1: 8 / 4})  # n / (2 n_c)
    assert 6 * weights[0] == pytest.approx(2 * weights[1])  # both classes weigh the same in the loss
    assert train_cli.class_weights([0, 1, 1, 0], "auto") == {0: 1.0, 1: 1.0}
    assert train_cli.class_weights(labels, "none") is None
    assert train_cli.class_counts(labels, ["cat", "dog"]) == {"cat": 6, "dog": 2}


def test_metrics_at_the_curation_threshold_match_a_hand_computed_case():
    y_true = np.array([[1], [1], [1], [1], [0], [0]], np.float32)
    y_pred = np.array([[0.95], [0.91], [0.9], [0.5], [0.99], [0.2]], np.float32)
    # At 0.9 (strictly above, as the rule): kept 0.95, 0.91 (right) and 0.99 (wrong); 0.9 and 0.5 missed.
    # TP 2, FP 1, FN 2: precision 2/3, recall 1/2. Accuracy at 0.5: 0.95, 0.91, 0.9, 0.2 right: 4/6.
    logs = {}
    for metric in selection.member_metrics(0.9):
        metric.update_state(y_true, y_pred)
        logs["val_" + metric.name] = float(metric.result())
    assert logs == pytest.approx({"val_accuracy": 4 / 6, "val_precision": 2 / 3, "val_recall": 1 / 2})
    # F0.5 = 1.25 TP / (1.25 TP + 0.25 FN + FP) = 2.5 / 4
    assert selection.f_beta(2 / 3, 1 / 2, 0.5) == pytest.approx(0.625)
    assert selection.f_beta(2 / 3, 1 / 2, 1.0) == pytest.approx(4 / 7)  # F1 = 2 TP / (2 TP + FN + FP)
    assert selection.f_beta(0.0, 0.0, 0.5) == 0.0  # nothing above the threshold
    assert selection.selection_score(logs, 0.5) == pytest.approx((0.625, 4 / 6))
    assert selection.selection_score({"val_accuracy": 0.9}, 0.5) is None  # no validation metrics


def _logs(accuracy, precision, recall):
    return {"loss": 0.5, "val_accuracy": accuracy, "val_precision": precision, "val_recall": recall}


def test_best_member_keeps_the_epoch_the_criterion_picks_and_never_a_worse_one(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    path = tmp_path / "member_0.keras"
    info = {"threshold": 0.9, "selection_beta": 0.5}
    best = selection.BestMember(path, info, beta=0.5)
    best.set_model(model)
    epochs = [_logs(0.90, 0.50, 0.9),   # F0.5 0.549: the best accuracy, but it keeps many wrong photos
              _logs(0.80, 0.95, 0.6),   # F0.5 0.851: the best by the criterion
              _logs(0.85, 0.90, 0.5)]   # F0.5 0.776
    for epoch, logs in enumerate(epochs):
        model.layers[1].bias.assign([float(epoch)])  # tells the saved epochs apart
        best.on_epoch_end(epoch, logs)
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["epoch"] == 2 and saved["selection"] == pytest.approx([0.8507463, 0.80])
    assert keras.models.load_model(path).layers[1].bias.numpy().tolist() == [1.0]
    score = selection.saved_score(path, 0.5, 0.9)
    assert score == pytest.approx((0.8507463, 0.80))

    # A rerun starts from the saved score: a worse epoch leaves the member alone, a better one
    # replaces it; with equal F-beta the better accuracy wins.
    rerun = selection.BestMember(path, info, beta=0.5, best=score)
    rerun.set_model(model)
    model.layers[1].bias.assign([7.0])
    before = path.read_bytes()
    rerun.on_epoch_end(0, _logs(0.99, 0.90, 0.5))
    assert path.read_bytes() == before
    rerun.on_epoch_end(0, {**_logs(0.99, 0.99, 0.99), "val_loss": float("nan")})  # diverged
    assert path.read_bytes() == before
    rerun.on_epoch_end(1, _logs(0.70, 0.95, 0.6))  # same F0.5, lower accuracy
    assert path.read_bytes() == before
    rerun.on_epoch_end(2, _logs(0.81, 0.95, 0.6))  # same F0.5, higher accuracy
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 3
    assert keras.models.load_model(path).layers[1].bias.numpy().tolist() == [7.0]

    # A JSON that does not describe the file (killed between the two writes): measured again.
    stale = {**json.loads(path.with_suffix(".json").read_text()), "selection": [1.0, 1.0], "sha256": "0" * 64}
    path.with_suffix(".json").write_text(json.dumps(stale))
    measured = []
    score = selection.saved_score(path, 0.5, 0.9, lambda p: measured.append(p) or _logs(0.6, 0.5, 0.5))
    assert measured == [path] and score == pytest.approx((0.5, 0.6))
    assert selection.saved_score(path, 0.5, 0.8) is None  # another threshold, nothing to measure with
    assert selection.saved_score(tmp_path / "none.keras", 0.5, 0.9) is None


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    """Raises after epoch `epoch` (1-based) ended and was saved: a kill between two epochs."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.state = epoch, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.state = ([w.copy() for w in self.model.get_weights()],
                          [v.numpy().copy() for v in self.model.optimizer.variables])
            raise Killed


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.start = [], None

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = (self.model.get_weights(), [v.numpy() for v in self.model.optimizer.variables])

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_killed_run_resumes_at_the_next_epoch_of_its_stage(labelled, tmp_path, caplog):
    config = TrainConfig(data=str(labelled / "pass1"), backbone="VGG16", weights="none", image_size=32,
                         batch_size=8, members=1, stages=(0,), epochs_per_stage=3, steps_per_epoch=1,
                         dense_layers=1, dense_units=4).validate()
    run = tmp_path / "run"
    kill = KillAfter(2)
    with pytest.raises(Killed):
        train_cli.train(config, run, verbose=0, callbacks=[kill])
    progress = json.loads((run / "progress" / "member_0.json").read_text())
    assert progress["epoch"] == 2 and not progress["complete"] and progress["stages_done"] == []
    assert [p.name for p in (run / "progress").glob("*.weights.h5")] == ["member_0.epoch-0002.weights.h5"]
    # The saved member gets a score no epoch can beat: the resumed stage must keep it.
    member = run / "member_0.keras"
    info = json.loads(member.with_suffix(".json").read_text())
    member.with_suffix(".json").write_text(json.dumps({**info, "selection": [1.0, 1.0]}))
    before = member.read_bytes()

    record = Record()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_cli.train(config, run, verbose=0, callbacks=[record])
    assert "member_0: resuming stage 0 at epoch 3 of 3" in caplog.text
    assert record.epochs == [2]  # only the third epoch (0-based 2) ran
    weights, optimizer = record.start
    assert all(np.array_equal(a, b) for a, b in zip(weights, kill.state[0]))
    assert len(optimizer) == len(kill.state[1]) and int(optimizer[0]) == 2  # iterations: 2 steps done
    assert all(np.array_equal(a, b) for a, b in zip(optimizer, kill.state[1]))  # RMSprop's averages too
    assert member.read_bytes() == before
    progress = json.loads((run / "progress" / "member_0.json").read_text())
    assert progress["epoch"] == 3 and progress["complete"] and progress["stages_done"] == [0]
