"""The three splits (train, validation, test) of the dataset a config names."""

from __future__ import annotations

import sys

from data import datasets
from vae.config import VAEConfig


class DataUnavailable(RuntimeError):
    """A named dataset could not be downloaded (no network, server error, bad checksum)."""


def resolve_splits(config: VAEConfig) -> datasets.Splits:
    """The dataset's three splits; a failed download says how to run offline."""
    from data.fetch import DownloadError

    try:
        return datasets.resolve(
            config.data, config.data_root, image_size=config.image_size,
            synthetic_count=config.synthetic_count, seed=config.seed,
            validation=config.validation_fraction, test=config.test_fraction,
            progress=sys.stderr.isatty(),
        )
    except DownloadError as err:
        raise DataUnavailable(f"--data {config.data}: {err}; to run offline use --data synthetic") from None
