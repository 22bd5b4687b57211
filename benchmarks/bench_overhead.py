"""What a β-VAE run costs outside its training steps: start-up, callbacks, validation, writes.

    python benchmarks/bench_overhead.py [--images 20000] [--steps 1000] [--data-root datasets]

On N synthetic 128-px JPEGs (rendered once into --data-root and reused) with the
original's cadence (validate every 100 steps, log every 10, checkpoint and monitor
every 1,000; batch 32) and a tiny network (two conv blocks, no VGG: a stand-in for a
step that a GPU makes fast, so that everything around the step shows), in one process:

  fresh      `vae.train.train` in a new run directory, --steps steps with every
             callback, validation and backup
  bare       after each round of `fresh`, as many steps of a second model of the same
             config on the same input pipeline (its compiled train function on a kept
             iterator): no callback, no validation, nothing written; interleaved, so
             that both see the same machine load
  start-up   the call to the first step of a new run (listing and checking the files,
             splits, model, data stream, the step-0 pictures) and of a resumed one
             (`train` again in `fresh`'s directory: weights, optimizer and data stream
             restored, file checks read from the run directory); each on all the images
             and on a list of every tenth, interleaved, best of --startup-rounds

The overhead ratio compares steps 101 to --steps of `fresh` (the bare steps' time taken
out) with the bare steps after rounds 2 to the last (the first round of each holds its
one-off graph tracing). Bytes written are the process's write() bytes (/proc/self/io
`wchar`) over those steps, per 1,000 steps. A start-up has a fixed part (model, graphs)
and a part per image (listing, checking, splitting): the slope of the line through the
two sizes gives the seconds per 100,000 images (the target), and its value at 100,000
the whole start-up there. Every in-memory file check is forgotten before each start-up,
as in a new process. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from data import pipeline, synthetic  # noqa: E402
from vae import train as training  # noqa: E402
from vae.config import VAEConfig  # noqa: E402
from vae.model import build_vae  # noqa: E402
from vae.splits import resolve_splits  # noqa: E402

TARGETS = {"overhead_ratio": 1.15, "startup_fresh_s_per_100k": 20.0, "startup_resume_s_per_100k": 5.0}


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


class FirstStep(Exception):
    """Raised at the first step when only the start-up is timed."""


class Clock(keras.callbacks.Callback):
    """Times the first step's start and steps `skip`+1 … end; write() bytes over the same window."""

    def __init__(self, skip: int, stop_at_first: bool = False):
        super().__init__()
        self.skip, self.stop_at_first, self.steps = skip, stop_at_first, 0
        self.first = self.window_start = self.end = None
        self.bytes_start = self.bytes_end = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()
            if self.stop_at_first:
                raise FirstStep
        if self.steps == self.skip:
            self.window_start, self.bytes_start = time.perf_counter(), written_bytes()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_train_end(self, logs=None):
        self.end, self.bytes_end = time.perf_counter(), written_bytes()

    @property
    def window(self) -> float:
        return self.end - self.window_start

    @property
    def window_steps(self) -> int:
        return self.steps - self.skip


def bench_config(data, steps: int) -> VAEConfig:
    return VAEConfig(
        data=str(data), image_size=128, latent_dim=16, encoder_filters=(8, 8), decoder_filters=(8, 8),
        dense_units=32, gamma=0.0, batch_size=32, max_steps=steps, validate_every=100, log_every=10,
        checkpoint_every=1000, monitor_every=1000, validation_fraction=0.05, test_fraction=0.05,
    ).validate()


def longer(config: VAEConfig, steps: int) -> VAEConfig:
    return VAEConfig(**{**config.to_dict(), "max_steps": config.max_steps + steps}).validate()


def timed_train(config: VAEConfig, run_dir: Path, skip: int = 0, startup_only: bool = False,
                extra=()) -> tuple[float, Clock]:
    """(start-up seconds, clock) of one `train` call, every in-memory file check forgotten first."""
    pipeline.forget_checks()
    clock = Clock(skip, stop_at_first=startup_only)
    start = time.perf_counter()
    try:
        training.train(config, run_dir, verbose=0, callbacks=[clock, *extra])
    except FirstStep:
        pass
    return clock.first - start, clock


