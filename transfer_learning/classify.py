"""Curate photos: keep the images both ensembles accept, record every input in a manifest.

    python transfer_learning/classify.py PHOTOS --pass1 runs/pass1 --pass2 runs/pass2 --output curated
    python transfer_learning/classify.py gldv2/images_000.tar gldv2/images_001.tar --pass1 … --pass2 …
    python transfer_learning/classify.py list.txt --pass1 a.keras b.keras c.keras --mode none
    python transfer_learning/classify.py PHOTOS --pass1 … --num-shards 8 --shard-index 3   # machine 3 of 8
    python transfer_learning/classify.py merge --out all.csv curated/manifest-*.csv

Inputs: folders (recursive), .txt/.csv lists of paths, GLDv2 .tar shards (read in
place, never extracted) or a folder of them. Members: .keras/.h5 files, SavedModel
folders (the original project's published classifiers), or train.py run folders.

The original's rule by default: an image is kept only if every pass-1 member AND
every pass-2 member scores > 0.9; pass 2 runs only on pass-1 survivors (--rule
mean|majority, --threshold). Kept images are copied (default), moved, hard-linked
or not written into --output under unique names. The manifest (OUTPUT/manifest.csv)
has one row per input: path, status (kept | rejected_pass1 | rejected_pass2 | error),
output name, error reason and every member's score. Run the same command again
after a crash or kill: inputs already in the manifest are skipped, and the run ends
with the same manifest and outputs as one that was never interrupted. An input on
which the process itself dies (a decoder crash, the OOM killer) is retried alone
once, then recorded as an error (transfer_learning/inflight.py); a read failing with
an error that may pass (EIO, timeouts, network file systems) is tried again
(--read-retries) before it becomes an error row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

if __name__ == "__main__":  # as a script: quiet TensorFlow's C++ start-up logs, before it is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common.cli import documented_parser, log_to_stderr
from common.config import ConfigError
from common.files import remove_stale_temporaries, write_json
from common.malloc import keep_freed_memory
from data.pipeline import DataError
from transfer_learning import config as cfg
from transfer_learning.config import ClassifyConfig
from transfer_learning.manifest import (ERROR, KEPT, REJECTED_1, REJECTED_2, Manifest, ManifestError,
                                        merge_manifests, read_manifest, score_columns, summary)
from transfer_learning.member import MemberError

log = logging.getLogger(__name__)

# Settings a restart must keep: they decide which rows and files the run produces.
RESULT_SETTINGS = ("pass1", "pass2", "threshold", "rule", "mode", "output", "image_size", "crop", "precision",
                   "scaled_decode", "num_shards", "shard_index")
# What a setting added later was, in effect, for manifests written before it existed.
EARLIER = {"scaled_decode": False}


def accept(scores: np.ndarray, threshold: float, rule: str) -> np.ndarray:
    """(B,) bool: which rows of (B, members) scores pass. Original: all > threshold."""
    above = scores > threshold
    if rule == "all":
        return above.all(axis=1)
    if rule == "mean":
        return scores.mean(axis=1) > threshold
    if rule == "majority":
        return above.sum(axis=1) * 2 > scores.shape[1]
    raise ConfigError(f"--rule: unknown {rule!r}")


def decide(ensemble, images, first: list[int], second: list[int], threshold: float, rule: str):
    """Both passes on one batch: (pass-1 scores, pass-2 scores (NaN where not run), pass 1 ok, kept).

    Pass 2 runs on pass 1's survivors only, from the trunk features pass 1 computed.
    """
    import tensorflow as tf

    features, scores1 = ensemble.run(images, first)
    scores1 = scores1.numpy()
    passed = accept(scores1, threshold, rule)
    scores2 = np.full((len(scores1), len(second)), np.nan, np.float32)
    if second and passed.any():
        survivors = np.flatnonzero(passed)
        missing = set(ensemble.sources_for(second)) - set(features)  # e.g. members run whole
        scores2[survivors] = ensemble.scores(
            second, features=ensemble.select(features, survivors),
            images=tf.gather(images, survivors) if missing else None).numpy()
    kept = passed & accept(scores2, threshold, rule) if second else passed
    return scores1, scores2, passed, kept


def _row(key: str, status: str, output: str, scores1, scores2) -> dict:
    row = {"path": key, "status": status, "output": output, "reason": ""}
    row.update({f"pass1_{i}": float(v) for i, v in enumerate(scores1)})
    row.update({f"pass2_{i}": float(v) for i, v in enumerate(scores2) if np.isfinite(v)})
    return row


def manifest_path(config: ClassifyConfig) -> Path:
    if config.manifest:
        return Path(config.manifest)
    name = ("manifest.csv" if config.num_shards == 1 else
            f"manifest-{config.shard_index:05d}-of-{config.num_shards:05d}.csv")
    return Path(config.output) / name


def _check_settings(config: ClassifyConfig, members: dict, path: Path) -> None:
    """Refuse to continue a manifest written with other members, rule or outputs.

    The resolved config and the settings that decide the results are saved next to
    the manifest (MANIFEST.json).
    """
    settings = {k: config.to_dict()[k] for k in RESULT_SETTINGS} | members
    sidecar = path.with_suffix(".json")
    if sidecar.exists() and path.exists():
        previous = json.loads(sidecar.read_text()).get("settings", {})
        changed = sorted(k for k in settings if previous.get(k, EARLIER.get(k)) != settings[k])
        if changed:
            raise ManifestError(f"--manifest: {path} was written with other settings "
                                f"({', '.join(changed)}); use the same ones to resume, or a new --manifest")
    remove_stale_temporaries(sidecar)
    write_json(sidecar, {"settings": settings, "config": config.to_dict()})


def load_ensemble(config: ClassifyConfig):
    """(Ensemble, pass-1 member indices, pass-2 member indices, image size, crop, member paths)."""
    import tensorflow as tf

    from transfer_learning.ensemble import Ensemble, for_inference
    from transfer_learning.loading import load_member, member_files

    paths1 = [p for spec in config.pass1 for p in member_files(spec)]
    paths2 = [p for spec in config.pass2 for p in member_files(spec)]
    size = config.image_size or None
    members = [load_member(p, size) for p in paths1 + paths2]
    sizes = {m.image_size for m in members}
    if len(sizes) != 1 or None in sizes:
        raise MemberError(f"the members' input sizes differ or are open ({sorted(map(str, sizes))}); "
                          "all members must take the same --image-size")
    image_size = sizes.pop()
    if config.image_size and config.image_size != image_size:
        raise ConfigError(f"--image-size: {config.image_size}, but the members take {image_size} px")
    crops = {m.crop for m in members if m.crop}
    if len(crops) > 1 and not config.crop:
        raise ConfigError(f"--crop: the members were trained with different crops ({sorted(crops)}); choose one")
    crop = config.crop or (crops.pop() if crops else "stretch")
    for m in members:
        positive = m.info.get("positive_class")
        if positive:
            log.info("%s: scores P(%s)", m.path, positive)
    models = []
    for m in members:  # one original at a time gives way to its copy: peak memory ~N+1 members, not 2N
        models.append(for_inference(m.model, config.precision))
        m.model = None
    # Calls of 32 images on a CPU (measured fastest; figures in the README): the heads'
    # 192 000 x 512 weights are read once per call. A GPU takes whole batches.
    gpu = bool(tf.config.list_physical_devices("GPU"))
    micro = config.micro_batch or (0 if gpu else 32)
    names = [f"pass1_{i}" for i in range(len(paths1))] + [f"pass2_{i}" for i in range(len(paths2))]
    ensemble = Ensemble(models, share_trunk=config.share_trunk, jit_compile=config.jit_compile,
                        micro_batch=micro, streams=config.streams, names=names)
    first = list(range(len(paths1)))
    second = list(range(len(paths1), len(paths1) + len(paths2)))
    members = {"pass1_members": paths1, "pass2_members": paths2,
               "member_sha256": [file_digest(p) for p in paths1 + paths2]}
    return ensemble, first, second, image_size, crop, members


def file_digest(path) -> str:
    """SHA-256 of a member: a retrained member is another member.

    A file's digest is that of its bytes, as `sha256sum` and train.py's member_<i>.json
    give it; a SavedModel folder's covers each file's relative path and bytes.
    """
    digest = hashlib.sha256()
    path = Path(path)
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode("utf-8", "surrogateescape"))
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def classify(config: ClassifyConfig, *, progress: bool = True) -> dict:
    """Run (or resume) a curation; returns the summary (counts per status, images/s)."""
    import keras

    from transfer_learning import sources
    from transfer_learning.inflight import DIED, InFlight, marker_path
    from transfer_learning.outputs import OutputFolder
    from transfer_learning.reader import read_alone, read_batches

    # The output folder is never input, even inside an input folder (`classify.py .`).
    items = sources.select_shard(sources.list_items(config.input, exclude=[config.output]),
                                 config.num_shards, config.shard_index)
    path = manifest_path(config)
    if not items and not path.exists():
        raise DataError(f"{', '.join(config.input)}: no images to classify")
    ensemble, first, second, image_size, crop, member_paths = load_ensemble(config)
    _check_settings(config, member_paths, path)
    columns = ["path", "status", "output", "reason"] + score_columns(len(first), len(second))
    outputs = OutputFolder(config.output, config.mode, tag=f"s{config.shard_index}")
    marker = InFlight(marker_path(path))
    reading = dict(image_size=image_size, crop=crop, max_bytes=config.max_image_bytes,
                   max_pixels=config.max_image_pixels, scaled=config.scaled_decode, retries=config.read_retries)
    with Manifest(path, columns) as manifest:
        done = set(manifest.done["path"])
        outputs.finish_moves(manifest.done)
        outputs.remove_partials()
        todo = [item for item in items if item.key not in done]
        suspects, died = marker.left(done)
        log.info("%d inputs (%d already in %s), %d to classify at %d px (%s), batch %d, %s",
                 len(items), len(items) - len(todo), path, len(todo), image_size, crop,
                 config.batch_size, config.precision)
        manifest.append({"path": it.key, "status": ERROR, "output": "", "reason": it.error}
                        for it in todo if it.error)
        readable = [it for it in todo if not it.error]
        if died in {it.key for it in readable}:
            log.warning("%s: the process died on it twice; recorded as an error", died)
            manifest.append([{"path": died, "status": ERROR, "output": "", "reason": DIED}])
        suspected = set(suspects)
        alone = [it for it in readable if it.key in suspected]
        rest = [it for it in readable if it.key not in suspected and it.key != died]
        if alone:
            log.warning("%d inputs were in flight when an earlier run died: each is read alone first",
                        len(alone))
        bar = keras.utils.Progbar(len(alone) + len(rest), stateful_metrics=["img/s"],
                                  verbose=1 if progress else 0,
                                  interval=0.5 if sys.stdout.isatty() else 30.0, unit_name="image")
        start, count, recorded = time.perf_counter(), 0, 0

        def record(batch) -> int:
            """Score a batch, write its kept files, then its rows; the end of moves. Rows written."""
            rows = {position: {"path": item.key, "status": ERROR, "output": "", "reason": reason}
                    for position, item, reason in batch.errors}
            kept_items = []
            if batch.items:
                scores1, scores2, passed, kept = decide(ensemble, batch.images, first, second,
                                                        config.threshold, config.rule)
                for k, (position, item) in enumerate(zip(batch.positions, batch.items)):
                    status = KEPT if kept[k] else REJECTED_2 if passed[k] else REJECTED_1
                    output = outputs.write(item, batch.data[k]) if kept[k] else ""
                    rows[position] = _row(item.key, status, output, scores1[k], scores2[k])
                    if kept[k]:
                        kept_items.append(item)
                outputs.sync()  # the kept files are complete before their rows exist
            manifest.append(rows[p] for p in sorted(rows))
            for item in kept_items:  # a move ends only once the row is durable
                outputs.remove_source(item)
            bar.add(len(rows), values=[("img/s", (count + len(rows)) / max(time.perf_counter() - start, 1e-9))])
            return max(rows) + 1 if rows else 0

        def before_read(stop: int) -> None:  # from the pipeline's thread, once per batch
            marker.mark([it.key for it in rest[recorded:stop]])

        try:
            for k, item in enumerate(alone):
                marker.mark([it.key for it in alone[k:]], alone=item.key)
                record(read_alone(item, **reading))
                count += 1
            for batch in read_batches(rest, batch_size=config.batch_size, before_read=before_read, **reading):
                end = record(batch)
                count += len(batch.items) + len(batch.errors)
                recorded = max(recorded, end)
        except BaseException:
            marker.interrupted()
            raise
        marker.clear()
        elapsed = time.perf_counter() - start
    frame = read_manifest(path)
    counts = summary(frame)
    result = {**counts, "inputs": len(frame), "classified_now": count, "seconds": round(elapsed, 2),
              "images_per_second": round(count / elapsed, 2) if elapsed > 0 and count else 0.0,
              "manifest": str(path), "shared_trunk": ensemble.shared}
    log.info("summary: %d kept, %d rejected at pass 1, %d rejected at pass 2, %d errors (%d inputs); "
             "%d classified now in %.1f s (%.2f images/s) -> %s", counts[KEPT], counts[REJECTED_1],
             counts[REJECTED_2], counts[ERROR], len(frame), count, elapsed,
             result["images_per_second"], path)
    return result


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser("python transfer_learning/classify.py", __doc__)
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="folders, .txt/.csv lists, .tar shards (also --input)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    cfg.add_arguments(parser, ClassifyConfig)
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python transfer_learning/classify.py merge",
                                     description="merge the shards' manifests into one")
    parser.add_argument("manifests", nargs="+", help="the shards' manifest CSVs")
    parser.add_argument("--out", required=True, help="the merged manifest CSV")
    return parser


def merge_main(argv: Sequence[str]) -> int:
    args = build_merge_parser().parse_args(argv)
    try:
        merged = merge_manifests(args.manifests, args.out)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = summary(merged)
    log.info("merged %d manifests: %d inputs (%s) -> %s", len(args.manifests), len(merged),
             ", ".join(f"{v} {k}" for k, v in counts.items()), args.out)
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    log_to_stderr()
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # glibc: freed memory kept, not faulted back in per image (bench_malloc.py)
    # SIGTERM (a job stopped, a machine preempted) ends the run as an exception does: it
    # is no input's fault, so the in-flight marker must not blame one (transfer_learning.inflight).
    own = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread()
    if own:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        extra = tuple(args.inputs) + tuple(args.input or ())
        config = cfg.from_args(ClassifyConfig, args, input=extra or None)
        classify(config, progress=not args.quiet)
    except (ConfigError, DataError, MemberError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if own:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
