"""Training callbacks that watch a run: TensorBoard scalars and image grids, checkpoints,
resumable backups and a guard against non-finite losses.

All step numbers are the optimizer's global step, so curves from a resumed run
continue where the killed one stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.files import atomic_write, first_line, write_json
from common.images import make_grid, save_png
from vae import visualize

log = logging.getLogger(__name__)


def global_step(model) -> int:
    """Training steps taken (skipped mixed-precision steps included): the VAE's own counter."""
    return int(model.global_step.numpy())


def step_after(round_start: int, batch: int) -> int:
    """The global step at the end of `batch` of a round that began at step `round_start`.

    Per-step callbacks read the model's counter once per round (`on_epoch_begin`) and count
    from there: each train-function call is one step, and reading the counter at every
    step would wait for that step each time.
    """
    return round_start + batch + 1


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss, before any checkpoint can save the bad weights.

    Put it FIRST in the callback list. `bad_step` tells the caller what happened.
    """

    def __init__(self):
        super().__init__()
        self.bad_step: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_step = global_step(self.model)
            self.model.stop_training = True
            log.error("non-finite loss (%s) at step %d: stopping", float(loss), self.bad_step)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose weights file is the whole resume point, written atomically.

    Keras's writes the weights in place, copies the previous backup first (twice the
    bytes) and keeps the round number in a separate file, so a kill between the two
    writes resumes a round that was already trained. Here the previous backup is kept
    by a rename (`.bkp`: no bytes written), the new weights go to a temporary file
    renamed into place, and the round to resume at is read from the weights' own step
    counter (`global_step // steps_per_round`). A backup is never written with
    non-finite weights (`guard`). `training_metadata.json` is still written, for tools.
    `loaded`: the model already holds the backup (`load_backup`), so it is not read again.
    """

    def __init__(self, backup_dir, guard: NonFiniteGuard, steps_per_round: int, loaded: bool = False,
                 **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.guard, self.steps_per_round, self.loaded = guard, steps_per_round, loaded

    def _save_model(self):
        if self.guard.bad_step is not None:
            return
        weights = Path(self._weights_path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        if weights.exists():
            os.replace(weights, self._prev_weights_path)
        atomic_write(weights, self.model.save_weights)
        write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})

    def _load_model(self):
        if self.loaded or load_backup(self.model, Path(self.backup_dir)):
            self.model._initial_epoch = global_step(self.model) // self.steps_per_round


def load_backup(model, backup_dir: Path) -> bool:
    """Load a backup's weights (and optimizer state) into `model`; False if there is none.

    The latest backup, or when it is missing or unreadable (a kill while it was
    replaced) the previous one, which then becomes the latest.
    """
    latest, previous = backup_dir / "latest.weights.h5", backup_dir / "latest.weights.h5.bkp"
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    if _load(model, latest):
        return True
    if not previous.exists():
        return False
    log.warning("resuming from the previous backup %s", previous)
    atomic_write(latest, lambda tmp: shutil.copyfile(previous, tmp))  # Keras reads only *.weights.h5
    return _load(model, latest)


def _load(model, path: Path) -> bool:
    if not path.exists():
        return False
    try:
        model.load_weights(str(path))
    except (OSError, ValueError) as err:
        log.warning("backup %s cannot be read (%s)", path, first_line(err))
        return False
    return True


class StepCheckpoint(keras.callbacks.Callback):
    """Numbered weight files every `every` steps (at validation points), the last `keep` kept."""

    def __init__(self, directory, every: int, guard: NonFiniteGuard, keep: int = 3):
        super().__init__()
        self.directory, self.every, self.guard, self.keep = Path(directory), every, guard, keep

    def on_epoch_end(self, epoch, logs=None):
        step = global_step(self.model)
        if step % self.every or self.guard.bad_step is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directory / f"step-{step:08d}.weights.h5", self.model.save_weights)
        for old in sorted(self.directory.glob("step-*.weights.h5"))[:-self.keep]:
            old.unlink()


