"""Pictures of what a trained β-VAE learned: traversals, interpolations, latent PCA, loss curves, GIFs.

Pure functions from models/arrays to arrays or matplotlib Figures, then the three
commands of `python main.py` that write them for a finished run (`traverse`,
`interpolate`, `plots`). Figures are built with `matplotlib.figure.Figure` (no
pyplot), so they work under any backend and never open a window.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image

from common.images import figure_to_array, labelled_grid, make_grid, save_gif, save_png
from vae.latents import encode_means, mean_kl_per_dimension, top_dimensions

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- latents

def traversal(decoder, z: np.ndarray, dims, values) -> np.ndarray:
    """Decode `z` (D,) with each of `dims` swept over `values`: (len(dims), len(values), H, W, 3)."""
    dims, values = list(dims), np.asarray(values, np.float32)
    codes = np.repeat(np.asarray(z, np.float32)[None], len(dims) * len(values), axis=0)
    for r, d in enumerate(dims):
        codes[r * len(values):(r + 1) * len(values), d] = values
    images = np.asarray(decoder(codes, training=False), np.float32)
    return images.reshape(len(dims), len(values), *images.shape[1:])


def dimension_labels(encoder, config, count: int = 2000, seed: int = 0) -> list[tuple[str, float]] | None:
    """Per latent dimension: (the factor it carries most information about, its normalised MI).

    Only for the synthetic façades, whose factors are known (None otherwise): `count`
    fresh random combinations are rendered, encoded, and each code dimension's mutual
    information with each factor (over the factor's entropy) is measured.
    """
    labeller = factor_labeller(config, count, seed)
    return labeller(encoder) if labeller else None


def factor_labeller(config, count: int = 2000, seed: int = 0):
    """`dimension_labels` as a function of the encoder alone, its images rendered at the first
    call and kept (None without known factors): for labelling a model again and again
    while it trains."""
    if not config.data.startswith("synthetic"):
        return None
    from data import facades
    from vae import metrics

    factors = facades.sample_factors(count, np.random.default_rng(seed))
    rendered: list[np.ndarray] = []

    def labels(encoder) -> list[tuple[str, float]]:
        if not rendered:
            rendered.append(facades.render_facades(factors, config.image_size))  # uint8
        z_mean, _ = encode_means(encoder, rendered[0])
        return metrics.factor_labels(metrics.normalised_mutual_info(z_mean, factors), facades.FACTOR_NAMES)

    return labels


def dimension_label(dim: int, kl: float, label: tuple[str, float] | None = None) -> str:
    """"z3 · roof 0.71" (with a factor label), "z3 · KL 1.2" (without), "z3 · off" (collapsed)."""
    if kl < 0.01:
        return f"z{dim} · off"
    if label is None:
        return f"z{dim} · KL {kl:.1f}"
    return f"z{dim} · {label[0].replace('_', ' ')} {label[1]:.2f}"


def ranked_traversal(encoder, decoder, images, index: int = 0, dims: int = 8, steps: int = 7,
                     span: float = 3.0, labels=None) -> np.ndarray:
    """Encode `images`, rank dimensions by mean KL, sweep the top `dims` of image `index`'s code over ±`span`.

    Returns (sweep (dims, steps, S, S, 3), the labelled uint8 grid, the dimensions, mean KL (D,)).
    `labels`: per dimension (factor, information) from `dimension_labels`, or None.
    """
    z_mean, z_log_var = encode_means(encoder, images)
    kl = mean_kl_per_dimension(z_mean, z_log_var)
    top = top_dimensions(kl, min(dims, len(kl)))
    sweep = traversal(decoder, z_mean[index], top, np.linspace(-span, span, steps))
    names = [dimension_label(int(d), kl[d], labels[d] if labels else None) for d in top]
    return sweep, labelled_grid(sweep, names, label_width=140 if labels else 80), top, kl


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

def traversal_frames(images: np.ndarray) -> list[np.ndarray]:
    """(R, C, H, W, 3) traversal → C frames, each a column of the R dimensions at one value."""
    return [make_grid(images[:, c], columns=1) for c in range(images.shape[1])]


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


def write_projector(log_dir, codes: np.ndarray, images: np.ndarray, labels: dict | None = None) -> Path:
    """Codes (N, D) for TensorBoard's Embedding Projector, with a sprite of `images` and labels.

    labels: column name → N values (e.g. each factor's level names), written to
    metadata.tsv so the projector can colour and search by them.
    """
    import tensorflow as tf
    from tensorboard.plugins import projector

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(np.asarray(codes, np.float32), name="latent_means"))
    checkpoint.save(str(log_dir / "embedding.ckpt"))
    columns = labels or {"index": np.arange(len(codes))}
    columns_names = list(columns)
    rows = ["\t".join(columns)] + ["\t".join(str(columns[c][i]) for c in columns) for i in range(len(codes))]
    (log_dir / "metadata.tsv").write_text("\n".join(rows) + "\n")
    columns = int(np.ceil(np.sqrt(len(images))))  # a square sprite, row-major, at most 8192 px
    side = min(images.shape[1], 8192 // columns)
    padded = np.concatenate([images, np.zeros((columns ** 2 - len(images), *images.shape[1:]), images.dtype)])
    sprite = Image.fromarray(make_grid(padded, columns=columns, pad=0)).resize((side * columns,) * 2)
    save_png(np.asarray(sprite), log_dir / "sprite.png")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([side, side])
    projector.visualize_embeddings(str(log_dir), config)
    # TensorBoard's projector only looks in runs, i.e. folders with an event file: without
    # one, `tensorboard --logdir RUN/logs` says "No checkpoint was found".
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.text("projector/about", f"{len(codes)} latent means, {codes.shape[1]} dimensions; "
                        f"labels: {', '.join(columns_names)}", step=0)
    writer.close()
    return log_dir


def monitor_frames(monitor_dir, name: str = "reconstructions") -> list[np.ndarray]:
    """The Monitor callback's `<name>_step-*.png` grids in step order, as uint8 arrays."""
    paths = sorted(Path(monitor_dir).glob(f"{name}_step-*.png"),
                   key=lambda p: int(re.search(r"step-(\d+)", p.name).group(1)))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


# --------------------------------------------------------------------------- commands (python main.py ...)

def traverse_run(run_dir: Path, dims: int = 10, steps: int = 9, index: int = 0) -> dict:
    """traversal.png and .gif of a run's most informative dimensions, labelled by factor when known."""
    from common.config import ConfigError
    from vae import rundir

    if dims < 1 or steps < 2:
        raise ConfigError(f"--dims must be >= 1 and --steps >= 2, got {dims} and {steps}")
    config, encoder, decoder = rundir.load_coder(run_dir)
    images, _ = rundir.validation_images(config, limit=500)
    rundir.check_index("--index", index, len(images))
    labels = dimension_labels(encoder, config)
    sweep, grid, top, kl = ranked_traversal(encoder, decoder, images, index, min(dims, config.latent_dim),
                                            steps, labels=labels)
    out = Path(run_dir) / "visualize"
    paths = {"png": save_png(grid, out / "traversal.png"),
             "gif": save_gif(traversal_frames(sweep), out / "traversal.gif")}
    rundir.tensorboard_image(run_dir, "visualize/traversal", grid)
    log.info("traversal of dimensions %s (mean KL %s nats) -> %s", top.tolist(),
             ", ".join(f"{v:.2f}" for v in kl[top]), out)
    return paths


def interpolate_run(run_dir: Path, a: int = 0, b: int = 1, random: bool = False, steps: int = 10,
                    seed: int = 0) -> dict:
    """interpolation.png and .gif: linear and spherical paths between two codes."""
    from common.config import ConfigError
    from vae import rundir

    if steps < 2:
        raise ConfigError(f"--steps: must be at least 2, got {steps}")
    config, encoder, decoder = rundir.load_coder(run_dir)
    if random:
        z0, z1 = np.random.default_rng(seed).standard_normal((2, config.latent_dim)).astype(np.float32)
    else:
        images, _ = rundir.validation_images(config, limit=max(a, b) + 1)
        rundir.check_index("--a", a, len(images))
        rundir.check_index("--b", b, len(images))
        z0, z1 = encode_means(encoder, images[[a, b]])[0]
    rows = np.stack([np.asarray(decoder(interpolation_path(z0, z1, steps, mode), training=False))
                     for mode in ("linear", "spherical")])  # (2, steps, S, S, 3)
    out = Path(run_dir) / "visualize"
    strip = labelled_grid(rows, ["linear", "spherical"], label_width=64)
    frames = [make_grid(rows[:, t], columns=2) for t in range(steps)]
    paths = {"png": save_png(strip, out / "interpolation.png"),
             "gif": save_gif(frames, out / "interpolation.gif")}
    rundir.tensorboard_image(run_dir, "visualize/interpolation", strip)
    log.info("interpolation strip and GIF -> %s", out)
    return paths


def plots_run(run_dir: Path, colour_by: str = "wall_colour", limit: int = 1000) -> dict:
    """loss_curves.png, monitor.gif, latent_pca.png (coloured by a factor on synthetic data) and the
    latent means in TensorBoard's Embedding Projector (logs/projector: sprites, factor labels)."""
    import pandas as pd

    from common.config import ConfigError
    from vae import rundir

    config, encoder, _ = rundir.load_coder(run_dir)
    out, paths = Path(run_dir) / "visualize", {}
    history = Path(run_dir) / "history.csv"
    if history.exists():
        paths["loss_curves"] = save_png(figure_to_array(loss_curves_figure(pd.read_csv(history))),
                                        out / "loss_curves.png")
    frames = monitor_frames(Path(run_dir) / "monitor")
    if frames:
        paths["monitor_gif"] = save_gif(frames, out / "monitor.gif", duration_ms=300, bounce=False)
    colour = level_names = None
    if config.data.startswith("synthetic"):
        from data import facades

        if colour_by not in facades.FACTOR_NAMES:
            raise ConfigError(f"--colour-by: {colour_by!r} is not one of {', '.join(facades.FACTOR_NAMES)}")
        # Fresh renders of random combinations: their factors are known by construction.
        factors = facades.sample_factors(limit, np.random.default_rng(0))
        images = facades.render_facades(factors, config.image_size).astype(np.float32) / 255.0
        colour = factors[:, facades.FACTOR_NAMES.index(colour_by)]
        level_names = facades.FACTOR_LEVELS[colour_by]
    else:
        images, _ = rundir.validation_images(config, limit=limit)
    z_mean, _ = encode_means(encoder, images)
    fig = latent_pca_figure(z_mean, colour, colour_by if colour is not None else "", level_names)
    paths["latent_pca"] = save_png(figure_to_array(fig), out / "latent_pca.png")
    labels = None
    if colour is not None:  # every factor's level name, to colour the projector's points by
        labels = {name: [facades.FACTOR_LEVELS[name][level] for level in factors[:, k]]
                  for k, name in enumerate(facades.FACTOR_NAMES)}
    paths["projector"] = write_projector(Path(run_dir) / "logs" / "projector", z_mean, images, labels)
    log.info("wrote %s to %s", ", ".join(paths), out)
    return paths
