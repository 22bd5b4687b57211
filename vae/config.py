"""The β-VAE's configuration: one frozen dataclass with the original project's defaults.

CLI flags are generated from the fields (`--latent-dim 32`, help from each field's
comment); the settings are layered defaults < the run directory's saved config.json
< `--preset` < `--config run.json` (only the settings it names) < explicit flags, and
the resolved config is saved as `config.json` in every run directory.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from common import config as settings
from common.config import PRECISIONS, STRATEGIES, ConfigError, Settings, need

DATASETS = ("synthetic", "synthetic_grid", "reduced_128", "reduced_256")  # or any folder / TFRecords path
NETWORKS = ("original", "disentanglement_lib")
LIKELIHOODS = ("sse", "bernoulli")
OBJECTIVES = ("beta_vae", "annealed_vae", "beta_tc_vae", "dip_vae_i", "dip_vae_ii", "factor_vae")


@dataclass(frozen=True)
class VAEConfig(Settings):
    """Everything that defines a β-VAE run. Defaults are the original project's."""

    # data
    data: str = "reduced_128"  # synthetic | synthetic_grid (all 15 552 combinations) | reduced_128 | reduced_256 | a folder, list or TFRecords
    data_root: str = "datasets"  # where downloaded / generated datasets live
    synthetic_count: int = 4000  # images generated for --data synthetic
    validation_fraction: float = 0.05  # hash split of one folder (ignored if the dataset has its own)
    test_fraction: float = 0.05  # hash split of one folder (ignored if the dataset has its own)
    crop: str = "center"  # center: crop to square then resize | stretch: plain resize (original)
    cache: bool = False  # cache decoded images in memory (small datasets)
    # model (original: 6 conv blocks down, 5 up)
    network: str = "original"  # original | disentanglement_lib (Locatello et al. 2019: 4 strided convs, no BatchNorm)
    image_size: int = 128  # pixels per side; divisible by 2**len(encoder_filters) and 2**len(decoder_filters)
    latent_dim: int = 256  # size of z
    encoder_filters: tuple[int, ...] = (64, 64, 128, 128, 256, 256)  # one block per entry
    decoder_filters: tuple[int, ...] = (512, 256, 128, 64, 64)  # one block per entry
    dense_units: int = 512  # encoder's dense layer before the mean / log-variance heads
    batchnorm_momentum: float = 0.99  # moving-statistics momentum (Keras's default, as the original)
    # loss
    likelihood: str = "sse"  # sse: sum of squared errors (original) | bernoulli: cross entropy on logits (disentanglement_lib)
    objective: str = "beta_vae"  # beta_vae | annealed_vae | beta_tc_vae | dip_vae_i | dip_vae_ii | factor_vae
    beta: float = 1.5  # β-VAE: weight of KL(q(z|x) || N(0, I)); β-TCVAE: weight of the total correlation
    gamma: float = 4e-6  # weight of the VGG16 perceptual loss (0 turns VGG off); the original's 0.001 was for VGG fed [0, 1] pixels (benchmarks/perceptual_scale.py)
    perceptual_layer: str = "block2_conv2"  # VGG16 layer compared
    vgg_weights: str = "imagenet"  # imagenet | a local .h5/.weights.h5 file | none (random: tests only)
    capacity_max: float = 0.0  # annealed_vae (Burgess et al. 2018): KL capacity C in nats (library: c_max)
    capacity_steps: int = 100_000  # annealed_vae: steps for C to rise from 0 to capacity_max (library: iteration_threshold)
    capacity_weight: float = 1000.0  # annealed_vae: γ_c in γ_c·|KL − C| (library: gamma)
    lambda_od: float = 10.0  # DIP-VAE: weight of the off-diagonal covariance penalty
    lambda_d_factor: float = 10.0  # DIP-VAE: diagonal weight λ_d = lambda_d_factor·lambda_od (library: 10 for i, 1 for ii)
    factor_gamma: float = 10.0  # FactorVAE: weight of the discriminator's TC estimate (library: gamma)
    discriminator_learning_rate: float = 1e-4  # FactorVAE: the discriminator's Adam (β1 0.5, β2 0.9, as the library)
    kl_warmup_steps: int = 0  # β rises linearly from 0 over these steps (0: off)
    # optimisation (original: Adam + ExponentialDecay(5e-4, 2500, 0.96, staircase))
    batch_size: int = 32  # GLOBAL batch, split over all replicas
    epochs: int = 20  # passes over the training split
    max_steps: int = 0  # stop after this many steps (0: epochs decide)
    learning_rate: float = 5e-4  # initial learning rate
    decay_steps: int = 2500  # exponential decay period
    decay_rate: float = 0.96  # multiplied in every decay period (staircase)
    clipnorm: float = 0.0  # global gradient-norm clip (0: off)
    seed: int = 0  # initial weights, data order, sampling noise and the synthetic renders
    deterministic: bool = False  # TensorFlow op determinism: the same seed gives bit-identical runs (slower)
    # hardware
    strategy: str = "auto"  # auto | default | one_device | mirrored | multi_worker
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16
    jit_compile: bool = False  # XLA (slower on CPU, try it on GPU)
    sync_batchnorm: bool = True  # global-batch BatchNorm on N replicas, fused kernel on one (off: stock, slower)
    # monitoring and checkpoints (in steps)
    validate_every: int = 100  # validation, TensorBoard epoch scalars and the resume point
    log_every: int = 10  # training scalars to TensorBoard
    monitor_every: int = 1000  # reconstruction / generation grids
    checkpoint_every: int = 1000  # numbered weight checkpoints kept in checkpoints/
    monitor_count: int = 12  # images in each monitor grid (original: 12)
    monitor_dir: str = ""  # your own photos for the reconstruction grid (default: validation split)
    validation_steps: int = -1  # batches per validation (-1: a tenth of validate_every, so it costs a few % of a round; 0: the whole split)
    # test and demo
    demo_count: int = 100  # images generated at the end (original: 100)
    temperature: float = 1.0  # scale of z ~ N(0, T^2 I) when generating

    def validate(self) -> "VAEConfig":
        """Raise ConfigError naming the flag of the first invalid setting."""
        need(self.image_size >= 16, "image-size", f"must be at least 16, got {self.image_size}")
        need(self.network in NETWORKS, "network", f"unknown {self.network!r}; use one of {NETWORKS}")
        need(self.likelihood in LIKELIHOODS, "likelihood", f"unknown {self.likelihood!r}; use one of {LIKELIHOODS}")
        need(self.objective in OBJECTIVES, "objective", f"unknown {self.objective!r}; use one of {OBJECTIVES}")
        need(self.lambda_od >= 0 and self.lambda_d_factor >= 0, "lambda-od", "DIP-VAE weights must be >= 0")
        need(self.factor_gamma >= 0, "factor-gamma", "must be >= 0")
        need(self.discriminator_learning_rate > 0, "discriminator-learning-rate", "must be > 0")
        need(self.network != "disentanglement_lib" or self.image_size % 16 == 0, "image-size",
             f"{self.image_size} is not divisible by 16, needed by the disentanglement_lib network's "
             "4 stride-2 layers")
        for name in ("encoder_filters", "decoder_filters") if self.network == "original" else ():
            blocks = len(getattr(self, name))
            flag = name.replace("_", "-")
            need(blocks >= 1 and all(f > 0 for f in getattr(self, name)), flag,
                 "needs one or more positive filter counts")
            need(self.image_size % 2**blocks == 0, "image-size",
                 f"{self.image_size} is not divisible by 2**{blocks} ({2**blocks}), "
                 f"needed by {blocks} {flag.split('-')[0]} blocks")
        need(self.latent_dim >= 1, "latent-dim", f"must be at least 1, got {self.latent_dim}")
        need(self.dense_units >= 1, "dense-units", "must be at least 1")
        need(0 <= self.batchnorm_momentum < 1, "batchnorm-momentum", "must be in [0, 1)")
        need(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        need(self.gamma >= 0, "gamma", f"must be >= 0, got {self.gamma}")
        need(self.capacity_max >= 0, "capacity-max", "must be >= 0")
        need(self.capacity_steps >= 1, "capacity-steps", "must be at least 1")
        need(self.kl_warmup_steps >= 0, "kl-warmup-steps", "must be >= 0")
        need(self.batch_size >= 1, "batch-size", f"must be at least 1, got {self.batch_size}")
        need(self.epochs >= 1, "epochs", "must be at least 1")
        need(self.max_steps >= 0, "max-steps", "must be >= 0")
        need(self.validation_steps >= -1, "validation-steps", "must be -1 (auto), 0 (the whole split) or more")
        need(self.learning_rate > 0, "learning-rate", "must be > 0")
        need(self.decay_steps >= 1, "decay-steps", "must be at least 1")
        need(0 < self.decay_rate <= 1, "decay-rate", "must be in (0, 1]")
        need(self.strategy in STRATEGIES, "strategy", f"unknown {self.strategy!r}; use one of {STRATEGIES}")
        need(self.precision in PRECISIONS, "precision", f"unknown {self.precision!r}; use one of {PRECISIONS}")
        need(self.crop in ("center", "stretch"), "crop", "use center or stretch")
        need(0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1
             and self.validation_fraction + self.test_fraction < 1,
             "validation-fraction", "fractions must be in [0, 1) and sum below 1")
        for flag in ("validate_every", "log_every", "monitor_every", "checkpoint_every", "monitor_count"):
            need(getattr(self, flag) >= 1, flag.replace("_", "-"), "must be at least 1")
        need(self.checkpoint_every % self.validate_every == 0, "checkpoint-every",
             f"must be a multiple of --validate-every ({self.validate_every}): "
             "checkpoints are taken at validation points")
        need(self.synthetic_count >= 10, "synthetic-count", "must be at least 10")
        need(self.demo_count >= 0, "demo-count", "must be >= 0")
        need(self.temperature > 0, "temperature", "must be > 0")
        need(self.vgg_weights in ("imagenet", "none") or os.path.isfile(self.vgg_weights)
             or self.gamma == 0, "vgg-weights",
             f"{self.vgg_weights}: not 'imagenet', 'none' or an existing weights file")
        is_named = self.data in DATASETS
        need(is_named or os.path.exists(self.data) or "*" in self.data, "data",
             f"{self.data}: unknown dataset and no such file or folder; "
             f"use one of {', '.join(DATASETS)} or a path")
        return self


PRESETS = {
    # Minutes on a laptop CPU (README: its wall time): every synthetic façade combination at 64 px (the test
    # split holds unseen ones), disentanglement_lib's network and Bernoulli likelihood, β 2.
    # No perceptual loss: offline, there are no ImageNet VGG16 weights to fetch.
    "small": dict(
        data="synthetic_grid", image_size=64, latent_dim=16, network="disentanglement_lib",
        likelihood="bernoulli", objective="beta_vae", beta=2.0, gamma=0.0, batch_size=64,
        learning_rate=1e-3, decay_rate=1.0, max_steps=3000, validate_every=500, validation_steps=4,
        validation_fraction=0.02, test_fraction=0.02, monitor_every=500, checkpoint_every=1000,
        demo_count=36,
    ),
    # Seconds: for tests and smoke runs.
    "tiny": dict(
        data="synthetic", image_size=32, latent_dim=4, encoder_filters=(8, 8),
        decoder_filters=(8, 8), dense_units=16, gamma=0.001, vgg_weights="none",
        epochs=1, batch_size=8, synthetic_count=64, validate_every=4, log_every=2,
        monitor_every=4, checkpoint_every=4, monitor_count=4, demo_count=4,
    ),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--preset` and one flag per VAEConfig field (unset unless given)."""
    parser.add_argument("--config", metavar="FILE", help="JSON file of settings (only those it names change)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of overrides")
    settings.add_arguments(parser, VAEConfig, "settings (defaults: the original project's)")


def config_from_args(args: argparse.Namespace, run_dir_config: Path | None = None) -> VAEConfig:
    """Defaults < saved run config < --preset < --config file < explicit flags; validated."""
    layers = []
    if run_dir_config is not None and run_dir_config.exists():
        layers.append(settings.read_json(VAEConfig, run_dir_config, "--run-dir"))
    if getattr(args, "preset", None):
        layers.append(PRESETS[args.preset])
    if getattr(args, "config", None):
        layers.append(settings.read_json(VAEConfig, args.config))
    layers.append(settings.given(VAEConfig, args))
    return settings.resolve(VAEConfig, *layers)
