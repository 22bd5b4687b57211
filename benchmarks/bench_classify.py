"""Curation throughput, pass 1: the original's way vs classify.py's engine, float32 and mixed_bfloat16.

    python benchmarks/bench_classify.py [--size 300] [--members 3] [--rounds 3]

Three DenseNet201 members at 300 px with random weights (no download; the same
FLOPs as ImageNet's), all from one saved random base, as members fine-tuned from
ImageNet share its frozen trunk:
  original       one `model.predict(x[None])` per image per member (the original's loop)
  engine fp32    classify.py's Ensemble with its CPU defaults: the trunk up to pool4_pool
                 once per image, then the three conv5+head tails, one compiled function
                 per call of 32 images, fused BatchNorm (`for_inference`)
  stock BN       the same with Keras 3's own BatchNormalization (what fusing is worth)
  engine bf16    the same under mixed_bfloat16 (the scores stay float32)
  engine+files   the bf16 engine fed by classify.py's reader: JPEG files (640x480)
                 decoded and resized by tf.data in parallel, bad-file bookkeeping (the
                 reader's cost; on a CPU without bf16 units read it against fp32)
Variants run round-robin (A, B, C, …, A, B, C, …) so that all see the same machine
load; the best round of each is reported. The matmul peaks are measured in the same
run and FLOPs are counted by TensorFlow's profiler on each graph. Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from peaks import matmul_peak  # noqa: E402
from transfer_learning.ensemble import Ensemble, for_inference, split_member  # noqa: E402
from transfer_learning.member import build_member, save_base_init  # noqa: E402
from transfer_learning.reader import read_batches  # noqa: E402
from transfer_learning.sources import list_items  # noqa: E402


def gflops(model, shape) -> float:
    """GFLOP of one call of `model` on one input of `shape` (batch 1)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(shape), model.inputs[0].dtype)).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops / 1e9