def _tag(name: str) -> str:
    """The TensorBoard tag of a logged metric, the same for train and validation."""
    return "latent/active_dims" if name == "active_dims" else f"loss/{name}"


class ScalarLogger(keras.callbacks.Callback):
    """Train scalars every `every` steps, validation scalars at each validation, and the LR.

    Writes `train/` and `validation/` TensorBoard runs with matching tags, so the
    two curves of each loss term overlay in one chart. Keras's batch logs are running
    means since the start of the round; each train point here is the mean of the steps
    since the previous point (the trackers weigh every step equally: fixed batch size).

    Every step is logged exactly once, whatever the moment of a kill. A round's points
    are written when the round ends, BEFORE its backup (put this callback before
    BackupAndRestore), and the length of each of its event files (`*.scalars`) is
    then noted under the round's last step in `scalar-lengths.json`. A resumed run
    cuts those files back to their lengths at the step it resumes from: the points of
    a round no backup holds disappear (they are trained and logged again), those of a
    round the backup holds stay.
    """

    LEDGER = "scalar-lengths.json"
    SUFFIX = ".scalars"

    def __init__(self, log_dir, every: int, keep: int = 4):
        super().__init__()
        self.log_dir, self.every, self.keep = Path(log_dir), every, keep
        self._writers: dict[str, tf.summary.SummaryWriter] = {}
        self._previous: tuple[int, dict] = (0, {})  # (steps into the round, running means)
        self._pending: list[tuple[int, dict[str, float]]] = []  # this round's train points
        self._cut = False

    # ------------------------------------------------------------ the ledger of file lengths
    def _ledger(self) -> dict:
        try:
            return json.loads((self.log_dir / self.LEDGER).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"files": [], "lengths": {}}

    def _note(self, step: int | None) -> None:
        """Record this logger's files, and their lengths at `step` (None: the files only)."""
        ledger = self._ledger()
        ledger["files"] = sorted(set(ledger["files"]) | {
            str(p.relative_to(self.log_dir)) for p in self.log_dir.glob(f"*/*{self.SUFFIX}")})
        if step is not None:
            ledger["lengths"][str(step)] = {
                name: (self.log_dir / name).stat().st_size for name in ledger["files"]
                if (self.log_dir / name).exists()}
            kept = sorted(ledger["lengths"], key=int)[-self.keep:]
            ledger["lengths"] = {k: ledger["lengths"][k] for k in kept}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.log_dir / self.LEDGER, ledger)

    def _cut_back(self, step: int) -> None:
        """Cut the event files back to their lengths at `step` (the resume point)."""
        ledger = self._ledger()
        lengths = ledger["lengths"].get(str(step), {} if step == 0 else None)
        if lengths is None:
            if ledger["files"]:
                log.warning("%s has no lengths for step %d: TensorBoard may show a step twice",
                            self.log_dir / self.LEDGER, step)
            return
        for name in ledger["files"]:
            path = self.log_dir / name
            if path.exists() and path.stat().st_size > lengths.get(name, 0):
                if name in lengths:
                    os.truncate(path, lengths[name])
                else:
                    path.unlink()  # a file begun after `step`: nothing in it is backed up

    # ------------------------------------------------------------ writing
    def writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name),
                                                                filename_suffix=self.SUFFIX)
            self._note(None)  # known before anything is written to it
        return self._writers[name]

    def _learning_rate(self) -> float:
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        rate = optimizer.learning_rate
        return float(keras.ops.convert_to_numpy(rate))

    def on_epoch_begin(self, epoch, logs=None):
        self._round_start = global_step(self.model)
        if not self._cut:  # the first round: every callback's on_train_begin (the restore) has run
            self._cut = True
            self._cut_back(self._round_start)
        self._previous = (0, {})
        self._pending = []

    def on_train_batch_end(self, batch, logs=None):
        step = step_after(self._round_start, batch)
        if step % self.every:
            return
        count, means = batch + 1, {k: float(v) for k, v in (logs or {}).items()}
        previous_count, previous = self._previous
        self._previous = (count, means)
        point = {}
        for name, mean in means.items():
            # Σ over the window = Σ since the round began − Σ up to the last point.
            window = (mean * count - previous.get(name, 0.0) * previous_count) / (count - previous_count)
            point[_tag(name)] = window
        point["optimizer/learning_rate"] = self._learning_rate()
        self._pending.append((step, point))

    def _write(self, run: str, points) -> None:
        with self.writer(run).as_default():
            for step, point in points:
                for tag, value in point.items():
                    tf.summary.scalar(tag, value, step=step)
        self.writer(run).flush()

    def on_epoch_end(self, epoch, logs=None):
        pending, self._pending = self._pending, []
        if self.model.stop_training:
            return  # an unfinished round (e.g. a non-finite loss): no backup will hold it
        step = global_step(self.model)
        self._write("train", pending)
        values = {k[4:]: float(v) for k, v in (logs or {}).items() if k.startswith("val_")}
        if values:
            self._write("validation", [(step, {_tag(name): value for name, value in values.items()})])
        self._note(step)

    def on_train_end(self, logs=None):
        # Points of an unfinished round (training stopped inside it, e.g. a non-finite
        # loss) are not written: a resume trains those steps again from the backup.
        for writer in self._writers.values():
            writer.flush()


