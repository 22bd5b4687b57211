"""Train one curation pass's ensemble: N members, each through the original's 4-stage schedule.

    python transfer_learning/train.py --data DIR/pass1 --run-dir runs/pass1
    python transfer_learning/train.py --data DIR/pass2 --run-dir runs/pass2 --members 3
    python transfer_learning/train.py --data synth/pass1 --run-dir runs/p1 --backbone MobileNetV3Small \\
        --weights none --image-size 64 --epochs-per-stage 2      # offline, minutes on a CPU

--data holds one sub-folder per class (building/not_building or suitable/unsuitable,
as data/synthetic.py writes them). Stages (original): 0 base frozen, then unfreeze
the last conv5 block, conv5 blocks 3 to the last, all of conv5; RMSprop 5e-5,
binary cross-entropy, accuracy. The best epoch by validation accuracy over all
stages is kept. Run the same command again after a crash: finished members are
kept and an unfinished one resumes after its last finished stage.

Run directory:
    config.json             the resolved settings
    base_init.weights.h5    with --weights none: the one random base every member starts from
                            (pass it as --weights to the other pass so that all six share a trunk)
    member_<i>.keras        the member, best by validation accuracy (classify.py reads these)
    member_<i>.json         its validation metrics, stage, epoch, classes, image size, crop
    progress/               resume points (weights after each finished stage)
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
from common.cli import exit_code
from common.config import ConfigError
from common.files import atomic_write, write_json
from data import pipeline
from data.pipeline import DataError
from transfer_learning import config as cfg
from transfer_learning.augment import augmentation
from transfer_learning.config import TrainConfig
from transfer_learning.member import MemberError, build_member, save_base_init, set_stage

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


# --------------------------------------------------------------------------- callbacks


def save_member(model: keras.Model, path: Path) -> None:
    """The member without optimizer state, written under a temporary name then renamed."""
    atomic_write(path, keras.Model(model.input, model.output, name=model.name).save)


class BestMember(keras.callbacks.Callback):
    """Keep the member of the best epoch by validation accuracy, over all stages, with its JSON."""

    def __init__(self, path: Path, info: dict, best: float = -math.inf, write: bool = True):
        super().__init__()
        self.path, self.info, self.best, self.write = Path(path), dict(info), best, write
        self.stage = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        accuracy = logs.get("val_accuracy")
        if accuracy is None or not accuracy > self.best:
            return
        self.best = float(accuracy)
        if not self.write:
            return
        save_member(self.model, self.path)
        metrics = {k: float(v) for k, v in logs.items() if k.startswith("val_")}
        write_json(self.path.with_suffix(".json"),
                   {**self.info, **metrics, "stage": self.stage, "epoch": int(epoch) + 1})
        log.info("%s: validation accuracy %.4f (stage %d, epoch %d) -> %s",
                 self.path.stem, accuracy, self.stage, epoch + 1, self.path.name)


class StageLogger(keras.callbacks.Callback):
    """Adds the stage to each epoch's logs, so TensorBoard shows where stages change."""

    def __init__(self):
        super().__init__()
        self.stage = 0

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = float(self.stage)


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


