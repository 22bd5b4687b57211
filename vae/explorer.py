"""A matplotlib-widgets window to play with a trained decoder (the VAE GUI peer project's controls).

Sliders for the K most informative latent dimensions, Randomize (uniform in ±range),
Reset (the zero code: the "average building"), Invert (negate the code), Interpolate
(a slider between two stored codes A and B), a dataset indexer (image i, its
reconstruction, its code loaded into the sliders) and Save image. Every control is
also a method, so the explorer can be driven from code and from tests under Agg.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from common.images import save_png
from vae.latents import encode_means, top_dimensions
from vae.visualize import dimension_label

log = logging.getLogger(__name__)

SLIDER_RANGE = 3.0  # sliders span ±3 prior standard deviations


class Explorer:
    """The window. `encoder`/`decoder` are the run's Keras models; `images` (N, S, S, 3) in [0, 1].

    `labels`: per dimension (factor, normalised MI) from `vae.visualize.dimension_labels`,
    shown on the sliders ("z3 · roof 0.71"); else each slider shows its mean KL.
    It opens on dataset image 0, its reconstruction and its code.
    """

    def __init__(self, encoder, decoder, images, kl, dims: int = 8, save_dir="explorer", seed: int = 0,
                 labels=None):
        import matplotlib.pyplot as plt
        from matplotlib.widgets import Button, Slider

        self.encoder, self.decoder = encoder, decoder
        self.images = np.asarray(images, np.float32)
        self.latent_dim = int(len(kl))
        self.dims = top_dimensions(kl, min(dims, self.latent_dim))
        self.kl = np.asarray(kl)
        self.save_dir = Path(save_dir)
        self.rng = np.random.default_rng(seed)
        self.z = np.zeros(self.latent_dim, np.float32)
        self.code_a = self.code_b = None
        self._syncing = False
        self._saved = 0
        self.codes = None  # latent means of `images`, computed on first use

        k = len(self.dims)
        self.fig = plt.figure(figsize=(10, 6.5))
        if self.fig.canvas.manager is not None:
            self.fig.canvas.manager.set_window_title("Castle Dreamer explorer")
        self.ax_image = self.fig.add_axes([0.03, 0.35, 0.4, 0.6])
        self.ax_source = self.fig.add_axes([0.46, 0.67, 0.2, 0.28])
        self.ax_recon = self.fig.add_axes([0.46, 0.35, 0.2, 0.28])
        for ax, title in [(self.ax_image, "decoded code"), (self.ax_source, "dataset image"),
                          (self.ax_recon, "its reconstruction")]:
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
        blank = np.zeros(self.images.shape[1:], np.float32)
        self.shown = self.ax_image.imshow(self.decode(self.z))
        self.shown_source = self.ax_source.imshow(blank)
        self.shown_recon = self.ax_recon.imshow(blank)

        self.sliders = []
        height = 0.9 / max(k, 1)
        for i, d in enumerate(self.dims):
            ax = self.fig.add_axes([0.76, 0.95 - (i + 1) * height * 0.62, 0.2, height * 0.45])
            name = dimension_label(int(d), self.kl[d], labels[d] if labels else None)
            slider = Slider(ax, name, -SLIDER_RANGE, SLIDER_RANGE, valinit=0.0)
            slider.label.set_fontsize(7)
            slider.on_changed(lambda v, d=d: self._on_slider(d, v))
            self.sliders.append(slider)

        def slider(rect, label, lo, hi, init, step=None):
            return Slider(self.fig.add_axes(rect), label, lo, hi, valinit=init, valstep=step)

        self.range_slider = slider([0.12, 0.25, 0.25, 0.03], "random range", 0.1, 3.0, 2.0)
        self.t_slider = slider([0.12, 0.19, 0.25, 0.03], "A → B", 0.0, 1.0, 0.0)
        self.t_slider.on_changed(self.interpolate)
        self.index_slider = slider([0.12, 0.13, 0.25, 0.03], "image i", 0, max(len(self.images) - 1, 0), 0, 1)
        self.index_slider.on_changed(lambda v: self.select(int(v)))

        self.buttons = {}
        for i, (name, action) in enumerate([("Randomize", self.randomize), ("Reset", self.reset),
                                            ("Invert", self.invert), ("Set A", self.set_a),
                                            ("Set B", self.set_b), ("Save image", self.save_image)]):
            button = Button(self.fig.add_axes([0.46 + (i % 3) * 0.1, 0.2 - (i // 3) * 0.07, 0.09, 0.05]), name)
            button.on_clicked(lambda event, action=action: action())
            self.buttons[name] = button
        if len(self.images):
            self.select(0)

    # ----------------------------------------------------------------- model
    def decode(self, z) -> np.ndarray:
        """(S, S, 3) image of one code."""
        return np.asarray(self.decoder(np.asarray(z, np.float32)[None], training=False))[0]

    def current_image(self) -> np.ndarray:
        """The image on display, (S, S, 3) floats."""
        return np.asarray(self.shown.get_array(), np.float32)

    def _encode_all(self) -> np.ndarray:
        if self.codes is None:
            self.codes = encode_means(self.encoder, self.images)[0]
        return self.codes

    # ----------------------------------------------------------------- controls
    def set_code(self, z) -> None:
        """Show the decoding of `z` and move the sliders to it."""
        self.z = np.asarray(z, np.float32).copy()
        self._syncing = True
        try:
            for slider, d in zip(self.sliders, self.dims):
                slider.set_val(float(np.clip(self.z[d], -SLIDER_RANGE, SLIDER_RANGE)))
        finally:
            self._syncing = False
        self._redraw()

    def _on_slider(self, d: int, value: float) -> None:
        if not self._syncing:
            self.z[d] = value
            self._redraw()

    def _redraw(self) -> None:
        self.shown.set_data(np.clip(self.decode(self.z), 0, 1))
        self.fig.canvas.draw_idle()

    def randomize(self) -> None:
        """Every dimension uniform in ±(random range)."""
        r = float(self.range_slider.val)
        self.set_code(self.rng.uniform(-r, r, self.latent_dim))

    def reset(self) -> None:
        """The zero code: the prior's mean, the "average building"."""
        self.set_code(np.zeros(self.latent_dim))

    def invert(self) -> None:
        self.set_code(-self.z)

    def set_a(self) -> None:
        self.code_a = self.z.copy()

    def set_b(self) -> None:
        self.code_b = self.z.copy()

    def interpolate(self, t: float) -> None:
        """(1 − t)·A + t·B; A and B default to the current code until set."""
        a = self.z if self.code_a is None else self.code_a
        b = self.z if self.code_b is None else self.code_b
        self.set_code((1 - float(t)) * a + float(t) * b)

    def select(self, index: int) -> None:
        """Show dataset image `index` and its reconstruction; load its latent mean."""
        if not 0 <= index < len(self.images):
            raise IndexError(f"image index {index} out of range 0..{len(self.images) - 1}")
        code = self._encode_all()[index]
        self.shown_source.set_data(self.images[index])
        self.shown_recon.set_data(np.clip(self.decode(code), 0, 1))
        self.set_code(code)

    def save_image(self) -> Path:
        """The decoded image as PNG in save_dir (explorer_NNN.png)."""
        self._saved += 1
        path = save_png(np.round(self.current_image() * 255).astype(np.uint8),
                        self.save_dir / f"explorer_{self._saved:03d}.png")
        log.info("saved %s", path)
        return path

    def click(self, name: str) -> None:
        """Press a button programmatically (as a mouse click would)."""
        self.buttons[name]._observers.process("clicked", None)

    def screenshot(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fig.savefig(path)
        return path

    def show(self) -> None:
        import matplotlib
        import matplotlib.pyplot as plt

        if matplotlib.get_backend().lower() == "agg":
            path = self.screenshot(self.save_dir / "explorer.png")
            log.warning("no display (matplotlib backend Agg): wrote a screenshot to %s instead", path)
            return
        plt.show()


def explore_run(run_dir, dims: int = 8, folder: str | None = None) -> int:
    """`python main.py explore`: open the explorer on a finished run (a screenshot without a display)."""
    from vae import rundir, visualize
    from vae.latents import mean_kl_per_dimension

    config, encoder, decoder = rundir.load_coder(Path(run_dir))
    images, _ = rundir.validation_images(config, limit=500, folder=folder)
    kl = mean_kl_per_dimension(*encode_means(encoder, images))
    app = Explorer(encoder, decoder, images, kl, dims=dims, save_dir=Path(run_dir) / "explorer",
                   labels=visualize.dimension_labels(encoder, config))
    app.show()
    return 0
