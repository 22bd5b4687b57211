"""Traversals, interpolation, latent PCA, loss curves, GIFs and the CLI subcommands that draw them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

import main as cli
from vae import visualize

TINY = ["--preset", "tiny", "--quiet"]


def _linear_decoder(latent_dim=3, size=4):
    """A numpy "decoder": pixel brightness = 0.5 + 0.1·z_d in channel d mod 3."""
    def decode(z, training=False):
        z = np.asarray(z, np.float32)
        out = np.full((len(z), size, size, 3), 0.5, np.float32)
        for d in range(z.shape[1]):
            out[..., d % 3] += 0.1 * z[:, d, None, None]
        return out
    return decode


def test_traversal_changes_only_the_swept_dimension():
    values = np.linspace(-3, 3, 5)
    sweep = visualize.traversal(_linear_decoder(), np.zeros(3), [2, 0], values)
    assert sweep.shape == (2, 5, 4, 4, 3)
    np.testing.assert_allclose(sweep[0, :, 0, 0, 2], 0.5 + 0.1 * values, atol=1e-6)
    np.testing.assert_allclose(sweep[0, :, 0, 0, :2], 0.5, atol=1e-6)
    np.testing.assert_allclose(sweep[1, :, 0, 0, 0], 0.5 + 0.1 * values, atol=1e-6)


def test_kl_ranking_is_zero_for_the_prior_and_orders_dimensions():
    assert visualize.mean_kl_per_dimension(np.zeros((5, 3)), np.zeros((5, 3))) == pytest.approx(np.zeros(3))
    kl = visualize.mean_kl_per_dimension(np.array([[0.0, 2.0, 1.0]]), np.zeros((1, 3)))
    np.testing.assert_allclose(kl, [0.0, 2.0, 0.5])
    assert visualize.top_dimensions(kl, 2).tolist() == [1, 2]


def test_interpolation_paths_hit_both_ends_and_slerp_keeps_the_norm():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 16))
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    for mode in ("linear", "spherical"):
        path = visualize.interpolation_path(z0, z1, 7, mode)
        np.testing.assert_allclose(path[0], z0, atol=1e-5)
        np.testing.assert_allclose(path[-1], z1, atol=1e-5)
    norms = np.linalg.norm(visualize.interpolation_path(z0, z1, 7, "spherical"), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(z0), rtol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        visualize.interpolation_path(z0, z1, 3, "cubic")


def test_labelled_grid_and_gif(tmp_path):
    sweep = visualize.traversal(_linear_decoder(size=8), np.zeros(3), [0, 1], np.linspace(-3, 3, 4))
    grid = visualize.labelled_grid(sweep, ["a", "b"], label_width=30)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 10 + 2, 30 + 4 * 10 + 2, 3)
    path = visualize.save_gif(visualize.traversal_frames(sweep), tmp_path / "t.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4 + 2  # forward, then back without repeating the ends


def test_latent_pca_finds_the_dominant_axis():
    rng = np.random.default_rng(0)
    z = np.zeros((200, 5))
    z[:, 3] = 10 * rng.standard_normal(200)
    z[:, 1] = 0.1 * rng.standard_normal(200)
    proj, ratio = visualize.latent_pca(z)
    assert proj.shape == (200, 2) and ratio[0] > 0.99
    np.testing.assert_allclose(np.abs(proj[:, 0]), np.abs(z[:, 3] - z[:, 3].mean()), atol=1e-2)
    image = visualize.figure_to_array(visualize.latent_pca_figure(z, colour=rng.integers(0, 3, 200),
                                                                  colour_name="roof"))
    assert image.ndim == 3 and image.shape[2] == 3


def test_loss_curves_need_train_and_validation_columns():
    history = pd.DataFrame({"epoch": [0, 1], "loss": [3.0, 2.0], "val_loss": [3.5, 2.5],
                            "kl": [1.0, 1.1], "val_kl": [1.0, 1.2]})
    fig = visualize.loss_curves_figure(history)
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["loss", "kl"]
    with pytest.raises(ValueError, match="history"):
        visualize.loss_curves_figure(pd.DataFrame({"epoch": [0], "loss": [1.0]}))


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("visualize")
    run_dir = base / "run"
    assert cli.main(["train"] + TINY + ["--run-dir", str(run_dir), "--data-root", str(base / "data")]) == 0
    return run_dir


def test_monitor_logs_a_traversal_grid_during_training(run):
    assert (run / "monitor" / "traversal_step-00000000.png").is_file()
    assert (run / "monitor" / "traversal_step-00000008.png").is_file()


def test_traverse_and_interpolate_write_png_gif_and_tensorboard(run):
    assert cli.main(["traverse", "--run-dir", str(run), "--dims", "3", "--steps", "5"]) == 0
    assert cli.main(["interpolate", "--run-dir", str(run), "--steps", "4"]) == 0
    assert cli.main(["interpolate", "--run-dir", str(run), "--random", "--steps", "4"]) == 0
    out = run / "visualize"
    traversal = np.asarray(Image.open(out / "traversal.png"))
    assert traversal.shape[0] == 3 * 34 + 2  # three rows of 32 px
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.n_frames == 4 + 2
    acc = EventAccumulator(str(run / "logs" / "visualize"), size_guidance={"tensors": 0})
    acc.Reload()
    assert {"visualize/traversal", "visualize/interpolation"} <= set(acc.PluginTagToContent("images"))


def test_evaluate_writes_disentanglement_metrics(run):
    assert cli.main(["metrics", "--run-dir", str(run), "--samples", "100", "--votes", "5"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["mig", "factor_vae_score", "dci_disentanglement", "reconstruction_psnr",
                "reconstruction_ssim"]:
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["mig"] <= 1 and 0 <= metrics["factor_vae_score"] <= 1
    assert metrics["step"] == 8  # from history.csv: 2 rounds of validate_every 4
    acc = EventAccumulator(str(run / "logs" / "test"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "test/mig" in acc.PluginTagToContent("scalars")


def test_plots_write_loss_curves_pca_and_monitor_gif(run):
    assert cli.main(["plots", "--run-dir", str(run), "--colour-by", "roof"]) == 0
    for name in ["loss_curves.png", "latent_pca.png", "monitor.gif"]:
        assert (run / "visualize" / name).is_file(), name


def test_plots_put_the_latent_means_in_the_embedding_projector(run):
    assert cli.main(["plots", "--run-dir", str(run), "--limit", "50"]) == 0
    folder = run / "logs" / "projector"
    config = (folder / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in config and "sprite.png" in config
    rows = (folder / "metadata.tsv").read_text().strip().split("\n")
    assert rows[0].split("\t")[:2] == ["wall_colour", "roof"] and len(rows) == 1 + 50
    sprite = Image.open(folder / "sprite.png")
    assert sprite.size == (8 * 32, 8 * 32)  # 8 × 8 thumbnails of 32 px, the last 14 blank
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(folder))
    name = next(n for n in reader.get_variable_to_shape_map() if n.startswith("embedding/"))
    assert reader.get_tensor(name).shape == (50, 4)
    # `tensorboard --logdir RUN/logs` shows the projector only for a folder that is a run.
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    assert "projector" in EventMultiplexer().AddRunsFromDirectory(str(run / "logs")).Runs()


def test_explore_without_a_display_writes_a_screenshot(run, monkeypatch):
    import matplotlib

    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    assert cli.main(["explore", "--run-dir", str(run), "--dims", "2"]) == 0
    assert (run / "explorer" / "explorer.png").is_file()


def test_bad_arguments_are_one_line_errors(run, tmp_path, capsys):
    assert cli.main(["traverse", "--run-dir", str(tmp_path)]) == 2
    assert cli.main(["traverse", "--run-dir", str(run), "--index", "9999"]) == 2
    assert cli.main(["plots", "--run-dir", str(run), "--colour-by", "nope"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