class Interleaved(keras.callbacks.Callback):
    """After each round of the full run, as many bare steps of a second model of the same
    config on the same stream: its compiled train function called on a kept iterator, no
    callback, no validation, nothing written. Both are timed in the same minutes, so a
    noisy machine slows both alike. The first round's bare steps (tracing) are not counted.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        splits = resolve_splits(config)
        ds = pipeline.load_images(splits.train, config.image_size, batch_size=config.batch_size, shuffle=True,
                                  seed=config.seed, repeat=True, drop_remainder=True, crop=config.crop)
        self.vae, self.iterator, self.steps = build_vae(config), iter(ds), config.validate_every
        self.vae.make_train_function()
        self.times: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        for _ in range(self.steps):
            out = self.vae.train_function(self.iterator)
        keras.ops.convert_to_numpy(out["loss"])  # wait for the last step
        self.times.append(time.perf_counter() - start)

    @property
    def counted(self) -> float:
        return sum(self.times[1:])

    @property
    def counted_steps(self) -> int:
        return self.steps * (len(self.times) - 1)


def at(count: int, small: tuple[int, float], large: tuple[int, float]) -> float:
    """The start-up at `count` images on the line through (images, seconds) points."""
    (n0, t0), (n1, t1) = small, large
    return t0 + (t1 - t0) * (count - n0) / (n1 - n0)


def per_100k(small: tuple[int, float], large: tuple[int, float]) -> float:
    """Seconds per 100 000 images: the slope of the line through (images, seconds) points."""
    (n0, t0), (n1, t1) = small, large
    return (t1 - t0) / (n1 - n0) * 100_000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="synthetic 128-px JPEGs (rendered once)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the fresh and bare runs")
    parser.add_argument("--data-root", default="datasets", help="where the JPEGs are rendered and kept")
    parser.add_argument("--startup-rounds", type=int, default=3, help="interleaved start-up timings; the best counts")
    args = parser.parse_args(argv)

    folder = Path(args.data_root) / f"bench-overhead-128px-{args.images}"
    if not (folder / "factors.csv").exists():
        print(f"rendering {args.images} JPEGs into {folder} (once) ...", file=sys.stderr)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        synthetic.write_facades(partial, args.images, size=128, seed=0, fmt="jpg")
        os.replace(partial, folder)
    config = bench_config(folder, args.steps)
    skip = config.validate_every
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        bare = Interleaved(config)
        _, fresh = timed_train(config, run_dir, skip, extra=[bare])
        backup_bytes = sum(p.stat().st_size for p in (run_dir / "backup").rglob("*") if p.is_file())
        # The same on every tenth image: the fixed part of the start-up.
        every_tenth = pipeline.find_images(folder)[::10]
        (tmp / "tenth.txt").write_text("\n".join(every_tenth) + "\n")
        small = bench_config(tmp / "tenth.txt", config.validate_every)
        timed_train(small, tmp / "small")  # one round: a run to resume
        # Start-ups, interleaved, best of --startup-rounds: the first round also pays the
        # process's one-off costs (imports, first graph traces), which would otherwise
        # fall on whichever size happened to be timed first.
        times: dict[str, list[float]] = {"fresh": [], "fresh_small": [], "resume": [], "resume_small": []}
        for r in range(args.startup_rounds):
            times["fresh"].append(timed_train(config, tmp / f"fresh-{r}", startup_only=True)[0])
            times["fresh_small"].append(timed_train(small, tmp / f"fresh-small-{r}", startup_only=True)[0])
            times["resume"].append(timed_train(longer(config, skip), run_dir, startup_only=True)[0])
            times["resume_small"].append(timed_train(longer(small, skip), tmp / "small", startup_only=True)[0])
    fresh_startup, small_fresh, resume_startup, small_resume = (
        min(times[k]) for k in ("fresh", "fresh_small", "resume", "resume_small"))
    listed = (len(every_tenth), args.images)
    fresh_rate = per_100k((listed[0], small_fresh), (listed[1], fresh_startup))
    resume_rate = per_100k((listed[0], small_resume), (listed[1], resume_startup))
    fresh_100k = at(100_000, (listed[0], small_fresh), (listed[1], fresh_startup))
    resume_100k = at(100_000, (listed[0], small_resume), (listed[1], resume_startup))
    train_images = pipeline.count_images(resolve_splits(config).train)
    fresh_step = (fresh.window - bare.counted) / fresh.window_steps
    bare_step = bare.counted / bare.counted_steps
    ratio = fresh_step / bare_step
    written = (fresh.bytes_end - fresh.bytes_start) / fresh.window_steps * 1000
    figures = {
        "benchmark": "overhead", "images": args.images, "train_images": train_images, "steps": args.steps,
        "cpus": os.cpu_count(),
        "startup_fresh_s": {str(n): round(t, 2) for n, t in zip(listed, (small_fresh, fresh_startup))},
        "startup_resume_s": {str(n): round(t, 2) for n, t in zip(listed, (small_resume, resume_startup))},
        "startup_fresh_s_per_100k": round(fresh_rate, 2), "startup_resume_s_per_100k": round(resume_rate, 2),
        "startup_fresh_s_at_100k": round(fresh_100k, 2), "startup_resume_s_at_100k": round(resume_100k, 2),
        "startup_rounds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "step_ms_fresh": round(fresh_step * 1000, 2), "step_ms_bare": round(bare_step * 1000, 2),
        "overhead_ratio": round(ratio, 3),
        "bytes_written_per_1000_steps": int(written), "backup_bytes": backup_bytes,
    }
    figures["targets_met"] = {name: figures[name] <= limit for name, limit in TARGETS.items()}
    rows = [
        ("start-up, fresh", f"{small_fresh:.2f} s / {fresh_startup:.2f} s",
         f"{fresh_rate:.2f} s ({fresh_100k:.2f} s)", f"<= {TARGETS['startup_fresh_s_per_100k']:g} s"),
        ("start-up, resume", f"{small_resume:.2f} s / {resume_startup:.2f} s",
         f"{resume_rate:.2f} s ({resume_100k:.2f} s)", f"<= {TARGETS['startup_resume_s_per_100k']:g} s"),
        ("step, bare fit", f"{bare_step * 1000:.1f} ms", "", ""),
        ("step, full run", f"{fresh_step * 1000:.1f} ms", f"{ratio:.3f} x bare", f"<= {TARGETS['overhead_ratio']:g} x"),
        ("written", f"{written / 1e6:.2f} MB / 1000 steps", f"backup {backup_bytes / 1e6:.2f} MB", ""),
    ]
    print(f"{args.images} JPEGs of 128 px ({train_images} in the training split), {args.steps} steps, "
          f"batch {config.batch_size}, {os.cpu_count()} CPUs; start-up at {listed[0]} / {listed[1]} images "
          f"(best of {args.startup_rounds}), then per 100 000 images (the line's slope; its value at 100 000)")
    print(f"{'':<18}{'measured':>26}{'per 100k / ratio':>24}{'target':>12}")
    for name, measured, scaled, target in rows:
        print(f"{name:<18}{measured:>26}{scaled:>24}{target:>12}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
