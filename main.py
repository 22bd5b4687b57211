"""Castle Dreamer: train, test and sample a disentangled β-VAE of buildings.

    python main.py [all] [flags]      train, then test, then generate demo images
    python main.py train [flags]      train (or resume: run the same command again)
    python main.py test --run-dir D   losses, PSNR, SSIM, Pearson r on the test split
    python main.py generate --run-dir D [--count N] [--temperature T]
    python main.py traverse --run-dir D [--dims K]      latent traversal grid + GIF
    python main.py interpolate --run-dir D [--a I --b J | --random]   linear + spherical
    python main.py evaluate --run-dir D                 MIG, FactorVAE, DCI (synthetic data)
    python main.py plots --run-dir D                    loss curves, latent PCA, monitor GIF
    python main.py explore --run-dir D                  interactive latent explorer window

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

COMMANDS = ("all", "train", "test", "generate", "traverse", "interpolate", "evaluate", "plots", "explore")
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
    traverse = sub.add_parser("traverse", help="sweep the most informative latent dimensions")
    traverse.add_argument("--run-dir", default="runs/vae")
    traverse.add_argument("--dims", type=int, default=10, help="K most informative dimensions (by mean KL)")
    traverse.add_argument("--steps", type=int, default=9, help="values from -3 to +3")
    traverse.add_argument("--index", type=int, default=0, help="seed image: this validation image")
    interpolate = sub.add_parser("interpolate", help="decode paths between two codes")
    interpolate.add_argument("--run-dir", default="runs/vae")
    interpolate.add_argument("--a", type=int, default=0, help="first validation image")
    interpolate.add_argument("--b", type=int, default=1, help="second validation image")
    interpolate.add_argument("--random", action="store_true", help="two random codes instead of images")
    interpolate.add_argument("--steps", type=int, default=10)
    interpolate.add_argument("--seed", type=int, default=0)
    evaluate = sub.add_parser("evaluate", help="disentanglement metrics against the true factors")
    evaluate.add_argument("--run-dir", default="runs/vae")
    evaluate.add_argument("--samples", type=int, default=2000,
                          help="codes for MIG, DCI and the variance estimate (disentanglement_lib: 10000)")
    evaluate.add_argument("--votes", type=int, default=300,
                          help="FactorVAE training votes of 64 images each (disentanglement_lib: 10000)")
    evaluate.add_argument("--seed", type=int, default=0)
    plots = sub.add_parser("plots", help="loss curves, latent PCA and the monitor GIF")
    plots.add_argument("--run-dir", default="runs/vae")
    plots.add_argument("--colour-by", default="wall_colour", help="factor colouring the PCA (synthetic)")
    plots.add_argument("--limit", type=int, default=1000, help="validation images in the PCA")
    explore = sub.add_parser("explore", help="interactive latent explorer (matplotlib window)")
    explore.add_argument("--run-dir", default="runs/vae")
    explore.add_argument("--dims", type=int, default=8, help="sliders for the K most informative dimensions")
    explore.add_argument("--folder", default=None, help="images for the indexer (default: validation split)")
    return parser


def _load_coder(run_dir: Path):
    """(config, encoder, decoder) of a finished run."""
    import keras

    from vae import model  # noqa: F401  (registers the custom layers)
    from vae.config import ConfigError, VAEConfig

    for name in ("config.json", "encoder.keras", "decoder.keras"):
        if not (run_dir / name).exists():
            raise ConfigError(f"--run-dir: {run_dir} has no {name}; train first")
    config = VAEConfig.load(run_dir / "config.json")
    return config, keras.models.load_model(run_dir / "encoder.keras"), keras.models.load_model(
        run_dir / "decoder.keras")


def _validation_images(config, limit: int | None = None, folder: str | None = None):
    """(images (N, S, S, 3) in [0, 1], their paths or None) of the validation split or a folder."""
    from data import pipeline
    from vae import train

    source = folder or train.resolve_splits(config).validation
    ds = pipeline.load_images(source, config.image_size, batch_size=None, shuffle=False, crop=config.crop)
    images = pipeline.to_numpy(ds, limit=limit)
    paths = list(source) if isinstance(source, (list, tuple)) else None
    return images, (paths[:len(images)] if paths else None)


def _check_index(flag: str, index: int, count: int) -> None:
    from vae.config import ConfigError

    if not 0 <= index < count:
        raise ConfigError(f"{flag}: {index} is out of range; the validation split has {count} images")


def _tensorboard_image(run_dir: Path, tag: str, image) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "visualize"))
    with writer.as_default(step=0):
        tf.summary.image(tag, image[None], max_outputs=1)
    writer.flush()


def run_traverse(run_dir: Path, dims: int, steps: int, index: int) -> dict:
    import numpy as np

    from vae import visualize
    from vae.config import ConfigError
    from vae.monitor import save_png

    if dims < 1 or steps < 2:
        raise ConfigError(f"--dims must be >= 1 and --steps >= 2, got {dims} and {steps}")
    config, encoder, decoder = _load_coder(run_dir)
    images, _ = _validation_images(config, limit=500)
    _check_index("--index", index, len(images))
    z_mean, z_log_var = visualize.encode_means(encoder, images)
    kl = visualize.mean_kl_per_dimension(z_mean, z_log_var)
    top = visualize.top_dimensions(kl, min(dims, config.latent_dim))
    sweep = visualize.traversal(decoder, z_mean[index], top, np.linspace(-3, 3, steps))
    grid = visualize.labelled_grid(sweep, [f"z{d} KL {kl[d]:.2f}" for d in top], label_width=80)
    out = run_dir / "visualize"
    paths = {"png": save_png(grid, out / "traversal.png"),
             "gif": visualize.save_gif(visualize.traversal_frames(sweep), out / "traversal.gif")}
    _tensorboard_image(run_dir, "visualize/traversal", grid)
    log.info("traversal of dimensions %s (mean KL %s nats) -> %s", top.tolist(),
             ", ".join(f"{v:.2f}" for v in kl[top]), out)
    return paths


def run_interpolate(run_dir: Path, a: int, b: int, random: bool, steps: int, seed: int) -> dict:
    import numpy as np

    from vae import visualize
    from vae.config import ConfigError
    from vae.monitor import make_grid, save_png

    if steps < 2:
        raise ConfigError(f"--steps: must be at least 2, got {steps}")
    config, encoder, decoder = _load_coder(run_dir)
    if random:
        z0, z1 = np.random.default_rng(seed).standard_normal((2, config.latent_dim)).astype(np.float32)
    else:
        images, _ = _validation_images(config, limit=max(a, b) + 1)
        _check_index("--a", a, len(images))
        _check_index("--b", b, len(images))
        z_mean, _ = visualize.encode_means(encoder, images[[a, b]])
        z0, z1 = z_mean
    rows = np.stack([np.asarray(decoder(visualize.interpolation_path(z0, z1, steps, mode), training=False))
                     for mode in ("linear", "spherical")])  # (2, steps, S, S, 3)
    out = run_dir / "visualize"
    strip = visualize.labelled_grid(rows, ["linear", "spherical"], label_width=64)
    frames = [make_grid(rows[:, t], columns=2) for t in range(steps)]
    paths = {"png": save_png(strip, out / "interpolation.png"),
             "gif": visualize.save_gif(frames, out / "interpolation.gif")}
    _tensorboard_image(run_dir, "visualize/interpolation", strip)
    log.info("interpolation strip and GIF -> %s", out)
    return paths


def run_evaluate(run_dir: Path, samples: int, votes: int, seed: int) -> dict:
    import numpy as np

    from vae import evaluate, metrics, visualize
    from vae.config import ConfigError

    config, encoder, decoder = _load_coder(run_dir)
    if config.data != "synthetic":
        raise ConfigError(f"--run-dir: {run_dir} was trained on --data {config.data}; disentanglement "
                          "metrics need known factors (--data synthetic)")
    if samples < 20 or votes < 1:
        raise ConfigError(f"--samples must be >= 20 and --votes >= 1, got {samples} and {votes}")
    truth = metrics.synthetic_ground_truth(config.image_size)

    def represent(images):
        return visualize.encode_means(encoder, images)[0]

    results = metrics.all_metrics(truth, represent, seed, num_samples=samples, num_votes=votes)
    images = truth.observations(truth.sample_factors(min(samples, 256), np.random.default_rng(seed + 3)))
    recon = np.asarray(decoder(represent(images), training=False))
    quality = evaluate.image_quality(images, recon)
    results.update(reconstruction_psnr=float(np.mean(quality["psnr"])),
                   reconstruction_ssim=float(np.mean(quality["ssim"])),
                   metric_samples=samples, metric_votes=votes)
    step = final_step(run_dir, config.validate_every)
    evaluate.write_metrics({**results, "step": step}, run_dir, step)
    log.info("MIG %.3f, FactorVAE %.3f, DCI disentanglement %.3f, PSNR %.2f dB -> %s",
             results["mig"], results["factor_vae_score"], results["dci_disentanglement"],
             results["reconstruction_psnr"], run_dir / "metrics.json")
    return results


def final_step(run_dir: Path, validate_every: int) -> int:
    """The run's final global step: metrics.json's, else rounds in history.csv × validate_every."""
    import json

    path = run_dir / "metrics.json"
    if path.exists():
        step = json.loads(path.read_text()).get("step")
        if isinstance(step, int):
            return step
    history = run_dir / "history.csv"
    if history.exists():
        return validate_every * max(len(history.read_text().strip().splitlines()) - 1, 0)
    return 0


def run_plots(run_dir: Path, colour_by: str, limit: int) -> dict:
    import pandas as pd

    from vae import visualize
    from vae.config import ConfigError
    from vae.monitor import save_png

    config, encoder, _ = _load_coder(run_dir)
    out, paths = run_dir / "visualize", {}
    history = run_dir / "history.csv"
    if history.exists():
        paths["loss_curves"] = save_png(visualize.figure_to_array(
            visualize.loss_curves_figure(pd.read_csv(history))), out / "loss_curves.png")
    frames = visualize.monitor_frames(run_dir / "monitor")
    if frames:
        paths["monitor_gif"] = visualize.save_gif(frames, out / "monitor.gif", duration_ms=300, bounce=False)
    images, image_paths = _validation_images(config, limit=limit)
    z_mean, _ = visualize.encode_means(encoder, images)
    colour = level_names = None
    if config.data == "synthetic" and image_paths:
        from data import datasets, facades

        if colour_by not in facades.FACTOR_NAMES:
            raise ConfigError(f"--colour-by: {colour_by!r} is not one of {', '.join(facades.FACTOR_NAMES)}")
        table = pd.read_csv(datasets.resolve(config.data, config.data_root, image_size=config.image_size,
                                             synthetic_count=config.synthetic_count,
                                             seed=config.seed).factors_csv).set_index("file")
        colour = table.loc[[Path(p).name for p in image_paths], colour_by].to_numpy()
        level_names = facades.FACTOR_LEVELS[colour_by]
    fig = visualize.latent_pca_figure(z_mean, colour, colour_by if colour is not None else "", level_names)
    paths["latent_pca"] = save_png(visualize.figure_to_array(fig), out / "latent_pca.png")
    log.info("wrote %s to %s", ", ".join(paths), out)
    return paths


def run_explore(run_dir: Path, dims: int, folder: str | None) -> int:
    from vae import explorer, visualize

    config, encoder, decoder = _load_coder(run_dir)
    images, _ = _validation_images(config, limit=500, folder=folder)
    z_mean, z_log_var = visualize.encode_means(encoder, images)
    kl = visualize.mean_kl_per_dimension(z_mean, z_log_var)
    app = explorer.Explorer(encoder, decoder, images, kl, dims=dims, save_dir=run_dir / "explorer")
    app.show()
    return 0


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
        elif args.command == "traverse":
            run_traverse(run_dir, args.dims, args.steps, args.index)
        elif args.command == "interpolate":
            run_interpolate(run_dir, args.a, args.b, args.random, args.steps, args.seed)
        elif args.command == "evaluate":
            run_evaluate(run_dir, args.samples, args.votes, args.seed)
        elif args.command == "plots":
            run_plots(run_dir, args.colour_by, args.limit)
        elif args.command == "explore":
            run_explore(run_dir, args.dims, args.folder)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DataUnavailable, TrainingError, WeightsUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
