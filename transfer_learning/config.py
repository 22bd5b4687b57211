"""Settings of the curation programs: one frozen dataclass each, with the original's defaults.

`TrainConfig` is `python transfer_learning/train.py`, `ClassifyConfig` is
`python transfer_learning/classify.py`, `WeakLabelConfig` is
`python -m transfer_learning.weak_labels`, `ReviewConfig` is
`python -m transfer_learning.review` (labelling pass-2 photos by hand). Flags, help
texts and JSON files come from `common.config` (tuples as several values:
`--stages 0 1`); `--config x.json` sets the settings it names and explicit flags
override the file.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from common import config as settings
from common.config import STRATEGIES, Settings, need
from transfer_learning import quality

PRECISIONS = ("float32", "mixed_bfloat16")  # float16 loss scaling is not wired into the members' training
CROPS = ("stretch", "center")  # stretch: whole image resized (original) | center: centre square
RULES = ("all", "mean", "majority")
MODES = ("copy", "move", "link", "none")
ORDERS = quality.NAMES + ("name",)
BN_MODES = ("inference", "train")  # what unfrozen BatchNorm layers do while fine-tuning
CLASS_WEIGHTS = ("auto", "none")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """One pass's ensemble: data, member architecture, the original's 4-stage schedule."""

    # data
    data: str = ""  # folder with one sub-folder per class (building/not_building or suitable/unsuitable)
    validation: str = ""  # validation folder laid out the same way ("": a hash split of --data)
    validation_fraction: float = 0.2  # share of --data held out when there is no --validation folder
    positive_class: str = ""  # class scored 1 ("": building or suitable)
    crop: str = "stretch"  # stretch: resize the whole photo (original) | center: centre square
    cache: bool = False  # keep decoded images in memory (small sets)
    augment: bool = True  # flip, rotation 25°, brightness 0.8-1.2, zoom 0.2, shear 0.1 (original)
    # member (original: ImageNet DenseNet201 at 300 px, Flatten, 3x [Dropout 0.5, Dense 512 relu L2 1e-4])
    backbone: str = "DenseNet201"  # any keras.applications model name, e.g. MobileNetV3Small
    weights: str = "imagenet"  # imagenet | a local weights file | none (random: tests and offline runs)
    image_size: int = 300  # pixels per side
    dense_layers: int = 3  # [Dropout, Dense] blocks in the head
    dense_units: int = 512  # units of each head Dense layer
    dropout: float = 0.5  # dropout before each head Dense layer
    l2: float = 1e-4  # L2 weight decay on the head Dense kernels
    # schedule (original: RMSprop 5e-5, binary cross-entropy, 4 stages unfreezing conv5)
    members: int = 3  # members trained, each with its own seed and data order
    stages: tuple[int, ...] = (0, 1, 2, 3)  # 0 base frozen; 1 last conv5 block; 2 blocks 3..; 3 all conv5
    epochs_per_stage: int = 5  # epochs in each stage
    steps_per_epoch: int = 0  # batches per epoch (0: one pass over the training images)
    validation_steps: int = 0  # batches per validation (0: the whole validation set)
    batch_size: int = 32  # GLOBAL batch, split over all replicas
    learning_rate: float = 5e-5  # RMSprop learning rate, every stage
    seed: int = 0  # member i uses seed + i (head initialisation, data order, augmentation)
    bn_mode: str = "inference"  # unfrozen BatchNorm: inference (keep the base's) | train (original; global batch)
    class_weight: str = "auto"  # auto: each class weighs the inverse of its frequency | none (original)
    # the best epoch (curation keeps an image only if every member scores > 0.9)
    threshold: float = 0.9  # precision and recall are measured at this score, as curation uses it
    selection_beta: float = 0.5  # keep the epoch of best F-beta at --threshold (< 1 favours precision)
    # hardware
    strategy: str = "auto"  # auto | default | one_device | mirrored | multi_worker
    precision: str = "float32"  # float32 | mixed_bfloat16
    jit_compile: bool = False  # XLA

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the flag of the first invalid setting."""
        need(bool(self.data), "data", "required: a folder with one sub-folder per class")
        need(os.path.isdir(self.data), "data", f"{self.data}: no such folder")
        need(not self.validation or os.path.isdir(self.validation), "validation",
              f"{self.validation}: no such folder")
        need(0 < self.validation_fraction < 1, "validation_fraction", "must be in (0, 1)")
        need(self.crop in CROPS, "crop", f"use one of {', '.join(CROPS)}")
        need(self.image_size >= 32, "image_size", f"must be at least 32, got {self.image_size}")
        need(self.dense_layers >= 0, "dense_layers", "must be >= 0")
        need(self.dense_units >= 1, "dense_units", "must be at least 1")
        need(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.l2 >= 0, "l2", "must be >= 0")
        need(self.members >= 1, "members", f"must be at least 1, got {self.members}")
        need(bool(self.stages) and all(s in (0, 1, 2, 3) for s in self.stages)
              and list(self.stages) == sorted(set(self.stages)), "stages",
              "one or more of 0 1 2 3, in increasing order")
        need(self.epochs_per_stage >= 1, "epochs_per_stage", "must be at least 1")
        need(self.steps_per_epoch >= 0, "steps_per_epoch", "must be >= 0")
        need(self.validation_steps >= 0, "validation_steps", "must be >= 0")
        need(self.batch_size >= 1, "batch_size", "must be at least 1")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(self.bn_mode in BN_MODES, "bn_mode", f"use one of {', '.join(BN_MODES)}")
        need(self.class_weight in CLASS_WEIGHTS, "class_weight", f"use one of {', '.join(CLASS_WEIGHTS)}")
        need(0 < self.threshold < 1, "threshold", f"must be in (0, 1), got {self.threshold}")
        need(self.selection_beta > 0, "selection_beta", f"must be > 0, got {self.selection_beta}")
        need(self.strategy in STRATEGIES, "strategy", f"use one of {', '.join(STRATEGIES)}")
        need(self.precision in PRECISIONS, "precision", f"use one of {', '.join(PRECISIONS)}")
        need(self.weights in ("imagenet", "none") or os.path.isfile(self.weights), "weights",
              f"{self.weights}: not 'imagenet', 'none' or an existing weights file")
        import keras

        need(self.backbone[:1].isupper() and callable(getattr(keras.applications, self.backbone, None)),
              "backbone", f"{self.backbone!r} is not a keras.applications model "
              "(e.g. DenseNet201, DenseNet121, MobileNetV3Small, EfficientNetB0)")
        return self