def write_photos(folder: Path, count: int) -> None:
    """JPEG photos of a typical GLDv2 size (640x480), smooth enough to compress like photos."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(count):
        phase = rng.random(3) * 6.28
        image = np.stack([127 + 100 * np.sin(xx / (40 + 10 * c) + yy / 70 + phase[c]) for c in range(3)], -1)
        image += rng.normal(0, 8, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:04d}.jpg", quality=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--backbone", default="DenseNet201")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--original-images", type=int, default=12, help="per round")
    parser.add_argument("--engine-images", type=int, default=64, help="per round")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (classify.py --batch-size)")
    parser.add_argument("--micro-batch", type=int, default=32, help="images per model call (the CPU default)")
    parser.add_argument("--streams", type=int, default=1, help="parallel branches per call (the default)")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # predict() per image per member retraces: expected, not news

    with tempfile.TemporaryDirectory() as tmp:
        init = save_base_init(Path(tmp) / "base.weights.h5", args.backbone, args.size, seed=0)
        members = [build_member(args.backbone, args.size, str(init), seed=s, name=f"member_{s}")
                   for s in range(args.members)]
        engines = {}
        for precision, short in (("float32", "fp32"), ("mixed_bfloat16", "bf16")):
            for fuse, suffix in ((True, ""), (False, ", stock BN")):
                copies = [for_inference(m, precision, fuse_batchnorm=fuse) for m in members]
                engines[f"engine {short}{suffix}"] = Ensemble(
                    copies, micro_batch=args.micro_batch, streams=args.streams)
        assert all(e.shared for e in engines.values())
        rng = np.random.default_rng(0)
        images = rng.random((max(args.engine_images, args.original_images), args.size, args.size, 3),
                            np.float32)
        photos = Path(tmp) / "photos"
        photos.mkdir()
        write_photos(photos, args.engine_images)
        items = list_items([str(photos)])


        def original(n):
            for x in images[:n]:
                for m in members:
                    m.predict(x[None], verbose=0)

        def engine(ensemble):
            def run(n):
                for start in range(0, n, args.batch):
                    ensemble(images[start:min(start + args.batch, n)])
            return run

        def engine_files(n):
            for batch in read_batches(items[:n], args.size, "stretch", args.batch):
                engines["engine bf16"](batch.images)

        variants = {"original": (original, args.original_images)}
        variants.update({name: (engine(e), args.engine_images) for name, e in engines.items()})
        variants["engine+files bf16"] = (engine_files, args.engine_images)
        for fn, _ in variants.values():  # warm-up: tracing, first-call allocations
            fn(min(args.batch, 2) if fn is not original else 1)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        peaks = []  # measured in every round too: the best is the machine's
        for _ in range(args.rounds):
            for name, (fn, n) in variants.items():
                start = time.perf_counter()
                fn(n)
                rates[name].append(n / (time.perf_counter() - start))
                print(f"  {name}: {rates[name][-1]:.2f} images/s", flush=True)
            peaks.append((matmul_peak(tf.float32), matmul_peak(tf.bfloat16)))
        peak32, peak16 = max(p[0] for p in peaks), max(p[1] for p in peaks)

        check = images[:8]
        score32, score16 = engines["engine fp32"](check), engines["engine bf16"](check)
        one_by_one = np.concatenate([m.predict(check, verbose=0) for m in members], axis=1)
        trunk, tail = split_member(members[0])
        shape = (args.size, args.size, 3)
        member_gf = gflops(members[0], shape)
        trunk_gf = gflops(trunk, shape)
        tail_gf = gflops(tail, tuple(trunk.outputs[0].shape[1:]))

    best = {name: max(r) for name, r in rates.items()}
    work = {"original": member_gf * args.members}
    engine_gf = trunk_gf + tail_gf * args.members
    base = best["original"]
    print(f"\npass 1 of classify.py: {args.members} x {args.backbone} at {args.size} px, random weights, "
          f"batch {args.batch}, calls of {args.micro_batch} images in {args.streams} branches, "
          f"best of {args.rounds} rounds")
    print(f"{'variant':<24}{'images/s':>9}{'vs original':>13}{'GFLOP/image':>13}{'GFLOP/s':>9}{'of peak':>9}")
    rows = {}
    for name in variants:
        flops = work.get(name, engine_gf)
        achieved = best[name] * flops
        peak = peak16 if "bf16" in name else peak32
        rows[name] = dict(rate=best[name], ratio=best[name] / base, fraction=achieved / peak)
        print(f"{name:<24}{best[name]:>9.2f}{best[name] / base:>12.2f}x{flops:>13.2f}{achieved:>9.1f}"
              f"{achieved / peak:>8.0%}")
    print(f"one member {member_gf:.2f} GFLOP = trunk to pool4_pool {trunk_gf:.2f} ({trunk_gf / member_gf:.0%}) "
          f"+ conv5 and head {tail_gf:.2f}; matmul peak fp32 {peak32:.0f}, bf16 {peak16:.0f} GFLOP/s")
    diff32 = float(np.abs(score32 - one_by_one).max())
    diff16 = float(np.abs(score16 - score32).max())
    print(f"engine fp32 vs members one by one: max |score difference| {diff32:.2e}; "
          f"bf16 vs fp32: {diff16:.2e}")
    print(json.dumps({
        "backbone": args.backbone, "size": args.size, "members": args.members, "batch": args.batch,
        "micro_batch": args.micro_batch, "streams": args.streams, "rounds": args.rounds,
        "images_per_s": {k: round(v, 3) for k, v in best.items()},
        "speedup": {k: round(v["ratio"], 2) for k, v in rows.items()},
        "speedup_fp32": round(rows["engine fp32"]["ratio"], 2),
        "speedup_bf16": round(rows["engine bf16"]["ratio"], 2),
        "speedup_files_bf16": round(rows["engine+files bf16"]["ratio"], 2),
        "gflop_per_image_original": round(work["original"], 2), "gflop_per_image_engine": round(engine_gf, 2),
        "trunk_fraction_of_member_flops": round(trunk_gf / member_gf, 3),
        "peak_fp32_gflops": round(peak32, 1), "peak_bf16_gflops": round(peak16, 1),
        "fraction_of_peak": {k: round(v["fraction"], 3) for k, v in rows.items()},
        "max_abs_diff_engine_vs_members": diff32, "max_abs_diff_bf16_vs_fp32": diff16,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
