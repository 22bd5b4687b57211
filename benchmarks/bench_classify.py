"""Curation throughput: the original's way vs classify.py's engine (pass 1, then both passes), and its reader.

    python benchmarks/bench_classify.py [--size 300] [--members 3] [--pass2-members 3] [--rounds 3]

Smallest settings (checks that it runs; the figures mean nothing):

    python benchmarks/bench_classify.py --backbone DenseNet121 --size 32 --members 2 --pass2-members 1 \
        --rounds 1 --reader-rounds 1 --original-images 1 --engine-images 2 --reader-images 4 --batch 2 --micro-batch 2

DenseNet201 members at 300 px with random weights (no download; the same FLOPs as
ImageNet's), all from one saved random base, as members fine-tuned from ImageNet share
its frozen trunk. Pass 1 (--members members):
  original       one `model.predict(x[None])` per image per member (the original's loop)
  engine fp32    classify.py's Ensemble with its CPU defaults: the trunk up to pool4_pool
                 once per image, then the three conv5+head tails, one compiled function
                 per call of 32 images, fused BatchNorm (`for_inference`)
  stock BN       the same with Keras 3's own BatchNormalization (what fusing is worth)
  engine bf16    the same under mixed_bfloat16 (the scores stay float32)
  engine+files   the bf16 engine fed by classify.py's reader: JPEG files (640x480)
                 decoded and resized by tf.data in parallel, bad-file bookkeeping (the
                 reader's cost; on a CPU without bf16 units read it against fp32)
Both passes (--members + --pass2-members members; every image passes pass 1, so pass 2
runs on all of them, the most work a batch can cost):
  original, 2 passes   one `predict` per image per member of both passes (6 by default)
  engine ..., 2 passes `classify.decide`: one trunk, the pass-1 tails, then the pass-2 tails
                       on pass 1's trunk features (no second trunk)
Reader, no model: --reader-images 800x600 JPEGs decoded and resized to --size (stretch):
  memory full/scaled   the encoded bytes already in memory, decoded as the reader decodes
                       (`decode_chunk`: each JPEG's header checked against the pixel limit in
                       the graph, which bytes from anywhere need, then `decode_and_resize`,
                       over a chunk of --batch images per call, several chunks at once), full
                       or DCT-scaled (`--scaled-decode`)
  files full/scaled    classify.py's reader (`read_batches`) over a folder of JPEG files:
                       what it adds to that decoding is reading the files, admitting them
                       (size, name) and its bookkeeping
  tar scaled           the same reader over one tar shard of the same JPEGs
  Each reader row is timed from its first batch to its last (the steady rate): building
  and filling the pipeline, once per classify.py run, is left out of all five alike.
  --reader-only runs these rows alone (no model is built).
Variants run round-robin (A, B, C, …, A, B, C, …) so that all see the same machine
load; the best round of each is reported. Here whole rounds run on about one core's
worth of CPU and others on two, so the reader's ratios are given three ways: best round
over best round, the median over rounds of each round's own ratio, and the ratio of CPU
time per image (this process's, all threads, median of rounds; what a saturated
machine's rate is inversely proportional to, whatever share of the cores a round had).
The matmul peaks are measured in the same run and FLOPs are counted by TensorFlow's
profiler on each graph. Also printed: the scores' largest change from scaled decoding
(engine fp32, 800x600 JPEGs) and the cost of one in-flight marker write (classify.py
writes one per batch), and the reader's Python time per file input: its admission
against a PIL header read (the graph checks JPEG and PNG headers). Prints the tables,
then one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from data.pipeline import jpeg_scale  # noqa: E402
from peaks import matmul_peak  # noqa: E402
from transfer_learning.classify import decide  # noqa: E402
from transfer_learning.ensemble import Ensemble, for_inference, split_member  # noqa: E402
from transfer_learning.inflight import InFlight  # noqa: E402
from transfer_learning.member import build_member, save_base_init  # noqa: E402
from transfer_learning.reader import MAX_BYTES, MAX_PIXELS, _admit, decode_chunk, read_batches  # noqa: E402
from transfer_learning.sources import ItemReader, list_items  # noqa: E402


def gflops(model, shape) -> float:
    """GFLOP of one call of `model` on one input of `shape` (batch 1)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(shape), model.inputs[0].dtype)).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops / 1e9


def paired(rates: dict[str, list[float]], name: str, base: str) -> float:
    """`name`'s best rate over `base`'s. Best of rounds, not a median of per-round ratios:
    this machine's interference comes in whole rounds that run at half speed or so, and
    the best round of each variant is the one that had the cores to itself."""
    return max(rates[name]) / max(rates[base])


