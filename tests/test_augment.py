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
