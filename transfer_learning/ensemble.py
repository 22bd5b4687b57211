"""The trunk-sharing inference engine: members made fast for scoring, and the `Ensemble`.

Members that start from the same base weights keep the frozen trunk up to
`SPLIT_LAYER` bit for bit (see `transfer_learning.member`). An `Ensemble` checks
that (a fingerprint of the trunk's weights) and then runs that trunk once per image
and each member's own tail and head on its output; members that do not share a
trunk run whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from common.batchnorm import GlobalBatchNormalization
from transfer_learning.member import PREPROCESS, SCORE, SPLIT_LAYER, MemberError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- scoring copies


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
            for layer in model.layers
            if isinstance(layer, layers.Layer) and not isinstance(layer, keras.layers.InputLayer)):
        return model  # nothing to change: no copy

    def clone(layer):
        config = layer.get_config()
        # Layers take the policy; bare operations of the graph (`x + 3` in MobileNetV3's
        # hard-swish is a keras.ops Add, not a layer) take no dtype and follow their inputs.
        if layer.name not in keep and isinstance(layer, layers.Layer):
            config["dtype"] = keras.DTypePolicy(precision)
        fuse = fuse_batchnorm and type(layer) is layers.BatchNormalization
        kind = GlobalBatchNormalization if fuse else layer.__class__
        return kind.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


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
