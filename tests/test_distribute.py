"""tf.distribute: two logical CPUs under MirroredStrategy must equal one device exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vae import distribute
from vae.config import PRESETS, VAEConfig
from vae.model import GlobalBatchNormalization, build_vae


def tiny(**changes) -> VAEConfig:
    return VAEConfig(**{**PRESETS["tiny"], **changes}).validate()


def _quiet_noise(vae):
    # σ ≈ 4e-6: the reparameterisation noise (different per replica by design) vanishes,
    # so one device and two replicas see the same forward pass.
    head = vae.encoder.get_layer("z_log_var")
    head.kernel.assign(tf.zeros_like(head.kernel))
    head.bias.assign(tf.fill(head.bias.shape, -25.0))


def _one_sgd_step(vae, images, strategy):
    with strategy.scope():
        vae.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3))
        vae.optimizer.build(vae.trainable_variables)
    before = [w.copy() for w in vae.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices(images).batch(len(images))
    logs = vae.fit(ds, epochs=1, verbose=0).history
    after = vae.get_weights()
    return [a - b for a, b in zip(after, before)], after, {k: v[0] for k, v in logs.items()}


def test_mirrored_gradients_equal_single_device_gradients():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest should have made two logical CPUs"
    config = tiny(gamma=0.01, beta=2.0)
    images = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)

    single = build_vae(config)
    _quiet_noise(single)
    start = single.get_weights()
    single_delta, single_after, single_logs = _one_sgd_step(single, images, tf.distribute.get_strategy())

    mirrored_strategy = tf.distribute.MirroredStrategy(devices)
    with mirrored_strategy.scope():
        mirrored = build_vae(config)
    assert isinstance(mirrored.encoder.get_layer("enc1a_bn"), GlobalBatchNormalization)
    mirrored.set_weights(start)
    mirrored_delta, mirrored_after, mirrored_logs = _one_sgd_step(mirrored, images, mirrored_strategy)

    # SGD: delta = -lr * gradient, so equal deltas mean equal gradients (and equal BN stats).
    largest = max(np.abs(d).max() for d in single_delta)
    assert largest > 0
    for s, m in zip(single_delta, mirrored_delta):
        # Keras's own synchronized BatchNorm misses this by ~1e-3 * largest (see the layer).
        np.testing.assert_allclose(m, s, atol=5e-5 * largest, rtol=0)
    # The logged loss is the global one, not replica 0's.
    for name in ("loss", "reconstruction", "kl", "perceptual"):
        assert mirrored_logs[name] == pytest.approx(single_logs[name], rel=1e-4)


def test_auto_strategy_is_default_on_cpu_and_multi_worker_with_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.make_strategy("auto") is tf.distribute.get_strategy()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert distribute.cluster_spec_from_env() is not None
    assert distribute.worker_index() == 1 and not distribute.is_chief()
