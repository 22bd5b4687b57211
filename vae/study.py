"""A disentanglement study that survives interruptions: (objective, hyperparameter, seed) runs.

    python -m vae.study run [--only ID ...] [--steps 30000] [--seeds 0,1,2]
    python -m vae.study remeasure      # every run's metrics again, from its saved code table
    python -m vae.study report
    python -m vae.study park           # unfinished runs' resume points into the results folder

Every run trains disentanglement_lib's 64-px network (Bernoulli likelihood, Adam 1e-4,
batch 64, 10 latents) on all 15 552 synthetic façade combinations (`--data
synthetic_grid`) with the project's own training (`vae.train.train`), then encodes
the whole factor grid once and measures MIG, FactorVAE score and DCI at
disentanglement_lib's sample counts from that table, and PSNR on the held-out
combinations. A finished run leaves in the results folder (committed):

    <id>.json       config, steps, wall time, every metric, PSNR, per-dimension labels
    <id>.npz        encoder means of all 15 552 combinations (float16, compressed):
                    any metric can be recomputed from this file alone
    <id>.png        a traversal of every latent dimension, each row labelled with the
                    factor it carries most information about

A run whose JSON exists is skipped; a killed run resumes from its run directory
(`vae.train` resumes at the last round). A run directory lives on one machine; to carry
an unfinished run to another (or past a machine that is wiped), stop the study and
`park`: each unfinished run's last round (its backup with the optimiser's state, its
config, history and TensorBoard logs; not the numbered checkpoints or the monitor
PNGs) goes into `unfinished/<id>.tar.gz` in the results folder, with `<id>.json`
naming its step. `run` then resumes a run from there when its run directory is
missing or behind, exactly as from its own directory, and deletes the parked files
when the run finishes. `report` regenerates the table, the plot and the README section
between the study markers from the results folder alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import gzip
import json
import logging
import os
import platform
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from common.cli import log_to_stderr
from common.files import atomic_write, write_json

log = logging.getLogger(__name__)

RESULTS = Path("results/study")
RUNS = Path("runs/study")
README_BEGIN, README_END = "<!-- study:begin -->", "<!-- study:end -->"
PARKED = "unfinished"  # the results folder's subfolder of parked runs


@dataclasses.dataclass(frozen=True)
class Spec:
    """One configuration of the study; `settings` are VAEConfig fields (library names)."""

    objective: str
    settings: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        return "-".join([self.objective] + [f"{k}={v:g}" for k, v in self.settings])

    def run_id(self, seed: int) -> str:
        return f"{self.name}-seed={seed}"


# The study's plan: a β = 1 baseline, two larger β, β-TCVAE and DIP-VAE-I, each with the
# hyperparameter disentanglement_lib's study found typical (β-TCVAE β 6; DIP-I λ_od 10).
PLAN = (
    Spec("beta_vae", (("beta", 1.0),)),
    Spec("beta_vae", (("beta", 8.0),)),
    Spec("beta_tc_vae", (("beta", 6.0),)),
    Spec("beta_vae", (("beta", 4.0),)),
    Spec("dip_vae_i", (("lambda_od", 10.0), ("lambda_d_factor", 10.0))),
)


def study_config(spec: Spec, seed: int, steps: int, data_root: str = "datasets", every: int = 1000):
    """The VAEConfig of one run: disentanglement_lib's network, likelihood and optimiser at 64 px.

    every: steps per round (validation and the resume point).
    """
    from vae.config import VAEConfig

    return VAEConfig(
        data="synthetic_grid", data_root=data_root, image_size=64, latent_dim=10,
        network="disentanglement_lib", likelihood="bernoulli", objective=spec.objective,
        gamma=0.0, batch_size=64, learning_rate=1e-4, decay_rate=1.0, max_steps=steps, seed=seed,
        validation_fraction=0.02, test_fraction=0.02, validate_every=every, validation_steps=4,
        log_every=max(1, every // 10), monitor_every=every * 5, checkpoint_every=every * 10,
        demo_count=16, **dict(spec.settings),
    ).validate()


def encode_grid(encoder, image_size: int, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(means, log-variances), each (15 552, D) float32, of every factor combination in grid order."""
    from data import facades

    grid = facades.render_grid(image_size)
    means, log_vars = [], []
    for start in range(0, len(grid), batch_size):
        z_mean, z_log_var = encoder(grid[start:start + batch_size].astype(np.float32) / 255.0, training=False)
        means.append(np.asarray(z_mean))
        log_vars.append(np.asarray(z_log_var))
    return np.concatenate(means), np.concatenate(log_vars)


