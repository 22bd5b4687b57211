"""β-VAE loss terms as pure functions of tensors, all returning one value per image.

Per-image values let the training step scale by the GLOBAL batch size, so that N
replicas give exactly the single-device gradient (see `vae.model.VAE.train_step`).
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
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


def bernoulli_loss(images, logits):
    """−log p(x | z) of a Bernoulli decoder on logits, summed per image, (B,).

    As disentanglement_lib's `bernoulli_loss` (activation "logits"): sigmoid cross
    entropy of the pixel values in [0, 1] against the decoder's logits, computed from
    the logits (stable), never from sigmoid outputs.
    """
    images = ops.cast(images, "float32")
    logits = ops.cast(logits, "float32")
    # max(l, 0) − l·x + log(1 + exp(−|l|)): TensorFlow's stable form.
    per_pixel = ops.relu(logits) - logits * images + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(per_pixel, axis=(1, 2, 3))


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


# --------------------------------------------------------------------------- regularisers
# Pure functions behind the objectives of `vae.model.VAE` (config `objective`), named
# and weighted as in disentanglement_lib's methods/unsupervised/vae.py.


def gaussian_log_density(samples, mean, log_var):
    """log N(samples; mean, exp(log_var)), element-wise."""
    log_var = ops.clip(ops.cast(log_var, "float32"), *LOG_VAR_RANGE)
    diff = ops.cast(samples, "float32") - ops.cast(mean, "float32")
    return -0.5 * (ops.square(diff) * ops.exp(-log_var) + log_var + np.log(2.0 * np.pi))


def total_correlation(z, z_mean, z_log_var):
    """Per-sample estimate of TC = KL(q(z) ‖ Π_l q(z_l)), (B,), in nats (β-TCVAE, Chen et al. 2018).

    z: (B, D) samples; z_mean, z_log_var: (M, D) posteriors of the batch that stands
    for the data (the global batch under tf.distribute; z's rows are among them).
    Minibatch-weighted sampling with the batch as the data set: q(z) ≈ (1/M) Σ_j
    q(z | x_j), and the same for each marginal q(z_l). Up to the additive constant
    (D − 1)·log(N/M) of Chen et al.'s weights for a data set of N images this is
    their MWS estimator, and its gradient is disentanglement_lib's exactly (the
    library drops every constant). With the constants kept here, codes whose
    posteriors cover each other and are independent across dimensions score ≈ 0.
    """
    z = ops.cast(z, "float32")
    log_q = gaussian_log_density(z[:, None, :], z_mean[None, :, :], z_log_var[None, :, :])  # (B, M, D)
    log_m = ops.log(ops.cast(ops.shape(z_mean)[0], "float32"))
    log_qz = ops.logsumexp(ops.sum(log_q, axis=2), axis=1) - log_m  # (B,)
    log_qz_marginals = ops.sum(ops.logsumexp(log_q, axis=1) - log_m, axis=1)  # (B,)
    return log_qz - log_qz_marginals


def covariance(values):
    """Covariance of the rows of (M, D) `values` about their mean, (D, D) (1/M, as the library)."""
    values = ops.cast(values, "float32")
    centred = values - ops.mean(values, axis=0, keepdims=True)
    return ops.matmul(ops.transpose(centred), centred) / ops.cast(ops.shape(values)[0], "float32")


def dip_regulariser(z_mean, z_log_var, lambda_od: float, lambda_d: float, dip_type: str = "i"):
    """DIP-VAE's moment-matching penalty of one batch, a scalar (Kumar et al. 2018).

    λ_od·Σ_{i≠j} Cov_ij² + λ_d·Σ_i (Cov_ii − 1)², with Cov the covariance of the
    encoder means (DIP-VAE-I) or of z under q(z) = E_x q(z|x), i.e. Cov[μ] + E[diag σ²]
    (DIP-VAE-II). It is 0 when that covariance is the identity.
    """
    cov = covariance(z_mean)
    if dip_type == "ii":
        log_var = ops.clip(ops.cast(z_log_var, "float32"), *LOG_VAR_RANGE)
        cov = cov + ops.diag(ops.mean(ops.exp(log_var), axis=0))
    elif dip_type != "i":
        raise ValueError(f"dip_type must be 'i' or 'ii', got {dip_type!r}")
    diagonal = ops.diagonal(cov)
    off_diagonal = cov - ops.diag(diagonal)
    return lambda_od * ops.sum(ops.square(off_diagonal)) + lambda_d * ops.sum(ops.square(diagonal - 1.0))


def permute_dims(z, seed):
    """Each column of (M, D) codes shuffled independently across the batch (Kim & Mnih 2018, Alg. 1).

    Samples of Π_d q(z_d): the FactorVAE discriminator learns to tell them from q(z).
    `seed`: a (2,) int tensor; the same seed gives the same permutation on every replica.
    """
    z = ops.convert_to_tensor(z)
    import tensorflow as tf

    keys = tf.random.stateless_uniform(tf.shape(z), seed=seed)
    order = tf.argsort(keys, axis=0)  # (M, D): a permutation per column
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


def discriminator_loss(real_logits, permuted_logits):
    """Per-sample cross entropy of the FactorVAE discriminator, (B,).

    Logits (B, 2): class 0 "a code of q(z)", class 1 "a permuted code", as
    disentanglement_lib's FactorVAE: −½·log p₀(z) − ½·log p₁(z̃).
    """
    real = ops.log_softmax(ops.cast(real_logits, "float32"), axis=-1)
    permuted = ops.log_softmax(ops.cast(permuted_logits, "float32"), axis=-1)
    return -0.5 * (real[:, 0] + permuted[:, 1])


def discriminator_total_correlation(logits):
    """FactorVAE's per-sample TC estimate from the discriminator, log D(z)/(1 − D(z)) = l₀ − l₁, (B,)."""
    logits = ops.cast(logits, "float32")
    return logits[:, 0] - logits[:, 1]
