"""How large the perceptual term is beside the reconstruction term: the γ that keeps its role.

    python benchmarks/perceptual_scale.py [--vgg-weights imagenet|none|FILE] [--images 64]

The original fed VGG16 raw [0, 1] pixels and weighed the L1 distance of its
`block2_conv2` features with γ = 0.001. This project feeds VGG16 its own input
(0–255, BGR, mean-subtracted: `vae.losses.vgg_preprocess`), which makes the features,
hence the term, far larger. To give the term the weight beside the squared error that
the original gave it, γ must shrink by the ratio of the two terms:

    γ_new = 0.001 · P_raw / P_preprocessed

measured here on 128-px synthetic façades against two stand-ins for a VAE's
reconstruction (a Gaussian blur of σ = 2 px, and the mean image), with the SSE beside
them. With random VGG weights (`none`, the only ones offline) the ratio follows from
the network's positive homogeneity (ReLU, zero biases): about 255; with ImageNet
weights the biases change it, so run this with `--vgg-weights imagenet` where they can
be downloaded. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data import facades  # noqa: E402
from vae import losses  # noqa: E402

ORIGINAL_GAMMA = 0.001


def blurred(images: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """A separable Gaussian blur of (B, H, W, 3) images (edges reflected)."""
    radius = int(3 * sigma)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-x**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    out = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, out)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 2, out).astype(np.float32)


def terms(extractor, images: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """Per-image means of the SSE, the raw-pixel perceptual term and the preprocessed one."""
    sse = float(np.mean(np.sum((images - recon) ** 2, axis=(1, 2, 3))))

    def l1(a, b):
        return float(np.mean(np.sum(np.abs(extractor(a).numpy() - extractor(b).numpy()), axis=(1, 2, 3))))

    raw = l1(tf.constant(images), tf.constant(recon))
    pre = l1(losses.vgg_preprocess(tf.constant(images)), losses.vgg_preprocess(tf.constant(recon)))
    return {"sse": sse, "perceptual_raw": raw, "perceptual_preprocessed": pre}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg-weights", default="none", help="imagenet (downloaded once), none (random) or a file")
    parser.add_argument("--images", type=int, default=64, help="synthetic 128-px façades measured")
    parser.add_argument("--seed", type=int, default=0, help="façades drawn and random VGG weights")
    args = parser.parse_args(argv)

    tf.keras.utils.set_random_seed(args.seed)
    factors = facades.sample_factors(args.images, np.random.default_rng(args.seed))
    images = facades.render_facades(factors, 128).astype(np.float32) / 255.0
    extractor = losses.build_feature_extractor(128, "block2_conv2", args.vgg_weights)
    stand_ins = {"blur σ=2": blurred(images), "mean image": np.broadcast_to(images.mean(0), images.shape).copy()}
    rows = {name: terms(extractor, images, recon) for name, recon in stand_ins.items()}
    print(f"{args.images} façades at 128 px, VGG16 block2_conv2, weights: {args.vgg_weights}")
    print(f"{'reconstruction':<16}{'SSE':>10}{'P raw':>12}{'P VGG input':>14}{'ratio':>9}"
          f"{'0.001·P raw / SSE':>20}{'γ for the same share':>22}")
    for name, t in rows.items():
        ratio = t["perceptual_preprocessed"] / t["perceptual_raw"]
        t["ratio"] = ratio
        t["original_share"] = ORIGINAL_GAMMA * t["perceptual_raw"] / t["sse"]
        t["gamma_same_share"] = ORIGINAL_GAMMA / ratio
        print(f"{name:<16}{t['sse']:>10.1f}{t['perceptual_raw']:>12.1f}{t['perceptual_preprocessed']:>14.1f}"
              f"{ratio:>9.1f}{t['original_share']:>20.4f}{t['gamma_same_share']:>22.2e}")
    print(json.dumps({"benchmark": "perceptual_scale", "vgg_weights": args.vgg_weights, "images": args.images,
                      "rows": {k: {n: round(v, 6) for n, v in t.items()} for k, t in rows.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
