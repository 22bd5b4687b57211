"""data.pipeline: decoding every image kind, skipping bad files by name, splits, TFRecords."""

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import pipeline
from data.pipeline import DataError


def _photo(height=40, width=60, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 40, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _save(image: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kw)
    return path


@pytest.fixture
def mixed_folder(tmp_path):
    """Good images of every kind plus bad files; returns (folder, good names, bad names)."""
    root = tmp_path / "photos"
    rgb = Image.fromarray(_photo())
    good = {
        "rgb.jpg": lambda p: _save(rgb, p, "JPEG"),
        "cmyk.jpg": lambda p: _save(rgb.convert("CMYK"), p, "JPEG"),
        "grey16.png": lambda p: _save(
            Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)), p, "PNG"),
        "rgba.png": lambda p: _save(rgb.convert("RGBA"), p, "PNG"),
        "grey.jpg": lambda p: _save(rgb.convert("L"), p, "JPEG"),
        "palette.png": lambda p: _save(rgb.convert("P"), p, "PNG"),
        "sub/anim.gif": lambda p: _save(rgb, p, "GIF", save_all=True,
                                        append_images=[Image.fromarray(255 - _photo())]),
        "sub/deeper/pic.bmp": lambda p: _save(rgb, p, "BMP"),
        "sub/pic.webp": lambda p: _save(rgb, p, "WEBP"),
        "png_named.jpg": lambda p: _save(rgb, p, "PNG"),  # wrong extension, valid image
    }
    for name, make in good.items():
        make(root / name)
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG")
    bad = {
        "zero.jpg": b"",
        "truncated.jpg": buffer.getvalue()[: len(buffer.getvalue()) // 2],
        "text.jpg": b"this is not an image at all\n" * 10,
        "sub/garbage.png": bytes(range(256)) * 4,
    }
    for name, data in bad.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root, sorted(good), sorted(bad)


def test_mixed_folder_yields_exactly_the_good_images_rgb_and_sized(mixed_folder, caplog):
    root, good, bad = mixed_folder
    with caplog.at_level(logging.WARNING, logger="data.pipeline"):
        ds = pipeline.load_images(root, image_size=32, batch_size=4, shuffle=False, with_paths=True)
        images, paths = [], []
        for batch_images, batch_paths in ds.as_numpy_iterator():
            images.append(batch_images)
            paths += [p.decode() for p in batch_paths]
    images = np.concatenate(images)
    assert sorted(str(Path(p).relative_to(root)) for p in paths) == good
    assert images.shape == (len(good), 32, 32, 3)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    for name in bad:
        assert any(name in r.getMessage() for r in caplog.records), f"{name} not logged"
    assert f"skipped {len(bad)} of {len(good) + len(bad)}" in caplog.text


def test_every_kind_decodes_to_the_same_picture(mixed_folder):
    root, good, _ = mixed_folder
    ds = pipeline.load_images(root, image_size=32, batch_size=None, shuffle=False,
                              with_paths=True, crop="stretch")
    reference = pipeline.to_numpy(pipeline.load_images([str(root / "rgb.jpg")], image_size=32,
                                                      shuffle=False, crop="stretch"))[0]
    for image, path in ds.as_numpy_iterator():
        name = Path(path.decode()).name
        if name.startswith(("grey", "palette")) or name == "anim.gif":
            # Grey loses colour, palette/GIF quantise to 256 colours: compare brightness.
            assert abs(image.mean() - reference.mean()) < 0.03, name
        else:
            assert np.abs(image - reference).mean() < 0.03, name


def test_structural_check_and_full_decode_reject_the_same_bad_files(mixed_folder):
    root, good, bad = mixed_folder
    paths = pipeline.find_images(root)
    quick, full = pipeline.check_images(paths), pipeline.check_images(paths, decode=True)
    assert quick.good == full.good and sorted(str(Path(p).relative_to(root)) for p in quick.good) == good
    assert [p for p, _ in quick.bad] == [p for p, _ in full.bad]
    reasons = {Path(p).name: r for p, r in quick.bad}
    assert reasons["zero.jpg"] == "empty file" and reasons["text.jpg"].startswith("not an image")
    assert reasons["truncated.jpg"].startswith("corrupt or truncated: JPEG")


def test_a_file_checked_once_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    path = _save(Image.fromarray(_photo()), tmp_path / "a.png", "PNG")
    reads = []
    real = pipeline._check_structure
    monkeypatch.setattr(pipeline, "_check_structure", lambda p: reads.append(p) or real(p))
    assert pipeline.check_images([str(path)]).good == [str(path)]
    assert pipeline.check_images([str(path)]).good == [str(path)] and len(reads) == 1
    path.write_bytes(path.read_bytes()[:-20])  # truncated in place: size and mtime change
    scan = pipeline.check_images([str(path)])
    assert len(reads) == 2 and scan.good == [] and "PNG without its IEND" in scan.bad[0][1]


def test_checks_kept_in_a_file_spare_a_new_process_the_reads(tmp_path, monkeypatch):
    paths = [str(_save(Image.fromarray(_photo(seed=i)), tmp_path / f"im{i}.png", "PNG")) for i in range(3)]
    kept = tmp_path / "run" / "file-checks.json"
    with pipeline.checks_kept_in(kept):
        assert pipeline.check_images(paths).good == paths
    assert len(json.loads(kept.read_text())) >= 3
    pipeline.forget_checks()  # as a new process
    reads = []
    real = pipeline._check_structure
    monkeypatch.setattr(pipeline, "_check_structure", lambda p: reads.append(p) or real(p))
    Path(paths[1]).write_bytes(b"not a png any more")
    with pipeline.checks_kept_in(kept):
        scan = pipeline.check_images(paths)
    assert reads == [paths[1]] and scan.good == [paths[0], paths[2]]
    pipeline.forget_checks()
    kept.write_text("{damaged")  # costs a new check, nothing else
    with pipeline.checks_kept_in(kept):
        assert pipeline.check_images(paths).good == [paths[0], paths[2]]
    assert len(reads) == 4


def test_checked_files_are_counted_and_read_without_another_listing_or_stat(mixed_folder, monkeypatch):
    root, good, _ = mixed_folder
    files = pipeline.checked_files(root)
    assert isinstance(files, pipeline.CheckedFiles) and sorted(files) == [str(root / name) for name in good]
    calls = []
    monkeypatch.setattr(pipeline.os, "stat", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError))
    monkeypatch.setattr(pipeline, "find_images", lambda *a: calls.append(a) or [])
    assert pipeline.count_images(files) == len(files)
    assert len(pipeline.to_numpy(pipeline.load_images(files, 16, batch_size=4))) == len(files)
    assert calls == []


