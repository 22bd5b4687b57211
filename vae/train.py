"""Training the β-VAE with `fit`: strategy, data, callbacks, resume and export.

Training runs in rounds of `validate_every` steps (Keras "epochs"): after each round
come validation, TensorBoard's validation scalars and a backup, so a killed run
restarted with the same command resumes at the last round (its global step, learning
rate and Adam moments included).

Run directory:
    config.json             the resolved config
    backup/worker-<i>/      BackupAndRestore state (resume point)
    checkpoints/            numbered weights every `checkpoint_every` steps
    logs/train, logs/validation, logs/test   TensorBoard
    logs/scalar-lengths.json  the scalar event files' lengths at the last rounds (cut back on resume)
    monitor/                reconstruction and generation grids over training
    history.csv             per-round train and validation losses
    file-checks.json        each image file's check (a resume stats the files, not reads them)
    encoder.keras, decoder.keras, vae.weights.h5   exported at the end
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from data import datasets, pipeline
from common import distribute
from common.config import ConfigError
from common.files import atomic_write
from vae import monitor, visualize
from vae.config import VAEConfig
from vae.model import VAE, build_vae
from vae.splits import resolve_splits

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to try."""


def prepare_run_dir(config: VAEConfig, run_dir) -> Path:
    """Create the run directory, or check that a started run in it has this config."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    started = any((run_dir / "backup").glob("worker-*/training_metadata.json"))
    if saved.exists() and started:
        previous = VAEConfig.load(saved)
        changed = [k for k, v in config.to_dict().items() if previous.to_dict().get(k) != v
                   and k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(
                f"--run-dir: {run_dir} holds a run with different settings "
                f"({', '.join(changed)}); use a new --run-dir or the same settings to resume"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if distribute.is_chief():
        config.save(saved)
    return run_dir


# Settings that may differ when a run is resumed (they do not change the model or data).
# learning_rate and clipnorm: the remedies the non-finite-loss error suggests for a resume.
RESUMABLE_CHANGES = {"epochs", "max_steps", "monitor_every", "log_every", "checkpoint_every",
                     "demo_count", "temperature", "validation_steps", "strategy", "jit_compile",
                     "monitor_dir", "data_root", "learning_rate", "clipnorm"}


def validation_batches(config: VAEConfig) -> int | None:
    """Batches per validation: a tenth of a round by default (a 5 % split of 400 000 photos is
    20 000 images, far more than 100 steps train on); None for the whole split."""
    if config.validation_steps == 0:
        return None
    if config.validation_steps > 0:
        return config.validation_steps
    return max(1, math.ceil(config.validate_every / 10))


def validation_data(config: VAEConfig, splits: datasets.Splits, strategy, load: dict):
    """(dataset, steps) of every validation: the first `validation_batches` batches of the
    split, decoded once at the start and then read from memory (each validation sees the
    same images, and a bounded validation costs no decoding); the whole split, read from
    its files each time, when it is asked for or under MultiWorker."""
    steps = distribute.validation_steps(strategy, validation_batches(config))
    ds = pipeline.load_images(splits.validation, batch_size=config.batch_size, shuffle=False, **load)
    if steps is None:
        return ds, None
    ds = ds.take(steps).cache()
    for _ in ds:  # a cache is kept only once a pass has read it to the end
        pass
    # No prefetch after the cache: Keras drops the validation iterator at every validation,
    # and dropping a prefetching one costs seconds each time (profiled).
    return ds, steps


def resume_step(vae: VAE, backup_dir: Path) -> int:
    """The global step a run resumes from: the one in its backup (0 for a new run).

    Read by loading the backup's weights now (BackupAndRestore loads them again when
    `fit` starts), because the data stream must be built to begin at that step.
    """
    return int(vae.global_step.numpy()) if monitor.load_backup(vae, backup_dir) else 0


def monitor_images(config: VAEConfig, splits: datasets.Splits) -> np.ndarray:
    """The fixed images of the reconstruction grid: --monitor-dir or the validation split."""
    source = config.monitor_dir or splits.validation
    ds = pipeline.load_images(source, config.image_size, batch_size=None, shuffle=False,
                              crop=config.crop)
    return pipeline.to_numpy(ds, limit=config.monitor_count)


def monitor_latents(config: VAEConfig) -> np.ndarray:
    """The fixed codes of the generation grid (seeded, so every run shows the same ones)."""
    rng = np.random.default_rng(config.seed + 12345)
    return rng.standard_normal((config.monitor_count, config.latent_dim)).astype(np.float32)


def train(config: VAEConfig, run_dir, *, verbose: int | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> VAE:
    """Train (or resume) a β-VAE in `run_dir`; returns the trained model.

    callbacks: extra Keras callbacks, run after the run's own (e.g. to time steps).
    """
    # MultiWorker needs its strategy before any other TensorFlow op runs.
    strategy = distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    distribute.check_global_batch(config.batch_size, strategy)
    splits = resolve_splits(config)
    run_dir = prepare_run_dir(config, run_dir)
    # File checks are kept in the run directory: a resume stats its files, not reads them.
    with pipeline.checks_kept_in(run_dir / "file-checks.json"):
        train_files = pipeline.checked_files(splits.train)  # listed and checked once
        train_count = pipeline.count_images(train_files)
        steps_per_epoch = train_count // config.batch_size
        if steps_per_epoch == 0:
            raise ConfigError(f"--batch-size: {config.batch_size} is larger than the "
                              f"{train_count} training images")
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        rounds = math.ceil(total_steps / config.validate_every)
        log.info("training on %d images: %d steps (%d rounds of %d), global batch %d over %d replica(s)",
                 train_count, rounds * config.validate_every, rounds, config.validate_every,
                 config.batch_size, replicas)

        # Initial weights, data order and noise follow --seed; --deterministic also fixes
        # the order of floating-point reductions (CPU: bit-identical runs; slower).
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        with strategy.scope():
            vae = build_vae(config)
        backup_dir = run_dir / "backup" / distribute.task_name()
        start = resume_step(vae, backup_dir)

        load = dict(image_size=config.image_size, crop=config.crop, cache=config.cache)
        # The training stream continues where the backup's step left it: a resumed run sees
        # the images the uninterrupted run saw, in the same order (not the first batches again).
        train_ds = pipeline.load_images(
            train_files, batch_size=config.batch_size, shuffle=True, seed=config.seed,
            repeat=True, drop_remainder=True, start=start * config.batch_size, **load)
        val_ds, val_steps = validation_data(config, splits, strategy, load)
        train_ds, val_ds = distribute.shard_by_data(strategy, train_ds, val_ds)

        chief = distribute.is_chief()
        guard = monitor.NonFiniteGuard()
        extra, callbacks = list(callbacks), [guard]  # first: it sees a bad loss before anything saves
        if chief:  # before the backup: a round's scalars are written, then backed up (see ScalarLogger)
            callbacks.append(monitor.ScalarLogger(run_dir / "logs", config.log_every))
        callbacks.append(monitor.SafeBackupAndRestore(backup_dir, guard, config.validate_every, loaded=start > 0,
                                                      save_freq="epoch", delete_checkpoint=False))
        if chief:
            callbacks += [
                monitor.StepCheckpoint(run_dir / "checkpoints", config.checkpoint_every, guard),
                monitor.Monitor(run_dir / "logs", run_dir / "monitor", monitor_images(config, splits),
                                monitor_latents(config), config.monitor_every,
                                labeller=visualize.factor_labeller(config, count=1000)),
                keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            ]
        callbacks += extra
        with distribute.quiet_end_of_data():
            vae.fit(
                train_ds, epochs=rounds, steps_per_epoch=config.validate_every,
                validation_data=val_ds, validation_steps=val_steps,
                callbacks=callbacks, verbose=distribute.fit_verbosity(verbose),
                shuffle=False,  # the dataset shuffles
            )
    if guard.bad_step is not None:
        raise TrainingError(
            f"the loss became non-finite at step {guard.bad_step}; the last good state is in "
            f"{run_dir / 'backup'} and {run_dir / 'checkpoints'}; try a lower --learning-rate "
            "or --clipnorm 1.0, then run the same command to resume"
        )
    if chief:
        export(vae, run_dir)
    return vae


def export(vae: VAE, run_dir) -> None:
    """encoder.keras and decoder.keras for inference anywhere, vae.weights.h5 for resuming."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / "encoder.keras", vae.encoder.save)
    atomic_write(run_dir / "decoder.keras", vae.decoder.save)
    atomic_write(run_dir / "vae.weights.h5", vae.save_weights)
    log.info("exported encoder.keras, decoder.keras and vae.weights.h5 to %s", run_dir)
