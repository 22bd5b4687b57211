"""Train one curation pass's ensemble: N members, each through the original's 4-stage schedule.

    python transfer_learning/train.py --data DIR/pass1 --run-dir runs/pass1
    python transfer_learning/train.py --data DIR/pass2 --run-dir runs/pass2 --members 3
    python transfer_learning/train.py --data synth/pass1 --run-dir runs/p1 --backbone MobileNetV3Small \\
        --weights none --image-size 64 --epochs-per-stage 2      # offline, minutes on a CPU

--data holds one sub-folder per class (building/not_building or suitable/unsuitable,
as data/synthetic.py writes them). Stages (original): 0 base frozen, then unfreeze
from the last conv5 block, from conv5 block 3, all of conv5, each to the end of the
base (transfer_learning.member.stage_layers); RMSprop 5e-5, binary cross-entropy.
Unfrozen BatchNorm layers keep their statistics (--bn-mode inference) or train on
the global batch as the original's did (--bn-mode train). With --class-weight auto
each class weighs the inverse of its frequency in the loss.

Each member keeps its best epoch over all stages by validation F-beta at the
curation threshold (--selection-beta 0.5, --threshold 0.9), ties by accuracy; see
transfer_learning.selection. Run the same command again after a crash or kill:
finished members are kept, an unfinished one resumes after its last finished epoch
(weights, optimizer state, epoch counter), and a saved member is only ever replaced
by a better epoch.

Run directory:
    config.json             the resolved settings
    base_init.weights.h5    with --weights none: the one random base every member starts from
                            (pass it as --weights to the other pass so that all six share a trunk)
    member_<i>.keras        the member of the best epoch (classify.py reads these)
    member_<i>.json         its validation metrics (accuracy, precision, recall, F-beta), score,
                            stage, epoch, class counts and weights, image size, crop, SHA-256
    progress/               resume points: member_<i>.json names the state of its last epoch
                            (member_<i>.epoch-<n>.weights.h5: weights and optimizer state)
    logs/member_<i>/        TensorBoard (train/ and validation/)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # as a script: quiet TensorFlow's C++ start-up logs, before it is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from common import distribute
from common.cli import documented_parser, exit_code, log_to_stderr
from common.config import ConfigError
from common.files import atomic_write, write_json
from data import pipeline
from data.pipeline import DataError
from transfer_learning import config as cfg
from transfer_learning.augment import augmentation
from transfer_learning.config import TrainConfig
from transfer_learning.member import (MemberError, build_member, save_base_init, set_stage,
                                      with_global_batchnorm)
from transfer_learning.selection import NO_SCORE, BestMember, FBetaLogs, member_metrics, saved_score

log = logging.getLogger(__name__)

KNOWN_POSITIVE = {frozenset({"building", "not_building"}): "building",
                  frozenset({"suitable", "unsuitable"}): "suitable"}
# Settings that may change when a run is resumed (they change neither model nor data).
RESUMABLE_CHANGES = {"strategy", "jit_compile", "validation_steps", "cache", "members"}
CALIBRATION_IMAGES = 256  # training images (at 64 px; fewer at larger sizes, one batch) that set
                          # a random base's BatchNorm statistics


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what to try."""


# --------------------------------------------------------------------------- data


def class_folders(folder, positive_class: str = "") -> tuple[list[str], str]:
    """(class names [negative, positive], positive) of a folder with two class sub-folders."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) != 2:
        raise DataError(f"{folder}: expected two class sub-folders (e.g. building/ and "
                        f"not_building/), found {len(names)}: {', '.join(names) or 'none'}")
    positive = positive_class or KNOWN_POSITIVE.get(frozenset(names), "")
    if not positive:
        raise ConfigError(f"--positive-class: which of {names[0]} and {names[1]} scores 1?")
    if positive not in names:
        raise ConfigError(f"--positive-class: {positive!r} is not a class of {folder} ({', '.join(names)})")
    negative = next(n for n in names if n != positive)
    return [negative, positive], positive


def labelled_files(folder, classes: list[str]) -> tuple[list[str], list[int]]:
    """Decodable image paths under folder/<class>/ and their labels (index in `classes`)."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        sub = Path(folder) / name
        if not sub.is_dir():
            raise DataError(f"{folder}: no {name}/ sub-folder")
        good = pipeline.check_images(pipeline.find_images(sub)).good
        if not good:
            raise DataError(f"{sub}: no image can be decoded")
        paths += good
        labels += [label] * len(good)
    return paths, labels