@dataclass(frozen=True)
class ClassifyConfig(Settings):
    """A curation run: inputs, the two ensembles, the keep rule and where results go."""

    # inputs and members
    input: tuple[str, ...] = ()  # folders (recursive), .txt/.csv lists of paths, GLDv2 .tar shards
    pass1: tuple[str, ...] = ()  # "is it a building?" members: .keras / .h5 files, SavedModel folders, train.py run dirs
    pass2: tuple[str, ...] = ()  # "is the photo suitable?" members, run on pass-1 survivors only (optional)
    # rule (original: every member of both passes > 0.9)
    threshold: float = 0.9  # a score must be above this
    rule: str = "all"  # all: every member | mean: the members' mean | majority: more than half
    # outputs
    output: str = "curated"  # kept images go here, under unique names
    mode: str = "copy"  # copy | move (after the copy is safe) | link (hard link) | none (manifest only)
    manifest: str = ""  # CSV, one row per input ("": OUTPUT/manifest.csv, per shard when sharded)
    # speed
    batch_size: int = 32  # images decoded and recorded together
    max_image_bytes: int = 50_000_000  # an input larger than this is an error row, never read into memory
    max_image_pixels: int = 100_000_000  # an image declaring more pixels is an error row, never decoded
    read_retries: int = 3  # a read failing with EIO, a timeout or a network file system error is tried again this often (after 0.1, 0.4, 1.6 s)
    scaled_decode: bool = True  # JPEGs at least twice --image-size on both sides decode at 1/2, 1/4 or 1/8 scale in libjpeg, then resize
    micro_batch: int = 0  # images per model call (0: 32 on a CPU, the whole batch on a GPU)
    streams: int = 1  # parallel branches in each model call (0 or 1: one; 2 can help on CPUs with few cores)
    image_size: int = 0  # pixels per side (0: the members' input size)
    crop: str = ""  # stretch | center ("": as the members were trained, else stretch)
    precision: str = "float32"  # float32 | mixed_bfloat16 (fast only where the CPU/GPU has bf16)
    jit_compile: bool = False  # XLA for the ensemble function
    share_trunk: bool = True  # run the members' common frozen trunk once per image
    num_shards: int = 1  # split the inputs over this many machines
    shard_index: int = 0  # which part this machine does

    def validate(self) -> "ClassifyConfig":
        """Raise ConfigError naming the flag of the first invalid setting."""
        need(bool(self.input), "input", "required: a folder, a .txt/.csv list or .tar shards")
        need(bool(self.pass1), "pass1", "required: the pass-1 members (files or train.py run dirs)")
        need(0 < self.threshold < 1, "threshold", f"must be in (0, 1), got {self.threshold}")
        need(self.rule in RULES, "rule", f"use one of {', '.join(RULES)}")
        need(self.mode in MODES, "mode", f"use one of {', '.join(MODES)}")
        need(self.batch_size >= 1, "batch_size", "must be at least 1")
        need(self.micro_batch >= 0, "micro_batch", "must be >= 0")
        need(self.max_image_bytes >= 1, "max_image_bytes", "must be at least 1")
        need(self.max_image_pixels >= 1, "max_image_pixels", "must be at least 1")
        need(self.read_retries >= 0, "read_retries", "must be >= 0")
        need(self.streams >= 0, "streams", "must be >= 0")
        need(self.image_size == 0 or self.image_size >= 32, "image_size", "must be 0 or at least 32")
        need(self.crop in CROPS + ("",), "crop", f"use one of {', '.join(CROPS)}")
        need(self.precision in PRECISIONS, "precision", f"use one of {', '.join(PRECISIONS)}")
        need(self.num_shards >= 1, "num_shards", "must be at least 1")
        need(0 <= self.shard_index < self.num_shards, "shard_index",
              f"{self.shard_index} is not in [0, {self.num_shards})")
        return self