def per_round(rates: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of `name`'s rate over `base`'s in the same round (run one
    after the other): a second estimate beside `paired`, robust to a slow round of either."""
    return float(np.median(np.array(rates[name]) / np.array(rates[base])))


READER_RATIOS = (("scaled_decode_speedup_memory", "memory, scaled decode", "memory, full decode"),
                 ("scaled_decode_speedup_files", "files, scaled decode", "files, full decode"),
                 ("files_vs_memory_full", "files, full decode", "memory, full decode"),
                 ("files_vs_memory_scaled", "files, scaled decode", "memory, scaled decode"),
                 ("tar_vs_memory_scaled", "tar shard, scaled decode", "memory, scaled decode"))


def cpu_ratio(cpu_ms: dict[str, list[float]], name: str, base: str) -> float:
    """`base`'s CPU time per image over `name`'s (medians of rounds): the rate ratio on cores
    kept busy, whatever share of them the machine gave each round."""
    return float(np.median(cpu_ms[base]) / np.median(cpu_ms[name]))


def print_reader_table(args, names, rates: dict[str, list[float]], cpu_ms: dict[str, list[float]],
                       python_us: dict[str, float]) -> None:
    scale = jpeg_scale(600, 800, args.size)
    print(f"\nreader, no model: 800x600 JPEGs to {args.size} px (scaled decode at 1/{scale}), batch {args.batch}, "
          f"steady rate (from the first batch), best of {args.reader_rounds} rounds")
    print(f"{'variant':<26}{'images/s':>9}{'vs memory, full':>17}{'vs memory, same decode':>24}")
    for name in names:
        same = "memory, scaled decode" if "scaled" in name else "memory, full decode"
        print(f"{name:<26}{max(rates[name]):>9.1f}{paired(rates, name, 'memory, full decode'):>16.2f}x"
              f"{paired(rates, name, same):>23.2f}x")
    print("CPU ms per image (this process, all threads; median of rounds): "
          + ", ".join(f"{name} {np.median(cpu_ms[name]):.2f}" for name in names))
    print("Python per file input, the generator's thread (holds the GIL): "
          + ", ".join(f"{name} {us:.1f} µs" for name, us in python_us.items()))
    print(f"\n{'ratio':<32}{'best / best':>12}{'median of rounds':>18}{'by CPU per image':>18}")
    for key, name, base in READER_RATIOS:
        print(f"{key:<32}{paired(rates, name, base):>11.2f}x{per_round(rates, name, base):>17.2f}x"
              f"{cpu_ratio(cpu_ms, name, base):>17.2f}x")


def reader_figures(rates: dict[str, list[float]], cpu_ms: dict[str, list[float]], size: int,
                   python_us: dict[str, float]) -> dict:
    figures = {key: round(paired(rates, name, base), 2) for key, name, base in READER_RATIOS}
    figures.update({f"{key}_median_of_rounds": round(per_round(rates, name, base), 2)
                    for key, name, base in READER_RATIOS})
    figures.update({f"{key}_by_cpu": round(cpu_ratio(cpu_ms, name, base), 2) for key, name, base in READER_RATIOS})
    figures["cpu_ms_per_image"] = {name: round(float(np.median(v)), 3) for name, v in cpu_ms.items()}
    figures["python_us_per_file"] = python_us
    return {**figures, "jpeg_scale": jpeg_scale(600, 800, size)}


def photo_jpeg(rng, width: int, height: int) -> bytes:
    """A JPEG smooth enough to compress like a photo (colour waves plus a little noise)."""
    yy, xx = np.mgrid[0:height, 0:width]
    phase = rng.random(3) * 6.28
    image = np.stack([127 + 100 * np.sin(xx / (40 + 10 * c) + yy / 70 + phase[c]) for c in range(3)], -1)
    image += rng.normal(0, 8, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_photos(folder: Path, count: int, width: int = 640, height: int = 480, unique: int = 256) -> list[bytes]:
    """`count` photo-like JPEGs of width x height in `folder` (GLDv2's are mostly 640-800 wide);
    past `unique` of them the encodings repeat (each is a file of its own all the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    distinct = [photo_jpeg(rng, width, height) for _ in range(min(count, unique))]
    encoded = [distinct[i % len(distinct)] for i in range(count)]
    for i, data in enumerate(encoded):
        (folder / f"photo_{i:04d}.jpg").write_bytes(data)
    return encoded


def write_tar(path: Path, encoded: list[bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, data in enumerate(encoded):
            info = tarfile.TarInfo(f"0/1/2/photo_{i:04d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def python_us_per_input(items, repeats: int = 7) -> dict[str, float]:
    """Microseconds of the reader's generator thread (it holds the GIL) per input file,
    medians of `repeats`: its admission (`_admit`: size, name, and a PIL header read only
    for formats the graph cannot check), and a PIL header read (what admitting a JPEG
    cost when Python checked every header)."""
    reader, times = ItemReader(), {"admission": [], "PIL header read": []}
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for item in items:
                _admit(item, reader, MAX_BYTES, MAX_PIXELS)
            middle = time.perf_counter()
            for item in items:
                with Image.open(item.path) as image:
                    image.size
            times["admission"].append((middle - start) / len(items) * 1e6)
            times["PIL header read"].append((time.perf_counter() - middle) / len(items) * 1e6)
    finally:
        reader.close()
    return {name: round(float(np.median(t)), 1) for name, t in times.items()}


def marker_write_ms(folder: Path, keys: int, repeats: int = 20) -> float:
    """Milliseconds of one in-flight marker write naming `keys` GLDv2-like keys."""
    marker = InFlight(folder / "manifest.inflight.json")
    names = [f"{folder}/images_{k % 500:03d}.tar/a/b/c/{k:016x}.jpg" for k in range(keys)]
    start = time.perf_counter()
    for _ in range(repeats):
        marker.mark(names)
    marker.clear()
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=300, help="the members' input size (px)")
    parser.add_argument("--members", type=int, default=3, help="pass-1 members")
    parser.add_argument("--pass2-members", type=int, default=3, help="pass-2 members (0: no both-passes rows)")
    parser.add_argument("--backbone", default="DenseNet201", help="a DenseNet (the trunk ends at pool4_pool)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant; the best counts")
    parser.add_argument("--original-images", type=int, default=12, help="per round, the original's variants")
    parser.add_argument("--engine-images", type=int, default=64, help="per round, the engine's variants")
    parser.add_argument("--reader-images", type=int, default=1024,
                        help="per round, the reader's variants (shorter rounds are noisier here)")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (classify.py --batch-size)")
    parser.add_argument("--micro-batch", type=int, default=32, help="images per model call (the CPU default)")
    parser.add_argument("--streams", type=int, default=1, help="parallel branches per call (the default)")
    parser.add_argument("--reader-rounds", type=int, default=15,
                        help="rounds of the reader's variants (cheap, and noisier than the models')")
    parser.add_argument("--reader-only", action="store_true", help="the reader rows alone, no model")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # predict() per image per member retraces: expected, not news
    first = list(range(args.members))
    second = list(range(args.members, args.members + args.pass2_members))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        init = None if args.reader_only else save_base_init(tmp / "base.weights.h5", args.backbone, args.size, seed=0)
        members = [build_member(args.backbone, args.size, str(init), seed=s, name=f"member_{s}")
                   for s in range(0 if args.reader_only else args.members + args.pass2_members)]
        copies = {(precision, fuse): [for_inference(m, precision, fuse_batchnorm=fuse)
                                      for m in (members if fuse else members[:args.members])]
                  for precision in ("float32", "mixed_bfloat16") for fuse in (True, False)}
        engines, both = {}, {}
        for (precision, fuse), models in (() if args.reader_only else copies.items()):
            short = "fp32" if precision == "float32" else "bf16"
            engines[f"engine {short}{'' if fuse else ', stock BN'}"] = Ensemble(
                models[:args.members], micro_batch=args.micro_batch, streams=args.streams)
            if fuse and second:
                both[f"engine {short}, 2 passes"] = Ensemble(
                    models, micro_batch=args.micro_batch, streams=args.streams)
        assert all(e.shared for e in [*engines.values(), *both.values()])
        if args.reader_only:
            second = []
        rng = np.random.default_rng(0)
        count = max(args.engine_images, args.original_images)
        images = rng.random((count, args.size, args.size, 3), np.float32)
        write_photos(tmp / "photos", args.engine_images)
        items = list_items([str(tmp / "photos")])
        big = write_photos(tmp / "big", args.reader_images, 800, 600)
        big_items = list_items([str(tmp / "big")])
        write_tar(tmp / "images_000.tar", big)
        tar_items = list_items([str(tmp / "images_000.tar")])

        def original(which):
            def run(n):
                for x in images[:n]:
                    for m in which:
                        m.predict(x[None], verbose=0)
            return run

        def engine(ensemble):
            def run(n):
                for start in range(0, n, args.batch):
                    ensemble(images[start:min(start + args.batch, n)])
            return run

        def two_passes(ensemble):
            def run(n):
                for start in range(0, n, args.batch):
                    _, _, passed, _ = decide(ensemble, images[start:min(start + args.batch, n)], first, second,
                                             -1.0, "all")  # every image passes pass 1
                    assert passed.all()
            return run

        def engine_files(n):
            for batch in read_batches(items[:n], args.size, "stretch", args.batch):
                engines["engine bf16"](batch.images)

        def steady(batches, sizes, n):
            """(images after the first batch, wall seconds and this process's CPU seconds
            (all its threads) from the first batch to the last)."""
            counted, start = 0, None
            for batch in batches:
                if start is None:
                    start, cpu, total = time.perf_counter(), time.process_time(), sizes(batch)
                    continue
                counted += sizes(batch)
                total += sizes(batch)
            assert total == n, (total, n)
            return counted, time.perf_counter() - start, time.process_time() - cpu

        def in_memory(scaled):
            def run(n):  # the reader's decoding (`decode_chunk`, a chunk per call), without its reading
                def decode(d):  # its header check too: bytes from anywhere may be a bomb
                    return decode_chunk(tf.fill(tf.shape(d), ""), d, args.size, "stretch", scaled,
                                        tf.zeros(tf.shape(d), tf.bool), MAX_PIXELS)[0]
                ds = (tf.data.Dataset.from_tensor_slices(big[:n]).batch(args.batch)
                      .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
                      .prefetch(2))
                return steady(ds, lambda b: int(b.shape[0]), n)
            return run

        def reader(chosen, scaled):
            def run(n):
                return steady(read_batches(chosen[:n], args.size, "stretch", args.batch, scaled=scaled),
                              lambda b: len(b.items), n)
            return run

        model_variants = {}
        if not args.reader_only:
            model_variants["original"] = (original(members[:args.members]), args.original_images)
            model_variants.update({name: (engine(e), args.engine_images) for name, e in engines.items()})
            model_variants["engine+files bf16"] = (engine_files, args.engine_images)
        if second:
            model_variants["original, 2 passes"] = (original(members), args.original_images)
            model_variants.update({name: (two_passes(e), args.engine_images) for name, e in both.items()})
        reader_variants = {"memory, full decode": (in_memory(False), args.reader_images),
                           "memory, scaled decode": (in_memory(True), args.reader_images),
                           "files, full decode": (reader(big_items, False), args.reader_images),
                           "files, scaled decode": (reader(big_items, True), args.reader_images),
                           "tar shard, scaled decode": (reader(tar_items, True), args.reader_images)}
        variants = {**model_variants, **reader_variants}
        for name, (fn, _) in variants.items():  # warm-up: tracing, first-call allocations
            fn(1 if name.startswith("original") else min(args.batch, 2))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        cpu_ms: dict[str, list[float]] = {name: [] for name in reader_variants}
        peaks = []  # measured in every round too: the best is the machine's
        for round_ in range(max(args.rounds, args.reader_rounds)):
            for name, (fn, n) in variants.items():
                if round_ >= (args.reader_rounds if name in reader_variants else args.rounds):
                    continue
                start = time.perf_counter()
                timed = fn(n)  # the reader rows time themselves: (images, seconds, CPU seconds)
                count, seconds = timed[:2] if timed else (n, time.perf_counter() - start)
                rates[name].append(count / seconds)
                if timed:
                    cpu_ms[name].append(1000 * timed[2] / count)
                print(f"  {name}: {rates[name][-1]:.2f} images/s", flush=True)
            if model_variants and round_ < args.rounds:
                peaks.append((matmul_peak(tf.float32), matmul_peak(tf.bfloat16)))
        best = {name: max(r) for name, r in rates.items()}
        python_us = python_us_per_input(big_items[:args.reader_images])
        if args.reader_only:
            print_reader_table(args, reader_variants, rates, cpu_ms, python_us)
            print(json.dumps({"size": args.size, "batch": args.batch, "rounds": args.reader_rounds,
                              "images_per_s": {k: round(v, 3) for k, v in best.items()},
                              **reader_figures(rates, cpu_ms, args.size, python_us)}))
            return 0
        peak32, peak16 = max(p[0] for p in peaks), max(p[1] for p in peaks)

        check = images[:8]
        score32, score16 = engines["engine fp32"](check), engines["engine bf16"](check)
        one_by_one = np.concatenate([m.predict(check, verbose=0) for m in members[:args.members]], axis=1)
        decoded = {scaled: np.concatenate([b.images.numpy() for b in read_batches(
            big_items[:8], args.size, "stretch", args.batch, scaled=scaled)]) for scaled in (False, True)}
        diff_scaled = float(np.abs(engines["engine fp32"](decoded[True])
                                   - engines["engine fp32"](decoded[False])).max())
        trunk, tail = split_member(members[0])
        shape = (args.size, args.size, 3)
        member_gf = gflops(members[0], shape)
        trunk_gf = gflops(trunk, shape)
        tail_gf = gflops(tail, tuple(trunk.outputs[0].shape[1:]))
        marker_ms = marker_write_ms(tmp, 3 * args.batch)

    total = args.members + args.pass2_members
    work = {"original": member_gf * args.members, "original, 2 passes": member_gf * total}
    engine_gf = trunk_gf + tail_gf * args.members
    both_gf = trunk_gf + tail_gf * total
    print(f"\nclassify.py: {args.backbone} members at {args.size} px, random weights, batch {args.batch}, "
          f"calls of {args.micro_batch} images in {args.streams} branches, best of {args.rounds} rounds")
    print(f"{'variant':<26}{'images/s':>9}{'vs original':>13}{'GFLOP/image':>13}{'GFLOP/s':>9}{'of peak':>9}")
    rows = {}
    for name in model_variants:
        flops = work.get(name, both_gf if "2 passes" in name else engine_gf)
        base = best["original, 2 passes" if "2 passes" in name else "original"]
        achieved = best[name] * flops
        peak = peak16 if "bf16" in name else peak32
        rows[name] = dict(rate=best[name], ratio=best[name] / base, fraction=achieved / peak)
        if name == "original, 2 passes":
            print(f"both passes ({args.members} + {args.pass2_members} members, every image passes pass 1):")
        print(f"{name:<26}{best[name]:>9.2f}{best[name] / base:>12.2f}x{flops:>13.2f}{achieved:>9.1f}"
              f"{achieved / peak:>8.0%}")
    print(f"one member {member_gf:.2f} GFLOP = trunk to pool4_pool {trunk_gf:.2f} ({trunk_gf / member_gf:.0%}) "
          f"+ conv5 and head {tail_gf:.2f}; matmul peak fp32 {peak32:.0f}, bf16 {peak16:.0f} GFLOP/s")
    print_reader_table(args, reader_variants, rates, cpu_ms, python_us)
    diff32 = float(np.abs(score32 - one_by_one).max())
    diff16 = float(np.abs(score16 - score32).max())
    print(f"engine fp32 vs members one by one: max |score difference| {diff32:.2e}; bf16 vs fp32: {diff16:.2e}; "
          f"scaled vs full decode (fp32, 800x600): {diff_scaled:.2e}")
    print(f"in-flight marker: {marker_ms:.2f} ms per write of {3 * args.batch} keys, one per batch "
          f"({marker_ms / args.batch:.3f} ms per image)")
    print(json.dumps({
        "backbone": args.backbone, "size": args.size, "members": args.members,
        "pass2_members": args.pass2_members, "batch": args.batch,
        "micro_batch": args.micro_batch, "streams": args.streams, "rounds": args.rounds, "reader_rounds": args.reader_rounds,
        "images_per_s": {k: round(v, 3) for k, v in best.items()},
        "speedup": {k: round(v["ratio"], 2) for k, v in rows.items()},
        "speedup_fp32": round(rows["engine fp32"]["ratio"], 2),
        "speedup_bf16": round(rows["engine bf16"]["ratio"], 2),
        "speedup_files_bf16": round(rows["engine+files bf16"]["ratio"], 2),
        "speedup_two_passes_bf16": round(rows["engine bf16, 2 passes"]["ratio"], 2) if second else None,
        **reader_figures(rates, cpu_ms, args.size, python_us),
        "gflop_per_image_original": round(work["original"], 2), "gflop_per_image_engine": round(engine_gf, 2),
        "gflop_per_image_original_two_passes": round(work["original, 2 passes"], 2),
        "gflop_per_image_engine_two_passes": round(both_gf, 2),
        "trunk_fraction_of_member_flops": round(trunk_gf / member_gf, 3),
        "peak_fp32_gflops": round(peak32, 1), "peak_bf16_gflops": round(peak16, 1),
        "fraction_of_peak": {k: round(v["fraction"], 3) for k, v in rows.items()},
        "max_abs_diff_engine_vs_members": diff32, "max_abs_diff_bf16_vs_fp32": diff16,
        "max_abs_diff_scaled_vs_full_decode": diff_scaled, "marker_write_ms": round(marker_ms, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
