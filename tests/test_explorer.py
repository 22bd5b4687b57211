"""The latent explorer driven programmatically under Agg: every control changes the image as it should."""

import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    old_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    import matplotlib

    matplotlib.use("Agg")
    from vae import explorer
    from vae.config import PRESETS, VAEConfig
    from vae.model import build_vae

    vae = build_vae(VAEConfig(**PRESETS["tiny"]))
    images = np.random.default_rng(0).random((5, 32, 32, 3)).astype(np.float32)
    kl = np.array([0.1, 2.0, 0.5, 1.0])
    out = explorer.Explorer(vae.encoder, vae.decoder, images, kl, dims=3,
                            save_dir=tmp_path_factory.mktemp("explorer"))
    yield out
    import matplotlib.pyplot as plt

    plt.close(out.fig)
    if old_backend is None:
        os.environ.pop("MPLBACKEND", None)
    else:
        os.environ["MPLBACKEND"] = old_backend


def test_it_opens_on_dataset_image_0_and_its_reconstruction(app, tmp_path):
    from vae import explorer

    fresh = explorer.Explorer(app.encoder, app.decoder, app.images, app.kl, dims=3, save_dir=tmp_path)
    try:
        code = np.asarray(fresh.encoder(fresh.images[:1], training=False)[0])[0]
        np.testing.assert_allclose(fresh.z, code, atol=1e-5)  # image 0's code, not zeros
        np.testing.assert_allclose(fresh.shown_source.get_array(), fresh.images[0])
        np.testing.assert_allclose(fresh.current_image(), fresh.decode(code), atol=1e-5)
        np.testing.assert_allclose(fresh.shown_recon.get_array(), fresh.current_image(), atol=1e-6)
        assert fresh.current_image().std() > 0  # a picture, not the black panel of before
        assert [s.val for s in fresh.sliders] == pytest.approx(code[fresh.dims].tolist(), abs=1e-5)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fresh.fig)


def test_sliders_are_the_most_informative_dimensions(app):
    assert app.dims.tolist() == [1, 3, 2]
    before = app.current_image().copy()
    app.sliders[0].set_val(2.5)
    assert app.z[1] == pytest.approx(2.5) and not np.allclose(app.current_image(), before)


def test_reset_shows_the_decoding_of_the_zero_code(app):
    app.sliders[1].set_val(-1.0)
    app.click("Reset")
    assert np.all(app.z == 0) and all(s.val == 0 for s in app.sliders)
    np.testing.assert_allclose(app.current_image(), app.decode(np.zeros(4)), atol=1e-6)


def test_invert_negates_and_twice_is_the_identity(app):
    app.range_slider.set_val(1.5)
    app.click("Randomize")
    z, image = app.z.copy(), app.current_image().copy()
    assert np.all(np.abs(z) <= 1.5) and np.any(z != 0)
    app.click("Invert")
    np.testing.assert_allclose(app.z, -z)
    assert not np.allclose(app.current_image(), image)
    app.click("Invert")
    np.testing.assert_allclose(app.current_image(), image, atol=1e-6)


def test_interpolate_moves_between_the_two_stored_codes(app):
    a, b = np.full(4, -1.0, np.float32), np.full(4, 2.0, np.float32)
    app.set_code(a)
    app.click("Set A")
    app.set_code(b)
    app.click("Set B")
    app.t_slider.set_val(0.0)
    np.testing.assert_allclose(app.z, a)
    app.t_slider.set_val(0.5)
    np.testing.assert_allclose(app.z, 0.5, atol=1e-6)
    np.testing.assert_allclose(app.current_image(), app.decode(np.full(4, 0.5)), atol=1e-6)


def test_indexer_shows_the_image_its_reconstruction_and_loads_its_code(app):
    app.index_slider.set_val(3)
    code = np.asarray(app.encoder(app.images[3:4], training=False)[0])[0]
    np.testing.assert_allclose(app.z, code, atol=1e-5)
    np.testing.assert_allclose(app.shown_source.get_array(), app.images[3])
    np.testing.assert_allclose(app.shown_recon.get_array(), app.current_image(), atol=1e-6)
    with pytest.raises(IndexError):
        app.select(99)


def test_save_image_and_screenshot(app, tmp_path):
    from PIL import Image

    app.click("Save image")
    saved = sorted(app.save_dir.glob("explorer_*.png"))
    assert saved and np.asarray(Image.open(saved[-1])).shape == (32, 32, 3)
    shot = app.screenshot(tmp_path / "screen.png")
    assert np.asarray(Image.open(shot)).shape[2] in (3, 4)
