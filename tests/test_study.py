"""The disentanglement study: skips finished runs, resumes interrupted ones, files that reproduce."""

import fcntl
import json
import shutil
import tarfile

import numpy as np
import pytest

from data import facades
from vae import metrics, study, train

pytestmark = pytest.mark.slow

FAST = ["--samples", "200", "--votes", "20", "--round", "4", "--seeds", "0", "--quiet",
        "--only", "beta_tc_vae-beta=6"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    args = ["--results", str(base / "results"), "--runs", str(base / "runs")]
    # An interrupted run: its first round trained and backed up, then stopped and parked,
    # and its run directory lost (another machine, or this one wiped).
    spec = next(s for s in study.PLAN if s.name == "beta_tc_vae-beta=6")
    run_dir = base / "runs" / spec.run_id(0)
    train.train(study.study_config(spec, 0, 4, every=4), run_dir, verbose=0)
    assert study.main(["park", *args]) == 0
    parked = base / "results" / study.PARKED
    assert json.loads((parked / f"{spec.run_id(0)}.json").read_text()) == {"id": spec.run_id(0), "step": 4}
    shutil.rmtree(run_dir)
    assert study.main(["run", "--steps", "8", *FAST, *args]) == 0
    return base, args, spec


def test_a_parked_run_resumes_on_a_machine_without_its_run_directory(finished):
    base, _, spec = finished
    run_dir = base / "runs" / spec.run_id(0)
    history = (run_dir / "history.csv").read_text().strip().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]  # round 1 parked, round 2 resumed
    assert study.training_seconds(run_dir) > 0  # the parked round's events came back with it
    assert not list((base / "results" / study.PARKED).iterdir())  # finished: its parked copy is gone


