"""vae.monitor: TensorBoard scalars that survive a kill and a resume without repeating a step."""

import gc
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vae import monitor
from vae.config import PRESETS, VAEConfig
from vae.model import build_vae


class Killed(RuntimeError):
    pass


class KillAt(keras.callbacks.Callback):
    """Flush every TensorBoard writer (as a long run does whenever its queue fills), then die."""

    def __init__(self, step: int, logger: monitor.ScalarLogger):
        super().__init__()
        self.step, self.logger = step, logger

    def on_train_batch_end(self, batch, logs=None):
        if monitor.global_step(self.model) == self.step:
            for writer in self.logger._writers.values():
                writer.flush()
            raise Killed


class KillAtRoundEnd(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Killed


def _fit(tmp_path, extra=(), between=None, after=None):
    """Three rounds of 4 steps; `between`/`after`: a callback put between the logger and the
    backup, or after the backup."""
    config = VAEConfig(**PRESETS["tiny"]).validate()
    keras.utils.set_random_seed(0)
    vae = build_vae(config)
    images = tf.data.Dataset.from_tensors(np.random.default_rng(0).random((8, 32, 32, 3), np.float32)).repeat()
    logger = monitor.ScalarLogger(tmp_path / "logs", every=1)
    callbacks = [logger, *([between] if between else []), keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
                 *([after] if after else [])]
    callbacks += [make(logger) for make in extra]
    vae.fit(images, epochs=3, steps_per_epoch=4, callbacks=callbacks, verbose=0, shuffle=False)
    return vae


def test_a_run_killed_inside_a_round_logs_every_step_once_after_its_resume(tmp_path):
    with pytest.raises(Killed):
        _fit(tmp_path, extra=[lambda logger: KillAt(6, logger)])  # round 2 of 3, its backup not yet made
    gc.collect()
    vae = _fit(tmp_path)  # resumes at step 4, the end of round 1
    assert monitor.global_step(vae) == 12
    events = EventAccumulator(str(tmp_path / "logs" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    steps = [e.step for e in events.Tensors("loss/loss")]
    assert sorted(steps) == list(range(1, 13)), steps


@pytest.mark.parametrize("where", ["between", "after"])
def test_a_run_killed_at_a_round_end_logs_every_step_once_after_its_resume(tmp_path, where):
    # Killed with round 2's points written: before its backup (the resume trains it again,
    # and its first points are cut from the files) or after it (they stay).
    with pytest.raises(Killed):
        _fit(tmp_path, **{where: KillAtRoundEnd(1)})
    gc.collect()
    vae = _fit(tmp_path)
    assert monitor.global_step(vae) == 12
    events = EventAccumulator(str(tmp_path / "logs" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    steps = [e.step for e in events.Tensors("loss/loss")]
    assert sorted(steps) == list(range(1, 13)), steps


def test_a_start_reads_each_image_file_once_and_a_resume_reads_none(tmp_path, monkeypatch):
    from data import pipeline
    from vae import train
    from vae.splits import resolve_splits

    config = VAEConfig(**{**PRESETS["tiny"], "data_root": str(tmp_path / "datasets"), "max_steps": 4}).validate()
    reads = []
    real = pipeline._check_structure
    monkeypatch.setattr(pipeline, "_check_structure", lambda path: reads.append(path) or real(path))
    pipeline.forget_checks()
    train.train(config, tmp_path / "run", verbose=0)
    splits = resolve_splits(config)
    used = len(splits.train) + len(splits.validation)  # the test split is not read by training
    assert len(reads) == len(set(reads)) == used and used > 50  # each file once
    pipeline.forget_checks()  # as a new process
    longer = VAEConfig(**{**config.to_dict(), "max_steps": 8}).validate()
    vae = train.train(longer, tmp_path / "run", verbose=0)
    assert monitor.global_step(vae) == 8 and len(reads) == used


def _fit_safe(tmp_path, epochs, extra=()):
    config = VAEConfig(**PRESETS["tiny"]).validate()
    keras.utils.set_random_seed(0)
    vae = build_vae(config)
    images = tf.data.Dataset.from_tensors(np.random.default_rng(0).random((8, 32, 32, 3), np.float32)).repeat()
    backup = monitor.SafeBackupAndRestore(tmp_path / "backup", monitor.NonFiniteGuard(), steps_per_round=4,
                                          save_freq="epoch", delete_checkpoint=False)
    vae.fit(images, epochs=epochs, steps_per_epoch=4, callbacks=[backup, *extra], verbose=0, shuffle=False)
    return vae


def test_the_backup_keeps_the_previous_one_by_a_rename_not_a_copy(tmp_path):
    latest, previous = tmp_path / "backup" / "latest.weights.h5", tmp_path / "backup" / "latest.weights.h5.bkp"
    inodes = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            inodes.append(latest.stat().st_ino)  # after the backup (it runs first)

    _fit_safe(tmp_path, epochs=2, extra=[Watch()])
    assert previous.stat().st_ino == inodes[0] != inodes[1] == latest.stat().st_ino
    assert not list((tmp_path / "backup").glob("tmp-*"))


@pytest.mark.parametrize("damage", ["latest missing", "stale round number"])
def test_a_resume_starts_at_the_round_of_the_weights_it_loads(tmp_path, damage):
    _fit_safe(tmp_path, epochs=2)  # backups after steps 4 and 8
    backup = tmp_path / "backup"
    if damage == "latest missing":  # killed between the rename and the new file: step 4 in .bkp
        (backup / "latest.weights.h5").unlink()
        resumed_at = 4
    else:  # killed between the weights (step 8) and the round file (still round 1)
        (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
        resumed_at = 8
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            steps.append(monitor.global_step(self.model))

    vae = _fit_safe(tmp_path, epochs=3, extra=[Record()])
    assert steps == [resumed_at] and monitor.global_step(vae) == 12  # 3 rounds of 4, none repeated


def test_validation_batches_are_decoded_once_and_then_read_from_memory(tmp_path):
    import types

    from PIL import Image

    from vae import train

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"v{i}.png"))
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(paths[-1])
    config = VAEConfig(batch_size=2, validate_every=20).validate()  # a tenth of a round: 2 batches
    ds, steps = train.validation_data(config, types.SimpleNamespace(validation=paths), tf.distribute.get_strategy(),
                                      dict(image_size=16, crop="center", cache=False))
    first = [b.numpy() for b in ds]
    for path in paths:  # gone from disk: every later validation still sees the same images
        Path(path).unlink()
    assert steps == 2 and len(first) == 2 and first[0].shape == (2, 16, 16, 3)
    for _ in range(2):
        again = [b.numpy() for b in ds]
        assert all(np.array_equal(a, b) for a, b in zip(first, again)) and len(again) == 2


def test_per_step_callbacks_read_the_step_counter_once_per_round_not_at_every_step(tmp_path, monkeypatch):
    """Reading the model's counter waits for the step: the logger counts from the round's start."""
    reads = []
    real = monitor.global_step
    monkeypatch.setattr(monitor, "global_step", lambda model: reads.append(1) or real(model))
    vae = _fit(tmp_path)  # 3 rounds of 4 steps, a point at every step
    assert real(vae) == 12
    assert len(reads) <= 2 * 3, len(reads)  # a round's begin and end, not its 4 steps
    events = EventAccumulator(str(tmp_path / "logs" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    assert sorted(e.step for e in events.Tensors("loss/loss")) == list(range(1, 13))
