"""A trained run on disk: its config, models, validation images and TensorBoard images.

Layout of a run directory (written by `vae.train`):
    config.json             the resolved config
    encoder.keras, decoder.keras, vae.weights.h5   exported at the end
    logs/                   TensorBoard; metrics.json, history.csv, monitor/, visualize/
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.config import ConfigError
from vae.config import VAEConfig


def require(run_dir: Path, *names: str, hint: str = "train first") -> None:
    """Raise ConfigError naming --run-dir and the first of `names` it lacks."""
    for name in names:
        if not (Path(run_dir) / name).exists():
            raise ConfigError(f"--run-dir: {run_dir} has no {name}; {hint}")


def load_config(run_dir: Path) -> VAEConfig:
    require(run_dir, "config.json")
    return VAEConfig.load(Path(run_dir) / "config.json", "--run-dir")


def load_coder(run_dir: Path):
    """(config, encoder, decoder) of a finished run."""
    import keras

    from vae import model  # noqa: F401  (registers the custom layers)

    require(run_dir, "config.json", "encoder.keras", "decoder.keras")
    run_dir = Path(run_dir)
    return (load_config(run_dir), keras.models.load_model(run_dir / "encoder.keras"),
            keras.models.load_model(run_dir / "decoder.keras"))


def load_trained(run_dir: Path):
    """(config, VAE) rebuilt from config.json with the run's final weights."""
    from vae.model import build_vae

    require(run_dir, "config.json", "vae.weights.h5", hint="finish training first")
    config = load_config(run_dir).replace(strategy="default")
    vae = build_vae(config, vgg_from_checkpoint=True)
    vae.load_weights(str(Path(run_dir) / "vae.weights.h5"))
    return config, vae


def validation_images(config: VAEConfig, limit: int | None = None, folder: str | None = None):
    """(images (N, S, S, 3) in [0, 1], their paths or None) of the validation split or a folder."""
    from data import pipeline
    from vae.splits import resolve_splits

    source = folder or resolve_splits(config).validation
    ds = pipeline.load_images(source, config.image_size, batch_size=None, shuffle=False, crop=config.crop)
    images = pipeline.to_numpy(ds, limit=limit)
    paths = list(source) if isinstance(source, (list, tuple)) else None
    return images, (paths[:len(images)] if paths else None)


def check_index(flag: str, index: int, count: int) -> None:
    if not 0 <= index < count:
        raise ConfigError(f"{flag}: {index} is out of range; the validation split has {count} images")


def final_step(run_dir: Path, validate_every: int) -> int:
    """The run's final global step: metrics.json's, else rounds in history.csv × validate_every."""
    path = Path(run_dir) / "metrics.json"
    if path.exists():
        step = json.loads(path.read_text()).get("step")
        if isinstance(step, int):
            return step
    history = Path(run_dir) / "history.csv"
    if history.exists():
        return validate_every * max(len(history.read_text().strip().splitlines()) - 1, 0)
    return 0


def tensorboard_image(run_dir: Path, tag: str, image: np.ndarray, step: int = 0) -> None:
    """One uint8 image under logs/visualize, for TensorBoard's Images tab."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(Path(run_dir) / "logs" / "visualize"))
    with writer.as_default(step=step):
        tf.summary.image(tag, image[None], max_outputs=1)
    writer.flush()
