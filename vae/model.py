"""The β-VAE: a sampling layer, the original's encoder and decoder, and the training model.

Architecture as in the original project (see DESIGN.md), with its defects fixed:
linear mean / log-variance heads (the original's ReLU forced σ ≥ 1), a decoder start
grid that follows the image size, one optimizer update per step, and losses scaled
by the global batch so that any number of replicas gives the single-device gradient.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from vae import losses
from common.batchnorm import PACKAGE, GlobalBatchNormalization
from vae.config import VAEConfig


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """z = μ + σ·ε with ε ~ N(0, I): the reparameterisation trick (Kingma & Welling 2014).

    With `seed` (a (2,) int tensor) the noise is stateless: the training step seeds
    it with (step, replica), so replicas draw different noise and runs repeat. A
    SeedGenerator would give every replica the SAME noise under tf.distribute.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean, z_log_var, seed=None):
        z_mean = ops.cast(z_mean, "float32")
        z_log_var = ops.clip(ops.cast(z_log_var, "float32"), *losses.LOG_VAR_RANGE)
        if seed is None:
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        else:
            epsilon = tf.random.stateless_normal(tf.shape(z_mean), seed=seed, dtype=tf.float32)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _conv_bn_relu(x, filters: int, name: str, dtype, sync_bn: bool = False, momentum: float = 0.99):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv", dtype=dtype)(x)
    norm = GlobalBatchNormalization if sync_bn else layers.BatchNormalization
    x = norm(momentum=momentum, name=f"{name}_bn", dtype=dtype)(x)
    return layers.ReLU(name=f"{name}_relu", dtype=dtype)(x)


