"""Members from disk: `.keras` / `.h5` files, SavedModel folders and train.py run folders.

SavedModel folders (the original project published its six classifiers that way)
load through `keras.layers.TFSMLayer`. A member trained by train.py comes with its
JSON (stage, image size, crop, ...) next to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras

from common.files import first_line
from transfer_learning.member import MemberError  # importing it registers BackbonePreprocess for load_model

SAVEDMODEL_ENDPOINTS = ("serving_default", "serve")


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
        raise MemberError(f"{path}: cannot load this member ({first_line(err)})") from None
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or tuple(model.outputs[0].shape[1:]) != (1,):
        raise MemberError(f"{path}: a member maps (batch, size, size, 3) images to (batch, 1) scores")
    return Member(model, path, "keras", info)
