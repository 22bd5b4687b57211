"""What the encoder says about images: posterior means and log-variances, KL per dimension, ranking."""

from __future__ import annotations

import numpy as np


def encode_means(encoder, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(z_mean, z_log_var), each (N, D), of (N, H, W, 3) images: float in [0, 1] or uint8."""
    scale = 255.0 if np.asarray(images[:0]).dtype == np.uint8 else 1.0
    means, log_vars = [], []
    for i in range(0, len(images), batch_size):
        m, v = encoder(np.asarray(images[i:i + batch_size], np.float32) / scale, training=False)
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
