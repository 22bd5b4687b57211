"""BatchNormalization that is exact over replicas and fast on one device.

`GlobalBatchNormalization` is used by the β-VAE (training, any number of replicas)
and by the curation ensembles (`transfer_learning.ensemble.for_inference`, scoring).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

PACKAGE = "castle_dreamer"  # the registered package of this project's serializable layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class GlobalBatchNormalization(layers.BatchNormalization):
    """BatchNormalization over the global batch of all replicas, fused where it can be.

    Several replicas: Keras's `synchronized=True` computes var = E[x²] − E[x]² from
    all-reduced sums, which cancels badly in float32 when |mean| ≫ std: on 2 replicas
    it gave gradients 1e-3 (relative) away from one device's. Here the mean is
    all-reduced first, then the centred squares (two passes, as tf.nn.moments does on
    one device), so N replicas match one device to float32 rounding. The all-reduce's
    gradient is an all-reduce, so the backward pass is exact too.

    One replica, or inference: the same maths in TensorFlow's fused kernel
    (FusedBatchNormV3, oneDNN on CPU, cuDNN on GPU), which reads bfloat16/float16
    activations directly and keeps its statistics in float32, and which grappler
    fuses with a following ReLU. Keras 3 instead runs BatchNorm as separate
    element-wise ops, plus float32 casts under mixed precision (the README gives the
    measured difference, from benchmarks/bench_vae.py and bench_classify.py).
    """

    def _moments(self, inputs, mask):
        context = tf.distribute.get_replica_context()
        if mask is not None or context is None or context.num_replicas_in_sync == 1:
            return super()._moments(inputs, mask)
        x = tf.cast(inputs, tf.float32)
        axes = self._reduction_axes
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        mean = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.reduce_sum(x, axes, keepdims=True)) / total
        squares = tf.reduce_sum(tf.square(x - mean), axes, keepdims=True)
        variance = context.all_reduce(tf.distribute.ReduceOp.SUM, squares) / total
        mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
        return tf.cast(mean, inputs.dtype), tf.cast(variance, inputs.dtype)

    def _fusable(self, inputs, training, mask) -> bool:
        if mask is not None or self.renorm or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        if self.epsilon < 1.001e-5:  # the fused kernel's minimum
            return False
        if not (training and self.trainable):
            return True  # moving statistics only: the replica count does not matter
        context = tf.distribute.get_replica_context()
        return context is None or context.num_replicas_in_sync == 1

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        x = tf.cast(inputs, self.compute_dtype)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased (n − 1) variance; Keras keeps the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 2.0)
            mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(outputs, self.compute_dtype)
