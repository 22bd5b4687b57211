"""Castle Dreamer: train, evaluate and sample a disentangled β-VAE of buildings.

    python main.py [all] [flags]      train, then evaluate, then generate demo images
    python main.py train [flags]      train (or resume: run it again; the run's config.json is kept)
    python main.py evaluate --run-dir D                 losses, PSNR, SSIM, Pearson r on the test split
    python main.py generate --run-dir D [--count N] [--temperature T]
    python main.py traverse --run-dir D [--dims K]      latent traversal grid + GIF
    python main.py interpolate --run-dir D [--a I --b J | --random]   linear + spherical
    python main.py metrics --run-dir D                  MIG, FactorVAE, DCI (synthetic data)
    python main.py plots --run-dir D                    loss curves, latent PCA, monitor GIF
    python main.py explore --run-dir D                  interactive latent explorer window

With no flags this is the original project's run: the downloaded 128-px curated
photos, latent 256, β 1.5, 20 epochs, with the perceptual loss's weight γ rescaled for
VGG16's own input range (see --gamma). `--preset small` runs offline on every
combination of the procedural façades' factors, in minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.cli import documented_parser, exit_code, log_to_stderr

COMMANDS = ("all", "train", "evaluate", "generate", "traverse", "interpolate", "metrics", "plots", "explore")


# Each command: (help, function(args) → result). Imports happen when a command runs,
# so `--help` and usage errors answer without loading TensorFlow.

def _train(args):
    from vae import train
    from vae.config import config_from_args

    config = config_from_args(args, args.run_dir / "config.json")
    train.train(config, args.run_dir, verbose=0 if args.quiet else None)
    return config


def _all(args):
    from vae.evaluate import evaluate_run
    from vae.generate import generate_run

    config = _train(args)
    evaluate_run(args.run_dir)
    return generate_run(args.run_dir, config.demo_count, config.temperature, config.seed, prefix="demo")


def _evaluate(args):
    from vae.evaluate import evaluate_run

    return evaluate_run(args.run_dir)


def _generate(args):
    from vae.generate import generate_run

    return generate_run(args.run_dir, args.count, args.temperature, args.seed, args.out)


def _traverse(args):
    from vae.visualize import traverse_run

    return traverse_run(args.run_dir, args.dims, args.steps, args.index)


def _interpolate(args):
    from vae.visualize import interpolate_run

    return interpolate_run(args.run_dir, args.a, args.b, args.random, args.steps, args.seed)


def _metrics(args):
    from vae.metrics import measure_run

    return measure_run(args.run_dir, args.samples, args.votes, args.seed)


def _plots(args):
    from vae.visualize import plots_run

    return plots_run(args.run_dir, args.colour_by, args.limit)


def _explore(args):
    from vae.explorer import explore_run

    return explore_run(args.run_dir, args.dims, args.folder)


def build_parser() -> argparse.ArgumentParser:
    from vae.config import add_config_arguments

    parser = documented_parser("python main.py", __doc__)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--run-dir", type=Path, default=Path("runs/vae"),
                        help="the run's directory: config, checkpoints, logs, models (default: runs/vae)")
    sub = parser.add_subparsers(dest="command")

    def command(name, function, help_text):
        p = sub.add_parser(name, parents=[shared], help=help_text, description=help_text)
        p.set_defaults(func=function)
        return p

    for name, function, help_text in [("all", _all, "train, evaluate, generate (the default)"),
                                      ("train", _train, "train, or resume the run in --run-dir")]:
        p = command(name, function, help_text)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_config_arguments(p)
    command("evaluate", _evaluate, "losses and reconstruction quality on the test split")
    p = command("generate", _generate, "decode random codes into new buildings")
    p.add_argument("--count", type=int, default=None, help="images (default: the run's demo_count)")
    p.add_argument("--temperature", type=float, default=None, help="z ~ N(0, T²I) (default: the run's, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random codes")
    p.add_argument("--out", default=None, help="folder (default: RUN_DIR/generated)")
    p = command("traverse", _traverse, "sweep the most informative latent dimensions")
    p.add_argument("--dims", type=int, default=10, help="K most informative dimensions (by mean KL)")
    p.add_argument("--steps", type=int, default=9, help="values from -3 to +3")
    p.add_argument("--index", type=int, default=0, help="seed image: this validation image")
    p = command("interpolate", _interpolate, "decode paths between two codes")
    p.add_argument("--a", type=int, default=0, help="first validation image")
    p.add_argument("--b", type=int, default=1, help="second validation image")
    p.add_argument("--random", action="store_true", help="two random codes instead of images")
    p.add_argument("--steps", type=int, default=10, help="codes on the path, both ends included")
    p.add_argument("--seed", type=int, default=0, help="seed of the random codes")
    p = command("metrics", _metrics, "disentanglement metrics against the true factors")
    p.add_argument("--samples", type=int, default=2000,
                   help="codes for MIG, DCI and the variance estimate (disentanglement_lib: 10000)")
    p.add_argument("--votes", type=int, default=300,
                   help="FactorVAE training votes of 64 images each (disentanglement_lib: 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' samples")
    p = command("plots", _plots, "loss curves, latent PCA and the monitor GIF")
    p.add_argument("--colour-by", default="wall_colour", help="factor colouring the PCA (synthetic data)")
    p.add_argument("--limit", type=int, default=1000, help="images in the PCA")
    p = command("explore", _explore, "interactive latent explorer (matplotlib window)")
    p.add_argument("--dims", type=int, default=8, help="sliders for the K most informative dimensions")
    p.add_argument("--folder", default=None, help="images for the indexer (default: validation split)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["all"] + argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    log_to_stderr()

    from common.config import ConfigError
    from data.pipeline import DataError
    from vae.losses import WeightsUnavailable
    from vae.splits import DataUnavailable
    from vae.train import TrainingError

    return exit_code(lambda: args.func(args), usage=(ConfigError, DataError),
                     failure=(DataUnavailable, TrainingError, WeightsUnavailable))

if __name__ == "__main__":
    sys.exit(main())
