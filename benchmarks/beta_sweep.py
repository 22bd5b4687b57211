"""β-sweep: how β trades reconstruction for disentanglement on the synthetic façades.

    python benchmarks/beta_sweep.py [--betas 1,2,4,8,16] [--seeds 0] [--steps 1200] [--size 64] [--out runs/beta_sweep]

For each β (and each seed of --seeds), trains a small β-VAE with the project's own training (`vae.train.train`,
the "small" preset: 64-px façades, no perceptual loss) for the same number of steps
and seed (the seed draws the training façades, the initial weights, the noise
and the metrics' samples), then measures MIG, FactorVAE score and DCI disentanglement against the
true factors (`vae.metrics`) and the reconstruction error (sum of squared errors per
image and PSNR) on fresh renders. As in Higgins et al. 2017, larger β should give
more disentangled but blurrier codes.

Defaults take about half an hour on 2 CPU cores (≈ 6 min per β: 1 200 steps at ~0.2 s, then
the metrics).
A finished β (its run directory has results.json) is not retrained: re-running the
command after a crash continues where it stopped (and train() itself resumes).
Prints a table (with several seeds: the mean and the min–max range per β), writes
beta_sweep.png and beta_sweep.json in --out, and prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

log = logging.getLogger("beta_sweep")

COLUMNS = ("beta", "mig", "factor_vae_score", "dci_disentanglement", "recon_sse", "recon_psnr",
           "active_dims", "train_s", "metrics_s")


def sweep_config(beta: float, seed: int, args):
    """The run's config: the "small" preset at this β with the sweep's size, steps and seed."""
    from vae.config import PRESETS, VAEConfig

    every = max(1, min(100, args.steps))
    return VAEConfig(**PRESETS["small"]).replace(
        beta=beta, image_size=args.size, latent_dim=args.latent_dim, max_steps=args.steps,
        data_root=args.data_root, synthetic_count=args.synthetic_count, seed=seed,
        validate_every=every, monitor_every=max(every, args.steps // 5), checkpoint_every=every * 5,
        validation_steps=4, demo_count=16,
    ).validate()


def run_one(beta: float, seed: int, args) -> dict:
    """Train (or reuse) one (β, seed) and measure it."""
    from vae import evaluate, metrics, train, visualize

    run_dir = Path(args.out) / (f"beta-{beta:g}" if seed == 0 else f"beta-{beta:g}-seed-{seed}")
    done = run_dir / "results.json"
    if done.exists():
        log.info("β=%g: already measured, reading %s", beta, done)
        return {"seed": 0, **json.loads(done.read_text())}
    config = sweep_config(beta, seed, args)
    start = time.perf_counter()
    vae = train.train(config, run_dir, verbose=0 if args.quiet else 2)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    truth = metrics.synthetic_ground_truth(config.image_size)

    def represent(images):
        return visualize.encode_means(vae.encoder, images)[0]

    scores = metrics.all_metrics(truth, represent, seed, num_samples=args.samples, num_votes=args.votes)
    images = truth.observations(truth.sample_factors(256, np.random.default_rng(seed + 99)))
    recon = np.asarray(vae.decoder(represent(images), training=False))
    quality = evaluate.image_quality(images, recon)
    z_mean, z_log_var = visualize.encode_means(vae.encoder, images)
    kl = visualize.mean_kl_per_dimension(z_mean, z_log_var)
    result = {
        "beta": beta, "seed": seed, "mig": scores["mig"], "factor_vae_score": scores["factor_vae_score"],
        "dci_disentanglement": scores["dci_disentanglement"],
        "recon_sse": float(np.mean(np.sum((images - recon) ** 2, axis=(1, 2, 3)))),
        "recon_psnr": float(np.mean(quality["psnr"])),
        "active_dims": int(np.sum(kl > 0.01)),  # dimensions carrying > 0.01 nats on average
        "train_s": round(train_s, 1), "metrics_s": round(time.perf_counter() - start, 1),
        "steps": args.steps, "size": args.size, "latent_dim": args.latent_dim,
    }
    evaluate.write_metrics({k: v for k, v in result.items() if k != "beta"}, run_dir, args.steps)
    tmp = done.with_name("results.json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, done)
    return result


METRICS = ("mig", "factor_vae_score", "dci_disentanglement", "recon_sse", "recon_psnr", "active_dims",
           "train_s", "metrics_s")


def summarise(results: list[dict]) -> list[dict]:
    """Per β (in order of first appearance): the mean, min and max of each metric over its seeds."""
    betas = list(dict.fromkeys(r["beta"] for r in results))
    rows = []
    for beta in betas:
        runs = [r for r in results if r["beta"] == beta]
        row = {"beta": beta, "seeds": [r.get("seed", 0) for r in runs]}
        for key in METRICS:
            values = np.array([r[key] for r in runs], np.float64)
            row[key] = float(values.mean())
            row[key + "_min"], row[key + "_max"] = float(values.min()), float(values.max())
        rows.append(row)
    return rows


def table(results: list[dict]) -> str:
    """Markdown table per β; with several seeds each cell is "mean (min–max)"."""
    rows = summarise(results)
    several = any(len(r["seeds"]) > 1 for r in rows)
    formats = {"mig": ".3f", "factor_vae_score": ".3f", "dci_disentanglement": ".3f", "recon_sse": ".1f",
               "recon_psnr": ".2f", "active_dims": ".1f" if several else ".0f", "train_s": ".0f",
               "metrics_s": ".0f"}
    head = ["β", "seeds", "MIG", "FactorVAE", "DCI dis.", "recon SSE", "PSNR dB", "active", "train s",
            "metrics s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['beta']:g}", ",".join(map(str, r["seeds"]))]
        for key, fmt in formats.items():
            cell = format(r[key], fmt)
            if len(r["seeds"]) > 1 and key not in ("train_s", "metrics_s"):
                cell += f" ({format(r[key + '_min'], fmt)}–{format(r[key + '_max'], fmt)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> Path:
    """Disentanglement and reconstruction error against β (mean, with the seeds' range as bars)."""
    from matplotlib.figure import Figure

    from vae.monitor import save_png
    from vae.visualize import figure_to_array

    rows = summarise(results)
    betas = [r["beta"] for r in rows]

    def draw(ax, key, **style):
        spread = [[r[key] - r[key + "_min"] for r in rows], [r[key + "_max"] - r[key] for r in rows]]
        ax.errorbar(betas, [r[key] for r in rows], yerr=spread, fmt="o-", capsize=3, **style)

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    for key, label in [("mig", "MIG"), ("factor_vae_score", "FactorVAE score"),
                       ("dci_disentanglement", "DCI disentanglement")]:
        draw(ax, key, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("β")
    ax.set_ylim(0, 1)
    ax.set_title("disentanglement")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    draw(ax, "recon_sse", color="tab:red")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("β")
    ax.set_title("reconstruction error (SSE / image)")
    fig.tight_layout()
    return save_png(figure_to_array(fig), path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--betas", default="1,2,4,8,16", help="comma-separated β values")
    parser.add_argument("--steps", type=int, default=1200,
                        help="training steps per β (batch 32; ≈0.2 s each on 2 AVX-512 cores)")
    parser.add_argument("--size", type=int, default=64, help="image size (a multiple of 32)")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--synthetic-count", type=int, default=4000, help="synthetic training set size")
    parser.add_argument("--samples", type=int, default=2000, help="codes for MIG / DCI / variance estimate")
    parser.add_argument("--votes", type=int, default=300, help="FactorVAE training votes (64 images each)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, each a full run per β")
    parser.add_argument("--data-root", default="datasets")
    parser.add_argument("--out", default="runs/beta_sweep")
    parser.add_argument("--quiet", action="store_true", help="no per-round training logs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from data.pipeline import DataError
    from vae.config import ConfigError

    try:
        betas = [float(b) for b in args.betas.split(",") if b.strip()]
    except ValueError:
        print(f"error: --betas: expected comma-separated numbers, got {args.betas!r}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds: expected comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    if not betas or not seeds or args.steps < 1 or args.samples < 20 or args.votes < 1:
        print("error: need at least one β and seed, --steps >= 1, --samples >= 20 and --votes >= 1", file=sys.stderr)
        return 2
    try:
        results = [run_one(beta, seed, args) for beta in betas for seed in seeds]
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    plot_path = plot(results, out / "beta_sweep.png")
    summary = {"benchmark": "beta_sweep", "seeds": seeds, "steps": args.steps, "size": args.size,
               "latent_dim": args.latent_dim, "samples": args.samples, "votes": args.votes,
               "plot": str(plot_path), "results": results,
               "per_beta": summarise(results)}
    (out / "beta_sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
