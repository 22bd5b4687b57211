"""transfer_learning.augment: each augmentation's range measured against the original's definition."""

import math

import numpy as np
import pytest
import tensorflow as tf

from transfer_learning.augment import SHEAR_DEGREES, RandomBrightnessScale, augmentation


def _layer(name):
    return next(l for l in augmentation(seed=1).layers if type(l).__name__ == name)


def _column_of(images):
    """Per image and row, the column of the brightest pixel: (B, H)."""
    return np.argmax(np.asarray(images)[..., 0], axis=2)


def test_shear_is_the_originals_tenth_of_a_degree_not_a_coefficient_of_a_tenth():
    size = 200
    line = np.zeros((32, size, size, 3), np.float32)
    line[:, :, size // 2, :] = 1.0  # a vertical line through the centre
    sheared = _layer("RandomShear")(line, training=True)
    drift = np.abs(_column_of(sheared) - size // 2).max()
    # ±0.1° over 200 rows moves the line by at most 200·tan(0.1°) ≈ 0.35 px (+1 for resampling);
    # a coefficient of 0.1 would move its ends by up to 10 px.
    assert drift <= math.ceil(size * math.tan(math.radians(SHEAR_DEGREES))) + 1
    assert SHEAR_DEGREES == 0.1


def test_rotation_reaches_but_never_exceeds_25_degrees():
    size = 101
    line = np.zeros((64, size, size, 3), np.float32)
    line[:, :, size // 2, :] = 1.0
    rotated = np.asarray(_layer("RandomRotation")(line, training=True))
    angles = []
    for image in rotated[..., 0]:
        ys, xs = np.nonzero(image > 0.5)
        keep = np.abs(ys - size // 2) < 40  # away from the corners
        slope = np.polyfit(ys[keep], xs[keep], 1)[0]
        angles.append(math.degrees(math.atan(slope)))
    assert max(abs(a) for a in angles) <= 25.5 and max(abs(a) for a in angles) > 15


def test_brightness_multiplies_by_a_factor_in_0_8_to_1_2():
    grey = np.full((256, 4, 4, 3), 0.5, np.float32)
    out = np.asarray(RandomBrightnessScale(0.8, 1.2, seed=3)(grey, training=True))
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6
    assert factors.max() - factors.min() > 0.3  # the whole range is used
    np.testing.assert_allclose(out, grey * factors[:, None, None, None], rtol=1e-6)  # multiplicative
    assert np.array_equal(np.asarray(RandomBrightnessScale()(grey, training=False)), grey)


def _peaks(profile, centre):
    """Sub-pixel positions of the brightest column left and right of `centre` in each row of (B, W)."""
    positions = []
    for half in (slice(0, centre), slice(centre + 1, profile.shape[1])):
        part = profile[:, half]
        columns = np.arange(profile.shape[1])[half]
        peak = np.argmax(part, axis=1)
        window = np.clip(peak[:, None] + np.arange(-2, 3), 0, part.shape[1] - 1)  # centroid of 5 px
        weights = np.take_along_axis(part, window, axis=1)
        positions.append((columns[window] * weights).sum(1) / weights.sum(1))
    return positions


def test_zoom_scales_width_and_height_independently_by_0_8_to_1_2():
    # ImageDataGenerator(zoom_range=0.2) samples the input at z·x and z'·y, z and z' drawn
    # independently from [0.8, 1.2]: the content shrinks or grows by 1/z in [0.83, 1.25].
    size, gap = 101, 30
    centre = size // 2
    grid = np.zeros((128, size, size, 3), np.float32)
    for offset in (-gap, gap):
        grid[:, :, centre + offset, :] = 1.0  # two vertical lines: width
        grid[:, centre + offset, :, :] = 1.0  # two horizontal lines: height
    zoomed = np.asarray(_layer("RandomZoom")(grid, training=True))[..., 0]
    scales = []
    for axis in (1, 2):  # mean over rows: the vertical lines' profile; over columns: the horizontal ones'
        left, right = _peaks(zoomed.mean(axis=axis), centre)
        scales.append((right - left) / (2 * gap))
    x, y = scales
    for scale in (x, y):
        assert scale.min() >= 1 / 1.2 - 0.02 and scale.max() <= 1 / 0.8 + 0.02
        assert scale.min() < 0.87 and scale.max() > 1.18  # the whole range is used
    assert np.abs(x - y).max() > 0.1 and abs(np.corrcoef(x, y)[0, 1]) < 0.3  # independent draws


def test_flip_is_horizontal_only_and_about_half_the_time():
    images = np.random.default_rng(0).random((200, 8, 8, 3)).astype(np.float32)
    flipped = np.asarray(_layer("RandomFlip")(images, training=True))
    mirrored = np.all(np.isclose(flipped, images[:, :, ::-1]), axis=(1, 2, 3))
    same = np.all(np.isclose(flipped, images), axis=(1, 2, 3))
    assert np.all(mirrored ^ same)  # each image is either left-right mirrored or untouched, never upside down
    assert 70 < mirrored.sum() < 130
