"""The machine's matmul peak, the yardstick every benchmark reports its GFLOP/s against.

Imported by the benchmark scripts beside it (run as `python benchmarks/<script>.py`).
"""

from __future__ import annotations

import time

import tensorflow as tf


def matmul_peak(dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of an n×n matmul (2n³ FLOPs) on this machine, in `dtype`.

    n = 2048 reached this CPU's nominal fp32 peak (2 cores × 32 FLOP/cycle at ~3 GHz);
    n = 4096 was never faster. Take the best of several calls spread over a run: on a
    shared machine one call can halve and inflate every "fraction of peak".
    """
    a = tf.cast(tf.random.normal((n, n)), dtype)
    fn = tf.function(lambda x: tf.matmul(x, x))
    fn(a).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn(a).numpy()
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
