"""Decode + resize throughput of the input pipeline: JPEG folder vs TFRecord shards.

    python benchmarks/bench_pipeline.py [--count 2000] [--source-size 256] [--size 128]

Writes synthetic façades as JPEGs at --source-size, packs them into TFRecords
pre-resized to --size (as `python -m data.pipeline to-tfrecords --size` does), then
times full passes over both (batches of 32 at --size), alternating the two sources so
that both see the same machine load. Prints a table, then one JSON line.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from data import pipeline, synthetic  # noqa: E402


def images_per_second(make_ds, count: int) -> float:
    ds = make_ds()
    start = time.perf_counter()
    seen = sum(len(batch) for batch in ds)
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return seen / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpeg"
        synthetic.write_facades(folder, args.count, size=args.source_size, seed=0, fmt="jpg")
        # The recommended use: shards pre-resized to the training size at packing time.
        pipeline.write_tfrecords(folder, Path(tmp) / "records", args.size,
                                 images_per_shard=500, image_format="jpeg")
        paths = pipeline.check_images(pipeline.find_images(folder)).good
        sources = {
            "jpeg folder": lambda: pipeline.dataset_from_paths(paths, args.size, batch_size=32),
            "tfrecords": lambda: pipeline.tfrecord_dataset(Path(tmp) / "records", args.size, batch_size=32),
        }
        for make in sources.values():  # warm-up: graph tracing, page cache
            images_per_second(make, args.count)
        rates = {name: [] for name in sources}
        for _ in range(args.repeats):
            for name, make in sources.items():
                rates[name].append(images_per_second(make, args.count))
    best = {name: max(r) for name, r in rates.items()}
    print(f"{'source':<14}{'img/s (best)':>14}{'img/s (median)':>16}")
    for name, r in rates.items():
        print(f"{name:<14}{best[name]:>14.0f}{sorted(r)[len(r) // 2]:>16.0f}")
    ratio = best["tfrecords"] / best["jpeg folder"]
    print(f"tfrecords / jpeg folder: {ratio:.2f}x  ({args.count} images; folder: {args.source_size}-px JPEGs "
          f"decoded and resized to {args.size} px; tfrecords: {args.size}-px JPEGs; {os.cpu_count()} CPUs)")
    print(json.dumps({
        "benchmark": "pipeline", "count": args.count, "source_size": args.source_size,
        "size": args.size, "cpus": os.cpu_count(),
        "jpeg_folder_img_per_s": round(best["jpeg folder"], 1),
        "tfrecords_img_per_s": round(best["tfrecords"], 1),
        "tfrecords_over_folder": round(ratio, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
