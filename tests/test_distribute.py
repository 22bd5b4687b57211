"""tf.distribute: two logical CPUs under MirroredStrategy must equal one device exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from common import distribute
from vae.config import PRESETS, VAEConfig
from vae.model import GlobalBatchNormalization, build_vae


def tiny(**changes) -> VAEConfig:
    return VAEConfig(**{**PRESETS["tiny"], **changes}).validate()


def _quiet_noise(vae):
    """z = μ: takes the (by design replica-dependent) sampling noise out of the comparison.

    Even tiny noise differences flip ReLUs whose input is near 0.
    """
    vae.sampling.call = lambda z_mean, z_log_var, seed=None: z_mean


def _one_sgd_step(vae, images, strategy):
    with strategy.scope():
        vae.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3))
        vae.optimizer.build(vae.vae_variables)
        if vae.discriminator is not None:  # SGD there too: deltas are then gradients
            vae.discriminator_optimizer = keras.optimizers.SGD(learning_rate=1e-3)
            vae.discriminator_optimizer.build(vae.discriminator.trainable_variables)
    before = [w.copy() for w in vae.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices(images).batch(len(images))
    logs = vae.fit(ds, epochs=1, verbose=0).history
    after = vae.get_weights()
    return [a - b for a, b in zip(after, before)], after, {k: v[0] for k, v in logs.items()}


def _single_and_mirrored_deltas(config, images):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest should have made two logical CPUs"
    keras.utils.set_random_seed(2)
    single = build_vae(config)
    _quiet_noise(single)
    start = single.get_weights()
    single_delta, _, single_logs = _one_sgd_step(single, images, tf.distribute.get_strategy())
    strategy = _mirrored(devices)
    with strategy.scope():
        mirrored = build_vae(config)
    _quiet_noise(mirrored)
    if config.network == "original":
        assert isinstance(mirrored.encoder.get_layer("enc1a_bn"), GlobalBatchNormalization)
    mirrored.set_weights(start)
    mirrored_delta, _, mirrored_logs = _one_sgd_step(mirrored, images, strategy)
    return single_delta, mirrored_delta, single_logs, mirrored_logs


def _mirrored(devices):
    strategy = distribute.make_strategy("mirrored")  # one per process, shared with other tests
    assert [d.split("/device:")[-1] for d in strategy.extended.worker_devices] == [
        d.split("/device:")[-1] for d in devices]
    return strategy


@pytest.mark.parametrize("gamma, tolerance", [
    (0.0, 2e-5),
    # The L1 perceptual term has a kink at 0: float32 rounding that differs between a batch
    # of 8 and two of 4 flips a few signs. Loose, but a 2x scaling error is still caught.
    (0.01, 1e-2),
])
def test_mirrored_gradients_equal_single_device_gradients(gamma, tolerance):
    config = tiny(gamma=gamma, beta=2.0)
    images = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    single_delta, mirrored_delta, single_logs, mirrored_logs = _single_and_mirrored_deltas(config, images)
    # SGD: delta = -lr * gradient, so equal deltas mean equal gradients (and equal BN stats).
    largest = max(np.abs(d).max() for d in single_delta)
    assert largest > 0
    for s, m in zip(single_delta, mirrored_delta):
        # Keras's own synchronized BatchNorm misses this by ~1e-3 * largest (see the layer).
        np.testing.assert_allclose(m, s, atol=tolerance * largest, rtol=0)
    # The logged loss is the global one, not replica 0's.
    for name in ("loss", "reconstruction", "kl", "perceptual"):
        assert mirrored_logs[name] == pytest.approx(single_logs[name], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("changes", [
    dict(objective="beta_tc_vae", beta=6.0),
    dict(objective="dip_vae_i", lambda_od=10.0, lambda_d_factor=10.0),
    dict(objective="dip_vae_ii", lambda_od=5.0, lambda_d_factor=1.0),
    dict(objective="annealed_vae", capacity_max=5.0, capacity_steps=10, capacity_weight=100.0),
    dict(objective="beta_tc_vae", beta=6.0, network="disentanglement_lib", likelihood="bernoulli"),
    dict(objective="factor_vae", factor_gamma=10.0, network="disentanglement_lib", likelihood="bernoulli"),
    dict(clipnorm=1.0),  # clipping active: the gradient's norm is in the hundreds
], ids=["beta_tc_vae", "dip_vae_i", "dip_vae_ii", "annealed_vae", "beta_tc_vae-dlib-bernoulli", "factor_vae",
        "clipnorm"])
def test_every_objective_on_two_replicas_equals_one_device(changes):
    # The batch-level terms (TC, DIP) see the global batch through a differentiable all-gather.
    config = tiny(gamma=0.0, **changes)
    images = np.random.default_rng(1).random((8, 32, 32, 3)).astype(np.float32)
    single_delta, mirrored_delta, single_logs, mirrored_logs = _single_and_mirrored_deltas(config, images)
    largest = max(np.abs(d).max() for d in single_delta)
    assert largest > 0
    for s, m in zip(single_delta, mirrored_delta):
        np.testing.assert_allclose(m, s, atol=2e-5 * largest, rtol=0)
    extra = {"dip_vae_i": ("dip",), "dip_vae_ii": ("dip",),
             "factor_vae": ("tc_discriminator", "discriminator_loss", "discriminator_accuracy")}
    for name in ("loss", "reconstruction", "kl", "total_correlation") + extra.get(config.objective, ()):
        assert mirrored_logs[name] == pytest.approx(single_logs[name], rel=1e-4, abs=1e-5)


def test_auto_strategy_is_default_on_cpu_and_multi_worker_with_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.make_strategy("auto") is tf.distribute.get_strategy()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert distribute.cluster_spec_from_env() is not None
    assert distribute.worker_index() == 1 and not distribute.is_chief()


def test_clipnorm_clips_the_global_batch_gradient_by_its_global_norm():
    # Equal on two replicas and one device: the `clipnorm` case of the test above.
    config = tiny(gamma=0.0, clipnorm=1.0)
    images = np.random.default_rng(1).random((8, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(2)
    vae = build_vae(config)
    _quiet_noise(vae)
    trainable = {id(v) for v in vae.vae_variables}
    delta, _, _ = _one_sgd_step(vae, images, tf.distribute.get_strategy())
    moved = [d for d, w in zip(delta, vae.weights) if id(w) in trainable]
    norm = np.sqrt(sum(float(np.sum(np.square(d))) for d in moved))
    assert norm == pytest.approx(1e-3, rel=1e-3)  # SGD, lr 1e-3: |Δw| = lr·min(|g|, clipnorm)


def test_validation_steps_are_kept_on_one_machine_and_dropped_under_multiworker():
    from unittest import mock

    one_machine = distribute.make_strategy("default")
    many = mock.MagicMock(spec=tf.distribute.MultiWorkerMirroredStrategy)
    assert distribute.validation_steps(one_machine, 7) == 7
    assert distribute.validation_steps(one_machine, None) is None
    assert distribute.validation_steps(many, 7) is None  # Keras 3.15 cannot start a capped one there
    assert distribute.validation_steps(many, None) is None