class Monitor(keras.callbacks.Callback):
    """Every `every` steps: reconstructions of fixed images and decodings of fixed codes.

    As in the original (12 photos, 12 random latent vectors, every 1000 steps), saved
    as PNG grids under `image_dir` and as TensorBoard images. Also draws at the start,
    so step 0 shows what an untrained model does.
    """

    def __init__(self, log_dir, image_dir, images, latents, every: int, labeller=None):
        super().__init__()
        self.log_dir, self.image_dir, self.every = Path(log_dir), Path(image_dir), every
        self.labeller = labeller  # encoder → per-dimension (factor, information), when factors are known
        self.images = np.asarray(images, np.float32)  # (N, S, S, 3) in [0, 1]
        self.latents = np.asarray(latents, np.float32)  # (N, latent_dim)
        self._writer = None

    def draw(self, step: int) -> dict[str, np.ndarray]:
        recon = keras.ops.convert_to_numpy(self.model(self.images, training=False))
        pairs = np.concatenate([self.images, recon])  # top row: inputs, bottom row: outputs
        generated = keras.ops.convert_to_numpy(self.model.decoder(self.latents, training=False))
        grids = {
            "reconstructions": make_grid(pairs, columns=len(self.images)),
            "generations": make_grid(generated),
            "traversal": self.traversal_grid(),
        }
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with self._writer.as_default(step=step):
            for name, grid in grids.items():
                tf.summary.image(f"monitor/{name}", grid[None], max_outputs=1)
                save_png(grid, self.image_dir / f"{name}_step-{step:08d}.png")
        self._writer.flush()
        return grids

    def traversal_grid(self, dims: int = 8, steps: int = 7) -> np.ndarray:
        """The first image's code with its most informative dimensions (mean KL) swept over ±3."""
        def decode(z, training):
            return keras.ops.convert_to_numpy(keras.ops.cast(self.model.decoder(z, training=training), "float32"))

        labels = self.labeller(self.model.encoder) if self.labeller else None
        return visualize.ranked_traversal(self.model.encoder, decode, self.images, 0, dims, steps, labels=labels)[1]

    def on_train_begin(self, logs=None):
        step = global_step(self.model)
        if step == 0:
            self.draw(0)
        else:
            log.info("resumed at step %d", step)

    def on_epoch_begin(self, epoch, logs=None):
        self._round_start = global_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        step = step_after(self._round_start, batch)
        if step % self.every == 0:
            self.draw(step)

    def on_train_end(self, logs=None):
        step = global_step(self.model)
        if step % self.every and not self.model.stop_training:
            self.draw(step)  # the final state, when training did not end on a multiple
