"""Choosing where work runs: one strategy object for CPU, one GPU, many GPUs, many workers.

    auto: MultiWorkerMirrored if TF_CONFIG names a cluster, else Mirrored over all GPUs
          if there are several, OneDevice on a single GPU, the default strategy on CPU.

Also holds the one workaround `fit` needs under MultiWorkerMirroredStrategy in
Keras 3.15 (keras-team/keras#20585, tensorflow/tensorflow#72388), applied only
when that strategy is created.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings

import tensorflow as tf

log = logging.getLogger(__name__)


def cluster_spec_from_env() -> dict | None:
    """The `cluster` of TF_CONFIG if it names more than one task, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise ValueError("TF_CONFIG is not a JSON object with a 'cluster' entry") from None
    tasks = sum(len(v) for v in cluster.values())
    return cluster if tasks > 1 else None


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy for `name` (see module docstring); logs what was chosen and why."""
    if name == "auto":
        # Physical devices only: listing logical ones starts the runtime, after which
        # MultiWorker can no longer configure its collectives.
        gpus = len(tf.config.list_physical_devices("GPU"))
        if cluster_spec_from_env():
            name = "multi_worker"
        else:
            name = "mirrored" if gpus > 1 else "one_device" if gpus == 1 else "default"
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        patch_keras_for_multi_worker()  # fix B below applies to Mirrored too
        # One MirroredStrategy per device set and process: a second one reuses the
        # collective keys of the first and fails with shape mismatches.
        key = tuple(devices)
        if key not in _MIRRORED:
            _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
        strategy = _MIRRORED[key]
    elif name == "multi_worker":
        patch_keras_for_multi_worker()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise ValueError(f"--strategy: unknown {name!r}")
    log.info("strategy: %s (%s) with %d replica(s)", name, type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def validation_steps(strategy, steps: int | None) -> int | None:
    """The `validation_steps` to give `fit`: `steps`, except under MultiWorker.

    Keras 3.15 cannot start a validation of a set number of steps under
    MultiWorkerMirroredStrategy (its distributed iterator fails), so there every
    validation covers the whole split (None) and the cap applies on one machine only.
    """
    if steps and is_multi_worker(strategy):
        log.info("MultiWorker: each validation covers the whole split (validation_steps ignored)")
        return None
    return steps


def check_global_batch(batch_size: int, strategy) -> None:
    """Refuse a global batch that does not split evenly over the replicas (`--batch-size`)."""
    from common.config import ConfigError

    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"--batch-size: {batch_size} is not divisible by the {replicas} replicas; "
                          f"use a multiple of {replicas}")


def shard_by_data(strategy, *datasets: tf.data.Dataset) -> tuple[tf.data.Dataset, ...]:
    """Under MultiWorker, shard by DATA: each worker keeps its share of every global batch."""
    if not is_multi_worker(strategy):
        return datasets
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tuple(ds.with_options(options) for ds in datasets)


def fit_verbosity(verbose: int | str | None) -> int | str:
    """Keras `verbose`: as given, else a progress bar on a terminal and one line per epoch in a log."""
    if verbose is not None:
        return verbose
    import sys

    return 1 if sys.stdout.isatty() else 2


@contextlib.contextmanager
def quiet_end_of_data():
    """Silence Keras's warning at the end of every dataset of unknown length (ours skip bad files)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def worker_index() -> int:
    """This worker's index in TF_CONFIG (0 when not in a cluster)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    return int(json.loads(raw).get("task", {}).get("index", 0))


def task_name() -> str:
    """This task's unique name in the cluster, e.g. "worker-1" or "chief-0" ("worker-0" alone).

    Index alone is not unique: with an explicit chief, chief 0 and worker 0 both exist.
    """
    raw = os.environ.get("TF_CONFIG")
    task = json.loads(raw).get("task", {}) if raw else {}
    return f"{task.get('type', 'worker')}-{int(task.get('index', 0))}"


def is_chief() -> bool:
    """The worker that writes shared outputs (TensorBoard, exports, monitor images)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return int(task.get("index", 0)) == 0


_PATCHED = False
_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}


def patch_keras_for_multi_worker() -> None:
    """Make `fit`/`evaluate` work under MultiWorkerMirroredStrategy (written for Keras 3.15.1).

    A. `reduce_per_replica` reduces scalar logs with `strategy.reduce("MEAN", v, axis=0)`,
       which raises "Invalid reduction dimension 0 for input with 0 dimensions"; an
       element-wise mean over replicas (axis=None) is what the single-worker path computes.
    B. `_maybe_symbolic_build` all-reduces a whole data batch across replicas just to
       learn its shapes: under MultiWorker it fails on PerReplica values, and under
       Mirrored an uneven last batch (e.g. 5 validation images on 2 replicas: 3 + 2)
       fails in AddN. The first local replica's batch has the same shapes and dtypes.
    Idempotent; applied when a Mirrored or MultiWorker strategy is created.
    """
    global _PATCHED
    if _PATCHED:
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src import tree

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None:
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v,
                batch,
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _PATCHED = True
    log.info("patched Keras %s for MultiWorkerMirroredStrategy (keras-team/keras#20585)",
             __import__("keras").__version__)
