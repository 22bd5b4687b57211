"""vae.monitor: TensorBoard scalars that survive a kill and a resume without repeating a step."""

import gc

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


def _fit(tmp_path, extra=()):
    config = VAEConfig(**PRESETS["tiny"]).validate()
    keras.utils.set_random_seed(0)
    vae = build_vae(config)
    images = tf.data.Dataset.from_tensors(np.random.default_rng(0).random((8, 32, 32, 3), np.float32)).repeat()
    logger = monitor.ScalarLogger(tmp_path / "logs", every=1)
    callbacks = [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), logger]
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