def split_data(config: TrainConfig):
    """(train paths, train labels, validation paths, validation labels, classes, positive)."""
    classes, positive = class_folders(config.data, config.positive_class)
    paths, labels = labelled_files(config.data, classes)
    if config.validation:
        val_classes, _ = class_folders(config.validation, positive)
        if sorted(val_classes) != sorted(classes):
            raise DataError(f"{config.validation}: classes {val_classes} differ from {config.data}'s {classes}")
        val_paths, val_labels = labelled_files(config.validation, classes)
        return paths, labels, val_paths, val_labels, classes, positive
    train_p, train_l, val_p, val_l = [], [], [], []
    for path, label in zip(paths, labels):
        # The data pipeline's hash split: a file never moves between splits.
        held_out = pipeline.split_fraction(path) < config.validation_fraction
        (val_p if held_out else train_p).append(path)
        (val_l if held_out else train_l).append(label)
    if not val_p or not train_p:
        raise DataError(f"{config.data}: {len(paths)} images are too few for a "
                        f"{config.validation_fraction:.0%} validation split")
    return train_p, train_l, val_p, val_l, classes, positive


def make_dataset(paths, labels, config: TrainConfig, *, training: bool, seed: int) -> tf.data.Dataset:
    """Batches of (images (B, S, S, 3) in [0, 1], labels (B, 1) float32)."""
    ds = tf.data.Dataset.from_tensor_slices((list(paths), [[float(y)] for y in labels]))

    def load(path, label):
        return pipeline.decode_and_resize(tf.io.read_file(path), config.image_size, config.crop), label

    if config.cache:
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    else:
        if training:  # shuffling paths is free; decoded images would need a big buffer
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.repeat().batch(config.batch_size, drop_remainder=True)
        if config.augment:
            augment = augmentation(seed)  # built once, outside the map function
            ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.batch(config.batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_counts(labels, classes: list[str]) -> dict[str, int]:
    """Images per class name."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    return {name: int(counts[i]) for i, name in enumerate(classes)}


def class_weights(labels, mode: str = "auto") -> dict[int, float] | None:
    """Keras `class_weight`: auto gives class c the weight n / (k · n_c) (inverse frequency,
    k classes, so the weights average 1 over the images and are all 1 when balanced); none: None."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=int))
    total, present = counts.sum(), np.count_nonzero(counts)
    return {c: float(total / (present * n)) for c, n in enumerate(counts) if n}


# --------------------------------------------------------------------------- callbacks


class StageLogger(keras.callbacks.Callback):
    """Adds the stage to each epoch's logs, so TensorBoard shows where stages change."""

    def __init__(self):
        super().__init__()
        self.stage = 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = float(self.stage)


class EpochState(keras.callbacks.Callback):
    """The resume point after every epoch: weights and optimizer state, then the progress naming them.

    Each epoch's state goes to a new file (`<member>.epoch-<n>.weights.h5`) and only
    then does the progress JSON name it, so a kill at any moment leaves a progress
    file that names a whole state; older states are deleted afterwards. An epoch
    whose loss is not finite is not saved and stops training (the last good state stays).
    """

    def __init__(self, folder: Path, name: str, progress: dict, stage: int, stage_end: int,
                 write: bool = True):
        super().__init__()
        self.folder, self.name, self.progress = Path(folder), name, progress
        self.stage, self.stage_end, self.write = stage, stage_end, write
        self.bad_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_epoch = epoch + 1
            self.model.stop_training = True
            return
        done = epoch + 1
        self.progress["epoch"] = done
        if done == self.stage_end:
            self.progress["stages_done"] = sorted(set(self.progress.get("stages_done", [])) | {self.stage})
        if not self.write:
            return
        weights = f"{self.name}.epoch-{done:04d}.weights.h5"
        atomic_write(self.folder / weights, self.model.save_weights)
        self.progress["weights"] = weights
        write_json(self.folder / f"{self.name}.json", self.progress)
        for old in self.folder.glob(f"{self.name}.epoch-*.weights.h5"):
            if old.name != weights:
                old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- training


def prepare_run_dir(config: TrainConfig, run_dir) -> Path:
    """Create the run directory, or check that a started run in it has these settings.

    A run that trained nothing yet (e.g. stopped by a failed download) takes new settings.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    started = any((run_dir / "progress").glob("member_*.json")) or any(run_dir.glob("member_*.keras"))
    if saved.exists():
        previous = TrainConfig.load(saved, "--run-dir").to_dict()
        changed = [k for k, v in config.to_dict().items()
                   if previous.get(k) != v and k not in RESUMABLE_CHANGES]
        if changed and started:
            raise ConfigError(f"--run-dir: {run_dir} holds a run with different settings "
                              f"({', '.join(changed)}); use a new --run-dir or the same settings")
        if changed:  # nothing trained: the old random base belongs to the old settings
            (run_dir / "base_init.weights.h5").unlink(missing_ok=True)
    (run_dir / "progress").mkdir(parents=True, exist_ok=True)
    if distribute.is_chief():
        config.save(saved)
    return run_dir


def base_weights(config: TrainConfig, run_dir: Path, train_paths) -> str:
    """What every member starts from: ImageNet, the user's file, or this run's one random base."""
    if config.weights != "none":
        return config.weights
    path = run_dir / "base_init.weights.h5"
    if not path.exists():
        # A random base needs BatchNorm statistics of real images (see calibrate_batchnorm).
        count = int(np.clip(CALIBRATION_IMAGES * (64 / config.image_size) ** 2, 16, CALIBRATION_IMAGES))
        sample = [train_paths[i] for i in np.random.default_rng(config.seed).permutation(
            len(train_paths))[:count]]
        images = np.stack([pipeline.decode_and_resize(tf.io.read_file(p), config.image_size,
                                                      config.crop).numpy() for p in sample])
        save_base_init(path, config.backbone, config.image_size, seed=config.seed, images=images)
        log.info("random base initialisation (no ImageNet weights), BatchNorm statistics from %d "
                 "training images, saved to %s", len(sample), path)
    return str(path)


def read_progress(path: Path) -> dict:
    """A member's resume point: global epochs done, the file of their state, stages done, complete."""
    progress = json.loads(path.read_text()) if path.exists() else {}
    return {"epoch": int(progress.get("epoch", 0)), "weights": progress.get("weights", ""),
            "stages_done": list(progress.get("stages_done", [])),
            "complete": bool(progress.get("complete", False))}


def train_member(index: int, config: TrainConfig, run_dir: Path, data, strategy, weights: str,
                 verbose, callbacks=()) -> dict:
    """Train member `index` through the epochs it has not done yet; returns its best metrics.

    Stage at position p of `config.stages` is the member's epochs [p·E, (p+1)·E) with
    E = epochs per stage. A killed run resumes after its last finished epoch: the
    weights, the stage's optimizer state and the epoch counter come back (each stage
    has a new optimizer, because its trainable set differs). The data order of a
    (re)started `fit` is seeded by the epoch it starts at.
    """
    train_p, train_l, val_p, val_l, classes, positive = data
    name = f"member_{index}"
    folder = run_dir / "progress"
    progress_path = folder / f"{name}.json"
    progress = read_progress(progress_path)
    member_path = run_dir / f"{name}.keras"
    member_json = member_path.with_suffix(".json")
    if progress["complete"] and member_path.exists():
        info = json.loads(member_json.read_text()) if member_json.exists() else {}
        log.info("%s: already trained (validation F%g %s)", name, config.selection_beta,
                 info.get("val_fbeta", "unknown"))
        return info
    seed = config.seed + index
    keras.utils.set_random_seed(seed)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_member(config.backbone, config.image_size, weights,
                             dense_layers=config.dense_layers, dense_units=config.dense_units,
                             dropout=config.dropout, l2=config.l2, seed=seed, name=name)
        if config.bn_mode == "train":
            model = with_global_batchnorm(model)
    done = progress["epoch"]
    state_path = folder / progress["weights"] if progress["weights"] else None
    if done and (state_path is None or not state_path.exists()):
        raise TrainingError(f"{progress_path}: names {progress['weights'] or 'no'} state file after "
                            f"{done} epochs; delete {progress_path} to train {name} again")
    if done:
        model.load_weights(str(state_path))  # the weights; a stage's optimizer state comes below
    val_ds = make_dataset(val_p, val_l, config, training=False, seed=seed)
    (val_ds,) = distribute.shard_by_data(strategy, val_ds)
    steps = config.steps_per_epoch or len(train_p) // config.batch_size
    weights_by_class = class_weights(train_l, config.class_weight)
    info = {"member": index, "seed": seed, "backbone": config.backbone, "weights": config.weights,
            "image_size": config.image_size, "crop": config.crop, "classes": classes,
            "positive_class": positive, "train_images": len(train_p),
            "validation_images": len(val_p), "train_counts": class_counts(train_l, classes),
            "validation_counts": class_counts(val_l, classes), "bn_mode": config.bn_mode,
            "class_weight": None if weights_by_class is None else
            {classes[c]: w for c, w in weights_by_class.items()},
            "threshold": config.threshold, "selection_beta": config.selection_beta}
    chief = distribute.is_chief()

    def measure(path: Path) -> dict:
        with strategy.scope():
            saved = keras.models.load_model(path, compile=False)
            saved.compile(loss="binary_crossentropy", metrics=member_metrics(config.threshold))
        logs = saved.evaluate(val_ds, steps=distribute.validation_steps(strategy, config.validation_steps or None),
                              verbose=0, return_dict=True)
        return {f"val_{k}": v for k, v in logs.items()}

    best = BestMember(member_path, info, config.selection_beta,
                      saved_score(member_path, config.selection_beta, config.threshold, measure),
                      write=chief)
    if best.best != NO_SCORE:
        log.info("%s: the saved member scores F%g %.4f, accuracy %.4f; only a better epoch replaces it",
                 name, config.selection_beta, *best.best)
    stage_logger = StageLogger()
    fixed = [stage_logger, FBetaLogs(config.selection_beta), best]
    board = [keras.callbacks.TensorBoard(str(run_dir / "logs" / name), write_graph=False)] if chief else []
    for position, stage in enumerate(config.stages):
        first, end = position * config.epochs_per_stage, (position + 1) * config.epochs_per_stage
        if done >= end:
            continue
        unfrozen = set_stage(model, stage, config.bn_mode)
        with strategy.scope():  # a new optimizer per stage: the trainable set changed
            model.compile(optimizer=keras.optimizers.RMSprop(config.learning_rate),
                          loss="binary_crossentropy", metrics=member_metrics(config.threshold),
                          jit_compile=config.jit_compile)
            if done > first:  # killed inside this stage: its optimizer state too
                model.optimizer.build(model.trainable_variables)
        if done > first:
            model.load_weights(str(state_path))
            log.info("%s: resuming stage %d at epoch %d of %d", name, stage, done - first + 1,
                     config.epochs_per_stage)
        log.info("%s stage %d: %d base layers unfrozen (BatchNorm: %s), %d trainable weights, "
                 "%d steps x %d epochs, global batch %d over %d replica(s)", name, stage, unfrozen,
                 config.bn_mode, len(model.trainable_weights), steps, end - done, config.batch_size,
                 replicas)
        best.stage = stage_logger.stage = stage
        state = EpochState(folder, name, progress, stage, end, write=chief)
        # Each (re)started fit draws its own data order and augmentation, seeded by where it starts.
        train_ds = make_dataset(train_p, train_l, config, training=True, seed=seed * 10_000 + done)
        (train_ds,) = distribute.shard_by_data(strategy, train_ds)
        model.fit(train_ds, epochs=end, initial_epoch=done, steps_per_epoch=steps,
                  validation_data=val_ds,
                  validation_steps=distribute.validation_steps(strategy, config.validation_steps or None),
                  class_weight=weights_by_class, callbacks=[*fixed, state, *board, *callbacks],
                  verbose=verbose, shuffle=False)  # the dataset shuffles
        if state.bad_epoch is not None:
            raise TrainingError(f"{name} stage {stage}: the loss became non-finite in epoch "
                                f"{state.bad_epoch}; the last good state is kept in {folder}; "
                                "try a lower --learning-rate in a new --run-dir")
        done = progress["epoch"]
    progress["complete"] = True
    if chief:
        write_json(progress_path, progress)
    keras.backend.clear_session()
    return json.loads(member_json.read_text()) if member_json.exists() else {}


def train(config: TrainConfig, run_dir, *, verbose: int | str | None = None, callbacks=()) -> list[dict]:
    """Train (or finish) `config.members` members in `run_dir`; returns their best metrics.

    `callbacks`: more Keras callbacks for every `fit` (after the ones that save).
    """
    strategy = distribute.make_strategy(config.strategy)  # before any other TensorFlow op
    distribute.check_global_batch(config.batch_size, strategy)
    run_dir = prepare_run_dir(config, run_dir)
    data = split_data(config)
    if len(data[0]) < config.batch_size:
        raise ConfigError(f"--batch-size: {config.batch_size} is larger than the "
                          f"{len(data[0])} training images")
    classes = data[4]
    log.info("%s: %d training images %s and %d validation images %s (positive: %s)", config.data,
             len(data[0]), class_counts(data[1], classes), len(data[2]), class_counts(data[3], classes),
             data[5])
    weights_by_class = class_weights(data[1], config.class_weight)
    if weights_by_class is not None:
        log.info("class weights (--class-weight auto): %s",
                 {classes[c]: round(w, 4) for c, w in weights_by_class.items()})
    verbose = distribute.fit_verbosity(verbose)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        weights = base_weights(config, run_dir, data[0])
        results = [train_member(i, config, run_dir, data, strategy, weights, verbose, callbacks)
                   for i in range(config.members)]
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    for i, result in enumerate(results):
        log.info("member_%d: validation F%g %.4f at %g (precision %.4f, recall %.4f), accuracy %.4f "
                 "(stage %s, epoch %s)", i, config.selection_beta, result.get("val_fbeta", math.nan),
                 config.threshold, result.get("val_precision", math.nan),
                 result.get("val_recall", math.nan), result.get("val_accuracy", math.nan),
                 result.get("stage", "?"), result.get("epoch", "?"))
    return results


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser("python transfer_learning/train.py", __doc__)
    parser.add_argument("--run-dir", default="runs/pass1", help="everything of this run lives here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    cfg.add_arguments(parser, TrainConfig)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    log_to_stderr()
    return exit_code(lambda: train(cfg.from_args(TrainConfig, args), args.run_dir,
                                   verbose=0 if args.quiet else None),
                     usage=(ConfigError, DataError, MemberError), failure=(TrainingError,))


if __name__ == "__main__":
    sys.exit(main())
