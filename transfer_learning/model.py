"""Curation classifiers: members (backbone + the original's head) and the trunk-sharing Ensemble.

A member maps images (B, S, S, 3) in [0, 1] to a score (B, 1) = P(positive class).
It is a keras.applications backbone (original: ImageNet DenseNet201 at 300 px) with
the backbone's own `preprocess_input` inside the model (the original fed [0, 1]
pixels without it), then the original's head: Flatten, 3x [Dropout 0.5, Dense 512
ReLU with L2 1e-4], Dense 1 sigmoid.

Fine-tuning only ever unfreezes the last dense block (conv5), as the original did, so
members that start from the same base weights keep the frozen trunk up to
`pool4_pool` bit for bit. An `Ensemble` checks that (a fingerprint of the trunk's
weights) and then runs that trunk once per image and each member's own tail and
head on its output; members that do not share a trunk run whole.

Members load from `.keras` / `.h5` files or from TensorFlow SavedModel folders (the
original project published its six classifiers that way) through
`keras.layers.TFSMLayer`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from common.batchnorm import GlobalBatchNormalization

log = logging.getLogger(__name__)

SPLIT_LAYER = "pool4_pool"  # DenseNet: end of the conv4 transition, the last layer never unfrozen
PREPROCESS = "preprocess"
SCORE = "score"
HEAD_PREFIX = "head_"
SAVEDMODEL_ENDPOINTS = ("serving_default", "serve")


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
    path = Path(path)
    tmp = path.with_name("tmp-" + path.name)
    base.save_weights(str(tmp))
    os.replace(tmp, path)
    return path


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
    """Names of the base layers trainable in `stage` (the head is always trainable).

    DenseNet (original): 0 nothing; 1 the last conv5 block (conv5_block32 in
    DenseNet201); 2 conv5 blocks 3 to the last; 3 all of conv5 and the final `bn`.
    Other backbones, which the original never used: the last 1/3, 2/3 or all of
    their last 10 % of layers, a stand-in for "the last block".
    """
    names = [layer.name for layer in base_layers(member)]
    if stage == 0:
        return []
    blocks = _conv5_blocks(names)
    if blocks:
        if stage == 1:
            chosen = lambda n: n.startswith(f"conv5_block{blocks}_")  # noqa: E731
        elif stage == 2:
            chosen = lambda n: (m := re.match(r"conv5_block(\d+)_", n)) and int(m.group(1)) >= 3  # noqa: E731
        else:
            chosen = lambda n: n.startswith("conv5_") or n in ("bn", "relu")  # noqa: E731
        return [n for n in names if chosen(n)]
    last = max(1, round(0.1 * len(names)))
    return names[len(names) - max(1, round(last * stage / 3)):]


def set_stage(member: keras.Model, stage: int) -> int:
    """Freeze the base except the layers of `stage`; returns how many base layers train.

    Frozen BatchNormalization layers run in inference mode (Keras 3), so the frozen
    trunk's weights AND moving statistics never change.
    """
    unfrozen = set(stage_layers(member, stage))
    for layer in base_layers(member):
        layer.trainable = layer.name in unfrozen
    for layer in member.layers:
        if layer.name.startswith(HEAD_PREFIX) or layer.name == SCORE:
            layer.trainable = True
    return len(unfrozen)


# --------------------------------------------------------------------------- precision


def for_inference(model: keras.Model, precision: str = "float32", *, fuse_batchnorm: bool = True
                  ) -> keras.Model:
    """The same member for scoring: computing under `precision`, fused BatchNorm, same weights.

    With `fuse_batchnorm`, every BatchNormalization becomes `GlobalBatchNormalization`,
    which at inference runs TensorFlow's fused kernel (fused with the following ReLU
    on a CPU) instead of Keras 3's separate element-wise ops and float32 casts; the
    gain is measured by benchmarks/bench_classify.py ("stock BN" rows). The
    preprocessing and the score layer stay float32. SavedModel (TFSMLayer) members
    run as they were saved.
    """
    if any(isinstance(layer, keras.layers.TFSMLayer) for layer in model.layers):
        if precision != "float32":
            log.info("%s: a SavedModel member runs in its saved precision", model.name)
        return model
    keep = {PREPROCESS, SCORE}
    stock = [layer for layer in model.layers if type(layer) is layers.BatchNormalization]
    if (not stock or not fuse_batchnorm) and all(
            layer.dtype_policy.name == ("float32" if layer.name in keep else precision)
            for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)):
        return model  # nothing to change: no copy

    def clone(layer):
        config = layer.get_config()
        if layer.name not in keep:
            config["dtype"] = keras.DTypePolicy(precision)
        fuse = fuse_batchnorm and type(layer) is layers.BatchNormalization
        kind = GlobalBatchNormalization if fuse else layer.__class__
        return kind.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


# --------------------------------------------------------------------------- loading


@dataclass
class Member:
    """A loaded member and what is known about how it was trained."""

    model: keras.Model  # (B, S, S, 3) in [0, 1] -> (B, 1)
    path: str
    kind: str  # "keras" or "savedmodel"
    info: dict = field(default_factory=dict)  # the member's JSON from train.py, if any

    @property
    def image_size(self) -> int | None:
        shape = self.model.inputs[0].shape
        return int(shape[1]) if shape[1] is not None and shape[1] == shape[2] else None

    @property
    def crop(self) -> str | None:
        return self.info.get("crop")


def is_savedmodel(path) -> bool:
    return Path(path, "saved_model.pb").is_file() or Path(path, "saved_model.pbtxt").is_file()


def member_files(spec: str) -> list[str]:
    """The member paths named by `spec`: a file, a SavedModel folder, or a train.py run dir."""
    path = Path(spec)
    if not path.exists():
        raise MemberError(f"{spec}: no such member file or folder")
    if path.is_dir():
        if is_savedmodel(path):
            return [str(path)]
        found = sorted(str(p) for p in path.glob("member_*.keras"))
        if not found:
            raise MemberError(f"{spec}: not a SavedModel folder and holds no member_*.keras "
                              "(train members with transfer_learning/train.py)")
        return found
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise MemberError(f"{spec}: expected a .keras or .h5 file or a SavedModel folder")
    return [str(path)]


def savedmodel_member(path, image_size: int | None = None) -> keras.Model:
    """A SavedModel folder as a Keras member, through keras.layers.TFSMLayer.

    The input size comes from the serving signature (or `image_size` when the
    signature leaves it open); a signature with several outputs is refused.
    """
    loaded = None
    for endpoint in SAVEDMODEL_ENDPOINTS:
        try:
            layer = keras.layers.TFSMLayer(str(path), call_endpoint=endpoint, trainable=False,
                                           name=f"savedmodel_{Path(path).name}")
            break
        except ValueError as err:
            loaded = err
    else:
        raise MemberError(f"{path}: no serving signature in the SavedModel ({loaded})")
    size = image_size
    signatures = getattr(getattr(layer, "_reloaded_obj", None), "signatures", {})
    if endpoint in signatures:
        specs = list(signatures[endpoint].structured_input_signature[1].values())
        if len(specs) == 1 and len(specs[0].shape) == 4 and specs[0].shape[1]:
            size = int(specs[0].shape[1])
    if not size:
        raise MemberError(f"{path}: the SavedModel does not fix its input size; give --image-size")
    inputs = keras.Input((size, size, 3), name="images")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise MemberError(f"{path}: the SavedModel has {len(outputs)} outputs "
                              f"({', '.join(outputs)}); a member has one score")
        outputs = next(iter(outputs.values()))
    if tuple(outputs.shape[1:]) != (1,):
        raise MemberError(f"{path}: output shape {tuple(outputs.shape)}, expected (batch, 1)")
    return keras.Model(inputs, outputs, name=f"savedmodel_{Path(path).name}")


def load_member(path, image_size: int | None = None) -> Member:
    """A member from a .keras / .h5 file or a SavedModel folder, plus its JSON if present."""
    path = str(path)
    if not os.path.exists(path):
        raise MemberError(f"{path}: no such member file or folder")
    info_path = Path(path).with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    try:
        if os.path.isdir(path):
            if not is_savedmodel(path):
                raise MemberError(f"{path}: a folder that is not a SavedModel")
            return Member(savedmodel_member(path, image_size), path, "savedmodel", info)
        model = keras.models.load_model(path, compile=False)
    except MemberError:
        raise
    except Exception as err:  # noqa: BLE001 — any failure to read a member is the user's file
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MemberError(f"{path}: cannot load this member ({message[:200]})") from None
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or tuple(model.outputs[0].shape[1:]) != (1,):
        raise MemberError(f"{path}: a member maps (batch, size, size, 3) images to (batch, 1) scores")
    return Member(model, path, "keras", info)


# --------------------------------------------------------------------------- trunk sharing


def split_member(member: keras.Model, split_layer: str = SPLIT_LAYER) -> tuple[keras.Model, keras.Model]:
    """(trunk, tail): images → split layer's output → score. trunk→tail equals the member exactly.

    Raises ValueError if the member has no such layer or the layer is not a cut
    through the network (some path bypasses it).
    """
    cut = member.get_layer(split_layer).output
    trunk = keras.Model(member.inputs, cut, name=f"{member.name}_trunk")
    tail = keras.Model(cut, member.outputs, name=f"{member.name}_tail")
    def ids(model):
        return {id(layer) for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}

    if ids(trunk) & ids(tail) or ids(trunk) | ids(tail) != ids(member):
        raise ValueError(f"{split_layer} does not cut {member.name} in two")
    return trunk, tail


def trunk_fingerprint(trunk: keras.Model) -> str:
    """A hash of the trunk's input shape, layer configurations and every weight's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(trunk.inputs[0].shape)).encode())
    for layer in trunk.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "dtype", "trainable")}
        digest.update(type(layer).__name__.encode())
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


