"""benchmarks/beta_sweep.py end to end at a tiny size: the script behind the README's β table."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("beta_sweep", ROOT / "benchmarks" / "beta_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(tmp_path, betas="1,4", seeds="0"):
    return ["--betas", betas, "--seeds", seeds, "--steps", "2", "--size", "32", "--latent-dim", "3",
            "--synthetic-count", "80", "--samples", "64", "--votes", "3", "--quiet",
            "--data-root", str(tmp_path / "datasets"), "--out", str(tmp_path / "sweep")]


@pytest.mark.slow
def test_sweep_writes_a_table_a_plot_and_json_and_reuses_finished_betas(sweep, tmp_path, capsys):
    assert sweep.main(_args(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert [r["beta"] for r in summary["results"]] == [1.0, 4.0]
    for r in summary["results"]:
        assert 0.0 <= r["mig"] <= 1.0 and 0.0 <= r["factor_vae_score"] <= 1.0
        assert 0.0 <= r["dci_disentanglement"] <= 1.0 and r["recon_sse"] > 0
    assert lines[0].startswith("| β | seeds | MIG |") and len([l for l in lines if l.startswith("| ")]) == 3
    out = tmp_path / "sweep"
    assert (out / "beta_sweep.png").stat().st_size > 0
    assert json.loads((out / "beta_sweep.json").read_text())["results"] == summary["results"]
    # A finished β is read back, not retrained: its results file is left untouched.
    stamp = (out / "beta-1" / "results.json").stat().st_mtime_ns
    assert sweep.main(_args(tmp_path, "1")) == 0
    assert (out / "beta-1" / "results.json").stat().st_mtime_ns == stamp
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0] == summary["results"][0]
    # A second seed: its own run, and the table shows the mean with the seeds' range.
    assert sweep.main(_args(tmp_path, "1", "0,1")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = json.loads(lines[-1])["per_beta"][0]
    assert row["seeds"] == [0, 1] and (out / "beta-1-seed-1" / "results.json").exists()
    for key in ("mig", "recon_sse"):
        assert row[key + "_min"] <= row[key] <= row[key + "_max"]
    assert f"{row['mig']:.3f} ({row['mig_min']:.3f}–{row['mig_max']:.3f})" in lines[2]


def test_bad_betas_or_seeds_are_a_usage_error(sweep, tmp_path, capsys):
    assert sweep.main(_args(tmp_path, "one,two")) == 2
    assert "--betas" in capsys.readouterr().err
    assert sweep.main(_args(tmp_path, "1", "0.5")) == 2
    assert "--seeds" in capsys.readouterr().err
