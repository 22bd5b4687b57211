"""The study's metrics from a grid code table, against encoding the images they query.

    python benchmarks/bench_metrics.py [--codes results/study/<run>.npz] [--rounds 3]

A finished study run keeps its encoder means of the whole factor grid (15 552
combinations), and `vae.study.measure` answers every metric's queries from that table
at disentanglement_lib's sample counts. This times each metric on a saved table, then,
in the same run, disentanglement_lib's 64-px encoder (random weights: its speed does
not depend on them) on the façades, to price the images each metric would otherwise
encode and the one pass over the grid the table costs. Medians over rounds. Prints the
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SAMPLES, VOTES, BATCH = 10_000, 10_000, 64  # disentanglement_lib's counts, as the study uses them


def metric_timings(codes: np.ndarray, seed: int, methods: list[str]) -> dict[str, float]:
    """Seconds of each metric on one grid code table (float16 as saved)."""
    from data import facades
    from vae import metrics

    table = metrics.table_representation(np.asarray(codes, np.float16).astype(np.float64), facades.FACTOR_SIZES)
    truth = metrics.grid_ground_truth(facades.FACTOR_SIZES)
    runs = {
        "MIG": lambda: metrics.mig(truth, table, np.random.default_rng(seed), num_train=SAMPLES),
        "FactorVAE score": lambda: metrics.factor_vae_score(
            truth, table, np.random.default_rng(seed), num_train=VOTES, num_eval=VOTES // 2,
            num_variance_estimate=SAMPLES),
        **{f"DCI ({method})": lambda method=method: metrics.dci(
            truth, table, np.random.default_rng(seed), num_train=SAMPLES, num_test=SAMPLES // 2, method=method)
           for method in methods},
        "labels (grid MI)": lambda: metrics.normalised_mutual_info(
            np.asarray(codes, np.float64), facades.all_factors()),
    }
    seconds = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - start
    return seconds


def images_queried(methods: list[str]) -> dict[str, int]:
    """How many images each metric encodes when it is not answered from the table."""
    return {"MIG": SAMPLES,
            "FactorVAE score": SAMPLES + (VOTES + VOTES // 2) * BATCH,  # variance estimate, then votes
            **{f"DCI ({method})": SAMPLES + SAMPLES // 2 for method in methods},
            "labels (grid MI)": 15_552}


def encoder_rate(images: np.ndarray, batch: int = 512) -> float:
    """Images per second through disentanglement_lib's encoder (inference, float32)."""
    from vae import study
    from vae.model import build_vae

    encoder = build_vae(study.study_config(study.PLAN[0], 0, 1)).encoder
    encoder(images[:batch].astype(np.float32) / 255.0, training=False)  # build and warm up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        np.asarray(encoder(images[i:i + batch].astype(np.float32) / 255.0, training=False)[0])
    return len(images) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", default="results/study/beta_tc_vae-beta=6-seed=0.npz",
                        help="a study run's grid code table")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4096, help="façades encoded per round for the rate")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.images < 512:
        parser.error("--rounds must be >= 1 and --images >= 512")
    path = Path(args.codes)
    if not path.is_file():
        parser.error(f"--codes: no such file: {path}")

    from data import facades
    from vae import metrics

    codes = np.load(path)["codes"]
    methods = ["gbt", "ridge"] if metrics.dci_method("auto") == "gbt" else ["ridge"]
    grid = facades.render_grid(64)
    rng = np.random.default_rng(0)
    timings, rates = [], []
    for round_ in range(args.rounds):
        timings.append(metric_timings(codes, round_, methods))
        rates.append(encoder_rate(grid[rng.choice(len(grid), args.images, replace=False)]))
        print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings[-1].items())
              + f"; encoder {rates[-1]:.0f} images/s", flush=True)

    rate = float(np.median(rates))
    queried = images_queried(methods)
    print(f"\n{path.name}: medians of {args.rounds} rounds; encoder {rate:.0f} images/s (64 px, batch 512)")
    # Either way the metric's own computation is the same; encoding the queried images is
    # what the table saves.
    print(f"{'metric':<20}{'images queried':>16}{'from table s':>14}{'encoding them too s':>21}{'ratio':>9}")
    figures = {"codes": path.name, "rounds": args.rounds, "encoder_images_per_s": round(rate, 1), "metrics": {}}
    for name in timings[0]:
        table_s = float(np.median([t[name] for t in timings]))
        encoding_s = table_s + queried[name] / rate
        print(f"{name:<20}{queried[name]:>16,}{table_s:>14.2f}{encoding_s:>21.1f}{encoding_s / table_s:>8.1f}x")
        figures["metrics"][name] = {"images": queried[name], "table_s": round(table_s, 3),
                                    "with_encoding_s": round(encoding_s, 1), "ratio": round(encoding_s / table_s, 1)}
    study_rows = [name for name in timings[0] if name != "DCI (ridge)" or methods == ["ridge"]]
    table_s = sum(figures["metrics"][name]["table_s"] for name in study_rows)
    encoding_s = sum(figures["metrics"][name]["with_encoding_s"] for name in study_rows)
    grid_s = len(grid) / rate
    print(f"\nthe study's metrics ({', '.join(study_rows)}):")
    print(f"  one pass over the grid ({len(grid):,} images) {grid_s:.1f} s + from the table {table_s:.1f} s, "
          f"against {encoding_s:.1f} s encoding every query: {encoding_s / (grid_s + table_s):.1f}x")
    figures.update({"study_table_s": round(table_s, 2), "grid_pass_s": round(grid_s, 2),
                    "study_with_encoding_s": round(encoding_s, 1),
                    "study_speedup": round(encoding_s / (grid_s + table_s), 1)})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