def measure(codes: np.ndarray, seed: int, samples: int = 10_000, votes: int = 10_000,
            dci_method: str = "auto") -> dict:
    """Every metric from a grid code table (float16 as saved, so the file reproduces it exactly)."""
    from data import facades
    from vae import metrics

    codes = np.asarray(codes, np.float16).astype(np.float64)
    scores = metrics.grid_metrics(codes, facades.FACTOR_SIZES, seed, num_samples=samples,
                                  num_votes=votes, dci_method=dci_method)
    information = metrics.normalised_mutual_info(codes, facades.all_factors())
    scores["labels"] = [{"factor": f, "information": round(v, 4)}
                        for f, v in metrics.factor_labels(information, facades.FACTOR_NAMES)]
    scores["normalised_mutual_info"] = information.round(4).tolist()
    return scores


def _write_json(data: dict, path: Path) -> None:
    write_json(path, data, indent=1, sort_keys=False)


def remeasure(results_folder) -> list[str]:
    """Recompute every finished run's metrics from its code table with this code; the ids rewritten.

    The runs' training facts (steps, wall time, PSNR) stay; the metrics, labels and
    information matrix are replaced, so a correction to a metric reaches every run
    without retraining.
    """
    done = []
    for path in sorted(Path(results_folder).glob("*.json")):
        result = json.loads(path.read_text())
        codes = np.load(path.with_suffix(".npz"))["codes"]
        result.update(measure(codes, result["seed"], result["metric_samples"], result["metric_votes"]))
        _write_json(result, path)
        done.append(result["id"])
    return done


def traversal_picture(decoder, z: np.ndarray, labels: list[str], steps: int = 7) -> np.ndarray:
    """Every dimension swept from −2.5 to +2.5 around `z`, one labelled row each."""
    from common.images import labelled_grid
    from vae import visualize

    sweep = visualize.traversal(decoder, z, np.arange(len(z)), np.linspace(-2.5, 2.5, steps))
    return labelled_grid(sweep, labels, label_width=150)


@contextlib.contextmanager
def claim(lock_path: Path):
    """An exclusive lock on one run (several study processes share the plan); yields False if taken.

    flock: the kernel releases it when the holder dies, so a killed run is free again.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_one(spec: Spec, seed: int, args) -> dict | None:
    """Train (or resume) one run, measure it and write its files; a finished run is read back.

    None if another study process is running it.
    """
    results = Path(args.results)
    done = results / f"{spec.run_id(seed)}.json"
    if done.exists():
        log.info("%s: finished, skipped", spec.run_id(seed))
        return json.loads(done.read_text())
    with claim(Path(args.runs) / f"{spec.run_id(seed)}.lock") as mine:
        if not mine:
            log.info("%s: another process is running it, skipped", spec.run_id(seed))
            return None
        if done.exists():  # finished by another process while we waited for the lock
            return json.loads(done.read_text())
        unpark(spec.run_id(seed), results, Path(args.runs))
        return _train_and_measure(spec, seed, args)


# --------------------------------------------------------------------------- parking

class ParkedRunError(Exception):
    """A parked run's archive holds something `park` never writes."""


# What a parked run keeps of its directory: everything it resumes from. Not the numbered
# checkpoints, the monitor PNGs (TensorBoard's events hold the same pictures), the
# previous backup, temporaries or the lock.
def _parked_member(relative: Path) -> bool:
    name = relative.name
    return (relative.parts[0] not in ("checkpoints", "monitor") and not name.endswith((".bkp", ".lock"))
            and not name.startswith("tmp-"))


def run_step(run_dir: Path) -> int:
    """The global step a run directory resumes at (0: none); read from its files, no model."""
    metadata = run_dir / "backup" / "worker-0" / "training_metadata.json"
    weights = metadata.with_name("latest.weights.h5")
    if not (metadata.exists() and weights.exists() and (run_dir / "config.json").exists()):
        return 0
    rounds = json.loads(metadata.read_text())["epoch"]
    return int(rounds) * int(json.loads((run_dir / "config.json").read_text())["validate_every"])