def test_an_interrupted_run_resumes_and_finishes_with_its_files(finished):
    base, _, spec = finished
    result = json.loads((base / "results" / f"{spec.run_id(0)}.json").read_text())
    assert result["steps"] == 8 and result["objective"] == "beta_tc_vae" and result["settings"] == {"beta": 6.0}
    history = (base / "runs" / spec.run_id(0) / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 2  # header, the first run's round, the resumed round
    codes = np.load(base / "results" / f"{spec.run_id(0)}.npz")["codes"]
    assert codes.shape == (facades.num_combinations(), 10) and codes.dtype == np.float16
    assert (base / "results" / f"{spec.run_id(0)}.png").stat().st_size > 1000
    for key in ("mig", "factor_vae_score", "dci_disentanglement", "test_psnr", "train_s", "kl_per_dim"):
        assert key in result
    assert result["dci_method"] in ("gbt", "ridge") and len(result["labels"]) == 10


def test_a_finished_run_is_skipped(finished):
    base, args, spec = finished
    path = base / "results" / f"{spec.run_id(0)}.json"
    before = path.stat().st_mtime_ns
    assert study.main(["run", "--steps", "8", *FAST, *args]) == 0
    assert path.stat().st_mtime_ns == before


def test_metrics_recomputed_from_the_grid_file_equal_the_json(finished):
    base, _, spec = finished
    result = json.loads((base / "results" / f"{spec.run_id(0)}.json").read_text())
    codes = np.load(base / "results" / f"{spec.run_id(0)}.npz")["codes"]
    again = study.measure(codes, 0, samples=200, votes=20)
    for key in ("mig", "factor_vae_score", "dci_disentanglement", "dci_completeness"):
        assert again[key] == result[key]


def test_remeasure_recomputes_the_metrics_from_the_code_table(finished):
    base, _, spec = finished
    path = base / "results" / f"{spec.run_id(0)}.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "mig": -1.0}))  # as if an earlier metric had a bug
    assert study.main(["remeasure", "--results", str(base / "results")]) == 0
    assert json.loads(path.read_text())["mig"] == result["mig"]


def test_report_writes_table_plot_and_readme_section(finished, tmp_path):
    base, _, _ = finished
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{study.README_BEGIN}\nold\n{study.README_END}\noutro\n")
    assert study.main(["report", "--results", str(base / "results"), "--readme", str(readme),
                       "--logdir", str(tmp_path / "hparams")]) == 0
    text = readme.read_text()
    assert "old" not in text and "| beta\\_tc\\_vae-beta=6 | 0 | 8 |" in text and text.endswith("outro\n")
    assert "| configuration | wall\\_colour | roof |" in text  # the per-factor table follows
    assert (base / "results" / "study.png").exists()


def test_factor_table_averages_each_factor_over_seeds():
    def result(seed, mig, accuracy):
        extra = {} if accuracy is None else {"factor_vae_per_factor": accuracy}
        return {"objective": "beta_vae", "settings": {"beta": 4.0}, "seed": seed, "steps": 10, "train_s": 60.0,
                "mig": mig[0], "factor_vae_score": 0.5, "dci_disentanglement": 0.1, "test_psnr": 20.0,
                "active_dims": 2, "mig_per_factor": mig, **extra}

    text = study.factor_table([result(0, [0.2, 0.0], [1.0, 0.5]), result(1, [0.4, 0.1], [0.5, 0.0])],
                              ("door", "sky"))
    assert text.splitlines()[2] == "| beta\\_vae-beta=4 | 0.30 · 0.75 | 0.05 · 0.25 |"
    # A run measured before per-factor accuracy existed leaves its configuration's cells open.
    text = study.factor_table([result(0, [0.2, 0.0], [1.0, 0.5]), result(1, [0.4, 0.1], None)], ("door", "sky"))
    assert text.splitlines()[2] == "| beta\\_vae-beta=4 | 0.30 · – | 0.05 · – |"


def test_each_configuration_keeps_its_own_colour_whatever_the_ranking():
    names = [spec.name for spec in study.PLAN]
    colours = [study.colour(n) for n in names]
    assert len(set(colours)) == len(names)  # the plan's configurations are told apart
    assert colours[:3] == ["C0", "C1", "C2"]  # the plan's order, not a row's place in the ranked table
    for extra in ("beta_vae-beta=32", "annealed_vae-c_max=25", "factor_vae-gamma=10"):
        assert study.colour(extra) not in colours  # a configuration outside the plan


def test_grid_metrics_of_the_true_factors_are_perfect():
    factors = facades.all_factors().astype(np.float64)
    scores = metrics.grid_metrics(factors, facades.FACTOR_SIZES, 0, num_samples=2000, num_votes=200,
                                  dci_method="ridge")
    assert scores["mig"] > 0.99 and scores["factor_vae_score"] == 1.0


def test_report_puts_every_run_in_the_hparams_dashboard(finished, tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    base, _, spec = finished
    study.report(base / "results", None, tmp_path / "hparams")
    run = EventAccumulator(str(tmp_path / "hparams" / spec.run_id(0)), size_guidance={"tensors": 0})
    run.Reload()
    content = run.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert info.session_start_info.hparams["objective"].string_value == "beta_tc_vae"
    assert info.session_start_info.hparams["beta"].number_value == 6.0
    result = json.loads((base / "results" / f"{spec.run_id(0)}.json").read_text())
    mig = run.Tensors("study/mig")[0]
    import tensorflow as tf

    value = float(tf.make_ndarray(mig.tensor_proto))
    assert mig.step == 8 and value == pytest.approx(result["mig"], rel=1e-6)


def test_training_time_is_the_union_of_every_process_span(tmp_path):
    import tensorflow as tf

    train_logs = tmp_path / "logs" / "train"
    train_logs.mkdir(parents=True)

    def events(name, times):
        with tf.io.TFRecordWriter(str(train_logs / name)) as writer:
            for t in times:
                writer.write(tf.compat.v1.Event(wall_time=t, step=1).SerializeToString())

    events("events.out.tfevents.100.host.a.b.7.0.v2", [100.0, 150.0])  # process 7: 100–160
    events("events.out.tfevents.101.host.a.b.7.1.v2.scalars", [110.0, 160.0])
    events("events.out.tfevents.500.host.a.b.8.0.v2", [500.0, 530.0])  # resumed: 500–530
    events("events.out.tfevents.520.host.a.b.9.0.v2", [520.0, 540.0])  # overlapping another: +10
    assert study.training_seconds(tmp_path) == 60.0 + 30.0 + 10.0


def fake_run(runs, run_id, rounds, every=1000):
    """A run directory as `vae.train` leaves it after `rounds` rounds (the files, not a model)."""
    run_dir = runs / run_id
    backup = run_dir / "backup" / "worker-0"
    backup.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"validate_every": every}))
    (backup / "latest.weights.h5").write_bytes(bytes([rounds]) * 1000)
    (backup / "latest.weights.h5.bkp").write_bytes(b"previous")
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": rounds, "batch": 0}))
    (run_dir / "logs" / "train").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs" / "train" / "events.out.tfevents.1.host.7.0.v2").write_bytes(b"events" * rounds)
    for skipped in ("checkpoints/step-00001000.weights.h5", "monitor/traversal.png"):
        (run_dir / skipped).parent.mkdir(exist_ok=True)
        (run_dir / skipped).write_bytes(b"x")
    return run_dir


