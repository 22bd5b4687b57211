"""Castle Dreamer: train, test and sample a disentangled β-VAE of buildings.

    python main.py [all] [flags]      train, then test, then generate demo images
    python main.py train [flags]      train (or resume: run the same command again)
    python main.py test --run-dir D   losses, PSNR, SSIM, Pearson r on the test split
    python main.py generate --run-dir D [--count N] [--temperature T]

With no flags this is the original project's run: the downloaded 128-px curated
photos, latent 256, β 1.5, γ 0.001, 20 epochs. `--data synthetic --preset small`
runs offline on procedural façades in minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

COMMANDS = ("all", "train", "test", "generate")
log = logging.getLogger("castle_dreamer")


def build_parser() -> argparse.ArgumentParser:
    from vae.config import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="python main.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command")
    for name, help_text in [("all", "train, test, generate (the default)"), ("train", "train or resume")]:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--run-dir", default="runs/vae", help="everything of this run lives here")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        add_config_arguments(command)
    test = sub.add_parser("test", help="evaluate a trained run on its test split")
    test.add_argument("--run-dir", default="runs/vae")
    generate = sub.add_parser("generate", help="decode random codes into new buildings")
    generate.add_argument("--run-dir", default="runs/vae")
    generate.add_argument("--count", type=int, default=None, help="images (default: config demo_count)")
    generate.add_argument("--temperature", type=float, default=None, help="z ~ N(0, T²I) (default 1)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", default=None, help="folder (default: RUN_DIR/generated)")
    return parser


def run_test(run_dir: Path) -> dict:
    from data import pipeline
    from vae import evaluate, train

    config, vae = train.load_trained(run_dir)
    splits = train.resolve_splits(config)
    load = dict(image_size=config.image_size, crop=config.crop, shuffle=False,
                batch_size=config.batch_size)
    metrics = evaluate.evaluate(vae, pipeline.load_images(splits.test, **load),
                                pipeline.load_images(splits.train, **load))
    step = int(vae.optimizer.iterations.numpy())
    path = evaluate.write_metrics({**metrics, "step": step}, run_dir, step)
    log.info("test: PSNR %.2f dB (mean-image baseline %.2f), SSIM %.3f, loss %.1f -> %s",
             metrics["test_psnr"], metrics["baseline_mean_image_psnr"], metrics["test_ssim"],
             metrics["test_loss"], path)
    return metrics


def run_generate(run_dir: Path, count: int | None, temperature: float | None, seed: int,
                 out: str | None, prefix: str = "generated") -> list[Path]:
    import keras

    from vae import generate, model  # noqa: F401  (registers the custom layers)
    from vae.config import ConfigError, VAEConfig

    decoder_path = run_dir / "decoder.keras"
    if not decoder_path.exists():
        raise ConfigError(f"--run-dir: {run_dir} has no decoder.keras; train first")
    config = VAEConfig.load(run_dir / "config.json")
    count = config.demo_count if count is None else count
    temperature = config.temperature if temperature is None else temperature
    if count < 1:
        raise ConfigError(f"--count: must be at least 1, got {count}")
    if temperature <= 0:
        raise ConfigError(f"--temperature: must be > 0, got {temperature}")
    decoder = keras.models.load_model(decoder_path)
    images = generate.generate(decoder, count, temperature, seed)
    out_dir = Path(out) if out else run_dir / prefix
    paths = generate.write_images(images, out_dir, prefix)
    log.info("wrote %d generated images and %s_grid.png to %s", len(paths), prefix, out_dir)
    return paths


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["all"] + argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from data.pipeline import DataError
    from vae.config import ConfigError, config_from_args
    from vae.losses import WeightsUnavailable
    from vae.train import DataUnavailable, TrainingError

    run_dir = Path(args.run_dir)
    try:
        if args.command in ("all", "train"):
            from vae import train

            config = config_from_args(args)
            train.train(config, run_dir, verbose=0 if args.quiet else None)
            if args.command == "all":
                run_test(run_dir)
                run_generate(run_dir, config.demo_count, config.temperature, config.seed,
                             None, prefix="demo")
        elif args.command == "test":
            run_test(run_dir)
        elif args.command == "generate":
            run_generate(run_dir, args.count, args.temperature, args.seed, args.out)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DataUnavailable, TrainingError, WeightsUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
