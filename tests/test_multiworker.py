"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train together with fit."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_train_together_and_agree(tmp_path):
    from vae.config import PRESETS, VAEConfig
    from vae.model import build_vae

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir, data_root = tmp_path / "run", tmp_path / "datasets"
    command = [sys.executable, str(ROOT / "main.py"), "train", "--preset", "tiny", "--quiet",
               "--strategy", "multi_worker", "--run-dir", str(run_dir), "--data-root", str(data_root),
               "--max-steps", "8"]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "strategy: multi_worker (CollectiveAllReduceStrategy) with 2 replica(s)" in outputs[0]
    # Only the chief writes the shared outputs.
    assert (run_dir / "encoder.keras").exists() and (run_dir / "logs" / "train").is_dir()
    # Both workers hold the same weights after training (the all-reduce kept them in sync).
    config = VAEConfig(**PRESETS["tiny"])
    weights = []
    for index in range(2):
        backup = run_dir / "backup" / f"worker-{index}"
        assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
        model = build_vae(config, vgg_from_checkpoint=True)
        model.load_weights(backup / "latest.weights.h5")
        assert int(model.optimizer.iterations.numpy()) == 8
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
