"""data.facades, data.scenes, data.synthetic: deterministic façades with known factors, the curation
sets, files and CLI."""

import itertools
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data import facades, scenes, synthetic
from data.facades import FACTOR_NAMES, FACTOR_SIZES

REPO = Path(__file__).resolve().parents[1]


def _high_frequency(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image: edge energy."""
    g = image.astype(np.float64).mean(-1)
    return float(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean())


def _has_path(image: np.ndarray) -> bool:
    """A façade's beige path runs from its door to the bottom edge; no landscape has one."""
    row = image[int(0.97 * image.shape[0])].astype(int)
    reddish = row[:, 0] > row[:, 1] + 5  # path and door are R > G; grass, water, leaves are not
    runs = [len(list(group)) for value, group in itertools.groupby(reddish) if value]
    return max(runs, default=0) >= 0.1 * image.shape[1]


def _chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1 % point of chi-square(df), Wilson-Hilferty approximation (no scipy needed)."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * np.sqrt(h)) ** 3


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_images():
    images_a, factors_a = facades.make_facades(6, size=32, seed=3)
    images_b, factors_b = facades.make_facades(6, size=32, seed=3)
    assert images_a.dtype == np.uint8 and images_a.shape == (6, 32, 32, 3)
    assert factors_a.dtype == np.int64 and factors_a.shape == (6, len(FACTOR_NAMES))
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(factors_a, factors_b)
    for task in ("pass1", "pass2"):
        np.testing.assert_array_equal(scenes.make_labelled(6, task, 32, seed=3)[0],
                                      scenes.make_labelled(6, task, 32, seed=3)[0])


def test_different_seeds_give_different_images():
    images_a, factors_a = facades.make_facades(6, size=32, seed=0)
    images_b, factors_b = facades.make_facades(6, size=32, seed=1)
    assert not np.array_equal(factors_a, factors_b)
    assert not np.array_equal(images_a, images_b)
    assert not np.array_equal(scenes.make_labelled(6, "pass2", 32, seed=0)[0],
                              scenes.make_labelled(6, "pass2", 32, seed=1)[0])


def test_make_facades_renders_the_factors_it_returns():
    images, factors = facades.make_facades(4, size=32, seed=7)
    np.testing.assert_array_equal(images, facades.render_facades(factors, size=32))


# --------------------------------------------------------------------------- factors


def test_factor_levels_are_independent_and_uniform():
    assert len(FACTOR_NAMES) == len(FACTOR_SIZES) == len(set(FACTOR_NAMES))
    assert sum(n >= 3 for n in FACTOR_SIZES) >= 6
    assert facades.num_combinations() == int(np.prod(FACTOR_SIZES))
    grid = facades.all_factors()  # the full product is enumerable
    assert grid.shape == (facades.num_combinations(), len(FACTOR_SIZES))
    assert len(np.unique(grid, axis=0)) == len(grid)

    factors = facades.sample_factors(2000, np.random.default_rng(0))
    assert factors.dtype == np.int64 and factors.shape == (2000, len(FACTOR_SIZES))
    assert (factors >= 0).all() and (factors < np.array(FACTOR_SIZES)).all()
    for i, n in enumerate(FACTOR_SIZES):  # each marginal uniform
        counts = np.bincount(factors[:, i], minlength=n)
        expected = len(factors) / n
        assert ((counts - expected) ** 2 / expected).sum() < _chi2_critical(n - 1), FACTOR_NAMES[i]
    for i, j in itertools.combinations(range(len(FACTOR_SIZES)), 2):  # each pair independent
        table = np.zeros((FACTOR_SIZES[i], FACTOR_SIZES[j]))
        np.add.at(table, (factors[:, i], factors[:, j]), 1)
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        chi2 = ((table - expected) ** 2 / expected).sum()
        assert chi2 < _chi2_critical((FACTOR_SIZES[i] - 1) * (FACTOR_SIZES[j] - 1)), (FACTOR_NAMES[i], FACTOR_NAMES[j])


def test_each_factor_visibly_changes_the_image():
    # Over the whole product at 64 px (checked once offline) the weakest change is
    # window_columns 3 -> 4 on a narrow one-storey block: 0.85 % of pixels, MAD 0.45.
    rng = np.random.default_rng(0)
    size = 64
    for base in facades.sample_factors(40, rng):
        image = facades.render_facade(base, size).astype(int)
        for k, n in enumerate(FACTOR_SIZES):
            for level in range(n):
                if level == base[k]:
                    continue
                changed = base.copy()
                changed[k] = level
                diff = np.abs(facades.render_facade(changed, size).astype(int) - image)
                moved = (diff.max(-1) > 24).mean()
                assert moved >= 0.005 and diff.mean() >= 0.3, (FACTOR_NAMES[k], base.tolist(), level, moved)


def test_render_is_a_pure_function_of_factors_and_size():
    factors = [2, 3, 1, 2, 0, 2, 2, 1]
    first = facades.render_facade(factors, 48)
    facades.render_facade([0, 0, 0, 0, 0, 0, 0, 0], 48)  # unrelated work in between
    np.testing.assert_array_equal(first, facades.render_facade(np.array(factors), 48))
    np.testing.assert_array_equal(first, facades.render_facade(dict(zip(FACTOR_NAMES, factors)), 48))
    shifted = facades.render_facade(factors, 48, nuisance=5)  # opt-in variation only
    assert not np.array_equal(first, shifted)
    np.testing.assert_array_equal(shifted, facades.render_facade(factors, 48, nuisance=5))


def test_render_rejects_levels_out_of_range():
    with pytest.raises(ValueError, match="roof"):
        facades.render_facade([0, 9, 0, 0, 0, 0, 0, 0], 32)
    with pytest.raises(ValueError, match="expected 8"):
        facades.render_facade([0, 0, 0], 32)


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512])
def test_any_size_renders(size):
    factors = [1, 2, 2, 3, 2, 0, 2, 2]
    image = facades.render_facade(factors, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert image.std() > 20  # a picture, not a flat fill
    # The same scene at every size: shrunk to 32 px it matches the 32-px render.
    small = np.asarray(Image.fromarray(image).resize((32, 32), Image.BOX), dtype=int)
    assert np.abs(small - facades.render_facade(factors, 32).astype(int)).mean() < 12
    assert scenes.render_landscape(np.random.default_rng(0), size).shape == (size, size, 3)


def test_render_speed():
    factors = facades.sample_factors(150, np.random.default_rng(0))
    facades.render_facades(factors[:5], 128)  # warm the background cache
    start = time.perf_counter()
    facades.render_facades(factors, 128)
    rate = len(factors) / (time.perf_counter() - start)
    assert rate >= 200, f"{rate:.0f} images/s at 128 px"


def test_importing_does_not_pull_in_tensorflow():
    code = "import sys, data.synthetic; print('tensorflow' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- curation sets


def test_pass1_labels_match_what_was_drawn():
    images, labels = scenes.make_labelled(40, "pass1", size=48, seed=2)
    assert images.shape == (40, 48, 48, 3) and labels.dtype == np.int64
    assert (labels == 1).sum() == (labels == 0).sum() == 20
    assert 0 < labels[:20].sum() < 20  # shuffled, not sorted by class
    for image, label in zip(images, labels):
        assert _has_path(image) == bool(label)


def test_pass2_labels_match_what_was_drawn(tmp_path):
    synthetic.write_labelled(tmp_path, "pass2", 32, size=48, seed=4)
    table = pd.read_csv(tmp_path / "pass2" / "labels.csv")
    assert len(table) == 32 and table.label.sum() == 16
    assert set(table.kind[table.label == 0]) <= set(scenes.UNSUITABLE_KINDS)
    assert set(table.kind[table.label == 1]) == {"facade"}
    images = {row.file: np.asarray(Image.open(tmp_path / "pass2" / row.file)) for row in table.itertuples()}
    clean = [images[f] for f in table.file[table.label == 1]]
    assert all(f.startswith(("suitable/", "unsuitable/")) for f in table.file)
    assert all(table.file[table.label == 1].str.startswith("suitable/"))
    clean_edges = min(_high_frequency(image) for image in clean)
    assert all(image.mean() > 60 and _has_path(image) for image in clean)
    for row in table[table.label == 0].itertuples():
        image = images[row.file]
        if row.kind == "dark":
            assert image.mean() < 30
        elif row.kind == "blur":
            assert _high_frequency(image) < 0.3 * clean_edges
        elif row.kind == "corner":  # magnified: fewer edges than any whole façade
            assert _high_frequency(image) < 0.75 * clean_edges


@pytest.mark.parametrize("kind", scenes.UNSUITABLE_KINDS)
def test_unsuitable_kinds_spoil_the_photo_as_named(kind):
    rng = np.random.default_rng(1)
    images, factors = facades.make_facades(8, size=64, seed=9)
    for image, f in zip(images, factors):
        for known in (f, None):  # the building located from its factors, or assumed largest
            spoilt, used = scenes.make_unsuitable(image, rng, kind, factors=known)
            assert used == kind and spoilt.shape == image.shape and spoilt.dtype == np.uint8
            if kind == "dark":
                assert spoilt.mean() < 30
            elif kind in ("blur", "corner"):  # blurred, or magnified about 3x
                assert _high_frequency(spoilt) < {"blur": 0.25, "corner": 0.5}[kind] * _high_frequency(image)
            else:  # occluded: a vehicle hides at least 40 % of the block
                x0, y0, x1, y1 = facades.building_box(f, 64)
                diff = np.abs(spoilt.astype(int) - image.astype(int)).max(-1)[y0:y1, x0:x1]
                assert (diff > 12).mean() >= 0.4


def test_make_unsuitable_picks_a_kind_and_rejects_unknown_ones():
    image = facades.render_facade([0] * len(FACTOR_SIZES), 32)
    rng = np.random.default_rng(0)
    assert {scenes.make_unsuitable(image, rng)[1] for _ in range(40)} == set(scenes.UNSUITABLE_KINDS)
    with pytest.raises(ValueError, match="unknown unsuitable kind"):
        scenes.make_unsuitable(image, rng, "foggy")
    with pytest.raises(ValueError, match="unknown task"):
        scenes.make_labelled(4, "pass3", 32)


# --------------------------------------------------------------------------- files and CLI


def test_write_facades_writes_images_and_factors_csv(tmp_path):
    csv_path = synthetic.write_facades(tmp_path / "out", 5, size=32, seed=6)
    assert csv_path == tmp_path / "out" / "factors.csv"
    table = pd.read_csv(csv_path)
    assert list(table.columns) == ["file", *FACTOR_NAMES]
    assert list(table.file) == [f"facade_{i:06d}.png" for i in range(5)]
    np.testing.assert_array_equal(table[list(FACTOR_NAMES)].to_numpy(), facades.make_facades(5, 32, seed=6)[1])
    for row in table.itertuples(index=False):
        on_disk = np.asarray(Image.open(tmp_path / "out" / row.file).convert("RGB"))
        np.testing.assert_array_equal(on_disk, facades.render_facade(list(row[1:]), 32))
    assert not list((tmp_path / "out").glob("*tmp*"))

    synthetic.write_facades(tmp_path / "jpg", 2, size=32, fmt="jpg")
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == [
        "facade_000000.jpg", "facade_000001.jpg", "factors.csv"]


def test_cli_writes_all_kinds(tmp_path, caplog):
    caplog.set_level("INFO", logger="data.synthetic")
    assert synthetic.main(["--out", str(tmp_path), "--count", "4", "--size", "32", "--kind", "all"]) == 0
    assert len(list((tmp_path / "facades").glob("facade_*.png"))) == 4
    assert len(pd.read_csv(tmp_path / "facades" / "factors.csv")) == 4
    for task, classes in (("pass1", ("building", "not_building")), ("pass2", ("suitable", "unsuitable"))):
        for name in classes:
            assert len(list((tmp_path / task / name).glob(f"{name}_*.png"))) == 2, (task, name)
        assert len(pd.read_csv(tmp_path / task / "labels.csv")) == 4
    assert "images/s" in caplog.text


def test_fake_gldv2_has_gldv2s_layout_and_its_truth_describes_the_photos(tmp_path):
    root = synthetic.write_gldv2(tmp_path, 60, size=48, seed=3, shards=3, noise=0.2)
    assert root == tmp_path / "gldv2"
    truth = pd.read_csv(root / "truth.csv", dtype={"id": str})
    train = pd.read_csv(root / "metadata" / "train.csv", dtype={"id": str})
    hierarchy = pd.read_csv(root / "metadata" / "train_label_to_hierarchical.csv")
    assert list(truth.columns) == synthetic.GLDV2_TRUTH_COLUMNS and truth["id"].is_unique
    assert list(train.columns) == ["id", "url", "landmark_id"] and list(train["id"]) == list(truth["id"])
    assert list(hierarchy.columns) == ["landmark_id", "category", "supercategory", "hierarchical_label",
                                       "natural_or_human_made"]
    assert set(train["landmark_id"]) == set(hierarchy["landmark_id"]) and hierarchy["landmark_id"].is_unique
    assert sorted(truth["shard"].value_counts()) == [20, 20, 20]
    path = {kind: [] for kind in set(truth["kind"])}
    for shard, group in truth.groupby("shard"):
        with tarfile.open(root / "train" / shard) as archive:
            assert sorted(archive.getnames()) == sorted(group["member"])
            for row in group.itertuples():
                assert row.member == f"{row.id[0]}/{row.id[1]}/{row.id[2]}/{row.id}.jpg"
                image = np.asarray(Image.open(archive.extractfile(row.member)))
                assert image.shape == (48, 48, 3)
                path[row.kind].append(_has_path(image))
    # A façade's path to its door (thin: JPEG blurs it away in some) and no landscape's.
    assert np.mean(path["facade"]) > 0.3 and not any(path["landscape"])
    assert set(truth["kind"]) <= {"facade", "landscape", *scenes.UNSUITABLE_KINDS}
    assert (truth["building"] == (truth["kind"] != "landscape")).all()
    assert (truth["suitable"] == (truth["kind"] == "facade")).all()
    # The landmark's kind is a weak label: about noise = 20 % of the photos show the other kind.
    shows = {sup: kind == "facade" for sup, _, _, kind in synthetic.GLDV2_LANDMARKS}
    landmark = dict(zip(hierarchy["landmark_id"], hierarchy["supercategory"].map(shows)))
    other = (truth["landmark_id"].map(landmark) != truth["building"].astype(bool)).sum()
    assert 3 <= other <= 24

    again = synthetic.write_gldv2(tmp_path / "again", 60, size=48, seed=3, shards=3, noise=0.2)
    assert all((root / f).read_bytes() == (again / f).read_bytes()
               for f in ("truth.csv", "metadata/train.csv", "train/images_001.tar"))
    exact = pd.read_csv(synthetic.write_gldv2(tmp_path / "exact", 18, size=32, noise=0.0) / "truth.csv")
    assert (exact["building"] == (exact.index % 9 < 4)).all()  # 9 landmark kinds, the first 4 buildings


def test_cli_writes_a_fake_gldv2(tmp_path):
    assert synthetic.main(["--out", str(tmp_path), "--count", "9", "--size", "32", "--kind", "gldv2",
                           "--shards", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "gldv2" / "train").iterdir()) == ["images_000.tar", "images_001.tar"]
    assert len(pd.read_csv(tmp_path / "gldv2" / "truth.csv")) == 9


def _assert_flag_rejected(tmp_path, capsys, flags):
    """Bad flags exit with code 2 (argparse's SystemExit) and one error line, writing nothing."""
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path), "--count", "2", *flags])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m data.synthetic: error:")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("size", ["8", "15", "1025", "abc"])
def test_cli_rejects_bad_size(tmp_path, capsys, size):
    _assert_flag_rejected(tmp_path, capsys, ["--size", size])


@pytest.mark.parametrize("flags", [["--count", "0"], ["--kind", "castles"], ["--format", "gif"],
                                   ["--kind", "gldv2", "--shards", "0"]])
def test_cli_rejects_bad_flags(tmp_path, capsys, flags):
    _assert_flag_rejected(tmp_path, capsys, flags)


def test_cli_reports_an_unwritable_output_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert synthetic.main(["--out", str(blocker), "--count", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_synthetic_splits_keep_every_copy_of_a_combination_in_one_split(tmp_path):
    import pandas as pd

    from data import datasets

    # 1 500 random draws from 15 552 combinations repeat some; by file name they would straddle splits.
    splits = datasets.resolve("synthetic", tmp_path, image_size=16, synthetic_count=1500, seed=3,
                              validation=0.1, test=0.1)
    table = pd.read_csv(splits.factors_csv).set_index("file")

    def combinations(paths):
        return {datasets.combination_key(table.loc[Path(p).name]) for p in paths}

    train, test = combinations(splits.train), combinations(splits.test)
    assert len(splits.test) > 50 and not train & test and not combinations(splits.validation) & train
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 1500
    repeated = table.apply(datasets.combination_key, axis=1).duplicated().sum()
    assert repeated > 0  # the case this guards against does occur
