"""Training-step throughput of the β-VAE: the original's way vs this project's, fp32 and bf16.

    python benchmarks/bench_vae.py [--size 128] [--batch 32] [--steps 6] [--loss-steps 8]

All variants use the original architecture (6 down blocks, 5 up, latent 256) with the
VGG16 perceptual loss (random VGG weights: no download; same FLOPs as ImageNet's):
  reference   the original's step on stock Keras 3 layers: float32, a persistent tape,
              two apply_gradients, keras.layers.BatchNormalization
  fp32        this project's compiled train_step (one update, losses per image, fused
              BatchNorm: vae.model.GlobalBatchNormalization)
  fp32 stock  the same step with stock BatchNorm (--no-sync-batchnorm): what the fused
              BatchNorm alone is worth
  bf16        this project's step with --precision mixed_bfloat16
Throughput is timed round-robin (variant A, B, C, A, B, C, ...) so that all variants
see the same machine load, and the best round of each is reported. The matmul peak is
measured in the same run. Then fp32 and bf16 train the same steps from the same
weights on the same batches and their losses are compared.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from peaks import matmul_peak  # noqa: E402
from vae import losses  # noqa: E402
from vae.config import VAEConfig  # noqa: E402
from vae.model import build_vae  # noqa: E402


def step_flops(vae) -> float:
    """FLOPs (2 per multiply-add) of one training step per image: Conv2D and Dense layers.

    Forward F per layer; backward F for the input gradient (not for the first encoder
    layer, whose input is the images) and F for the weight gradient of trainable
    layers. VGG16 runs forward twice (inputs and reconstructions) and back once (input
    gradient only: it is frozen). TensorFlow's graph profiler counts 27 % more: it
    includes the frozen VGG's weight gradients and the inputs' gradient, which the tape
    records but grappler prunes before anything runs. BatchNorm and element-wise ops
    are left out (well under 1 % of these FLOPs).
    """
    def layer_flops(model):
        for layer in model.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                macs = math.prod(layer.output.shape[1:-1]) * math.prod(layer.kernel.shape)
                yield 2 * macs, layer.trainable, any(layer.input is x for x in model.inputs)

    total = sum(f * (1 + trainable + (not first)) for f, trainable, first in layer_flops(vae.encoder))
    total += sum(f * (2 + trainable) for f, trainable, _ in layer_flops(vae.decoder))
    if vae.feature_extractor is not None and vae.config.gamma > 0:
        total += sum(3 * f for f, _, _ in layer_flops(vae.feature_extractor))
    return float(total)


def reference_step(config: VAEConfig):
    """The original's training step: persistent tape, one apply_gradients per sub-model."""
    vae = build_vae(config)
    optimizer = keras.optimizers.Adam(5e-4)
    enc_vars, dec_vars = vae.encoder.trainable_variables, vae.decoder.trainable_variables
    optimizer.build(enc_vars + dec_vars)

    @tf.function
    def step(images):
        with tf.GradientTape(persistent=True) as tape:
            z_mean, z_log_var = vae.encoder(images, training=True)
            eps = tf.random.normal(tf.shape(z_mean))
            z = z_mean + tf.exp(0.5 * z_log_var) * eps
            recon = vae.decoder(z, training=True)
            loss = tf.reduce_mean(
                losses.reconstruction_loss(images, recon)
                + config.beta * losses.kl_divergence(z_mean, z_log_var)
                + config.gamma * losses.perceptual_loss(vae.feature_extractor, images, recon))
        optimizer.apply_gradients(zip(tape.gradient(loss, enc_vars), enc_vars))
        optimizer.apply_gradients(zip(tape.gradient(loss, dec_vars), dec_vars))
        del tape
        return loss

    return step


