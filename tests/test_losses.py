"""vae.losses: each term against a numpy reference, and VGG's own preprocessing."""

import keras
import numpy as np
import pytest

from vae import losses


def test_reconstruction_is_the_per_image_sum_of_squared_errors(rng):
    a, b = rng.random((3, 8, 8, 3), np.float32), rng.random((3, 8, 8, 3), np.float32)
    expected = ((a - b) ** 2).reshape(3, -1).sum(1)
    np.testing.assert_allclose(np.asarray(losses.reconstruction_loss(a, b)), expected, rtol=1e-5)


def test_kl_matches_closed_form(rng):
    mean = rng.normal(size=(4, 6)).astype(np.float32)
    log_var = rng.normal(size=(4, 6)).astype(np.float32) * 2
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, per dimension
    s = np.exp(0.5 * log_var)
    expected = np.log(1 / s) + (s**2 + mean**2) / 2 - 0.5
    np.testing.assert_allclose(np.asarray(losses.kl_per_dimension(mean, log_var)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.kl_divergence(mean, log_var)), expected.sum(1), rtol=1e-5)


def test_kl_is_zero_exactly_at_the_prior():
    zeros = np.zeros((2, 5), np.float32)
    assert np.asarray(losses.kl_divergence(zeros, zeros)).tolist() == [0.0, 0.0]


def test_kl_stays_finite_for_extreme_log_variance():
    mean = np.zeros((1, 2), np.float32)
    log_var = np.array([[-1e4, 1e4]], np.float32)
    assert np.isfinite(np.asarray(losses.kl_divergence(mean, log_var))).all()


def test_capacity_objective_is_weighted_distance_to_c():
    kl = np.array([1.0, 5.0, 9.0], np.float32)
    np.testing.assert_allclose(np.asarray(losses.capacity_objective(kl, 5.0, 10.0)), [40.0, 0.0, 40.0])


def test_vgg_preprocessing_is_kerases_caffe_mode(rng):
    images = rng.random((2, 4, 4, 3)).astype(np.float32)
    ours = np.asarray(losses.vgg_preprocess(images))
    theirs = keras.applications.vgg16.preprocess_input(images * 255.0)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=1e-4)


def test_perceptual_loss_is_l1_of_features_of_preprocessed_images(rng):
    extractor = losses.build_feature_extractor(32, "block1_conv2", weights="none")
    assert not extractor.trainable
    a, b = rng.random((2, 32, 32, 3), np.float32), rng.random((2, 32, 32, 3), np.float32)
    fa = extractor(keras.applications.vgg16.preprocess_input(a * 255.0)).numpy()
    fb = extractor(keras.applications.vgg16.preprocess_input(b * 255.0)).numpy()
    expected = np.abs(fa - fb).reshape(2, -1).sum(1)
    np.testing.assert_allclose(np.asarray(losses.perceptual_loss(extractor, a, b)), expected, rtol=1e-4)
    assert np.asarray(losses.perceptual_loss(extractor, a, a)).tolist() == [0.0, 0.0]


def test_unknown_perceptual_layer_names_the_flag():
    with pytest.raises(ValueError, match="--perceptual-layer"):
        losses.build_feature_extractor(32, "block9_conv9", weights="none")


def test_missing_vgg_weights_file_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--vgg-weights"):
        losses.build_feature_extractor(32, weights=str(tmp_path / "nope.h5"))


# --------------------------------------------------------------------------- likelihoods and regularisers

def test_bernoulli_loss_is_the_per_image_cross_entropy_of_the_logits(rng):
    x = rng.random((3, 4, 4, 3)).astype(np.float32)
    logits = (rng.normal(size=(3, 4, 4, 3)) * 3).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(3, -1).sum(1)
    np.testing.assert_allclose(np.asarray(losses.bernoulli_loss(x, logits)), expected, rtol=1e-5)
    # Stable where a sigmoid output would round to exactly 0 or 1.
    big = np.asarray(losses.bernoulli_loss(np.zeros((1, 1, 1, 1)), np.full((1, 1, 1, 1), 200.0)))
    assert big == pytest.approx([200.0])


def _tc_numpy(z, mean, log_var):
    """Per-sample TC by the batch-as-data estimator, in float64, loops and all."""
    b, d = z.shape
    m = len(mean)
    out = []
    for i in range(b):
        log_q = -0.5 * ((z[i] - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi))  # (M, D)
        joint = np.log(np.sum(np.exp(log_q.sum(1)))) - np.log(m)
        marginals = sum(np.log(np.sum(np.exp(log_q[:, l]))) - np.log(m) for l in range(d))
        out.append(joint - marginals)
    return np.array(out)


