"""Pictures of what a trained β-VAE learned: traversals, interpolations, latent PCA, loss curves, GIFs.

Pure functions from models/arrays to arrays or matplotlib Figures; files are written
only by the `save_*` helpers. Figures are built with `matplotlib.figure.Figure`
(no pyplot), so they work under any backend and never open a window.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vae.monitor import make_grid

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- latents

def encode_means(encoder, images, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(z_mean, z_log_var), each (N, D), of (N, H, W, 3) images in [0, 1]."""
    means, log_vars = [], []
    for i in range(0, len(images), batch_size):
        m, v = encoder(np.asarray(images[i:i + batch_size], np.float32), training=False)
        means.append(np.asarray(m, np.float32))
        log_vars.append(np.asarray(v, np.float32))
    return np.concatenate(means), np.concatenate(log_vars)


def mean_kl_per_dimension(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """Mean over images of KL(q(z_d|x) ‖ N(0, 1)) per dimension, (D,) in nats."""
    z_log_var = np.clip(z_log_var, -30.0, 20.0)
    return np.mean(0.5 * (np.square(z_mean) + np.exp(z_log_var) - 1.0 - z_log_var), axis=0)


def top_dimensions(kl: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` most informative dimensions, highest mean KL first."""
    return np.argsort(-np.asarray(kl), kind="stable")[:k]


def traversal(decoder, z: np.ndarray, dims, values) -> np.ndarray:
    """Decode `z` (D,) with each of `dims` swept over `values`: (len(dims), len(values), H, W, 3)."""
    dims, values = list(dims), np.asarray(values, np.float32)
    codes = np.repeat(np.asarray(z, np.float32)[None], len(dims) * len(values), axis=0)
    for r, d in enumerate(dims):
        codes[r * len(values):(r + 1) * len(values), d] = values
    images = np.asarray(decoder(codes, training=False), np.float32)
    return images.reshape(len(dims), len(values), *images.shape[1:])


def slerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models), (T, D)."""
    z0, z1, t = np.asarray(z0, np.float64), np.asarray(z1, np.float64), np.asarray(t, np.float64)[:, None]
    cos = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:  # (anti)parallel codes: fall back to a straight line
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    return ((np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)).astype(np.float32)


def interpolation_path(z0, z1, steps: int, mode: str = "linear") -> np.ndarray:
    """`steps` codes from z0 to z1 (both ends included), mode 'linear' or 'spherical'."""
    t = np.linspace(0.0, 1.0, steps)
    if mode == "linear":
        return ((1 - t)[:, None] * np.asarray(z0, np.float32) + t[:, None] * np.asarray(z1, np.float32)).astype(np.float32)
    if mode == "spherical":
        return slerp(z0, z1, t)
    raise ValueError(f"interpolation mode must be 'linear' or 'spherical', got {mode!r}")


# --------------------------------------------------------------------------- drawing

def labelled_grid(images: np.ndarray, labels, label_width: int = 64, pad: int = 2) -> np.ndarray:
    """(R, C, H, W, 3) floats → a uint8 grid with one text label left of each row."""
    rows, cols = images.shape[:2]
    grid = make_grid(images.reshape(rows * cols, *images.shape[2:]), columns=cols, pad=pad)
    canvas = Image.new("RGB", (grid.shape[1] + label_width, grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    height = images.shape[2]
    for r, text in enumerate(labels):
        draw.text((2, pad + r * (height + pad) + max(height // 2 - 6, 0)), str(text), fill=(0, 0, 0))
    return np.asarray(canvas)


def traversal_frames(images: np.ndarray) -> list[np.ndarray]:
    """(R, C, H, W, 3) traversal → C frames, each a column of the R dimensions at one value."""
    return [make_grid(images[:, c], columns=1) for c in range(images.shape[1])]


def save_gif(frames, path, duration_ms: int = 120, bounce: bool = True) -> Path:
    """Frames (uint8 arrays, same shape) as a looping GIF; `bounce` plays forward then back."""
    frames = list(frames)
    if not frames:
        raise ValueError("save_gif: no frames")
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    tmp = path.with_name(path.name + ".tmp")
    pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms, loop=0)
    tmp.replace(path)
    return path


def latent_pca(z_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA projection (N, 2) of codes and the explained-variance ratio of each axis."""
    x = np.asarray(z_mean, np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s ** 2
    ratio = var[:2] / max(var.sum(), 1e-12)
    proj = x @ vt[:2].T
    if proj.shape[1] < 2:  # latent_dim 1
        proj, ratio = np.pad(proj, ((0, 0), (0, 1))), np.pad(ratio, (0, 1))
    return proj, ratio


def latent_pca_figure(z_mean: np.ndarray, colour=None, colour_name: str = "", level_names=None):
    """Scatter of the 2-D PCA of latent means, coloured by a factor when given."""
    from matplotlib.figure import Figure

    proj, ratio = latent_pca(z_mean)
    fig = Figure(figsize=(5, 4.5), dpi=100)
    ax = fig.add_subplot()
    if colour is None:
        ax.scatter(proj[:, 0], proj[:, 1], s=6, alpha=0.7)
    else:
        colour = np.asarray(colour)
        for level in np.unique(colour):
            name = level_names[level] if level_names is not None else str(level)
            sel = colour == level
            ax.scatter(proj[sel, 0], proj[sel, 1], s=6, alpha=0.7, label=name)
        ax.legend(title=colour_name, fontsize=7, markerscale=2)
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    ax.set_title("latent means (validation split)")
    fig.tight_layout()
    return fig


def loss_curves_figure(history):
    """Train and validation curves of each loss term from a history.csv DataFrame."""
    from matplotlib.figure import Figure

    terms = [c for c in history.columns if not c.startswith("val_") and c not in ("epoch", "learning_rate")
             and f"val_{c}" in history.columns]
    if not terms:
        raise ValueError("history.csv has no train/validation pairs of loss columns")
    fig = Figure(figsize=(4 * len(terms), 3.2), dpi=100)
    x = history["epoch"].to_numpy() + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for i, term in enumerate(terms):
        ax = fig.add_subplot(1, len(terms), i + 1)
        ax.plot(x, history[term], label="train")
        ax.plot(x, history[f"val_{term}"], label="validation")
        ax.set_title(term)
        ax.set_xlabel("validation round")
        if history[term].min() > 0 and history[term].max() / max(history[term].min(), 1e-12) > 50:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a Figure to an (H, W, 3) uint8 array (Agg canvas, any backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def monitor_frames(monitor_dir, name: str = "reconstructions") -> list[np.ndarray]:
    """The Monitor callback's `<name>_step-*.png` grids in step order, as uint8 arrays."""
    paths = sorted(Path(monitor_dir).glob(f"{name}_step-*.png"),
                   key=lambda p: int(re.search(r"step-(\d+)", p.name).group(1)))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]