def build_encoder(config: VAEConfig, dtype=None, sync_bn: bool = False) -> keras.Model:
    """(B, S, S, 3) images in [0, 1] → (z_mean, z_log_var), each (B, latent_dim), float32.

    sync_bn: BatchNorm statistics over the global batch (all replicas), so that N
    replicas compute exactly what one device computes on the same batch.
    """
    images = keras.Input((config.image_size, config.image_size, 3), name="images")
    x = images
    for i, filters in enumerate(config.encoder_filters, start=1):
        x = _conv_bn_relu(x, filters, f"enc{i}a", dtype, sync_bn, config.batchnorm_momentum)
        x = _conv_bn_relu(x, filters, f"enc{i}b", dtype, sync_bn, config.batchnorm_momentum)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    x = layers.Dense(config.dense_units, activation="relu", name="dense", dtype=dtype)(x)
    # Linear heads in float32: log σ² must be free to go negative (σ < 1).
    z_mean = layers.Dense(config.latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(config.latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def decoder_grid(config: VAEConfig) -> int:
    """Side of the decoder's first feature map: image_size / 2**blocks (4 at 128 px)."""
    return config.image_size // 2 ** len(config.decoder_filters)


def build_decoder(config: VAEConfig, dtype=None, sync_bn: bool = False) -> keras.Model:
    """(B, latent_dim) codes → (B, S, S, 3) images in [0, 1], float32."""
    grid, first = decoder_grid(config), config.decoder_filters[0]
    z = keras.Input((config.latent_dim,), name="z")
    x = layers.Dense(grid * grid * first, activation="relu", name="dense", dtype=dtype)(z)
    x = layers.Reshape((grid, grid, first), name="grid", dtype=dtype)(x)
    for i, filters in enumerate(config.decoder_filters, start=1):
        x = layers.UpSampling2D(2, name=f"dec{i}_up", dtype=dtype)(x)
        x = _conv_bn_relu(x, filters, f"dec{i}a", dtype, sync_bn, config.batchnorm_momentum)
        x = _conv_bn_relu(x, filters, f"dec{i}b", dtype, sync_bn, config.batchnorm_momentum)
    logits = layers.Conv2D(3, 3, padding="same", name="logits", dtype="float32")(x)
    return _decoder_model(z, logits)


def _decoder_model(z, logits) -> keras.Model:
    # Sigmoid as its own layer: the Bernoulli likelihood reads the logits before it.
    images = layers.Activation("sigmoid", name="rgb", dtype="float32")(logits)
    return keras.Model(z, images, name="decoder")


# disentanglement_lib's methods/shared/architectures.py (conv_encoder, deconv_decoder):
# (filters, kernel) of each stride-2 layer, and the dense widths.
DLIB_ENCODER = ((32, 4), (32, 4), (64, 2), (64, 2))
DLIB_DECODER = ((64, 4), (32, 4), (32, 4))
DLIB_DENSE = 256


def build_dlib_encoder(config: VAEConfig, dtype=None) -> keras.Model:
    """disentanglement_lib's conv_encoder: 4 stride-2 ReLU convs, Dense 256, linear heads."""
    images = keras.Input((config.image_size, config.image_size, 3), name="images")
    x = images
    for i, (filters, kernel) in enumerate(DLIB_ENCODER, start=1):
        x = layers.Conv2D(filters, kernel, strides=2, padding="same", activation="relu",
                          name=f"enc{i}_conv", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    x = layers.Dense(DLIB_DENSE, activation="relu", name="dense", dtype=dtype)(x)
    z_mean = layers.Dense(config.latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(config.latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_discriminator(config: VAEConfig) -> keras.Model:
    """FactorVAE's discriminator (disentanglement_lib's fully_connected_discriminator).

    (B, latent_dim) codes → (B, 2) logits: class 0 "from q(z)", class 1 "permuted".
    Six Dense 1000 with leaky ReLU (slope 0.2); float32 throughout.
    """
    z = keras.Input((config.latent_dim,), name="z")
    x = z
    for i in range(1, 7):
        x = layers.Dense(1000, name=f"d{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"d{i}_leaky")(x)
    return keras.Model(z, layers.Dense(2, name="logits")(x), name="discriminator")


def build_dlib_decoder(config: VAEConfig, dtype=None) -> keras.Model:
    """disentanglement_lib's deconv_decoder: Dense 256, Dense to a (S/16)² × 64 grid, 4 stride-2 deconvs.

    At 64 px the grid is the library's 4 × 4 × 64 (Dense 1024); other sizes scale it.
    """
    grid = config.image_size // 16
    z = keras.Input((config.latent_dim,), name="z")
    x = layers.Dense(DLIB_DENSE, activation="relu", name="dense1", dtype=dtype)(z)
    x = layers.Dense(grid * grid * 64, activation="relu", name="dense2", dtype=dtype)(x)
    x = layers.Reshape((grid, grid, 64), name="grid", dtype=dtype)(x)
    for i, (filters, kernel) in enumerate(DLIB_DECODER, start=1):
        x = layers.Conv2DTranspose(filters, kernel, strides=2, padding="same", activation="relu",
                                   name=f"dec{i}_deconv", dtype=dtype)(x)
    logits = layers.Conv2DTranspose(3, 4, strides=2, padding="same", name="logits", dtype="float32")(x)
    return _decoder_model(z, logits)


class VAE(keras.Model):
    """β-VAE with reconstruction + β·KL + γ·perceptual loss and one tracker per term."""

    def __init__(self, encoder, decoder, feature_extractor=None, *, config: VAEConfig,
                 discriminator=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.discriminator = discriminator  # FactorVAE only
        self.discriminator_optimizer = None
        # The same layers up to the sigmoid: the Bernoulli likelihood needs the logits.
        self.decoder_logits = keras.Model(decoder.input, decoder.get_layer("logits").output,
                                          name="decoder_logits")
        self.feature_extractor = feature_extractor
        self.config = config
        self.sampling = Sampling(seed=config.seed, name="sampling")
        # Training steps taken, skipped ones included: under mixed_float16 the loss-scale
        # optimizer skips non-finite steps without counting them, so its `iterations`
        # cannot number checkpoints, logs or the sampling noise. Saved with the weights.
        self.global_step = self.add_weight(name="global_step", shape=(), dtype="int64",
                                           initializer="zeros", trainable=False,
                                           aggregation="only_first_replica")
        names = ["loss", "reconstruction", "kl", "total_correlation", "perceptual", "active_dims"]
        if config.objective.startswith("dip_vae"):
            names.append("dip")
        if config.objective == "factor_vae":
            names += ["tc_discriminator", "discriminator_loss", "discriminator_accuracy"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def vae_variables(self):
        """What the VAE's optimizer trains: encoder and decoder (never the discriminator)."""
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def call(self, images, training=False):
        """Reconstruct from the posterior mean (deterministic)."""
        z_mean, _ = self.encoder(images, training=training)
        return self.decoder(z_mean, training=training)

    # ------------------------------------------------------------------ schedules

    def kl_weight(self, step):
        """β, ramped linearly from 0 over `kl_warmup_steps` if warm-up is on."""
        beta = tf.constant(self.config.beta, tf.float32)
        if self.config.kl_warmup_steps <= 0:
            return beta
        ramp = tf.cast(step, tf.float32) / float(self.config.kl_warmup_steps)
        return beta * tf.minimum(1.0, ramp)

    def capacity(self, step):
        """C in nats, rising linearly to `capacity_max` over `capacity_steps` (Burgess et al.)."""
        ramp = tf.cast(step, tf.float32) / float(self.config.capacity_steps)
        return self.config.capacity_max * tf.minimum(1.0, ramp)

    # ------------------------------------------------------------------ loss

    def loss_terms(self, images, seed, training: bool):
        """Per-image loss terms (each (B,), float32; "z": the samples, (B, D)) and the per-dimension KL (B, D).

        The objective (config `objective`, as disentanglement_lib's methods):
            beta_vae      recon + β·KL  (β ramped over kl_warmup_steps if set)
            annealed_vae  recon + γ_c·|KL − C(step)|  (per image; the library takes the batch-mean KL)
            beta_tc_vae   recon + KL + (β − 1)·TC
            dip_vae_i/ii  recon + KL + DIP penalty of the batch's covariance
            factor_vae    recon + KL + γ·TC, TC = log D(z)/(1 − D(z)) from a discriminator
                          trained in the same step on codes vs dimension-wise permuted codes
        TC and DIP are functions of the whole batch: under tf.distribute the posteriors
        of every replica are gathered (the gather's gradient is an all-reduce), so N
        replicas compute what one device computes on the same global batch.
        """
        config = self.config
        z_mean, z_log_var = self.encoder(images, training=training)
        z = self.sampling(z_mean, z_log_var, seed=seed)
        logits = self.decoder_logits(z, training=training)
        reconstructions = ops.sigmoid(ops.cast(logits, "float32"))
        if config.likelihood == "bernoulli":
            recon = losses.bernoulli_loss(images, logits)
        else:
            recon = losses.reconstruction_loss(images, reconstructions)
        kl_dims = losses.kl_per_dimension(z_mean, z_log_var)
        kl = tf.reduce_sum(kl_dims, axis=1)
        if self.feature_extractor is not None and config.gamma > 0:
            perceptual = losses.perceptual_loss(self.feature_extractor, images, reconstructions)
        else:
            perceptual = tf.zeros_like(recon)
        batch_mean, batch_log_var = _global_batch(z_mean), _global_batch(z_log_var)
        tc = losses.total_correlation(z, batch_mean, batch_log_var)
        step = self.global_step
        terms = {"reconstruction": recon, "kl": kl, "total_correlation": tc, "perceptual": perceptual}
        if config.objective == "annealed_vae":
            regulariser = losses.capacity_objective(kl, self.capacity(step), config.capacity_weight)
        elif config.objective == "beta_tc_vae":
            regulariser = kl + (config.beta - 1.0) * tc
        elif config.objective.startswith("dip_vae"):
            dip = losses.dip_regulariser(batch_mean, batch_log_var, config.lambda_od,
                                         config.lambda_d_factor * config.lambda_od,
                                         config.objective.rsplit("_", 1)[1])
            # The batch's penalty, counted once per batch: every image carries it, and the
            # training step averages over the batch.
            regulariser = kl + dip
            terms["dip"] = tf.fill(tf.shape(kl), dip)
        elif config.objective == "factor_vae":
            terms["tc_discriminator"] = losses.discriminator_total_correlation(
                self.discriminator(z, training=training))
            regulariser = kl + config.factor_gamma * terms["tc_discriminator"]
        else:
            regulariser = self.kl_weight(step) * kl
        terms["loss"] = recon + regulariser + config.gamma * perceptual
        terms["z"] = z  # (B, D) the samples: FactorVAE's discriminator step reads the same ones
        return terms, kl_dims

    def discriminator_terms(self, z, global_batch):
        """FactorVAE's discriminator loss (per replica, scaled by the global batch) and accuracy (B,).

        The permutation is drawn over the GLOBAL batch with a seed shared by all replicas,
        and each replica scores its own slice of it: N replicas equal one device.
        """
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context else 0
        local = tf.shape(z)[0]
        z = tf.stop_gradient(tf.cast(z, tf.float32))
        seed = tf.stack([tf.constant(self.config.seed * 2 + 3, tf.int64),
                         tf.cast(self.global_step, tf.int64)])
        permuted = losses.permute_dims(_global_batch(z), seed)[replica * local:(replica + 1) * local]
        real, fake = self.discriminator(z, training=True), self.discriminator(permuted, training=True)
        per_sample = losses.discriminator_loss(real, fake)
        accuracy = 0.5 * (tf.cast(real[:, 0] > real[:, 1], tf.float32) + tf.cast(fake[:, 1] > fake[:, 0], tf.float32))
        return tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch), per_sample, accuracy

    def _seed(self, stream: int):
        """A stateless seed unique to (run seed, stream, step, replica)."""
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
        replicas = context.num_replicas_in_sync if context else 1
        step = tf.cast(self.global_step, tf.int64) if stream == 0 else tf.constant(0, tf.int64)
        return tf.stack([tf.constant(self.config.seed * 2 + stream, tf.int64), step * replicas + replica])

    def _update_trackers(self, terms, kl_dims):
        for name, values in terms.items():
            self.trackers[name].update_state(values)
        # Active dimensions: batch-mean KL above 0.01 nats (a collapsed dim carries ~0).
        active = tf.reduce_sum(tf.cast(tf.reduce_mean(kl_dims, axis=0) > 0.01, tf.float32))
        self.trackers["active_dims"].update_state(active)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def build(self, input_shape=None):
        # Encoder and decoder are functional (built at creation); Sampling has no weights.
        self.sampling.built = True
        self.built = True

    def train_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context else 1
        global_batch = tf.shape(images)[0] * replicas
        with tf.GradientTape() as tape:
            terms, kl_dims = self.loss_terms(images, self._seed(0), training=True)
            z = terms.pop("z")
            # Gradients of all replicas are SUMMED when applied: divide by the global batch.
            loss = tf.nn.compute_average_loss(terms["loss"], global_batch_size=global_batch)
            scaled = self.optimizer.scale_loss(loss)  # loss scaling for mixed_float16
        if self.discriminator is not None:
            # Its own step on the same samples, before the VAE's update (as the library).
            with tf.GradientTape() as d_tape:
                d_loss, d_per_sample, d_accuracy = self.discriminator_terms(z, global_batch)
            d_variables = self.discriminator.trainable_variables
            self.discriminator_optimizer.apply(d_tape.gradient(d_loss, d_variables), d_variables)
            terms = {**terms, "discriminator_loss": d_per_sample, "discriminator_accuracy": d_accuracy}
        variables = self.vae_variables
        gradients = tape.gradient(scaled, variables)
        if self.config.clipnorm > 0:
            gradients = self._clip_global_norm(gradients, replicas)
        self.optimizer.apply(gradients, variables)
        self.global_step.assign_add(1)
        return self._update_trackers(terms, kl_dims)

    def _clip_global_norm(self, gradients, replicas: int):
        """Clip the GLOBAL batch's gradient by its global norm (`clipnorm`), as one device would.

        Keras's clipnorm clips each tensor on its own, and each replica's part before the
        cross-replica sum. Here the replicas' gradients are summed first, clipped as one
        vector, and each replica passes 1/N of the result, which the optimizer sums back.
        Under loss scaling the threshold is scaled alike (a non-finite step stays
        non-finite and is skipped).
        """
        context = tf.distribute.get_replica_context()
        if replicas > 1:
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        threshold = tf.constant(self.config.clipnorm, tf.float32)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            threshold = threshold * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        clipped, _ = tf.clip_by_global_norm(gradients, threshold)
        return [g / replicas for g in clipped] if replicas > 1 else clipped

    def test_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        terms, kl_dims = self.loss_terms(images, self._seed(1), training=False)
        z = terms.pop("z")
        if self.discriminator is not None:
            context = tf.distribute.get_replica_context()
            global_batch = tf.shape(images)[0] * (context.num_replicas_in_sync if context else 1)
            _, d_per_sample, d_accuracy = self.discriminator_terms(z, global_batch)
            terms = {**terms, "discriminator_loss": d_per_sample, "discriminator_accuracy": d_accuracy}
        return self._update_trackers(terms, kl_dims)


def _global_batch(values):
    """`values` (B, ...) of every replica, concatenated in batch order; differentiable."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_gather(values, axis=0)


def learning_rate_schedule(config: VAEConfig):
    """The original's schedule: ExponentialDecay(5e-4, 2500, 0.96, staircase=True)."""
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, config.decay_steps, config.decay_rate, staircase=True
    )


def build_vae(config: VAEConfig, *, vgg_from_checkpoint: bool = False) -> VAE:
    """Encoder, decoder and (if γ > 0) the frozen VGG16 feature extractor, compiled, built.

    vgg_from_checkpoint: build VGG16 without fetching weights, because a checkpoint
    about to be loaded holds them.
    """
    dtype = None if config.precision == "float32" else config.precision
    # The same layer class on any number of replicas (on one it is BatchNorm's fused kernel),
    # so that weights saved by a multi-GPU run load into a single-device model.
    sync_bn = config.sync_batchnorm
    if config.network == "disentanglement_lib":
        encoder, decoder = build_dlib_encoder(config, dtype), build_dlib_decoder(config, dtype)
    else:
        encoder, decoder = build_encoder(config, dtype, sync_bn), build_decoder(config, dtype, sync_bn)
    extractor = None
    if config.gamma > 0:
        extractor = losses.build_feature_extractor(
            config.image_size, config.perceptual_layer,
            "checkpoint" if vgg_from_checkpoint else config.vgg_weights, dtype=dtype,
        )
    discriminator = build_discriminator(config) if config.objective == "factor_vae" else None
    vae = VAE(encoder, decoder, extractor, config=config, discriminator=discriminator, name="vae")
    optimizer = keras.optimizers.Adam(learning_rate_schedule(config))  # clipping: VAE.train_step
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    vae.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    # Build everything (model and optimizer) before fit: BackupAndRestore and weight
    # loading need the variables to exist, or optimizer state is silently not restored.
    vae(tf.zeros((1, config.image_size, config.image_size, 3)))
    vae.optimizer.build(vae.vae_variables)
    if discriminator is not None:
        vae.discriminator_optimizer = keras.optimizers.Adam(
            config.discriminator_learning_rate, beta_1=0.5, beta_2=0.9, epsilon=1e-8)
        vae.discriminator_optimizer.build(discriminator.trainable_variables)
    return vae
