"""Generating new buildings: decode codes drawn from the prior N(0, T²·I)."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from common.images import make_grid, save_png

log = logging.getLogger(__name__)


def sample_latents(count: int, latent_dim: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """(count, latent_dim) codes from N(0, T²·I); T < 1 trades variety for typicality."""
    rng = np.random.default_rng(seed)
    return (temperature * rng.standard_normal((count, latent_dim))).astype(np.float32)


def generate(decoder: keras.Model, count: int, temperature: float = 1.0, seed: int = 0,
             batch_size: int = 64) -> np.ndarray:
    """(count, S, S, 3) images in [0, 1] decoded from random codes."""
    latent_dim = decoder.input_shape[-1]
    codes = sample_latents(count, latent_dim, temperature, seed)
    return np.asarray(decoder.predict(codes, batch_size=batch_size, verbose=0))


def write_images(images: np.ndarray, out_dir, prefix: str = "generated") -> list[Path]:
    """One PNG per image plus `<prefix>_grid.png` of them all."""
    out_dir = Path(out_dir)
    paths = [save_png(make_grid(image[None], pad=0), out_dir / f"{prefix}_{i:04d}.png")
             for i, image in enumerate(images)]
    save_png(make_grid(images), out_dir / f"{prefix}_grid.png")
    return paths


def generate_run(run_dir: Path, count: int | None = None, temperature: float | None = None, seed: int = 0,
                 out: str | None = None, prefix: str = "generated") -> list[Path]:
    """`python main.py generate`: decode random codes with a run's decoder into PNGs."""
    from common.config import ConfigError
    from vae import rundir

    rundir.require(run_dir, "config.json", "decoder.keras")
    config = rundir.load_config(run_dir)
    count = config.demo_count if count is None else count
    temperature = config.temperature if temperature is None else temperature
    if count < 1:
        raise ConfigError(f"--count: must be at least 1, got {count}")
    if temperature <= 0:
        raise ConfigError(f"--temperature: must be > 0, got {temperature}")
    from vae import model  # noqa: F401  (registers the custom layers)

    decoder = keras.models.load_model(Path(run_dir) / "decoder.keras")
    out_dir = Path(out) if out else Path(run_dir) / prefix
    paths = write_images(generate(decoder, count, temperature, seed), out_dir, prefix)
    log.info("wrote %d generated images and %s_grid.png to %s", len(paths), prefix, out_dir)
    return paths
