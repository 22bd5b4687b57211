"""The pass-2 review: scores on images with known answers, the keyboard window under Agg, the record on disk."""

import csv
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import KeyEvent, key_press_handler  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from transfer_learning import quality, review  # noqa: E402
from transfer_learning.config import ReviewConfig  # noqa: E402
from transfer_learning.review import SUITABLE, UNSUITABLE, Decisions, ReviewWindow  # noqa: E402


def checkerboard(width=96, height=64, square=8, low=0, high=255) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.where(((x // square) + (y // square)) % 2, high, low).astype(np.uint8)


def save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert("RGB").save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    """Four photos; by blur the blurred one is first and the sharp one last, by dark the dark one first."""
    src = tmp_path / "photos"
    sharp = checkerboard()
    save(sharp, src / "a_sharp.png")
    Image.fromarray(sharp).convert("RGB").filter(ImageFilter.GaussianBlur(3)).save(src / "b_blurred.png")
    save(checkerboard(low=0, high=60), src / "sub" / "c_dark.png")
    noise = np.random.default_rng(0).integers(60, 200, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "d_noise.jpg", quality=95)
    return src


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def press(window, key):
    """A key press as matplotlib delivers it from a keyboard."""
    window.fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", window.fig.canvas, key))


def open_window(src, out, order="blur", batch=1):
    items = review.list_photos(src, out)
    decisions = Decisions(out, items)
    todo = [i for i in items if i.key not in decisions.decided]
    scores, _ = review.score_items(todo)
    return ReviewWindow(decisions, review.sort_items(todo, scores, order), scores, batch)


def name(path):
    return os.path.basename(path)


# --------------------------------------------------------------------------- scores


def test_blur_is_the_laplacian_variance_zero_when_flat_closed_form_on_a_step():
    n = 64
    step = np.zeros((n, n))
    step[:, n // 2:] = 255
    assert quality.blur(np.full((n, n), 77.0)) == 0.0
    assert quality.blur(step) == pytest.approx(2 * 255 ** 2 / (n - 2))


def test_sharp_checkerboard_scores_far_above_its_blurred_copy(tmp_path):
    board = checkerboard(512, 512, square=16)  # at the working size: not resized
    sharp = quality.score_file(save(board, tmp_path / "sharp.png"))
    blurred = Image.fromarray(board).filter(ImageFilter.GaussianBlur(4))
    soft = quality.score_file(save(np.asarray(blurred), tmp_path / "soft.png"))
    assert sharp.blur > 50 * soft.blur > 0
    assert sharp.blur == pytest.approx(quality.blur(board.astype(float)))  # 512 px: measured as it is


def test_dark_and_clipped_on_black_white_grey_and_half_black(tmp_path):
    def scores(value_or_array):
        array = np.full((40, 60), value_or_array, np.uint8) if np.isscalar(value_or_array) else value_or_array
        return quality.score_file(save(array, tmp_path / "x.png"))

    black, white, grey = scores(0), scores(255), scores(128)
    assert (black.dark, black.clipped) == (0.0, 1.0)
    assert (white.dark, white.clipped) == (1.0, 1.0)
    assert grey.dark == pytest.approx(128 / 255) and grey.clipped == 0.0
    half = np.full((512, 512), 128, np.uint8)
    half[:, :256] = 0
    assert scores(half).clipped == pytest.approx(0.5)
    assert scores(half).dark == pytest.approx(64 / 255)


def test_size_and_aspect_follow_the_upright_photo(tmp_path):
    wide = quality.score_file(save(np.zeros((200, 300), np.uint8), tmp_path / "wide.png"))
    assert (wide.width, wide.height, wide.size, wide.aspect) == (300, 200, 200, 1.5)
    image = Image.fromarray(np.zeros((200, 300, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # taken turned by 90°: a portrait
    image.save(tmp_path / "turned.jpg", exif=exif)
    turned = quality.score_file(tmp_path / "turned.jpg")
    assert (turned.width, turned.height, turned.size) == (200, 300, 200)
    assert turned.aspect == pytest.approx(2 / 3)


def test_thresholds_parse_and_catch_the_photos_they_name():
    rules = quality.parse_thresholds("blur<50, dark<0.1")
    assert [str(r) for r in rules] == ["blur<50", "dark<0.1"]
    scores = quality.Scores(blur=10, dark=0.5, clipped=0, size=100, aspect=1, width=100, height=100)
    assert [r(scores) for r in rules] == [True, False]
    assert quality.parse_thresholds("clipped>0.3")[0](scores) is False
    for bad in ("blr<50", "blur=50", "blur<x"):
        with pytest.raises(quality.ThresholdError):
            quality.parse_thresholds(bad)


def test_sorting_puts_the_suspects_first(photos, tmp_path):
    items = review.list_photos(photos, tmp_path / "out")
    scores, errors = review.score_items(items)
    assert errors == {}
    assert [name(i.key) for i in review.sort_items(items, scores, "blur")][0] == "b_blurred.png"
    assert [name(i.key) for i in review.sort_items(items, scores, "blur")][-1] == "a_sharp.png"
    assert [name(i.key) for i in review.sort_items(items, scores, "dark")][0] == "c_dark.png"


# --------------------------------------------------------------------------- the window


def test_keys_accept_reject_and_file_the_photos_as_train_py_reads_them(photos, tmp_path):
    out = tmp_path / "out"
    window = open_window(photos, out)
    first, second = window.queue[0], window.queue[1]
    press(window, "a")
    press(window, "left")
    rows = rows_of(out / "review.csv")
    assert [(name(r["path"]), r["decision"], r["by"]) for r in rows] == [
        (name(first.key), SUITABLE, "person"), (name(second.key), UNSUITABLE, "person")]
    assert float(rows[0]["blur"]) == pytest.approx(window.scores[first.key].blur, rel=1e-5)
    assert rows[0]["time"].endswith("+00:00")
    assert os.path.samefile(out / SUITABLE / rows[0]["file"], first.path)  # a hard link
    assert (out / UNSUITABLE / rows[1]["file"]).is_file()
    assert len(window.queue) == 2
    from transfer_learning.train import KNOWN_POSITIVE, class_folders

    assert KNOWN_POSITIVE[frozenset(review.CLASSES)] == SUITABLE
    assert class_folders(out) == ([UNSUITABLE, SUITABLE], SUITABLE)
    plt.close(window.fig)


def test_undo_removes_the_file_and_the_row_and_shows_the_photo_again(photos, tmp_path):
    out = tmp_path / "out"
    window = open_window(photos, out)
    first = window.queue[0]
    press(window, "r")
    press(window, "a")
    filed = out / SUITABLE / rows_of(out / "review.csv")[1]["file"]
    press(window, "u")
    assert not filed.exists()
    assert len(rows_of(out / "review.csv")) == 1
    press(window, "u")
    assert rows_of(out / "review.csv") == [] and not any((out / UNSUITABLE).iterdir())
    assert window.queue[0] == first and len(window.queue) == 4
    press(window, "u")  # nothing left to undo: no error
    plt.close(window.fig)


def test_skip_comes_back_after_the_others_and_q_closes_the_window(photos, tmp_path):
    window = open_window(photos, tmp_path / "out")
    # matplotlib's own keys (s saves, q closes, r resets the view) are switched off in the window.
    def handlers(fig):
        return [ref() for ref in fig.canvas.callbacks.callbacks["key_press_event"].values()]

    plain = plt.figure()
    assert key_press_handler in handlers(plain) and key_press_handler not in handlers(window.fig)
    plt.close(plain)
    first = window.queue[0]
    press(window, "s")
    assert window.queue[-1] == first and len(window.queue) == 4
    assert not (tmp_path / "out" / "review.csv").exists()
    number = window.fig.number
    press(window, "q")
    assert window.closed and not plt.fignum_exists(number)


def test_a_page_files_the_marked_photos_the_other_way(photos, tmp_path):
    out = tmp_path / "out"
    window = open_window(photos, out, order="name", batch=3)
    page = window.page
    press(window, "2")
    press(window, "3")
    press(window, "3")  # marked twice: unmarked
    press(window, "a")
    decided = {r["path"]: r["decision"] for r in rows_of(out / "review.csv")}
    assert decided == {page[0].key: SUITABLE, page[1].key: UNSUITABLE, page[2].key: SUITABLE}
    press(window, "1")
    press(window, "r")  # the last photo alone, marked: r files it as suitable
    assert rows_of(out / "review.csv")[-1]["decision"] == SUITABLE
    assert window.queue == []
    plt.close(window.fig)


def scripted(keys, shown):
    """A window factory: the real window, whose show() types `keys` and notes what it showed first."""
    def factory(decisions, queue, scores, batch):
        window = ReviewWindow(decisions, queue, scores, batch)
        window.show = lambda: (shown.append([i.key for i in window.queue]),
                               [press(window, k) for k in keys], plt.close(window.fig))
        return window
    return factory


def test_a_resumed_review_does_not_show_decided_photos_again(photos, tmp_path):
    out, shown = tmp_path / "out", []
    config = ReviewConfig(order="name").validate()
    counts = review.review(config, photos, out, window_factory=scripted(["a", "r"], shown))
    assert (counts[SUITABLE], counts[UNSUITABLE], counts["left"]) == (1, 1, 2)
    review.review(config, photos, out, window_factory=scripted(["a"], shown))
    assert shown[1] == shown[0][2:]
    assert len(rows_of(out / "review.csv")) == 3


def test_a_kill_between_row_and_file_is_put_right_on_restart(photos, tmp_path):
    out = tmp_path / "out"
    items = review.list_photos(photos, out)
    decisions = Decisions(out, items)
    decisions.decide([(items[0], SUITABLE), (items[1], UNSUITABLE)], "person", {})
    row0, row1 = rows_of(out / "review.csv")
    (out / SUITABLE / row0["file"]).unlink()  # killed after the row, before the file
    stray = out / SUITABLE / review.output_name(items[2])  # killed after an undo's row, before its file
    stray.write_bytes(b"x")
    partial = out / UNSUITABLE / f"tmp-123-{review.output_name(items[3])}"
    partial.write_bytes(b"x")
    mine = out / SUITABLE / "added-by-hand.jpg"
    mine.write_bytes(b"x")
    Decisions(out, items)
    assert (out / SUITABLE / row0["file"]).is_file() and (out / UNSUITABLE / row1["file"]).is_file()
    assert not stray.exists() and not partial.exists()
    assert mine.exists()  # not this review's file: left alone


def test_the_csv_is_never_half_written(photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    items = review.list_photos(photos, out)
    decisions = Decisions(out, items)
    decisions.decide([(items[0], SUITABLE)], "person", {})
    before = (out / "review.csv").read_bytes()

    def fail_midway(self, rows):
        self.writerow(rows[0])
        raise OSError("disk full")

    monkeypatch.setattr(csv.DictWriter, "writerows", fail_midway)
    with pytest.raises(OSError):
        decisions.decide([(items[1], UNSUITABLE)], "person", {})
    assert (out / "review.csv").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith("tmp-")] == []
    assert len(decisions.rows) == 1 and not any((out / UNSUITABLE).iterdir())


# --------------------------------------------------------------------------- without a window


def test_auto_reject_files_the_caught_photos_as_auto(photos, tmp_path):
    out = tmp_path / "out"
    assert review.main([str(photos), str(out), "--auto-reject", "dark<0.2", "--no-window"]) == 0
    rows = rows_of(out / "review.csv")
    assert [(name(r["path"]), r["decision"], r["by"], r["reason"]) for r in rows] == [
        ("c_dark.png", UNSUITABLE, "auto", "dark<0.2")]
    assert (out / UNSUITABLE / rows[0]["file"]).is_file()
    assert {r["path"] for r in rows_of(out / "scores.csv")} == {
        str(p) for p in photos.rglob("*") if p.is_file()}


def test_contact_sheets_and_their_csv_round_trip(photos, tmp_path, capsys):
    out, sheets = tmp_path / "out", tmp_path / "sheets"
    assert review.main([str(photos), str(out), "--sheet", str(sheets), "--order", "dark"]) == 0
    page = Image.open(sheets / "sheet-001.png")
    assert page.size[0] == review.SHEET_GRID[0] * (review.THUMB + 8)
    table = rows_of(sheets / "sheet.csv")
    assert [r["number"] for r in table] == ["1", "2", "3", "4"] and name(table[0]["path"]) == "c_dark.png"
    table[0]["decision"], table[1]["decision"] = "r", "suitable"
    with open(sheets / "sheet.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    assert review.main([str(photos), str(out), "--apply-sheet", str(sheets / "sheet.csv"),
                        "--sheet", str(sheets)]) == 0
    decided = {r["path"]: (r["decision"], r["by"]) for r in rows_of(out / "review.csv")}
    assert decided == {table[0]["path"]: (UNSUITABLE, "sheet"), table[1]["path"]: (SUITABLE, "sheet")}
    assert [r["path"] for r in rows_of(sheets / "sheet.csv")] == [r["path"] for r in table[2:]]
    table[2]["decision"] = "maybe"
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    capsys.readouterr()
    assert review.main([str(photos), str(out), "--apply-sheet", str(tmp_path / "bad.csv"), "--no-window"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.csv line 4" in err and "\n" not in err
    assert len(rows_of(out / "review.csv")) == 2  # nothing of the bad sheet recorded


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file or folder"),
    ("empty", "no images to review"),
    ("order", "--order"),
    ("rule", "--auto-reject"),
    ("sheet_in_out", "--sheet"),
    ("display", "no display"),
])
def test_bad_input_is_one_line_and_exit_2(photos, tmp_path, capsys, case, expected):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    argv = {"missing": [str(tmp_path / "nowhere"), str(out), "--no-window"],
            "empty": [str(tmp_path / "empty"), str(out), "--no-window"],
            "order": [str(photos), str(out), "--order", "sharpest"],
            "rule": [str(photos), str(out), "--auto-reject", "blurry<3"],
            "sheet_in_out": [str(photos), str(out), "--sheet", str(out / "sheets")],
            "display": [str(photos), str(out)]}[case]
    assert review.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not (out / "review.csv").exists()


def test_photos_inside_a_tar_shard_are_scored_and_filed_from_their_bytes(photos, tmp_path):
    import tarfile

    shard = tmp_path / "images_000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(photos.rglob("*.png")):
            tar.add(path, arcname=f"a/b/{path.name}")
    out = tmp_path / "out"
    assert review.main([str(shard), str(out), "--auto-reject", "dark<0.2", "--no-window"]) == 0
    (row,) = rows_of(out / "review.csv")
    assert row["path"] == f"{shard}/a/b/c_dark.png"
    assert (out / UNSUITABLE / row["file"]).read_bytes() == (photos / "sub" / "c_dark.png").read_bytes()


def test_scores_are_cached_while_the_file_is_unchanged(photos, tmp_path):
    cache = tmp_path / "scores.csv"
    items = review.list_photos(photos, tmp_path / "out")
    scores, _ = review.score_items(items, cache)
    table = rows_of(cache)
    assert len(table) == 4
    for row in table:
        row["blur"] = "1e9"  # a value only the cache can give back
    review._write_csv(cache, list(table[0]), table)
    again, _ = review.score_items(items[:1], cache)
    assert again[items[0].key].blur == 1e9
    os.utime(items[0].path, ns=(1, 1))  # the file changed: scored again
    fresh, _ = review.score_items(items[:1], cache)
    assert fresh[items[0].key].blur == pytest.approx(scores[items[0].key].blur)
    assert [float(r["blur"]) for r in rows_of(cache)].count(1e9) == 3  # the others' rows are kept