def train_member(index: int, config: TrainConfig, run_dir: Path, data, strategy, weights: str,
                 verbose) -> dict:
    """Train member `index` through the remaining stages; returns its best metrics."""
    train_p, train_l, val_p, val_l, classes, positive = data
    name = f"member_{index}"
    progress_path = run_dir / "progress" / f"{name}.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"stages_done": []}
    member_json = run_dir / f"{name}.json"
    if progress.get("complete") and (run_dir / f"{name}.keras").exists():
        log.info("%s: already trained (validation accuracy %.4f)", name, progress["best"])
        return json.loads(member_json.read_text())
    seed = config.seed + index
    keras.utils.set_random_seed(seed)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_member(config.backbone, config.image_size, weights,
                             dense_layers=config.dense_layers, dense_units=config.dense_units,
                             dropout=config.dropout, l2=config.l2, seed=seed, name=name)
    weights_path = run_dir / "progress" / f"{name}.weights.h5"
    if progress["stages_done"]:
        model.load_weights(str(weights_path))
        log.info("%s: resuming after stage %d", name, progress["stages_done"][-1])
    train_ds = make_dataset(train_p, train_l, config, training=True, seed=seed)
    val_ds = make_dataset(val_p, val_l, config, training=False, seed=seed)
    train_ds, val_ds = distribute.shard_by_data(strategy, train_ds, val_ds)
    steps = config.steps_per_epoch or len(train_p) // config.batch_size
    info = {"member": index, "seed": seed, "backbone": config.backbone, "weights": config.weights,
            "image_size": config.image_size, "crop": config.crop, "classes": classes,
            "positive_class": positive, "train_images": len(train_p),
            "validation_images": len(val_p)}
    chief = distribute.is_chief()
    best = BestMember(run_dir / f"{name}.keras", info, progress.get("best", -math.inf), write=chief)
    stage_logger = StageLogger()
    callbacks = [stage_logger, best]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs" / name), write_graph=False))
    for position, stage in enumerate(config.stages):
        if stage in progress["stages_done"]:
            continue
        unfrozen = set_stage(model, stage)
        with strategy.scope():  # a new optimizer per stage: the trainable set changed
            model.compile(optimizer=keras.optimizers.RMSprop(config.learning_rate),
                          loss="binary_crossentropy",
                          metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                          jit_compile=config.jit_compile)
        log.info("%s stage %d: %d base layers unfrozen, %d trainable weights, %d steps x %d epochs, "
                 "global batch %d over %d replica(s)", name, stage, unfrozen,
                 len(model.trainable_weights), steps, config.epochs_per_stage, config.batch_size, replicas)
        best.stage = stage_logger.stage = stage
        history = model.fit(train_ds, epochs=(position + 1) * config.epochs_per_stage,
                            initial_epoch=position * config.epochs_per_stage, steps_per_epoch=steps,
                            validation_data=val_ds,
                            validation_steps=distribute.validation_steps(strategy, config.validation_steps or None),
                            callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset shuffles
        losses = history.history.get("loss", [])
        if losses and not all(math.isfinite(v) for v in losses):
            raise TrainingError(f"{name} stage {stage}: the loss became non-finite; "
                                "try a lower --learning-rate")
        progress["stages_done"].append(stage)
        progress["best"] = best.best
        if chief:
            atomic_write(weights_path, model.save_weights)
            write_json(progress_path, progress)
    progress["complete"] = True
    if chief:
        write_json(progress_path, progress)
    keras.backend.clear_session()
    return json.loads(member_json.read_text()) if member_json.exists() else {}


def train(config: TrainConfig, run_dir, *, verbose: int | str | None = None) -> list[dict]:
    """Train (or finish) `config.members` members in `run_dir`; returns their best metrics."""
    strategy = distribute.make_strategy(config.strategy)  # before any other TensorFlow op
    distribute.check_global_batch(config.batch_size, strategy)
    run_dir = prepare_run_dir(config, run_dir)
    data = split_data(config)
    if len(data[0]) < config.batch_size:
        raise ConfigError(f"--batch-size: {config.batch_size} is larger than the "
                          f"{len(data[0])} training images")
    log.info("%s: %d training and %d validation images, classes %s (positive: %s)",
             config.data, len(data[0]), len(data[2]), data[4], data[5])
    verbose = distribute.fit_verbosity(verbose)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        weights = base_weights(config, run_dir, data[0])
        results = [train_member(i, config, run_dir, data, strategy, weights, verbose)
                   for i in range(config.members)]
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    for result in results:
        log.info("member_%d: best validation accuracy %.4f (stage %d, epoch %d)", result["member"],
                 result["val_accuracy"], result["stage"], result["epoch"])
    return results


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python transfer_learning/train.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--run-dir", default="runs/pass1", help="everything of this run lives here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    cfg.add_arguments(parser, TrainConfig)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return exit_code(lambda: train(cfg.from_args(TrainConfig, args), args.run_dir,
                                   verbose=0 if args.quiet else None),
                     usage=(ConfigError, DataError, MemberError), failure=(TrainingError,))


if __name__ == "__main__":
    sys.exit(main())
