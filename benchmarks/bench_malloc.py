"""The reader with glibc's default allocator settings against `common.malloc.keep_freed_memory`.

    python benchmarks/bench_malloc.py [--rounds 4] [--images 1024] [--size 300]

Allocator settings hold for a whole process, so each round runs two child processes,
one per setting, in alternating order. Each child times, from its first batch to its
last, the two scaled-decode rows of `bench_classify.py --reader-only`: 800x600 JPEGs
decoded from memory (`decode_chunk`, header check included) and classify.py's reader
(`read_batches`) over the same JPEGs as files. It reports CPU time per image (all
threads), split into user and system time. Prints the table (medians over rounds),
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SETTINGS = ("default", "keep_freed_memory")
ROWS = ("memory, scaled decode", "files, scaled decode")


def child(folder: Path, setting: str, images: int, size: int, batch: int) -> dict:
    """CPU ms per image (total, user, system) of each row, in this process."""
    if setting == "keep_freed_memory":
        from common.malloc import keep_freed_memory
        assert keep_freed_memory(), "glibc did not take the settings"
    import tensorflow as tf

    from transfer_learning.reader import MAX_PIXELS, decode_chunk, read_batches
    from transfer_learning.sources import list_items

    items = list_items([str(folder)])[:images]
    encoded = [Path(item.path).read_bytes() for item in items]

    def memory():
        def decode(d):
            return decode_chunk(tf.fill(tf.shape(d), ""), d, size, "stretch", True,
                                tf.zeros(tf.shape(d), tf.bool), MAX_PIXELS)[0]
        ds = tf.data.Dataset.from_tensor_slices(encoded).batch(batch).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
        return ((int(b.shape[0]) for b in ds))

    def files():
        return (len(b.items) for b in read_batches(items, size, "stretch", batch, scaled=True))

    out = {}
    for name, run in zip(ROWS, (memory, files)):
        for attempt in range(2):  # the first builds and traces: not timed
            sizes = run()
            next(sizes)
            start = os.times()
            counted = sum(sizes)
            end = os.times()
        user, system = (end.user - start.user) / counted * 1e3, (end.system - start.system) / counted * 1e3
        out[name] = {"cpu": user + system, "user": user, "system": system}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="child processes per setting")
    parser.add_argument("--images", type=int, default=1024, help="800x600 JPEGs per row")
    parser.add_argument("--size", type=int, default=300, help="output size (px)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.images, args.size, args.batch)))
        return 0

    from bench_classify import write_photos  # beside this script

    results = {setting: [] for setting in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        write_photos(Path(tmp), args.images, 800, 600)
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        for round_ in range(args.rounds):
            for setting in (SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]):
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, __file__, "--images", str(args.images), "--size", str(args.size),
                     "--batch", str(args.batch), "--child", tmp, setting],
                    env=env, capture_output=True, text=True, check=True)
                results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  round {round_ + 1} {setting}: "
                      + ", ".join(f"{row} {results[setting][-1][row]['cpu']:.2f} ms" for row in ROWS)
                      + f" ({time.perf_counter() - start:.0f} s)", flush=True)

    def ratio_of(a: float, b: float) -> float:
        return a / b if b else float("nan")  # tiny runs can finish inside the clock's tick

    def median(setting, row, key):
        return float(np.median([r[row][key] for r in results[setting]]))

    print(f"\nCPU ms per image (all threads; median of {args.rounds} child processes per setting), "
          f"800x600 JPEGs to {args.size} px, scaled decode, batch {args.batch}")
    print(f"{'setting':<20}{'row':<24}{'CPU':>8}{'user':>8}{'system':>8}")
    figures = {"images": args.images, "size": args.size, "rounds": args.rounds, "cpu_ms_per_image": {}}
    for setting in SETTINGS:
        for row in ROWS:
            cpu, user, system = (median(setting, row, key) for key in ("cpu", "user", "system"))
            print(f"{setting:<20}{row:<24}{cpu:>8.2f}{user:>8.2f}{system:>8.2f}")
            figures["cpu_ms_per_image"][f"{setting}, {row}"] = {
                "cpu": round(cpu, 3), "user": round(user, 3), "system": round(system, 3)}
    print()
    for row in ROWS:
        ratio = ratio_of(median("default", row, "cpu"), median("keep_freed_memory", row, "cpu"))
        figures[f"speedup, {row}"] = round(ratio, 2)
        print(f"keep_freed_memory / default, {row}: {ratio:.2f}x (by CPU per image)")
    for setting in SETTINGS:
        ratio = ratio_of(median(setting, ROWS[0], "cpu"), median(setting, ROWS[1], "cpu"))
        figures[f"files / memory, {setting}"] = round(ratio, 2)
        print(f"files / memory, {setting}: {ratio:.2f} (by CPU per image)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