def park(results, runs) -> tuple[list[str], list[str]]:
    """Pack every unfinished run's resume point into `results`/unfinished (to copy or commit).

    (parked ids, ids refused because a process is training them). A run is packed only
    if it is further on than its parked copy. The archive is byte-for-byte the same for
    the same files (sorted members, no times or owners), so parking twice changes nothing.
    """
    results, runs = Path(results), Path(runs)
    parked, busy = [], []
    for run_dir in sorted(p for p in runs.glob("*") if p.is_dir() and not p.name.startswith("tmp-")):
        run_id, step = run_dir.name, run_step(run_dir)
        if not step or (results / f"{run_id}.json").exists():
            continue
        with claim(runs / f"{run_id}.lock") as mine:
            if not mine:
                busy.append(run_id)
                continue
            if step <= parked_step(results, run_id):
                log.info("%s: already parked at step %d", run_id, step)
                continue
            files = sorted(p for p in run_dir.rglob("*")
                           if p.is_file() and _parked_member(p.relative_to(run_dir)))
            archive = results / PARKED / f"{run_id}.tar.gz"
            atomic_write(archive, lambda tmp: _write_archive(tmp, run_dir, files))
            write_json(archive.with_name(f"{run_id}.json"), {"id": run_id, "step": step})
            log.info("%s: parked at step %d (%.1f MB)", run_id, step, archive.stat().st_size / 1e6)
            parked.append(run_id)
    return parked, busy


def _write_archive(path: str, root: Path, files: list[Path]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            info = tarfile.TarInfo(file.relative_to(root).as_posix())
            info.size, info.mode = file.stat().st_size, 0o644
            with open(file, "rb") as handle:
                tar.addfile(info, handle)


def parked_step(results, run_id: str) -> int:
    sidecar = Path(results) / PARKED / f"{run_id}.json"
    return int(json.loads(sidecar.read_text())["step"]) if sidecar.exists() else 0


def unpark(run_id: str, results, runs) -> bool:
    """Restore a parked run into its run directory when the directory is missing or behind
    (call it holding the run's lock); whether it was restored."""
    results, run_dir = Path(results), Path(runs) / run_id
    step, local = parked_step(results, run_id), run_step(run_dir)
    if step <= local:
        return False
    staging = run_dir.with_name(f"tmp-{os.getpid()}-{run_id}")
    shutil.rmtree(staging, ignore_errors=True)
    archive = results / PARKED / f"{run_id}.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:  # what `park` writes: regular files at relative paths inside
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).is_absolute() or ".." in parts:
                raise ParkedRunError(f"{archive}: {member.name!r} is not a parked run's file")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(staging, members, **safe)
    if run_dir.exists():  # behind the parked copy: replaced only once the copy is unpacked
        log.warning("%s: its run directory is at step %d, the parked run at %d: replaced by the parked run",
                    run_id, local, step)
        shutil.rmtree(run_dir)
    os.replace(staging, run_dir)
    log.info("%s: resumed from its parked copy at step %d", run_id, step)
    return True


def drop_parked(results, run_id: str) -> None:
    for suffix in (".tar.gz", ".json"):
        (Path(results) / PARKED / f"{run_id}{suffix}").unlink(missing_ok=True)


def training_seconds(run_dir: Path) -> float:
    """Wall time a run trained, over every process that trained it (a run resumed after a
    kill has several): the union of each process's span from its first to its last
    TensorBoard event in logs/train."""
    import re

    import tensorflow as tf

    spans: dict[str, list[float]] = {}
    for path in sorted((run_dir / "logs" / "train").glob("events.out.tfevents.*")):
        process = re.match(r"events\.out\.tfevents\.\d+\.(.+)\.(\d+)\.\d+\.v2", path.name)
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            spans.setdefault(process.groups() if process else path.name, []).append(event.wall_time)
    total, end = 0.0, float("-inf")
    for first, last in sorted((min(t), max(t)) for t in spans.values()):
        total += max(0.0, last - max(first, end))
        end = max(end, last)
    return total


