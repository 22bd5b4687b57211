"""Training augmentation: the original's ImageDataGenerator settings as Keras preprocessing layers.

Original: horizontal_flip, rotation_range=25, brightness_range=(0.8, 1.2),
zoom_range=0.2, shear_range=0.1, fill_mode "nearest". ImageDataGenerator is gone
in Keras 3; the layers below run inside tf.data on batches of (B, S, S, 3) images
in [0, 1], each image getting its own random draw.

Units: ImageDataGenerator's shear_range is an angle in DEGREES (its transform shears
by deg2rad(shear)), so the original sheared by at most ±0.1°; RandomShear's factor is
a shear coefficient (tan of the angle). RandomShear(0.1) would shear by ±5.7°.
"""

from __future__ import annotations

import math

import keras
from keras import layers

SHEAR_DEGREES = 0.1  # the original's shear_range


@keras.saving.register_keras_serializable(package="castle_dreamer")
class RandomBrightnessScale(layers.Layer):
    """Multiply each image by a factor drawn from [lower, upper], then clip to [0, 1].

    keras.layers.RandomBrightness ADDS factor × value range; the original's
    brightness_range (PIL ImageEnhance.Brightness) multiplies.
    """

    def __init__(self, lower: float = 0.8, upper: float = 1.2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= lower <= upper:
            raise ValueError(f"brightness range needs 0 <= lower <= upper, got ({lower}, {upper})")
        self.lower, self.upper, self.seed = float(lower), float(upper), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False

    def call(self, images, training=True):
        if not training:
            return images
        batch = keras.ops.shape(images)[0]
        factor = keras.random.uniform((batch, 1, 1, 1), self.lower, self.upper,
                                      seed=self.seed_generator, dtype=images.dtype)
        return keras.ops.clip(images * factor, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}


def augmentation(seed: int | None = None) -> keras.layers.Pipeline:
    """The original's augmentation, built once (outside any Dataset.map function)."""
    def s(k):
        return None if seed is None else seed * 10 + k

    return keras.layers.Pipeline([
        layers.RandomFlip("horizontal", seed=s(1)),
        layers.RandomRotation(25 / 360, fill_mode="nearest", seed=s(2)),  # factor: a fraction of 2π
        # ImageDataGenerator draws the x and y zoom independently, in [0.8, 1.2].
        layers.RandomZoom((-0.2, 0.2), (-0.2, 0.2), fill_mode="nearest", seed=s(3)),
        layers.RandomShear(x_factor=math.tan(math.radians(SHEAR_DEGREES)), fill_mode="nearest", seed=s(4)),
        RandomBrightnessScale(0.8, 1.2, seed=s(5)),
    ], name="augmentation")
