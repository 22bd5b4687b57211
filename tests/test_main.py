"""main.py end to end: train → test → generate on synthetic data, TensorBoard, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

import main as cli
from vae import model  # noqa: F401  (registers custom layers for load_model)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("main")
    run_dir = base / "run"
    code = cli.main(TINY + ["--run-dir", str(run_dir), "--data-root", str(base / "datasets")])
    assert code == 0
    return run_dir


def _events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def test_main_leaves_a_complete_run_directory(finished_run):
    for name in ["config.json", "encoder.keras", "decoder.keras", "vae.weights.h5", "metrics.json",
                 "history.csv", "demo/demo_grid.png"]:
        assert (finished_run / name).is_file(), name
    assert len(list((finished_run / "demo").glob("demo_0*.png"))) == 4
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == [
        "step-00000004.weights.h5", "step-00000008.weights.h5"]
    monitor = sorted(p.name for p in (finished_run / "monitor").iterdir())
    assert "reconstructions_step-00000000.png" in monitor and "generations_step-00000008.png" in monitor
    metrics = json.loads((finished_run / "metrics.json").read_text())
    for key in ["test_loss", "test_reconstruction", "test_kl", "test_perceptual", "test_psnr",
                "test_ssim", "test_pearson", "baseline_mean_image_psnr"]:
        assert np.isfinite(metrics[key]), key
    assert metrics["step"] == 8
    assert json.loads((finished_run / "config.json").read_text())["latent_dim"] == 4


def test_exported_models_reload_and_reconstruct(finished_run):
    encoder = keras.models.load_model(finished_run / "encoder.keras")
    decoder = keras.models.load_model(finished_run / "decoder.keras")
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    z_mean, z_log_var = encoder(images)
    assert z_mean.shape == (2, 4) and z_log_var.shape == (2, 4)
    out = decoder(z_mean).numpy()
    assert out.shape == (2, 32, 32, 3) and 0 <= out.min() and out.max() <= 1


def test_tensorboard_has_losses_learning_rate_and_image_grids(finished_run):
    train = _events(finished_run / "logs" / "train")
    scalars = set(train.PluginTagToContent("scalars"))
    assert {"loss/loss", "loss/reconstruction", "loss/kl", "loss/perceptual",
            "latent/active_dims", "optimizer/learning_rate"} <= scalars
    steps = [e.step for e in train.Tensors("loss/loss")]
    assert steps == [2, 4, 6, 8]  # log_every=2, global steps
    lr = float(tf.make_ndarray(train.Tensors("optimizer/learning_rate")[0].tensor_proto))
    assert lr == pytest.approx(5e-4)
    assert {"monitor/reconstructions", "monitor/generations"} <= set(train.PluginTagToContent("images"))
    validation = _events(finished_run / "logs" / "validation")
    assert [e.step for e in validation.Tensors("loss/loss")] == [4, 8]
    test = _events(finished_run / "logs" / "test")
    assert "test/test_psnr" in test.PluginTagToContent("scalars")


def test_running_a_finished_command_again_changes_nothing(finished_run, tmp_path):
    before = (finished_run / "vae.weights.h5").read_bytes()
    code = cli.main(["train"] + TINY + ["--run-dir", str(finished_run),
                                        "--data-root", str(finished_run.parent / "datasets")])
    assert code == 0
    history = (finished_run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 rounds, not retrained
    assert len(before) > 0


def test_generate_subcommand_writes_images(finished_run, tmp_path):
    code = cli.main(["generate", "--run-dir", str(finished_run), "--count", "3", "--out", str(tmp_path)])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "generated_0000.png", "generated_0001.png", "generated_0002.png", "generated_grid.png"]


def test_evaluate_subcommand_rewrites_metrics(finished_run):
    (finished_run / "metrics.json").unlink()
    assert cli.main(["evaluate", "--run-dir", str(finished_run)]) == 0
    assert "test_psnr" in json.loads((finished_run / "metrics.json").read_text())


def test_changed_settings_in_an_existing_run_dir_are_refused(finished_run, capsys):
    code = cli.main(["train"] + TINY + ["--run-dir", str(finished_run), "--latent-dim", "8"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --run-dir:") and "latent_dim" in err and "\n" not in err


@pytest.mark.parametrize("argv, flag", [
    (["--data", "synthetic", "--image-size", "100"], "--image-size"),
    (["--data", "synthetic", "--beta", "-2"], "--beta"),
    (["--data", "/no/such/folder"], "--data"),
    (["evaluate", "--run-dir", "/no/such/run"], "--run-dir"),
])
def test_usage_errors_are_one_line_with_exit_code_2(argv, flag, capsys, tmp_path):
    code = cli.main(argv + ["--run-dir", str(tmp_path / "r")] if argv[0] != "evaluate" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {flag}") and "\n" not in err


def _train_command(run_dir: Path, data_root: Path) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "train", *TINY, "--run-dir", str(run_dir),
            "--data-root", str(data_root), "--max-steps", "160", "--checkpoint-every", "8"]


def test_plain_main_without_network_fails_in_one_line_pointing_to_synthetic(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a local port nobody listens on: "no network", offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CASTLE_DREAMER_DATA_URL", f"http://127.0.0.1:{port}/")
    code = cli.main(["--run-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "datasets")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: --data reduced_128:") and "--data synthetic" in err
    assert "\n" not in err


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_good_weights(tmp_path, capsys, monkeypatch):
    from vae.config import VAEConfig
    from vae.model import VAE, build_vae

    original = VAE.loss_terms

    def poisoned(self, images, seed, training):
        terms, kl_dims = original(self, images, seed, training)
        # From the 6th step on, the loss is NaN (its gradient too).
        if training:
            terms["loss"] += tf.where(self.optimizer.iterations >= 5, float("nan"), 0.0)
        return terms, kl_dims

    monkeypatch.setattr(VAE, "loss_terms", poisoned)
    run_dir = tmp_path / "run"
    argv = ["train", *TINY, "--run-dir", str(run_dir), "--data-root", str(tmp_path / "datasets"),
            "--max-steps", "12"]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err == (f"error: the loss became non-finite at step 6; the last good state is in "
                   f"{run_dir / 'backup'} and {run_dir / 'checkpoints'}; try a lower --learning-rate "
                   "or --clipnorm 1.0, then run the same command to resume")
    assert not (run_dir / "vae.weights.h5").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000004.weights.h5"]
    backup = run_dir / "backup" / "worker-0"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    model = build_vae(VAEConfig.load(run_dir / "config.json"), vgg_from_checkpoint=True)
    model.load_weights(backup / "latest.weights.h5")
    assert int(model.optimizer.iterations.numpy()) == 4
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_a_config_file_changes_only_the_settings_it_names(tmp_path):
    import argparse

    from vae.config import add_config_arguments, config_from_args

    (tmp_path / "my.json").write_text('{"beta": 4}')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--preset", "small", "--config", str(tmp_path / "my.json")]))
    assert config.beta == 4.0
    assert (config.image_size, config.latent_dim, config.data) == (64, 16, "synthetic_grid")  # the preset's


def test_a_resume_takes_its_settings_from_the_run_directory(finished_run):
    # No flags but the run directory: the saved config.json is the run's settings.
    assert cli.main(["train", "--run-dir", str(finished_run), "--quiet"]) == 0
    # The remedies the non-finite-loss error suggests are accepted on a resume.
    assert cli.main(["train", "--run-dir", str(finished_run), "--quiet", "--learning-rate", "1e-4",
                     "--clipnorm", "1.0"]) == 0
    assert json.loads((finished_run / "config.json").read_text())["clipnorm"] == 1.0


def test_each_cluster_task_backs_up_into_its_own_folder(monkeypatch):
    from common import distribute

    names = set()
    for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 0}, {"type": "worker", "index": 1}):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                    "task": task}))
        names.add(distribute.task_name())
    assert names == {"chief-0", "worker-0", "worker-1"}
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.task_name() == "worker-0"


def test_train_scalars_are_means_of_the_steps_since_the_previous_point(tmp_path):
    from vae.monitor import ScalarLogger

    class Model:  # what the logger reads of the model
        global_step = tf.Variable(0, dtype=tf.int64)
        stop_training = False

        class optimizer:
            learning_rate = 0.5

    logger = ScalarLogger(tmp_path, every=2)
    logger.set_model(Model())
    written = []
    logger.writer = lambda name: tf.summary.create_noop_writer()
    tf_scalar = tf.summary.scalar
    try:
        tf.summary.scalar = lambda tag, value, **kw: written.append((tag, round(float(value), 6)))
        logger.on_epoch_begin(0)
        losses = [10.0, 20.0, 30.0, 50.0]
        for batch, loss in enumerate(losses):
            Model.global_step.assign(batch + 1)
            running = float(np.mean(losses[:batch + 1]))  # what Keras passes: the round's running mean
            logger.on_train_batch_end(batch, {"loss": running})
        assert written == []  # a round's points are written when it ends, after its backup
        logger.on_epoch_end(0)
    finally:
        tf.summary.scalar = tf_scalar
    assert [v for tag, v in written if tag == "loss/loss"] == [15.0, 40.0]  # not the running 27.5


def _weights(path: Path) -> list:
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: out.append((key, item[()])) if isinstance(item, h5py.Dataset) else None)
    return out


@pytest.mark.slow
def test_a_run_killed_twice_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    """Exact resume: weights, optimizer, step, noise AND the data stream continue where they were.

    The clean and the killed run are separate processes with the same --seed, so their
    equality also shows that the seed fixes the initial weights and the data order.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def command(run_dir):
        return [sys.executable, str(ROOT / "main.py"), "train", *TINY, "--deterministic", "--max-steps", "40",
                "--run-dir", str(run_dir), "--data-root", str(tmp_path / "datasets")]

    subprocess.run(command(tmp_path / "clean"), env=env, check=True, capture_output=True, timeout=300)
    rng = np.random.default_rng()
    killed = tmp_path / "killed"
    metadata = killed / "backup" / "worker-0" / "training_metadata.json"
    for at_least in sorted(rng.choice(np.arange(1, 8), size=2, replace=False)):  # two random rounds
        process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        try:
            while True:
                assert process.poll() is None and time.time() < deadline, "no chance to kill it"
                try:
                    if json.loads(metadata.read_text())["epoch"] >= at_least:
                        break
                except (FileNotFoundError, json.JSONDecodeError, KeyError):
                    pass
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next round
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
        assert process.returncode == -signal.SIGKILL
        assert not (killed / "vae.weights.h5").exists()
    last = subprocess.run(command(killed), env=env, check=True, capture_output=True, text=True, timeout=300)
    resumed_at = int(last.stderr.split("resumed at step ")[1].split()[0])
    assert 4 <= resumed_at <= 40 and resumed_at % 4 == 0  # whole rounds of validate_every=4 steps
    # One row per round and every train scalar logged once: nothing of a killed round
    # was logged before its resume trained it again.
    rounds = [int(line.split(",")[0]) for line in (killed / "history.csv").read_text().splitlines()[1:]]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 9
    steps = [e.step for e in _events(killed / "logs" / "train").Tensors("loss/loss")]
    assert steps == list(range(2, 41, 2)), [s for s in set(steps) if steps.count(s) > 1]
    clean, resumed = _weights(tmp_path / "clean" / "vae.weights.h5"), _weights(killed / "vae.weights.h5")
    assert [k for k, _ in clean] == [k for k, _ in resumed] and len(clean) > 20
    different = [k for (k, a), (_, b) in zip(clean, resumed) if not np.array_equal(a, b)]
    assert different == []