def _train_and_measure(spec: Spec, seed: int, args) -> dict:
    import keras

    from data import datasets
    from common.images import save_png
    from vae import evaluate, latents, train, visualize

    results = Path(args.results)
    run_id = spec.run_id(seed)
    done = results / f"{run_id}.json"
    config = study_config(spec, seed, args.steps, args.data_root, args.round)
    vae = train.train(config, Path(args.runs) / run_id, verbose=0 if args.quiet else 2)
    train_s = training_seconds(Path(args.runs) / run_id)

    start = time.perf_counter()
    means, log_vars = encode_grid(vae.encoder, config.image_size)
    codes = means.astype(np.float16)
    scores = measure(codes, seed, args.samples, args.votes)
    kl = latents.mean_kl_per_dimension(means, log_vars)
    test = datasets.synthetic_grid(config.image_size, config.validation_fraction, config.test_fraction).test
    images = test.astype(np.float32) / 255.0
    recon = np.asarray(vae.decoder(latents.encode_means(vae.encoder, images)[0], training=False))
    baseline = np.broadcast_to(images.mean(0, keepdims=True), images.shape)
    quality = evaluate.image_quality(images, recon)
    result = {
        "id": run_id, "objective": spec.objective, "settings": dict(spec.settings), "seed": seed,
        "steps": int(vae.global_step.numpy()), "batch_size": config.batch_size,
        "train_s": round(train_s, 1), "metrics_s": round(time.perf_counter() - start, 1),
        **{k: v for k, v in scores.items()},
        "test_psnr": float(np.mean(quality["psnr"])),
        "test_baseline_mean_image_psnr": float(np.mean(evaluate.image_quality(images, baseline)["psnr"])),
        "test_images": int(len(images)),
        "kl_per_dim": kl.round(4).tolist(), "active_dims": int(np.sum(kl > 0.01)),
        "metric_samples": args.samples, "metric_votes": args.votes,
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "config": config.to_dict(),
    }
    results.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(results / f"{run_id}.npz", codes=codes)
    labels = [visualize.dimension_label(d, kl[d], (lab["factor"], lab["information"]))
              for d, lab in enumerate(scores["labels"])]
    z = latents.encode_means(vae.encoder, images[:1])[0][0]
    save_png(traversal_picture(vae.decoder, z, labels), results / f"{run_id}.png")
    _write_json(result, done)  # last: its presence means the run is complete
    drop_parked(results, run_id)
    log.info("%s: MIG %.3f, FactorVAE %.3f, DCI %.3f, PSNR %.2f dB", run_id, result["mig"],
             result["factor_vae_score"], result["dci_disentanglement"], result["test_psnr"])
    keras.backend.clear_session()
    return result


# --------------------------------------------------------------------------- report

SCORES = (("mig", "MIG", ".3f"), ("factor_vae_score", "FactorVAE", ".3f"),
          ("dci_disentanglement", "DCI dis.", ".3f"), ("test_psnr", "PSNR dB", ".2f"),
          ("active_dims", "active", ".1f"))


