"""Which epoch of a member is kept: metrics at the curation threshold, and the criterion.

The curation rule keeps an image only if every member scores above 0.9 (original), so
what a member is for is its decisions at that threshold, not at 0.5. Each epoch is
measured on the validation set by accuracy (at 0.5, as the original reported it)
and by precision and recall at `threshold` (a score counts as positive when it is
strictly above it, as in the rule). The kept epoch maximises

    F-beta = (1 + β²) · P · R / (β² · P + R)      at the threshold, ties by accuracy

β < 1 weighs precision more (β = 0.5 by default): every kept photo should be a
building, and GLDv2 has millions of photos to spare, but a member that keeps almost
nothing is useless too, which precision alone would not see (a member that keeps one
right photo has precision 1). F-beta is 0 until some score passes the threshold, so
early epochs are told apart by their accuracy.

The score of the kept member is written beside it (`member_<i>.json`, with the
SHA-256 of `member_<i>.keras`); a rerun or resumed stage replaces the member only
with a better epoch. When the JSON does not describe the file (a kill between the
two writes, an older run), the saved member is measured again on the validation set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Callable

import keras

from common.files import atomic_write, write_json

log = logging.getLogger(__name__)

Score = tuple[float, float]  # (F-beta at the threshold, accuracy): compared in that order
NO_SCORE: Score = (-math.inf, -math.inf)


def member_metrics(threshold: float) -> list[keras.metrics.Metric]:
    """Accuracy at 0.5 and precision and recall at `threshold` (positive: score > threshold)."""
    return [keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.Precision(thresholds=threshold, name="precision"),
            keras.metrics.Recall(thresholds=threshold, name="recall")]


def f_beta(precision: float, recall: float, beta: float) -> float:
    """(1 + β²)·P·R / (β²·P + R); 0 when either is 0 (nothing passes, or nothing right)."""
    if not precision > 0 or not recall > 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)


def selection_score(logs: dict, beta: float, prefix: str = "val_") -> Score | None:
    """(F-beta at the threshold, accuracy) from epoch logs; None without finite validation metrics."""
    try:
        values = [float(logs[prefix + k]) for k in ("precision", "recall", "accuracy")]
    except (KeyError, TypeError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    precision, recall, accuracy = values
    return f_beta(precision, recall, beta), accuracy


class FBetaLogs(keras.callbacks.Callback):
    """Adds `fbeta` and `val_fbeta` to each epoch's logs (before TensorBoard writes them)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            score = selection_score(logs, self.beta, prefix)
            if score is not None:
                logs[prefix + "fbeta"] = score[0]


def file_digest(path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_member(model: keras.Model, path: Path) -> None:
    """The member without optimizer state, written under a temporary name then renamed."""
    atomic_write(path, keras.Model(model.input, model.output, name=model.name).save)


def saved_score(path, beta: float, threshold: float,
                measure: Callable[[Path], dict] | None = None) -> Score | None:
    """The score of the member saved at `path` (None if there is none).

    Read from its JSON when that JSON was written for this very file (same SHA-256)
    with the same threshold and β; otherwise `measure(path)` gives the validation
    logs of the saved file (None: the file cannot be judged, its score is unknown).
    """
    path = Path(path)
    if not path.exists():
        return None
    info_path = path.with_suffix(".json")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = {}
    if (info.get("sha256") == file_digest(path) and info.get("threshold") == threshold
            and info.get("selection_beta") == beta and len(info.get("selection") or ()) == 2):
        return tuple(float(v) for v in info["selection"])
    if measure is None:
        return None
    score = selection_score(measure(path), beta)
    log.warning("%s: its JSON does not describe it (a kill between the two writes, or an older run); "
                "measured again on the validation set: F%g %s", path.name, beta,
                "unknown" if score is None else f"{score[0]:.4f}, accuracy {score[1]:.4f}")
    return score


class BestMember(keras.callbacks.Callback):
    """Keep the member of the best epoch by `selection_score`, over all stages and reruns, with its JSON.

    `best` is the score of the member already saved (see `saved_score`): an epoch
    replaces it only if strictly better.
    """

    def __init__(self, path: Path, info: dict, beta: float, best: Score | None = None,
                 write: bool = True):
        super().__init__()
        self.path, self.info, self.beta, self.write = Path(path), dict(info), beta, write
        self.best: Score = best if best is not None else NO_SCORE
        self.stage = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        score = selection_score(logs, self.beta)
        if score is None or not score > self.best:
            return
        if not all(math.isfinite(float(logs.get(k, 0.0))) for k in ("loss", "val_loss")):
            return  # diverged weights score NaN, which no threshold passes: never a member
        self.best = score
        if not self.write:
            return
        save_member(self.model, self.path)
        metrics = {k: float(v) for k, v in logs.items() if k.startswith("val_")}
        write_json(self.path.with_suffix(".json"),
                   {**self.info, **metrics, "stage": self.stage, "epoch": int(epoch) + 1,
                    "selection": list(score), "sha256": file_digest(self.path)})
        log.info("%s: validation F%g %.4f at %g, accuracy %.4f (stage %d, epoch %d) -> %s",
                 self.path.stem, self.beta, score[0], self.info.get("threshold", math.nan), score[1],
                 self.stage, epoch + 1, self.path.name)
