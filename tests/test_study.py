"""The disentanglement study: skips finished runs, resumes interrupted ones, files that reproduce."""

import json

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
    # An interrupted run: its first round trained and backed up, then stopped.
    spec = next(s for s in study.PLAN if s.name == "beta_tc_vae-beta=6")
    train.train(study.study_config(spec, 0, 4, every=4), base / "runs" / spec.run_id(0), verbose=0)
    assert study.main(["run", "--steps", "8", *FAST, *args]) == 0
    return base, args, spec


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
    assert (base / "results" / "study.png").exists()


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