def test_a_file_that_passes_the_check_but_does_not_decode_is_dropped_not_fatal(tmp_path, caplog):
    for i in range(3):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / f"im{i}.jpg", "JPEG")
    # A JPEG's signature and end marker around garbage: the check passes, the decoder fails.
    (tmp_path / "im1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9")
    assert len(pipeline.check_images(pipeline.find_images(tmp_path)).good) == 3
    ds = pipeline.load_images(tmp_path, 16, shuffle=False, with_paths=True, batch_size=None)
    names = [Path(p.decode()).name for _, p in ds.as_numpy_iterator()]
    assert names == ["im0.jpg", "im2.jpg"]


def test_center_crop_keeps_aspect_ratio_and_stretch_does_not(tmp_path):
    # Left third red, middle third green, right third blue, 30x90: a centre crop is all green.
    strip = np.zeros((30, 90, 3), np.uint8)
    strip[:, :30, 0] = strip[:, 30:60, 1] = strip[:, 60:, 2] = 255
    path = _save(Image.fromarray(strip), tmp_path / "strip.png", "PNG")
    center = pipeline.to_numpy(pipeline.load_images([str(path)], 16, shuffle=False))[0]
    stretch = pipeline.to_numpy(pipeline.load_images([str(path)], 16, shuffle=False, crop="stretch"))[0]
    assert center[..., 1].mean() > 0.95 and center[..., 0].max() < 0.05
    assert stretch[..., 0].mean() == pytest.approx(1 / 3, abs=0.05)