@dataclass
class _Source:
    """What one group of members reads: a shared trunk's output, or the images themselves."""

    trunk: keras.Model | None  # None: the images
    fingerprint: str = ""


class Ensemble:
    """Scores of several members on a batch, with each common frozen trunk run once.

    `ensemble(images)` → (B, n) numpy scores, column i from member i; it equals
    running the members one by one. For two passes, `run(images, which)` returns the
    trunk features with the scores of members `which`, and `scores(other, features=…)`
    scores other members on (a row subset, `select`) of the same features, so pass 2
    reuses pass 1's trunk for its survivors. Each (kind, members, branches) is one
    compiled tf.function, traced once for any batch size; `micro_batch` splits big
    batches into model calls of that size (smaller batches stay in cache on a CPU)
    and `streams` runs each call as that many parallel branches.
    """

    def __init__(
        self,
        members: Sequence[keras.Model],
        *,
        split_layer: str = SPLIT_LAYER,
        share_trunk: bool = True,
        jit_compile: bool = False,
        micro_batch: int = 0,
        streams: int = 1,
        names: Sequence[str] | None = None,
    ):
        if not members:
            raise MemberError("an ensemble needs at least one member")
        self.members = list(members)
        self.names = list(names) if names else [m.name for m in self.members]
        self.jit_compile = jit_compile
        self.micro_batch = micro_batch
        self.streams = max(1, int(streams))
        self.image_shape = tuple(self.members[0].inputs[0].shape[1:])
        for name, member in zip(self.names, self.members):
            if tuple(member.inputs[0].shape[1:]) != self.image_shape:
                raise MemberError(f"{name}: input shape {tuple(member.inputs[0].shape[1:])} differs "
                                  f"from the other members' {self.image_shape}")
        self.sources: list[_Source] = []
        self.heads: list[keras.Model] = []  # per member: a tail (on a trunk) or the whole member
        self.source_of: list[int] = []
        self._plan(split_layer, share_trunk)
        self._functions: dict = {}

    # -------------------------------------------------------------- planning
    def _plan(self, split_layer: str, share_trunk: bool) -> None:
        splits: dict[int, tuple[keras.Model, keras.Model, str]] = {}
        if share_trunk:
            for i, member in enumerate(self.members):
                try:
                    trunk, tail = split_member(member, split_layer)
                except ValueError:
                    continue
                splits[i] = (trunk, tail, trunk_fingerprint(trunk))
        groups: dict[str, list[int]] = {}
        for i, (_, _, fingerprint) in splits.items():
            groups.setdefault(fingerprint, []).append(i)
        shared = {fp: idx for fp, idx in groups.items() if len(idx) > 1}
        alone = [self.names[idx[0]] for fp, idx in groups.items() if len(idx) == 1]
        if alone and len(splits) > 1:
            log.warning("the frozen trunk up to %s of %s matches no other member's (trained from "
                        "another initialisation?): running %s whole", split_layer,
                        ", ".join(alone), "it" if len(alone) == 1 else "them")
        image_source = None
        for i, member in enumerate(self.members):
            fingerprint = splits[i][2] if i in splits else None
            if fingerprint in shared:
                index = next((k for k, s in enumerate(self.sources) if s.fingerprint == fingerprint), None)
                if index is None:
                    self.sources.append(_Source(splits[shared[fingerprint][0]][0], fingerprint))
                    index = len(self.sources) - 1
                self.source_of.append(index)
                self.heads.append(splits[i][1])
            else:
                if image_source is None:
                    self.sources.append(_Source(None))
                    image_source = len(self.sources) - 1
                self.source_of.append(image_source)
                self.heads.append(member)
        whole = sum(1 for s in self.source_of if self.sources[s].trunk is None)
        log.info("ensemble of %d: %d shared trunk(s) feeding %d members, %d members run whole",
                 len(self.members), sum(1 for s in self.sources if s.trunk is not None),
                 len(self.members) - whole, whole)

    @property
    def shared(self) -> bool:
        """True if at least two members share one trunk run."""
        return any(s.trunk is not None for s in self.sources)

    # -------------------------------------------------------------- compiled functions
    def sources_for(self, which: Sequence[int]) -> list[int]:
        """The feature sources (shared trunks, or the images) that members `which` read."""
        return sorted({self.source_of[i] for i in which})

    def _feature_spec(self, source: int) -> tf.TensorSpec:
        trunk = self.sources[source].trunk
        if trunk is None:
            return tf.TensorSpec((None,) + self.image_shape, tf.float32)
        return tf.TensorSpec((None,) + tuple(trunk.outputs[0].shape[1:]),
                             tf.as_dtype(trunk.outputs[0].dtype))

    def _features(self, images, sources: Sequence[int]) -> tuple:
        return tuple(images if self.sources[s].trunk is None
                     else self.sources[s].trunk(images, training=False) for s in sources)

    def _score(self, features: dict, which: tuple[int, ...]):
        columns = [tf.cast(tf.reshape(self.heads[i](features[self.source_of[i]], training=False),
                                      (-1, 1)), tf.float32) for i in which]
        return tf.concat(columns, axis=1)

    @staticmethod
    def _in_streams(function, inputs, streams: int):
        """function(inputs) on `streams` row slices as independent branches, concatenated.

        The executor runs the branches at the same time; on some CPUs two small
        convolutions side by side use the cores better than one split across them.
        """
        if streams <= 1:
            return function(inputs)
        count = tf.shape(tf.nest.flatten(inputs)[0])[0]
        bounds = [(k * count) // streams for k in range(streams + 1)]
        parts = [function(tf.nest.map_structure(lambda t, a=a, b=b: t[a:b], inputs))
                 for a, b in zip(bounds[:-1], bounds[1:])]
        return tf.nest.map_structure(lambda *ts: tf.concat(ts, axis=0), *parts)

    def _function(self, kind: str, which: tuple[int, ...], rows: int):
        """One compiled function per (kind, members, branches): traced once, any batch size.

        A call of fewer rows than `streams` runs as one branch: an empty branch (0 rows)
        trips oneDNN's BatchNorm rewrite on AVX-512 CPUs ("Incompatible shapes").
        """
        streams = self.streams if rows >= self.streams else 1
        key = (kind, which, streams)
        if key not in self._functions:
            used = self.sources_for(which)
            image_spec = tf.TensorSpec((None,) + self.image_shape, tf.float32)
            if kind == "run":  # images -> (features, scores): trunk(s) once, then every tail
                def branch(images):
                    features = self._features(images, used)
                    return features, self._score(dict(zip(used, features)), which)
                spec = [image_spec]
            elif kind == "features":  # images -> features of the sources `which` names
                def branch(images):
                    return self._features(images, which)
                spec = [image_spec]
            else:  # features -> scores
                def branch(features):
                    return self._score(dict(zip(used, features)), which)
                spec = [tuple(self._feature_spec(s) for s in used)]

            def function(inputs):
                return self._in_streams(branch, inputs, streams)

            self._functions[key] = tf.function(function, input_signature=spec,
                                               jit_compile=self.jit_compile, reduce_retracing=True)
        return self._functions[key]

    def _chunks(self, count: int) -> list[tuple[int, int]]:
        step = self.micro_batch or count or 1
        return [(start, min(start + step, count)) for start in range(0, count, step)]

    # -------------------------------------------------------------- public API
    def _which(self, which) -> tuple[int, ...]:
        return tuple(range(len(self.members))) if which is None else tuple(int(i) for i in which)

    def run(self, images, which: Sequence[int] | None = None) -> tuple[dict, tf.Tensor]:
        """(features by source, scores (B, len(which)) float32) of images (B, S, S, 3) in [0, 1].

        The features can be handed to `scores` (after `select`ing rows) so that other
        members reuse the trunks already run.
        """
        which = self._which(which)
        used = self.sources_for(which)
        images = tf.convert_to_tensor(images, tf.float32)
        count = int(images.shape[0])
        if count == 0:
            return ({s: tf.zeros((0,) + tuple(self._feature_spec(s).shape[1:]), self._feature_spec(s).dtype)
                     for s in used}, tf.zeros((0, len(which)), tf.float32))
        parts = [self._function("run", which, b - a)(images[a:b]) for a, b in self._chunks(count)]
        features = {s: tf.concat([p[0][k] for p in parts], axis=0) if len(parts) > 1 else parts[0][0][k]
                    for k, s in enumerate(used)}
        scores = tf.concat([p[1] for p in parts], axis=0) if len(parts) > 1 else parts[0][1]
        return features, scores

    def scores(self, which: Sequence[int] | None = None, *, features: dict | None = None,
               images=None) -> tf.Tensor:
        """Scores (B, len(which)) from `features` (from `run`), computing any missing source from `images`."""
        which = self._which(which)
        features = dict(features or {})
        missing = tuple(s for s in self.sources_for(which) if s not in features)
        if missing:
            if images is None:
                raise ValueError("the features lack a source these members read; pass the images too")
            images = tf.convert_to_tensor(images, tf.float32)
            count = int(images.shape[0])
            computed = [self._function("features", missing, b - a)(images[a:b])
                        for a, b in self._chunks(count)]
            for k, s in enumerate(missing):
                features[s] = (tf.concat([c[k] for c in computed], axis=0) if len(computed) > 1
                               else computed[0][k]) if computed else images[:0]
        picked = tuple(features[s] for s in self.sources_for(which))
        count = int(picked[0].shape[0])
        if count == 0:
            return tf.zeros((0, len(which)), tf.float32)
        parts = [self._function("scores", which, b - a)(tuple(f[a:b] for f in picked))
                 for a, b in self._chunks(count)]
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)

    @staticmethod
    def select(features: dict, rows) -> dict:
        """The features of some rows (e.g. pass 1's survivors)."""
        rows = tf.convert_to_tensor(np.asarray(rows, np.int64))
        return {s: tf.gather(f, rows) for s, f in features.items()}

    def __call__(self, images, which: Sequence[int] | None = None) -> np.ndarray:
        """Scores (B, len(which)) as numpy, column k from member which[k]."""
        return self.run(images, which)[1].numpy()