def load_results(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def by_configuration(results: list[dict]) -> dict[str, list[dict]]:
    """The runs of each configuration (objective + settings), by its name."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(Spec(r["objective"], tuple(r["settings"].items())).name, []).append(r)
    return groups


def summarise(results: list[dict]) -> list[dict]:
    """Per configuration (objective + settings): seeds, mean, min and max of each score."""
    rows = []
    for name, runs in by_configuration(results).items():
        row = {"config": name, "objective": runs[0]["objective"], "settings": runs[0]["settings"],
               "seeds": sorted(r["seed"] for r in runs), "steps": min(r["steps"] for r in runs),
               "train_min": float(np.mean([r["train_s"] for r in runs]) / 60)}
        for key, _, _ in SCORES:
            values = np.array([r[key] for r in runs], np.float64)
            row[key], row[key + "_min"], row[key + "_max"] = values.mean(), values.min(), values.max()
        rows.append(row)
    return sorted(rows, key=lambda r: -r["mig"])


def table(rows: list[dict]) -> str:
    """Markdown: one row per configuration, each score "mean (min–max)" over its seeds."""
    head = ["configuration", "seeds", "steps"] + [title for _, title, _ in SCORES] + ["train min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["config"].replace("_", "\\_"), ",".join(map(str, r["seeds"])), f"{r['steps']:,}"]
        for key, _, fmt in SCORES:
            cell = format(r[key], fmt)
            if len(r["seeds"]) > 1:
                cell += f" ({format(r[key + '_min'], fmt)}–{format(r[key + '_max'], fmt)})"
            cells.append(cell)
        cells.append(f"{r['train_min']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def factor_table(results: list[dict], factor_names) -> str:
    """Markdown: per configuration and factor, "MIG · FactorVAE accuracy" (means over seeds).

    The FactorVAE accuracy of a factor is the share of its evaluation votes the
    majority-vote classifier gets right: a factor no dimension carries, or whose dimension
    another factor's votes claim, scores low here and caps the overall score.
    """
    groups = by_configuration(results)
    head = ["configuration"] + [n.replace("_", "\\_") for n in factor_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summarise(results):
        runs = groups[row["config"]]
        mig = np.mean([r["mig_per_factor"] for r in runs], axis=0)
        if all("factor_vae_per_factor" in r for r in runs):
            accuracy = [f"{a:.2f}" for a in np.mean([r["factor_vae_per_factor"] for r in runs], axis=0)]
        else:  # measured before per-factor accuracy existed: `remeasure` adds it
            accuracy = ["–"] * len(factor_names)
        cells = [f"{m:.2f} · {a}" for m, a in zip(mig, accuracy)]
        lines.append("| " + " | ".join([row["config"].replace("_", "\\_")] + cells) + " |")
    return "\n".join(lines)


TARGETS = {"mig": 0.30, "factor_vae_score": 0.80}  # the study's: its best configuration's means


def colour(config: str) -> str:
    """A configuration's colour in every plot: by its place in the plan, so reports stay comparable."""
    names = [spec.name for spec in PLAN]
    if config in names:
        return f"C{names.index(config) % 10}"
    return f"C{len(names) + sum(map(ord, config)) % max(1, 10 - len(names))}"  # one the plan leaves free


def plot(rows: list[dict], path: Path) -> Path:
    """MIG and FactorVAE score per configuration (mean, seeds' range as bars) against PSNR."""
    from matplotlib.figure import Figure

    from common.images import figure_to_array, save_png

    fig = Figure(figsize=(9, 3.6), dpi=100)
    for i, (key, title) in enumerate([("mig", "MIG"), ("factor_vae_score", "FactorVAE score")]):
        ax = fig.add_subplot(1, 2, i + 1)
        for r in rows:
            ax.errorbar([r["test_psnr"]], [r[key]], yerr=[[r[key] - r[key + "_min"]], [r[key + "_max"] - r[key]]],
                        xerr=[[r["test_psnr"] - r["test_psnr_min"]], [r["test_psnr_max"] - r["test_psnr"]]],
                        fmt="o", capsize=3, label=r["config"], color=colour(r["config"]))
        ax.axhline(TARGETS[key], color="grey", linestyle="--", linewidth=0.8)
        ax.text(ax.get_xlim()[1], TARGETS[key], "target ", color="grey", fontsize=7, ha="right", va="bottom")
        ax.set_xlabel("test PSNR (dB)")
        ax.set_title(title)
        ax.set_ylim(0, 1)
    fig.axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return save_png(figure_to_array(fig), path)


HPARAM_METRICS = ("mig", "factor_vae_score", "dci_disentanglement", "test_psnr", "active_dims")


def write_hparams(results: list[dict], logdir: Path) -> Path:
    """One TensorBoard run per study run for the HParams dashboard: its hyperparameters and scores."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    names = sorted({k for r in results for k in r["settings"]})
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(
            hparams=[hp.HParam("objective"), hp.HParam("seed")] + [hp.HParam(n) for n in names],
            metrics=[hp.Metric(f"study/{m}", display_name=m) for m in HPARAM_METRICS])
    for r in results:
        with tf.summary.create_file_writer(str(logdir / r["id"])).as_default():
            hp.hparams({"objective": r["objective"], "seed": r["seed"],
                        **{n: float(r["settings"].get(n, 0.0)) for n in names}}, trial_id=r["id"])
            for m in HPARAM_METRICS:
                tf.summary.scalar(f"study/{m}", float(r[m]), step=int(r["steps"]))
    return logdir


def report(results_folder, readme: Path | None, logdir: Path | None = None) -> dict:
    """Table, plot and JSON summary from the results folder; the README section rewritten;
    the runs in TensorBoard's HParams dashboard under `logdir`."""
    results = load_results(results_folder)
    if not results:
        raise FileNotFoundError(f"{results_folder}: no finished runs")
    from data import facades

    rows = summarise(results)
    text = (table(rows) + "\n\nPer factor, MIG · FactorVAE accuracy (the share of the factor's "
            "evaluation votes the majority-vote classifier gets right), means over seeds:\n\n"
            + factor_table(results, facades.FACTOR_NAMES))
    plot(rows, Path(results_folder) / "study.png")
    if logdir is not None:
        write_hparams(results, Path(logdir))
    if readme is not None and readme.exists():
        content = readme.read_text()
        if README_BEGIN in content and README_END in content:
            head, rest = content.split(README_BEGIN, 1)
            tail = rest.split(README_END, 1)[1]
            readme.write_text(f"{head}{README_BEGIN}\n{text}\n{README_END}{tail}")
    return {"runs": len(results), "table": text, "rows": rows}


# --------------------------------------------------------------------------- CLI

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m vae.study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and measure every run of the plan not yet in the results")
    run.add_argument("--steps", type=int, default=30_000, help="training steps per run (batch 64)")
    run.add_argument("--round", type=int, default=1000, help="steps per round: validation and resume point")
    run.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of every configuration")
    run.add_argument("--only", nargs="*", default=None, help="configuration names (see --list) to run")
    run.add_argument("--list", action="store_true", help="print the plan's run ids and exit")
    run.add_argument("--samples", type=int, default=10_000, help="codes for MIG, DCI, FactorVAE variances")
    run.add_argument("--votes", type=int, default=10_000, help="FactorVAE training votes (half for evaluation)")
    run.add_argument("--results", default=str(RESULTS), help="folder of finished runs (committed)")
    run.add_argument("--runs", default=str(RUNS), help="run directories (checkpoints, logs)")
    run.add_argument("--data-root", default="datasets", help="the runs' dataset folder (their config's data_root)")
    run.add_argument("--quiet", action="store_true", help="no per-round training logs")
    run.add_argument("--threads", type=int, default=0,
                     help="TensorFlow threads (0: all cores); on 2 cores, two study processes of "
                          "1 thread each train more steps per second than one of 2")
    again = sub.add_parser("remeasure", help="recompute every finished run's metrics from its code table")
    again.add_argument("--results", default=str(RESULTS), help="folder of finished runs")
    stow = sub.add_parser("park", help="unfinished runs' resume points into the results folder "
                                       "(stop the study first), to commit or carry to another machine")
    stow.add_argument("--results", default=str(RESULTS), help="folder of finished runs; parked runs go in its "
                      f"{PARKED}/")
    stow.add_argument("--runs", default=str(RUNS), help="run directories to park from")
    rep = sub.add_parser("report", help="table, plot and README section from the results folder")
    rep.add_argument("--results", default=str(RESULTS), help="folder of finished runs")
    rep.add_argument("--readme", default="README.md", help="README whose study section is rewritten ('' : none)")
    rep.add_argument("--logdir", default=str(RUNS / "hparams"),
                     help="TensorBoard folder for the HParams dashboard ('': none)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_to_stderr()
    if args.command == "remeasure":
        print("\n".join(remeasure(args.results)) or "no finished runs")
        return 0
    if args.command == "park":
        parked, busy = park(args.results, args.runs)
        print("\n".join(f"parked {run_id} at step {parked_step(args.results, run_id)}" for run_id in parked)
              or "nothing to park")
        for run_id in busy:
            print(f"error: {run_id} is being trained by another process; stop it (it keeps its last "
                  "round) and park again", file=sys.stderr)
        return 1 if busy else 0
    if args.command == "report":
        try:
            summary = report(args.results, Path(args.readme) if args.readme else None,
                             Path(args.logdir) if args.logdir else None)
        except FileNotFoundError as err:
            print(f"error: --results: {err}", file=sys.stderr)
            return 2
        print(summary["table"])
        print(json.dumps({"study": str(args.results), "runs": summary["runs"], "rows": summary["rows"]}))
        return 0
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds: expected comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    specs = [s for s in PLAN if args.only is None or s.name in args.only]
    if not seeds or not specs or args.steps < 1 or args.round < 1 or args.samples < 20 or args.votes < 1:
        print("error: need a seed, a configuration of the plan (--list), --steps >= 1, --samples >= 20 "
              "and --votes >= 1", file=sys.stderr)
        return 2
    # Seed-major: every configuration's first seed finishes before any second seed starts.
    order = [(spec, seed) for seed in seeds for spec in specs]
    if args.list:
        print("\n".join(spec.run_id(seed) for spec, seed in order))
        return 0
    from common.cli import exit_code
    from common.config import ConfigError

    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    return exit_code(lambda: [run_one(spec, seed, args) for spec, seed in order], usage=(ConfigError,),
                     failure=(ParkedRunError,))


if __name__ == "__main__":
    sys.exit(main())