def _smooth_photo_jpeg(height=600, width=800, seed=0, **kw) -> bytes:
    """A photo-like JPEG (smooth colour waves plus a little noise), as benchmarks/bench_classify.py draws."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    phase = rng.random(3) * 6.28
    image = np.stack([127 + 100 * np.sin(xx / (40 + 10 * c) + yy / 70 + phase[c]) for c in range(3)], -1)
    image += rng.normal(0, 8, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("height, width, size, scale", [
    (600, 800, 300, 2), (600, 800, 150, 4), (600, 800, 151, 2), (600, 800, 75, 8), (600, 800, 76, 4),
    (480, 640, 300, 1), (599, 800, 300, 2),  # libjpeg rounds a scaled side up: 300 px
    (597, 800, 300, 1), (800, 600, 300, 2), (4000, 3000, 32, 8), (31, 64, 32, 1)])
def test_jpeg_scale_is_the_largest_that_keeps_both_sides_at_least_the_size(height, width, size, scale):
    assert pipeline.jpeg_scale(height, width, size) == scale


def test_scaled_decode_takes_the_scale_jpeg_scale_chooses_and_only_for_jpegs():
    import tensorflow as tf

    jpeg = tf.constant(_smooth_photo_jpeg(600, 800))
    for size in (300, 150, 151, 75, 76, 601):
        expected = pipeline.jpeg_scale(600, 800, size)
        assert tuple(pipeline.decode_rgb(jpeg, size).shape) == (-(-600 // expected), -(-800 // expected), 3)
    buffer = io.BytesIO()
    Image.fromarray(_photo(600, 800)).save(buffer, "PNG")
    assert tuple(pipeline.decode_rgb(tf.constant(buffer.getvalue()), 75).shape) == (600, 800, 3)
    # Inside a tf.function too (as in tf.data), and unscaled without a size.
    graph = tf.function(lambda d: pipeline.decode_rgb(d, 75), input_signature=[tf.TensorSpec((), tf.string)])
    assert tuple(graph(jpeg).shape) == (75, 100, 3)
    assert tuple(pipeline.decode_rgb(jpeg).shape) == (600, 800, 3)


def test_declared_pixels_reads_jpeg_and_png_headers_as_pil_does_and_nothing_else(mixed_folder):
    import tensorflow as tf

    root, good, bad = mixed_folder
    graph = tf.function(pipeline.declared_pixels, input_signature=[tf.TensorSpec((), tf.string)])
    for name in good:
        data = (root / name).read_bytes()
        with Image.open(root / name) as image:
            width, height = image.size
        expected = width * height if image.format in ("JPEG", "PNG") else -1
        assert pipeline.header_format(data[:16]) == {"JPEG": "jpeg", "PNG": "png"}.get(image.format, ""), name
        assert int(pipeline.declared_pixels(tf.constant(data))) == expected, name
        assert int(graph(tf.constant(data))) == expected, name
    progressive = io.BytesIO()
    Image.fromarray(_photo(37, 53)).save(progressive, "JPEG", progressive=True)
    assert int(graph(tf.constant(progressive.getvalue()))) == 37 * 53
    # Declared, not decoded: a PNG header claiming 40 000 x 70 000 pixels (beyond int32).
    png = bytearray((root / "rgba.png").read_bytes())
    png[16:24] = (40_000).to_bytes(4, "big") + (70_000).to_bytes(4, "big")
    assert int(graph(tf.constant(bytes(png)))) == 2_800_000_000
    assert pipeline.declared_size(tf.constant(bytes(png))).numpy().tolist() == [70_000, 40_000]  # height, width
    assert pipeline.declared_size(tf.constant(progressive.getvalue())).numpy().tolist() == [37, 53]
    for data in (b"", pipeline.PNG_SIGNATURE, b"GIF89a" + bytes(40), (root / "sub/garbage.png").read_bytes()):
        assert int(graph(tf.constant(data))) == -1
    with pytest.raises(tf.errors.InvalidArgumentError):  # a JPEG signature over no frame header
        graph(tf.constant(b"\xff\xd8\xff\xe0" + bytes(20)))


@pytest.mark.parametrize("crop", ["stretch", "center"])
def test_scaled_decode_gives_nearly_the_pixels_of_a_full_decode(crop):
    import tensorflow as tf

    jpeg = tf.constant(_smooth_photo_jpeg(600, 800))
    # Stated tolerance, on [0, 1] pixels of a photo-like 800x600 JPEG at scales 2, 4 and 8:
    # mean |diff| < 0.01 and max |diff| < 0.06 (measured here: at most 0.0054 and 0.047; the
    # largest at scale 2, where libjpeg's 2x2 average is sharper than resize's triangle filter).
    for size in (300, 128, 64):
        full = pipeline.decode_and_resize(jpeg, size, crop).numpy()
        scaled = pipeline.decode_and_resize(jpeg, size, crop, scaled=True).numpy()
        diff = np.abs(scaled - full)
        assert diff.mean() < 0.01 and diff.max() < 0.06, (size, diff.mean(), diff.max())
        assert diff.max() > 0  # a different decode really ran
    # Too small to scale (640x480 at 300 px), or not a JPEG: exactly the full decode.
    small = tf.constant(_smooth_photo_jpeg(480, 640))
    np.testing.assert_array_equal(pipeline.decode_and_resize(small, 300, crop, scaled=True).numpy(),
                                  pipeline.decode_and_resize(small, 300, crop).numpy())


@pytest.mark.parametrize("height, width, size, crop", [
    (600, 800, 200, "center"), (600, 800, 300, "stretch"), (800, 600, 128, "center"),
    (601, 803, 151, "center"), (601, 803, 151, "stretch"),  # libjpeg rounded 150.25 rows up to 151
    (600, 800, 150, "center"),  # a crop on whole pixels at 1/4 (100 px = 25 decoded px)
    (600, 802, 200, "center"),  # a crop 101 px in: 50.5 decoded px, between pixels
    (1200, 700, 128, "stretch")])  # the long side still shrinks 2.7x after the DCT: antialiased
def test_scaled_resize_samples_the_decoded_image_where_the_full_one_would(height, width, size, crop):
    """After a scaled decode, a shrink under 2x is plain bilinear sampling at the exact
    full-size positions (half-pixel centres, the crop mapped in full-size pixels); a longer
    one keeps the antialiased filter. Both are compared with ScaleAndTranslate run directly."""
    import tensorflow as tf

    jpeg = tf.constant(_smooth_photo_jpeg(height, width))
    image, scale, full_height, full_width = pipeline._decode(jpeg, size)
    scale = int(scale)
    assert scale > 1
    top = left = 0
    h, w = height, width
    if crop == "center":
        h = w = min(height, width)
        top, left = (height - h) // 2, (width - w) // 2
    sy, sx = size * scale / h, size * scale / w
    shrink = max(1 / sy, 1 / sx)  # decoded px per output px on the longer-shrinking axis

    def reference(antialias):
        return tf.raw_ops.ScaleAndTranslate(
            images=image[None], size=[size, size], scale=[sy, sx], translation=[-top / scale * sy, -left / scale * sx],
            kernel_type="triangle", antialias=antialias)[0].numpy()

    got = pipeline._resize_scaled(image, scale, full_height, full_width, size, crop).numpy()
    graph = tf.function(pipeline._resize_scaled, reduce_retracing=True)  # as tf.data runs it
    np.testing.assert_allclose(graph(image, scale, full_height, full_width, size, crop).numpy(), got, atol=1e-3)
    expected = reference(antialias=shrink >= 2)
    assert np.abs(got - expected).max() < 0.05  # of 255: float rounding only
    if shrink > 1:  # (601x803 at 151 is a slight enlargement, where the two filters agree)
        assert np.abs(reference(antialias=shrink < 2) - expected).max() > 1  # the other filter is not it


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"no image files"):
        pipeline.load_images(tmp_path)


def test_folder_of_only_bad_images_is_a_clear_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_text("nope")
    with pytest.raises(DataError, match=r"none of the 2 image files can be decoded"):
        pipeline.load_images(tmp_path)


def test_missing_source_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nope: no such file or folder"):
        pipeline.load_images(tmp_path / "nope")


def test_path_lists_from_txt_and_csv(tmp_path):
    for i in range(3):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / f"im{i}.png", "PNG")
    (tmp_path / "list.txt").write_text("# photos\nim0.png\nim2.png\n")
    (tmp_path / "list.csv").write_text("path,label\nim1.png,1\nim2.png,0\n")
    assert [Path(p).name for p in pipeline.find_images(tmp_path / "list.txt")] == ["im0.png", "im2.png"]
    assert [Path(p).name for p in pipeline.find_images(tmp_path / "list.csv")] == ["im1.png", "im2.png"]
    ds = pipeline.load_images(tmp_path / "list.csv", 16, shuffle=False)
    assert pipeline.to_numpy(ds).shape == (2, 16, 16, 3)


def test_split_is_deterministic_disjoint_and_stable_under_additions():
    names = [f"dir/img_{i:05d}.jpg" for i in range(4000)]
    splits = pipeline.split_paths(names, validation=0.1, test=0.2)
    assert sum(map(len, splits.values())) == len(names)
    assert not set(splits["train"]) & set(splits["test"])
    assert len(splits["test"]) == pytest.approx(800, abs=80)
    assert len(splits["validation"]) == pytest.approx(400, abs=60)
    more = pipeline.split_paths(names + [f"x_{i}.jpg" for i in range(100)], 0.1, 0.2)
    assert set(splits["test"]) <= set(more["test"])
    # The folder does not matter, only the file name.
    moved = pipeline.split_paths([n.replace("dir/", "other/") for n in names], 0.1, 0.2)
    assert [Path(p).name for p in moved["test"]] == [Path(p).name for p in splits["test"]]


def test_shards_partition_the_images(tmp_path):
    for i in range(7):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / f"im{i}.png", "PNG")
    seen = []
    for index in range(3):
        ds = pipeline.load_images(tmp_path, 8, shuffle=False, with_paths=True,
                                  num_shards=3, shard_index=index)
        seen += [p.decode() for _, batch in ds.as_numpy_iterator() for p in batch]
    assert sorted(seen) == sorted(pipeline.find_images(tmp_path))
    with pytest.raises(DataError, match="shard_index 3"):
        pipeline.load_images(tmp_path, num_shards=3, shard_index=3)


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tmp_path):
    for i in range(12):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / f"im{i:02d}.png", "PNG")

    def order(ds):
        return [p.decode() for _, b in ds.as_numpy_iterator() for p in b]

    ds = pipeline.load_images(tmp_path, 8, seed=3, with_paths=True)
    first, second = order(ds), order(ds)
    assert sorted(first) == sorted(second) and first != second
    again = pipeline.load_images(tmp_path, 8, seed=3, with_paths=True)
    assert order(again) == first


def test_tfrecords_round_trip_with_names_and_skipped_files(mixed_folder, tmp_path):
    root, good, bad = mixed_folder
    out = tmp_path / "shards"
    index = pipeline.write_tfrecords(root, out, image_size=24, images_per_shard=4, image_format="png")
    assert index["count"] == len(good)
    assert len(index["shards"]) == 3
    assert sorted(Path(s["path"]).name for s in index["skipped"]) == sorted(Path(b).name for b in bad)
    assert json.loads((out / "index.json").read_text())["count"] == len(good)
    assert not list(out.glob("*.partial"))
    assert pipeline.is_tfrecord_source(out)
    from_records = pipeline.load_images(out, 24, shuffle=False, batch_size=None, with_paths=True)
    records = {n.decode(): im for im, n in from_records.as_numpy_iterator()}
    assert sorted(records) == good
    from_files = pipeline.load_images(root, 24, shuffle=False, batch_size=None, with_paths=True)
    for image, path in from_files.as_numpy_iterator():
        name = str(Path(path.decode()).relative_to(root))
        # PNG in the shards is lossless: only the 8-bit rounding differs.
        assert np.abs(records[name] - image).max() <= 0.5 / 255 + 1e-6
    assert pipeline.count_images(out) == len(good)


def test_tfrecords_shard_over_workers(tmp_path):
    for i in range(6):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / "src" / f"im{i}.png", "PNG")
    pipeline.write_tfrecords(tmp_path / "src", tmp_path / "rec", 8, images_per_shard=6)
    names = []
    for index in range(2):  # one shard file, two workers: split by record
        ds = pipeline.load_images(tmp_path / "rec", 8, shuffle=False, with_paths=True,
                                  num_shards=2, shard_index=index)
        names += [n.decode() for _, b in ds.as_numpy_iterator() for n in b]
    assert sorted(names) == [f"im{i}.png" for i in range(6)]


def test_repacking_a_folder_leaves_no_stale_shards_to_mix_in(tmp_path):
    for i in range(6):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / "src" / f"im{i}.png", "PNG")
    pipeline.write_tfrecords(tmp_path / "src", tmp_path / "rec", 8, images_per_shard=2)  # 3 shards
    for i in range(3, 6):
        (tmp_path / "src" / f"im{i}.png").unlink()
    index = pipeline.write_tfrecords(tmp_path / "src", tmp_path / "rec", 8, images_per_shard=2)  # 2 shards
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.tfrecord")) == sorted(index["shards"])
    ds = pipeline.load_images(tmp_path / "rec", 8, shuffle=False, with_paths=True)
    names = sorted(n.decode() for _, b in ds.as_numpy_iterator() for n in b)
    assert names == ["im0.png", "im1.png", "im2.png"] and pipeline.count_images(tmp_path / "rec") == 3


def test_cli_packs_a_folder_and_rejects_a_missing_one(tmp_path, capsys):
    for i in range(3):
        _save(Image.fromarray(_photo(seed=i)), tmp_path / "src" / f"im{i}.jpg", "JPEG")
    assert pipeline.main(["to-tfrecords", str(tmp_path / "src"), str(tmp_path / "out"), "--size", "16"]) == 0
    assert (tmp_path / "out" / "index.json").exists()
    assert pipeline.main(["to-tfrecords", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: no such file or folder" in err