def project_step(config: VAEConfig):
    """This project's compiled train_step, as `fit` runs it (per-call overhead is ~ms)."""
    vae = build_vae(config)
    return vae, lambda x: vae.train_on_batch(x, return_dict=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loss-steps", type=int, default=8, help="steps for the fp32/bf16 loss check")
    args = parser.parse_args(argv)

    base = VAEConfig(data="synthetic", image_size=args.size, batch_size=args.batch,
                     vgg_weights="none").validate()
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.random((args.batch, args.size, args.size, 3), np.float32))
               for _ in range(max(args.steps, args.loss_steps))]

    stock = base.replace(sync_batchnorm=False)  # keras.layers.BatchNormalization everywhere
    variants = {"reference": reference_step(stock)}
    vae32, fn32 = project_step(base)
    variants["fp32"] = fn32
    variants["fp32 stock"] = project_step(stock)[1]
    variants["bf16"] = project_step(base.replace(precision="mixed_bfloat16"))[1]
    flops_per_image = step_flops(vae32)

    for fn in variants.values():  # warm-up: tracing and first-call allocation
        fn(batches[0])
    rates: dict[str, list[float]] = {name: [] for name in variants}
    peaks = []  # measured after every round too: the best is the machine's
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for x in batches[:args.steps]:
                out = fn(x)
            tf.nest.map_structure(lambda t: np.asarray(t), out)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
            print(f"  {name}: {rates[name][-1]:.2f} img/s", file=sys.stderr, flush=True)
        peaks.append((matmul_peak(tf.float32), matmul_peak(tf.bfloat16)))
    peak32, peak16 = max(p[0] for p in peaks), max(p[1] for p in peaks)

    # Same weights, same batches: does bf16 train like fp32?
    check32 = build_vae(base)
    check16 = build_vae(base.replace(precision="mixed_bfloat16"))
    check16.set_weights(check32.get_weights())
    finals = {}
    for name, model in (("fp32", check32), ("bf16", check16)):
        for x in batches[:args.loss_steps]:
            logs = model.train_on_batch(x, return_dict=True)
        finals[name] = float(logs["loss"])
    loss_gap = abs(finals["bf16"] - finals["fp32"]) / abs(finals["fp32"])

    best = {name: max(r) for name, r in rates.items()}
    gflops_per_image = flops_per_image / 1e9
    print(f"β-VAE train step, {args.size} px, batch {args.batch}, original architecture + VGG16 perceptual")
    print(f"{'variant':<12}{'img/s':>8}{'vs reference':>14}{'GFLOP/s':>10}{'of peak':>9}")
    for name in variants:
        achieved = best[name] * gflops_per_image
        peak = peak16 if name == "bf16" else peak32
        print(f"{name:<12}{best[name]:>8.2f}{best[name] / best['reference']:>13.2f}x"
              f"{achieved:>10.1f}{achieved / peak:>8.0%}")
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; "
          f"{gflops_per_image:.1f} GFLOP per image per step")
    print(f"loss after {args.loss_steps} identical steps: fp32 {finals['fp32']:.2f}, "
          f"bf16 {finals['bf16']:.2f} ({loss_gap:.3%} apart)")
    print(json.dumps({
        "benchmark": "vae_step", "size": args.size, "batch": args.batch, "cpus": os.cpu_count(),
        "img_per_s": {k.replace(" ", "_"): round(v, 3) for k, v in best.items()},
        "fp32_over_reference": round(best["fp32"] / best["reference"], 3),
        "fp32_stock_bn_over_reference": round(best["fp32 stock"] / best["reference"], 3),
        "bf16_over_reference": round(best["bf16"] / best["reference"], 3),
        "gflop_per_image": round(gflops_per_image, 2),
        "peak_gflops": {"fp32": round(peak32, 1), "bf16": round(peak16, 1)},
        "fraction_of_peak": {k.replace(" ", "_"): round(best[k] * gflops_per_image / (peak16 if k == "bf16" else peak32), 3)
                             for k in best},
        "loss_after_steps": finals, "bf16_loss_gap": round(loss_gap, 4),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