def test_total_correlation_matches_a_numpy_reference(rng):
    mean = rng.normal(size=(16, 3)).astype(np.float32)
    log_var = (rng.normal(size=(16, 3)) * 0.3 - 1).astype(np.float32)
    z = (mean + np.exp(0.5 * log_var) * rng.normal(size=(16, 3))).astype(np.float32)
    np.testing.assert_allclose(np.asarray(losses.total_correlation(z, mean, log_var)),
                               _tc_numpy(z.astype(np.float64), mean.astype(np.float64),
                                         log_var.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_total_correlation_is_near_zero_for_independent_codes_and_grows_with_correlation(rng):
    n, d = 2000, 3
    log_var = np.full((n, d), np.log(0.3), np.float32)

    def tc(correlation):
        shared = rng.normal(size=(n, 1))
        mean = (np.sqrt(correlation) * shared + np.sqrt(1 - correlation) * rng.normal(size=(n, d)))
        mean = mean.astype(np.float32)
        z = (mean + np.sqrt(0.3) * rng.normal(size=(n, d))).astype(np.float32)
        return float(np.mean(np.asarray(losses.total_correlation(z, mean, log_var))))

    values = [tc(c) for c in (0.0, 0.5, 0.9)]
    assert abs(values[0]) < 0.05
    assert values[0] < values[1] < values[2] and values[2] > 0.5


def test_dip_penalty_is_zero_for_identity_covariance_and_matches_numpy(rng):
    # Rows whose covariance (1/M) is exactly the identity: ±e_i scaled by sqrt(d).
    d = 4
    mean = np.concatenate([np.eye(d), -np.eye(d)]) * np.sqrt(d)
    zeros = np.full_like(mean, -30.0)  # σ² ≈ 0: DIP-II's extra term vanishes too
    for dip_type in ("i", "ii"):
        assert float(losses.dip_regulariser(mean, zeros, 10.0, 100.0, dip_type)) == pytest.approx(0.0, abs=1e-4)
    mean = rng.normal(size=(32, 3)).astype(np.float32) * [1.0, 2.0, 0.5]
    log_var = rng.normal(size=(32, 3)).astype(np.float32) * 0.2
    for dip_type in ("i", "ii"):
        cov = np.cov(mean.astype(np.float64), rowvar=False, bias=True)
        if dip_type == "ii":
            cov += np.diag(np.exp(log_var.astype(np.float64)).mean(0))
        off = cov - np.diag(np.diag(cov))
        expected = 5.0 * np.sum(off ** 2) + 50.0 * np.sum((np.diag(cov) - 1) ** 2)
        got = float(losses.dip_regulariser(mean, log_var, 5.0, 50.0, dip_type))
        assert got == pytest.approx(expected, rel=1e-4)


def test_permute_dims_shuffles_each_dimension_on_its_own_and_keeps_its_values():
    z = np.arange(40, dtype=np.float32).reshape(20, 2)
    z[:, 1] += 100
    shuffled = np.asarray(losses.permute_dims(z, np.array([3, 4])))
    for d in range(2):
        assert sorted(shuffled[:, d]) == sorted(z[:, d])  # a permutation of the column
    assert not np.array_equal(np.argsort(shuffled[:, 0]), np.argsort(shuffled[:, 1]))  # independently
    np.testing.assert_array_equal(shuffled, np.asarray(losses.permute_dims(z, np.array([3, 4]))))


def test_factor_vae_discriminator_learns_to_tell_correlated_codes_from_permuted_ones():
    import tensorflow as tf

    from vae.config import VAEConfig
    from vae.model import build_discriminator

    keras.utils.set_random_seed(0)
    discriminator = build_discriminator(VAEConfig(latent_dim=2))
    optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9)
    rng = np.random.default_rng(0)

    def codes():
        a = rng.normal(size=(64, 1)).astype(np.float32)
        return np.concatenate([a, a + 0.05 * rng.normal(size=(64, 1)).astype(np.float32)], axis=1)  # z1 ≈ z0

    def outputs(z, step):
        permuted = losses.permute_dims(z, tf.stack([7, step]))
        return discriminator(z, training=True), discriminator(permuted, training=True)

    @tf.function
    def train_step(z, step):
        with tf.GradientTape() as tape:
            real, fake = outputs(z, step)
            loss = tf.reduce_mean(losses.discriminator_loss(real, fake))
        optimizer.apply(tape.gradient(loss, discriminator.trainable_variables), discriminator.trainable_variables)

    def accuracy(step):
        real, fake = (np.asarray(t) for t in outputs(codes(), tf.constant(step)))
        return 0.5 * (np.mean(real[:, 0] > real[:, 1]) + np.mean(fake[:, 1] > fake[:, 0]))

    before = accuracy(0)
    for step in range(1, 101):
        train_step(codes(), tf.constant(step))
    after = accuracy(999)
    assert before < 0.7 and after > 0.9
    # Its TC estimate log D/(1 − D) is then positive on the correlated codes.
    a = rng.normal(size=(256, 1)).astype(np.float32)
    tc = np.asarray(losses.discriminator_total_correlation(discriminator(np.concatenate([a, a], 1))))
    assert tc.mean() > 1.0