@dataclass(frozen=True)
class WeakLabelConfig(Settings):
    """A pass-1 training set drawn from GLDv2 shards, labelled by GLDv2's own landmark metadata."""

    input: tuple[str, ...] = ()  # GLDv2 .tar shards, unpacked shard folders, or folders of .tar shards
    metadata: str = "datasets/gldv2/metadata"  # folder with train.csv and train_label_to_hierarchical.csv (python -m data.download gldv2_metadata)
    label_map: str = ""  # table of metadata words -> building | not_building | ambiguous ("": transfer_learning/weak_label_map.csv)
    output: str = "weak_pass1"  # folder written: building/, not_building/ (train.py --data), manifest.csv
    per_class: int = 6000  # images in each class (both get fewer, the same number, if the shards hold fewer)
    per_landmark: int = 5  # at most this many images of one landmark, so famous places do not dominate
    seed: int = 0  # which images are drawn: the same seed and shards always give the same set

    def validate(self) -> "WeakLabelConfig":
        """Raise ConfigError naming the flag of the first invalid setting."""
        need(bool(self.input), "input", "required: GLDv2 .tar shards or folders of them")
        need(bool(self.metadata), "metadata", "required: the folder of the GLDv2 metadata CSVs")
        need(bool(self.output), "output", "required: the folder to write")
        need(self.per_class >= 1, "per_class", f"must be at least 1, got {self.per_class}")
        need(self.per_landmark >= 1, "per_landmark", f"must be at least 1, got {self.per_landmark}")
        return self


@dataclass(frozen=True)
class ReviewConfig(Settings):
    """A review by hand for pass 2: which photos come first, what is decided without asking."""

    order: str = "blur"  # shown first: blur (blurriest) | dark (darkest) | clipped | size (smallest) | aspect | name
    batch: int = 1  # photos per page of the window (1-9); on a page, keys 1-9 mark the exceptions
    auto_reject: str = ""  # reject without asking a photo whose score passes a rule, e.g. "blur<50,dark<0.1"
    window: bool = True  # open the review window (--no-window: only --auto-reject, --apply-sheet, --sheet)
    sheet: str = ""  # no window: write contact sheets (numbered PNG pages) and sheet.csv of the undecided here
    apply_sheet: str = ""  # record the decisions typed into a sheet.csv (a or suitable, r or unsuitable)

    def validate(self) -> "ReviewConfig":
        """Raise ConfigError naming the flag of the first invalid setting."""
        need(self.order in ORDERS, "order", f"use one of {', '.join(ORDERS)}")
        need(1 <= self.batch <= 9, "batch", f"must be in 1-9 (one key per photo of a page), got {self.batch}")
        try:
            quality.parse_thresholds(self.auto_reject)
        except quality.ThresholdError as err:
            need(False, "auto_reject", str(err))
        need(not self.apply_sheet or os.path.isfile(self.apply_sheet), "apply_sheet",
             f"{self.apply_sheet}: no such file")
        return self


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """`--config` plus one flag per field of `cls`, help from the field comments."""
    parser.add_argument("--config", metavar="FILE", help="JSON file of settings (only those it names change)")
    settings.add_arguments(parser, cls)


def from_args(cls, args: argparse.Namespace, **overrides):
    """Defaults < --config file < explicit flags < `overrides` (unless None); validated."""
    layers = [settings.read_json(cls, args.config)] if getattr(args, "config", None) else []
    layers += [settings.given(cls, args), {k: v for k, v in overrides.items() if v is not None}]
    return settings.resolve(cls, *layers)
