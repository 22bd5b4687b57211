"""β-sweep: how β trades reconstruction for disentanglement on the synthetic façades.

    python benchmarks/beta_sweep.py [--betas 1,2,4,8,16] [--steps 1200] [--size 64] [--out runs/beta_sweep]

For each β, trains a small β-VAE with the project's own training (`vae.train.train`,
the "small" preset: 64-px façades, no perceptual loss) for the same number of steps
and seed, then measures MIG, FactorVAE score and DCI disentanglement against the
true factors (`vae.metrics`) and the reconstruction error (sum of squared errors per
image and PSNR) on fresh renders. As in Higgins et al. 2017, larger β should give
more disentangled but blurrier codes.

Defaults take about half an hour on 2 CPU cores (≈ 6 min per β: 1 200 steps at ~0.2 s, then
the metrics).
A finished β (its run directory has results.json) is not retrained: re-running the
command after a crash continues where it stopped (and train() itself resumes).
Prints a table, writes beta_sweep.png and beta_sweep.json in --out, and prints one
JSON object as its last line.
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


def sweep_config(beta: float, args):
    """The run's config: the "small" preset at this β with the sweep's size, steps and seed."""
    from vae.config import PRESETS, VAEConfig

    every = max(1, min(100, args.steps))
    return VAEConfig(**PRESETS["small"]).replace(
        beta=beta, image_size=args.size, latent_dim=args.latent_dim, max_steps=args.steps,
        data_root=args.data_root, synthetic_count=args.synthetic_count, seed=args.seed,
        validate_every=every, monitor_every=max(every, args.steps // 5), checkpoint_every=every * 5,
        validation_steps=4, demo_count=16,
    ).validate()


def run_one(beta: float, args) -> dict:
    """Train (or reuse) one β and measure it."""
    from vae import evaluate, metrics, train, visualize

    run_dir = Path(args.out) / f"beta-{beta:g}"
    done = run_dir / "results.json"
    if done.exists():
        log.info("β=%g: already measured, reading %s", beta, done)
        return json.loads(done.read_text())
    config = sweep_config(beta, args)
    start = time.perf_counter()
    vae = train.train(config, run_dir, verbose=0 if args.quiet else 2)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    truth = metrics.synthetic_ground_truth(config.image_size)

    def represent(images):
        return visualize.encode_means(vae.encoder, images)[0]

    scores = metrics.all_metrics(truth, represent, args.seed, num_samples=args.samples, num_votes=args.votes)
    images = truth.observations(truth.sample_factors(256, np.random.default_rng(args.seed + 99)))
    recon = np.asarray(vae.decoder(represent(images), training=False))
    quality = evaluate.image_quality(images, recon)
    z_mean, z_log_var = visualize.encode_means(vae.encoder, images)
    kl = visualize.mean_kl_per_dimension(z_mean, z_log_var)
    result = {
        "beta": beta, "mig": scores["mig"], "factor_vae_score": scores["factor_vae_score"],
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


def table(results: list[dict]) -> str:
    head = ["β", "MIG", "FactorVAE", "DCI dis.", "recon SSE", "PSNR dB", "active", "train s", "metrics s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append(f"| {r['beta']:g} | {r['mig']:.3f} | {r['factor_vae_score']:.3f} | "
                     f"{r['dci_disentanglement']:.3f} | {r['recon_sse']:.1f} | {r['recon_psnr']:.2f} | "
                     f"{r['active_dims']} | {r['train_s']:.0f} | {r['metrics_s']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    from vae.monitor import save_png
    from vae.visualize import figure_to_array

    betas = [r["beta"] for r in results]
    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    for key, label in [("mig", "MIG"), ("factor_vae_score", "FactorVAE score"),
                       ("dci_disentanglement", "DCI disentanglement")]:
        ax.plot(betas, [r[key] for r in results], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("β")
    ax.set_ylim(0, 1)
    ax.set_title("disentanglement")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(betas, [r["recon_sse"] for r in results], "o-", color="tab:red")
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
    parser.add_argument("--seed", type=int, default=0)
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
    if not betas or args.steps < 1 or args.samples < 20 or args.votes < 1:
        print("error: need at least one β, --steps >= 1, --samples >= 20 and --votes >= 1", file=sys.stderr)
        return 2
    try:
        results = [run_one(beta, args) for beta in betas]
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    plot_path = plot(results, out / "beta_sweep.png")
    summary = {"benchmark": "beta_sweep", "steps": args.steps, "size": args.size,
               "latent_dim": args.latent_dim, "samples": args.samples, "votes": args.votes,
               "plot": str(plot_path), "results": results}
    (out / "beta_sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
