"""How well pass-1 members trained on weak labels tell buildings from landscapes, on a fake GLDv2.

    python benchmarks/weak_pass1.py [--count 960] [--members 3] [--backbone MobileNetV3Small]

The whole no-hand-label pass 1, through the real programs, on synthetic data:
  1. `data.synthetic.write_gldv2`: --count photos (--size px JPEGs) in --shards tar shards
     with GLDv2's metadata CSVs; photos of buildings show façades, of natural landmarks
     landscapes, except 10 % that show the other kind (weak labels describe the landmark),
     and a quarter of the façades are spoilt (blurred, dark, ...: still buildings);
  2. `python -m transfer_learning.weak_labels` on all shards but the last --held-out;
  3. `python transfer_learning/train.py`: --members members with random weights
     (`--weights none`), the original's 4 stages unless --stages says otherwise;
  4. `python transfer_learning/classify.py` (pass 1 only, `--mode none`) on the held-out
     shards, compared with what each photo really shows (truth.csv: a façade, spoilt or
     not, is a building).
Reports each member's own validation figures (train.py's split of the weak-label set,
against the weak labels) and, on the held-out shards against the truth, each member's and
the ensemble's (every member > --threshold, the curation's rule) accuracy, precision and
recall at the threshold. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data.synthetic import write_gldv2  # noqa: E402
from transfer_learning import classify, weak_labels  # noqa: E402
from transfer_learning import train as train_cli  # noqa: E402
from transfer_learning.manifest import read_manifest  # noqa: E402


def rates(predicted, actual) -> dict:
    """Accuracy, precision and recall of boolean predictions (precision NaN if nothing is predicted)."""
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp = int((predicted & actual).sum())
    return {"accuracy": float((predicted == actual).mean()),
            "precision": tp / predicted.sum() if predicted.sum() else math.nan,
            "recall": tp / actual.sum() if actual.sum() else math.nan,
            "positives": int(predicted.sum())}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="", help="work folder (default: a temporary one, removed)")
    parser.add_argument("--count", type=int, default=960, help="photos in the fake GLDv2")
    parser.add_argument("--size", type=int, default=64, help="photo side in pixels")
    parser.add_argument("--shards", type=int, default=4, help="tar shards")
    parser.add_argument("--held-out", type=int, default=1, help="last shards kept out of training")
    parser.add_argument("--members", type=int, default=3, help="pass-1 members")
    parser.add_argument("--backbone", default="MobileNetV3Small", help="keras.applications model")
    parser.add_argument("--image-size", type=int, default=64, help="members' input side")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3], help="train.py --stages")
    parser.add_argument("--epochs-per-stage", type=int, default=2, help="train.py --epochs-per-stage")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="train.py --learning-rate")
    parser.add_argument("--batch-size", type=int, default=32, help="train.py --batch-size")
    parser.add_argument("--threshold", type=float, default=0.9, help="the curation's threshold")
    parser.add_argument("--seed", type=int, default=0, help="fake GLDv2 and members")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        start, cpu = time.perf_counter(), cpu_seconds()
        gldv2 = write_gldv2(out, args.count, args.size, seed=args.seed, shards=args.shards)
        shards = [str(gldv2 / "train" / f"images_{s:03d}.tar") for s in range(args.shards)]
        train_shards, held_out = shards[:-args.held_out], shards[-args.held_out:]
        weak = out / "weak_pass1"
        if weak_labels.main([*train_shards, "--metadata", str(gldv2 / "metadata"), "--output", str(weak),
                             "--seed", str(args.seed), "--quiet"]):
            return 1
        run = out / "pass1"
        if train_cli.main(["--data", str(weak), "--run-dir", str(run), "--members", str(args.members),
                           "--backbone", args.backbone, "--weights", "none", "--image-size", str(args.image_size),
                           "--stages", *map(str, args.stages), "--epochs-per-stage", str(args.epochs_per_stage),
                           "--learning-rate", str(args.learning_rate), "--batch-size", str(args.batch_size),
                           "--threshold", str(args.threshold), "--seed", str(args.seed), "--quiet"]):
            return 1
        curated = out / "curated"
        if classify.main([*held_out, "--pass1", str(run), "--output", str(curated), "--mode", "none",
                          "--threshold", str(args.threshold), "--quiet"]):
            return 1
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu

        truth = pd.read_csv(gldv2 / "truth.csv", dtype={"id": str}).set_index("id")
        frame = read_manifest(curated / "manifest.csv")
        building = truth.loc[[Path(p).stem for p in frame["path"]], "building"].to_numpy().astype(bool)
        columns = [c for c in frame.columns if c.startswith("pass1_")]
        rows = []
        for i, column in enumerate(columns):
            info = json.loads((run / f"member_{i}.json").read_text())
            rows.append((f"member {i}: validation (weak labels)", {
                "accuracy_0.5": info["val_accuracy"], "accuracy": math.nan,
                "precision": info["val_precision"], "recall": info["val_recall"]}))
            scores = frame[column].to_numpy()
            held = rates(scores > args.threshold, building)
            rows.append((f"member {i}: held out (truth)",
                         {"accuracy_0.5": rates(scores > 0.5, building)["accuracy"], **held}))
        ensemble = rates(frame["status"] == "kept", building)
        rows.append((f"ensemble, all > {args.threshold:g}: held out (truth)", {"accuracy_0.5": math.nan, **ensemble}))
        per_class = len(pd.read_csv(weak / "manifest.csv")) // 2

    print(f"\n{args.members} x {args.backbone} at {args.image_size} px, random weights, stages "
          f"{' '.join(map(str, args.stages))} x {args.epochs_per_stage} epochs, lr {args.learning_rate:g}; "
          f"fake GLDv2 of {args.count} photos, {len(held_out)} of {args.shards} shards held out "
          f"({len(frame)} photos, {building.mean():.0%} buildings)")
    print(f"accuracy at 0.5 (train.py's) and, like precision and recall, at the threshold {args.threshold:g}")
    print(f"{'':<44}{'acc@0.5':>8}{'acc@thr':>8}{'precision':>10}{'recall':>8}{'kept':>6}")
    for name, r in rows:
        kept = f"{r['positives']:>6}" if "positives" in r else f"{'':>6}"
        print(f"{name:<44}{r['accuracy_0.5']:>8.3f}{r['accuracy']:>8.3f}{r['precision']:>10.3f}"
              f"{r['recall']:>8.3f}{kept}")
    print(f"always 'not a building' on the held-out photos: accuracy {1 - building.mean():.3f}; "
          f"{elapsed:.0f} s, {cpu:.0f} s CPU")
    print(json.dumps({"members": args.members, "backbone": args.backbone, "image_size": args.image_size,
                      "count": args.count, "weak_per_class": per_class, "held_out_photos": len(frame),
                      "rows": {name: {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 4))
                                      for k, v in r.items()}
                               for name, r in rows},
                      "seconds": round(elapsed, 1), "cpu_seconds": round(cpu, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
