"""β-VAE loss terms as pure functions of tensors, all returning one value per image.

Per-image values let the training step scale by the GLOBAL batch size, so that N
replicas give exactly the single-device gradient (see `vae.model.VAE.train_step`).
"""

from __future__ import annotations

import logging
import os

import keras
from keras import ops

log = logging.getLogger(__name__)

LOG_VAR_RANGE = (-30.0, 20.0)  # keeps exp() finite in float32 and bfloat16


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be downloaded; the message says what to do instead."""


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def reconstruction_loss(images, reconstructions):
    """Sum of squared errors per image, (B,).

    Summed, not averaged, over pixels: a per-pixel mean shrinks the likelihood term
    by H·W·3 and lets the KL term collapse the posterior (as in the original).
    """
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    return ops.sum(ops.square(images - reconstructions), axis=(1, 2, 3))


def kl_per_dimension(z_mean, z_log_var):
    """KL(N(μ, σ²) ‖ N(0, 1)) for each latent dimension, (B, D), in nats."""
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.clip(ops.cast(z_log_var, "float32"), *LOG_VAR_RANGE)
    return 0.5 * (ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)


def kl_divergence(z_mean, z_log_var):
    """KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, (B,)."""
    return ops.sum(kl_per_dimension(z_mean, z_log_var), axis=1)


def capacity_objective(kl, capacity, weight):
    """Burgess et al. 2018, "Understanding disentangling in β-VAE": γ_c·|KL − C|, (B,)."""
    return weight * ops.abs(kl - capacity)


def vgg_preprocess(images):
    """[0, 1] RGB → VGG16's own input: 0–255, RGB→BGR, minus the ImageNet mean ("caffe")."""
    pixels = ops.cast(images, "float32") * 255.0
    bgr = pixels[..., ::-1]
    return bgr - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype="float32")


def build_feature_extractor(
    image_size: int, layer: str = "block2_conv2", weights: str = "imagenet", dtype=None
) -> keras.Model:
    """A frozen VGG16 cut at `layer`, taking VGG-preprocessed images.

    weights: "imagenet" (Keras downloads them once), a local weights file, "none"
    (random; a warning, since the loss is then not perceptual; tests use it), or
    "checkpoint" (random now, overwritten by a checkpoint's weights right after).
    """
    if weights == "none":
        log.warning("VGG16 has random weights: the 'perceptual' loss is not perceptual")
    elif weights not in ("imagenet", "checkpoint") and not os.path.isfile(weights):
        raise FileNotFoundError(f"--vgg-weights: {weights}: no such file")
    previous = keras.config.dtype_policy()
    try:
        if dtype is not None:  # keras.applications builds with the global policy only
            keras.config.set_dtype_policy(dtype)
        try:
            vgg = keras.applications.VGG16(
                include_top=False,
                # "imagenet" or a local copy of Keras's vgg16 *_notop.h5 file
                weights=None if weights in ("none", "checkpoint") else weights,
                input_shape=(image_size, image_size, 3),
            )
        except Exception as err:  # Keras raises a bare Exception when the download fails
            if weights != "imagenet":
                raise
            raise WeightsUnavailable(
                f"--vgg-weights imagenet: could not download the VGG16 weights ({_first_line(err)}); "
                "pass a local weights file, or --gamma 0 to train without the perceptual loss"
            ) from None
    finally:
        keras.config.set_dtype_policy(previous)
    try:
        output = vgg.get_layer(layer).output
    except ValueError:
        names = [l.name for l in vgg.layers if "conv" in l.name]
        raise ValueError(f"--perceptual-layer: VGG16 has no layer {layer!r}; use one of {names}") from None
    extractor = keras.Model(vgg.input, output, name=f"vgg16_{layer}")
    extractor.trainable = False
    return extractor


def perceptual_loss(feature_extractor, images, reconstructions):
    """L1 distance of VGG16 features of input and output, summed per image, (B,).

    Both are preprocessed the way VGG16 was trained (the original fed raw [0, 1]).
    """
    real = feature_extractor(vgg_preprocess(images), training=False)
    fake = feature_extractor(vgg_preprocess(reconstructions), training=False)
    diff = ops.abs(ops.cast(real, "float32") - ops.cast(fake, "float32"))
    return ops.sum(diff, axis=tuple(range(1, len(diff.shape))))
