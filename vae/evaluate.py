"""Testing a trained β-VAE: the loss terms on the test split plus reconstruction quality.

PSNR, SSIM and the Pearson correlation between each test image and its
reconstruction (from the posterior mean), averaged over images, beside the same
figures for the "mean image" baseline (predict the average training image for
every test image), which any useful autoencoder must beat. The average is taken over
a seeded sample of at most `MEAN_IMAGES` training images: at 400 000 photos a full
pass would cost more than the test itself, and the mean has converged long before.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.distribute import quiet_end_of_data
from common.files import write_json
from data import pipeline

log = logging.getLogger(__name__)


def image_quality(images, reconstructions) -> dict[str, np.ndarray]:
    """Per-image PSNR (dB), SSIM and Pearson r of two (B, H, W, 3) batches in [0, 1]."""
    images = tf.convert_to_tensor(images, tf.float32)
    reconstructions = tf.convert_to_tensor(reconstructions, tf.float32)
    psnr = tf.image.psnr(images, reconstructions, max_val=1.0)
    ssim = tf.image.ssim(images, reconstructions, max_val=1.0)
    flat_a = tf.reshape(images, [tf.shape(images)[0], -1])
    flat_b = tf.reshape(reconstructions, [tf.shape(images)[0], -1])
    a = flat_a - tf.reduce_mean(flat_a, axis=1, keepdims=True)
    b = flat_b - tf.reduce_mean(flat_b, axis=1, keepdims=True)
    r = tf.reduce_sum(a * b, axis=1) / tf.maximum(
        tf.norm(a, axis=1) * tf.norm(b, axis=1), 1e-12)
    return {"psnr": psnr.numpy(), "ssim": ssim.numpy(), "pearson": r.numpy()}


def mean_image(dataset) -> np.ndarray:
    """The average image of a dataset of batches, (H, W, 3)."""
    total, count = None, 0
    for batch in dataset.as_numpy_iterator():
        batch = batch.astype(np.float64)
        total = batch.sum(0) if total is None else total + batch.sum(0)
        count += len(batch)
    if not count:
        raise pipeline.DataError("cannot average an empty dataset")
    return (total / count).astype(np.float32)


def evaluate(vae, test_ds, train_ds=None) -> dict[str, float]:
    """Test-split losses (per term) and reconstruction quality, with the mean-image baseline."""
    with quiet_end_of_data():
        losses = vae.evaluate(test_ds, verbose=0, return_dict=True)
    results = {f"test_{k}": float(v) for k, v in losses.items()}
    quality: dict[str, list] = {"psnr": [], "ssim": [], "pearson": []}
    baseline: dict[str, list] = {"psnr": [], "ssim": [], "pearson": []}
    average = mean_image(train_ds) if train_ds is not None else None
    count = 0
    for batch in test_ds.as_numpy_iterator():
        count += len(batch)
        recon = vae(batch, training=False).numpy()
        for k, v in image_quality(batch, recon).items():
            quality[k].append(v)
        if average is not None:
            for k, v in image_quality(batch, np.broadcast_to(average, batch.shape)).items():
                baseline[k].append(v)
    for k in quality:
        results[f"test_{k}"] = float(np.mean(np.concatenate(quality[k])))
        if average is not None:
            results[f"baseline_mean_image_{k}"] = float(np.mean(np.concatenate(baseline[k])))
    results["test_images"] = count
    return results


def write_metrics(metrics: dict, run_dir, step: int, filename: str = "metrics.json") -> Path:
    """Merge `metrics` into run_dir/metrics.json (atomically) and log them to TensorBoard.

    Loss terms go under the same tags as training and validation (`loss/<term>`, run
    `test`), so the three overlay in one chart; everything else under `test/`.
    """
    path = Path(run_dir) / filename
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(metrics)
    write_json(path, merged)
    writer = tf.summary.create_file_writer(str(Path(run_dir) / "logs" / "test"))
    with writer.as_default(step=step):
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                term = name[len("test_"):] if name.startswith("test_") else None
                tf.summary.scalar(f"loss/{term}" if term in LOSS_TERMS else f"test/{name}", value)
    writer.flush()
    return path


MEAN_IMAGES = 10_000  # training images averaged for the baseline

LOSS_TERMS = ("loss", "reconstruction", "kl", "total_correlation", "perceptual", "dip")


def evaluate_run(run_dir: Path) -> dict:
    """`python main.py evaluate`: the test split's losses and quality, written to metrics.json."""
    from vae import rundir
    from vae.splits import resolve_splits

    config, vae = rundir.load_trained(run_dir)
    splits = resolve_splits(config)
    load = dict(image_size=config.image_size, crop=config.crop, shuffle=False, batch_size=config.batch_size)
    test = pipeline.load_images(splits.test, **load)
    sample = pipeline.load_images(splits.train, **{**load, "shuffle": True, "seed": 0})
    metrics = evaluate(vae, test, sample.take(math.ceil(MEAN_IMAGES / config.batch_size)))
    step = int(vae.global_step.numpy())
    path = write_metrics({**metrics, "step": step}, run_dir, step)
    log.info("test: PSNR %.2f dB (mean-image baseline %.2f), SSIM %.3f, loss %.1f -> %s",
             metrics["test_psnr"], metrics["baseline_mean_image_psnr"], metrics["test_ssim"],
             metrics["test_loss"], path)
    return metrics
