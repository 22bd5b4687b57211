"""Curation members: building one, its fine-tuning stages, and the shared random base.

A member maps images (B, S, S, 3) in [0, 1] to a score (B, 1) = P(positive class).
It is a keras.applications backbone (original: ImageNet DenseNet201 at 300 px) with
the backbone's own `preprocess_input` inside the model (the original fed [0, 1]
pixels without it), then the original's head: Flatten, 3x [Dropout 0.5, Dense 512
ReLU with L2 1e-4], Dense 1 sigmoid.

Fine-tuning only ever unfreezes the last dense block (conv5), as the original did, so
members that start from the same base weights keep the frozen trunk up to
`SPLIT_LAYER` (`pool4_pool`) bit for bit; `transfer_learning.ensemble` relies on that.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import keras
import tensorflow as tf
from keras import layers

from common.batchnorm import GlobalBatchNormalization
from common.files import atomic_write
from transfer_learning.config import BN_MODES

SPLIT_LAYER = "pool4_pool"  # DenseNet: end of the conv4 transition, the last layer never unfrozen
PREPROCESS = "preprocess"
SCORE = "score"
HEAD_PREFIX = "head_"


class MemberError(ValueError):
    """A member that cannot be used (missing, unreadable, wrong shape); the message names it."""


# --------------------------------------------------------------------------- building


def backbone_constructor(name: str) -> Callable:
    """The keras.applications constructor called `name` (e.g. DenseNet201, MobileNetV3Small)."""
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor) or not name[:1].isupper():
        raise MemberError(f"--backbone: {name!r} is not a keras.applications model "
                          "(e.g. DenseNet201, DenseNet121, MobileNetV3Small, EfficientNetB0)")
    return constructor


@keras.saving.register_keras_serializable(package="castle_dreamer")
class BackbonePreprocess(layers.Layer):
    """[0, 1] pixels → the backbone's own `preprocess_input` of 0-255 pixels, in float32."""

    def __init__(self, backbone: str, **kwargs):
        kwargs.setdefault("dtype", "float32")  # exact input scaling, also under mixed precision
        super().__init__(**kwargs)
        self.backbone = backbone
        module = sys.modules[backbone_constructor(backbone).__module__]
        self._preprocess = module.preprocess_input

    def call(self, images):
        return self._preprocess(images * 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def _base(backbone: str, image_size: int, weights: str | None, inputs):
    """The backbone (no top) on `inputs` through its preprocessing; weights None is random."""
    x = BackbonePreprocess(backbone, name=PREPROCESS)(inputs)
    constructor = backbone_constructor(backbone)
    try:
        return constructor(include_top=False, weights=weights, input_tensor=x)
    except ValueError as err:  # too small an image, an unusable weights file, ...
        raise MemberError(f"{backbone} at {image_size} px with weights {weights!r}: "
                          f"{str(err).strip().splitlines()[0]}") from None
    except Exception as err:  # noqa: BLE001 — Keras reports a failed download as a bare Exception
        if weights != "imagenet":
            raise
        raise MemberError(f"--weights imagenet: cannot fetch {backbone}'s ImageNet weights "
                          f"({str(err).strip().splitlines()[0]}); give a local weights file "
                          "or --weights none (random, offline)") from None


def _weights_arg(weights: str | None) -> str | None:
    if weights in (None, "", "none"):
        return None
    if weights != "imagenet" and not os.path.isfile(weights):
        raise MemberError(f"--weights: {weights}: no such file")
    return weights


def calibrate_batchnorm(model: keras.Model, images) -> int:
    """Set every BatchNormalization's moving statistics to those of `images`; returns how many.

    A randomly initialised base keeps the default statistics (mean 0, variance 1),
    which match nothing: frozen, it passes almost no signal (MobileNet features
    ~1e-10). One forward pass in training mode with momentum 0 gives each layer
    the statistics of its own input, as ImageNet weights come with ImageNet's.
    """
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    saved = [(layer.trainable, layer.momentum) for layer in norms]
    try:
        for layer in norms:
            layer.trainable, layer.momentum = True, 0.0
        model(tf.nest.pack_sequence_as(model.input, [images]), training=True)
    finally:
        for layer, (trainable, momentum) in zip(norms, saved):
            layer.trainable, layer.momentum = trainable, momentum
    return len(norms)


def save_base_init(path, backbone: str = "DenseNet201", image_size: int = 300, seed: int = 0,
                   images=None) -> Path:
    """Write one random initialisation of the backbone, for members that must share a trunk.

    Members built with `build_member(weights=path)` all start from these weights, as
    members trained from ImageNet all start from ImageNet's (tests; offline runs).
    With `images` ((N, S, S, 3) in [0, 1]), the BatchNorm statistics are theirs.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    base = _base(backbone, image_size, None, inputs)
    if images is not None and len(images):
        calibrate_batchnorm(base, images)
    return atomic_write(path, base.save_weights)


def build_member(
    backbone: str = "DenseNet201",
    image_size: int = 300,
    weights: str | None = "imagenet",
    *,
    dense_layers: int = 3,
    dense_units: int = 512,
    dropout: float = 0.5,
    l2: float = 1e-4,
    seed: int | None = None,
    name: str = "member",
) -> keras.Model:
    """A member with its whole base frozen (stage 0); weights: imagenet, a file, or none (random)."""
    inputs = keras.Input((image_size, image_size, 3), name="images")  # [0, 1]
    base = _base(backbone, image_size, _weights_arg(weights), inputs)
    for layer in base.layers:
        layer.trainable = False
    x = layers.Flatten(name=HEAD_PREFIX + "flatten")(base.output)
    regulariser = keras.regularizers.L2(l2) if l2 else None
    for i in range(1, dense_layers + 1):
        x = layers.Dropout(dropout, seed=None if seed is None else seed + i,
                           name=f"{HEAD_PREFIX}dropout_{i}")(x)
        x = layers.Dense(dense_units, activation="relu", kernel_regularizer=regulariser,
                         kernel_initializer=keras.initializers.GlorotUniform(
                             None if seed is None else seed * 100 + i),
                         name=f"{HEAD_PREFIX}dense_{i}")(x)
    # The score stays float32 under mixed precision (a 0.9 threshold needs the precision).
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name=SCORE,
                           kernel_initializer=keras.initializers.GlorotUniform(
                               None if seed is None else seed * 100))(x)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- fine-tuning stages


def base_layers(member: keras.Model) -> list:
    """The backbone's layers of a member, in order (no input, preprocessing or head)."""
    return [layer for layer in member.layers
            if not isinstance(layer, keras.layers.InputLayer)
            and layer.name != PREPROCESS and layer.name != SCORE
            and not layer.name.startswith(HEAD_PREFIX)]


def _conv5_blocks(names: Sequence[str]) -> int:
    numbers = [int(m.group(1)) for n in names if (m := re.match(r"conv5_block(\d+)_", n))]
    return max(numbers, default=0)


def stage_layers(member: keras.Model, stage: int) -> list[str]:
    """Names of the base layers unfrozen in `stage` (the head is always trainable).

    DenseNet, as the original's `unfreeze_layers(stage)`: everything from the first
    layer whose name starts with a prefix to the end of the base, so the final `bn`
    (and `relu`) train in every stage after 0. The original's prefixes are
    'conv5_block32_' cut by `stage` characters: 1 'conv5_block32' (the last block of
    DenseNet201 and 169), 2 'conv5_block3' (first matched by block 3: blocks 3 to the
    last), 3 'conv5_block' (all of conv5). One difference: stage 1 is the LAST conv5
    block of any DenseNet (conv5_block16 in DenseNet121), where the original's prefix
    would match nothing and unfreeze nothing.
    Other backbones, which the original never used: the last 1/3, 2/3 or all of
    their last 10 % of layers, a stand-in for "the last block".
    """
    names = [layer.name for layer in base_layers(member)]
    if stage == 0:
        return []
    blocks = _conv5_blocks(names)
    if blocks:
        prefix = {1: f"conv5_block{blocks}_", 2: "conv5_block3", 3: "conv5_block"}[min(stage, 3)]
        first = next(i for i, n in enumerate(names) if n.startswith(prefix))
        return names[first:]
    last = max(1, round(0.1 * len(names)))
    return names[len(names) - max(1, round(last * stage / 3)):]


def set_stage(member: keras.Model, stage: int, bn_mode: str = "inference") -> int:
    """Freeze the base except the layers of `stage`; returns how many base layers are unfrozen.

    Frozen BatchNormalization layers run in inference mode (Keras 3), so the frozen
    trunk's weights AND moving statistics never change. `bn_mode` decides the
    unfrozen ones:
      inference  they stay frozen too (moving statistics, scale and offset), so they
                 normalise with the statistics the base came with: Keras's advice for
                 fine-tuning, since a batch of 32 (of 2 classes) gives noisy statistics
                 that would overwrite ImageNet's.
      train      they train (the original's behaviour): batch statistics, moving
                 statistics updated, scale and offset learnt. Use
                 `with_global_batchnorm` first so that N replicas compute the statistics
                 of the global batch, as one device does.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode: use one of {', '.join(BN_MODES)}, not {bn_mode!r}")
    unfrozen = set(stage_layers(member, stage))
    for layer in base_layers(member):
        layer.trainable = layer.name in unfrozen and not (
            bn_mode == "inference" and isinstance(layer, layers.BatchNormalization))
    for layer in member.layers:
        if layer.name.startswith(HEAD_PREFIX) or layer.name == SCORE:
            layer.trainable = True
    return len(unfrozen)


def with_global_batchnorm(member: keras.Model) -> keras.Model:
    """The member with every BatchNormalization a stage can unfreeze made global, same weights.

    `common.batchnorm.GlobalBatchNormalization` computes batch statistics over the
    global batch of all replicas (stock BatchNormalization: each replica its own
    share), and is the fused kernel on one device. The frozen trunk keeps its
    layers, so members trained either way still share it (`transfer_learning.ensemble`).
    """
    tail = set(stage_layers(member, 3))

    def clone(layer):
        kind = layer.__class__
        if layer.name in tail and kind is layers.BatchNormalization:
            kind = GlobalBatchNormalization
        return kind.from_config(layer.get_config())

    copy = keras.models.clone_model(member, clone_function=clone)
    copy.set_weights(member.get_weights())
    return copy
