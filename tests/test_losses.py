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