def test_park_packs_the_resume_point_only_and_again_only_when_further(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    fake_run(runs, "beta_vae-beta=1-seed=1", rounds=3)
    fake_run(runs, "beta_vae-beta=1-seed=0", rounds=30)
    fake_run(runs, "tmp-99-beta_vae-beta=1-seed=2", rounds=3)  # a staging folder an unpark left
    (results).mkdir()
    (results / "beta_vae-beta=1-seed=0.json").write_text("{}")  # finished: not parked
    assert study.park(results, runs) == (["beta_vae-beta=1-seed=1"], [])
    archive = results / study.PARKED / "beta_vae-beta=1-seed=1.tar.gz"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["backup/worker-0/latest.weights.h5",
                                          "backup/worker-0/training_metadata.json",
                                          "config.json", "logs/train/events.out.tfevents.1.host.7.0.v2"]
    assert sorted(p.name for p in archive.parent.iterdir()) == ["beta_vae-beta=1-seed=1.json",
                                                                "beta_vae-beta=1-seed=1.tar.gz"]
    first = archive.read_bytes()
    assert study.park(results, runs) == ([], [])  # not further: left alone
    (runs / "beta_vae-beta=1-seed=1" / "backup" / "worker-0" / "training_metadata.json").unlink()
    fake_run(runs, "beta_vae-beta=1-seed=1", rounds=3)
    shutil.rmtree(results / study.PARKED)
    assert study.park(results, runs) == (["beta_vae-beta=1-seed=1"], [])
    assert archive.read_bytes() == first  # the same files give the same bytes: no churn in git
    fake_run(runs, "beta_vae-beta=1-seed=1", rounds=4)
    assert study.park(results, runs) == (["beta_vae-beta=1-seed=1"], [])
    assert study.parked_step(results, "beta_vae-beta=1-seed=1") == 4000


def test_park_refuses_a_run_another_process_is_training(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    fake_run(runs, "beta_vae-beta=1-seed=1", rounds=3)
    with open(runs / "beta_vae-beta=1-seed=1.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training `run` process holds it
        assert study.main(["park", "--results", str(results), "--runs", str(runs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: beta_vae-beta=1-seed=1 is being trained by another process; stop it (it keeps "
                   "its last round) and park again"]
    assert not (results / study.PARKED).exists()


def test_unpark_restores_a_missing_or_behind_run_and_keeps_one_ahead(tmp_path):
    runs, results, run_id = tmp_path / "runs", tmp_path / "results", "beta_vae-beta=1-seed=1"
    fake_run(runs, run_id, rounds=5)
    study.park(results, runs)
    shutil.rmtree(runs)
    assert study.unpark(run_id, results, runs)
    weights = runs / run_id / "backup" / "worker-0" / "latest.weights.h5"
    assert weights.read_bytes() == bytes([5]) * 1000 and study.run_step(runs / run_id) == 5000
    assert not study.unpark(run_id, results, runs)  # the same step: nothing to do
    fake_run(runs, run_id, rounds=2)  # a run directory behind the parked copy
    assert study.unpark(run_id, results, runs) and weights.read_bytes() == bytes([5]) * 1000
    fake_run(runs, run_id, rounds=9)  # ahead: kept
    assert not study.unpark(run_id, results, runs) and study.run_step(runs / run_id) == 9000
    assert [p.name for p in runs.iterdir() if p.name.startswith("tmp-")] == []


def test_unpark_refuses_an_archive_with_a_path_outside_the_run(tmp_path):
    results, run_id = tmp_path / "results", "beta_vae-beta=1-seed=1"
    (results / study.PARKED).mkdir(parents=True)
    with tarfile.open(results / study.PARKED / f"{run_id}.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        tar.addfile(info, None)
    (results / study.PARKED / f"{run_id}.json").write_text(json.dumps({"id": run_id, "step": 1000}))
    with pytest.raises(study.ParkedRunError, match="escape.txt"):
        study.unpark(run_id, results, tmp_path / "runs")
    assert not (tmp_path / "escape.txt").exists()
