"""Label photos for pass 2 by hand: a keyboard window files each one as suitable or unsuitable.

Pass 2 asks "is this a suitable photo of a building?" (sharp, lit, the building not
hidden nor cut to a corner). No dataset says so, so a person does, quickly: the
photos come sorted by a cheap score (`transfer_learning/quality.py`), so that the
blurred or dark ones arrive together and a run of key presses rejects them.

    python -m transfer_learning.review curated review                   # blurriest first
    python -m transfer_learning.review curated review --order dark --batch 6
    python -m transfer_learning.review curated review --auto-reject "blur<50,dark<0.1" --no-window
    python -m transfer_learning.review curated review --sheet sheets    # no display: PNG pages + sheet.csv
    python -m transfer_learning.review curated review --apply-sheet sheets/sheet.csv --sheet sheets

Keys: a or right arrow = suitable, r or left arrow = unsuitable, u = undo the last
decision, s = skip (shown again later), q = quit. With --batch N the window shows a
page of N photos: keys 1-N mark the exceptions, then a files the page as suitable
except the marked ones, r as unsuitable except the marked ones.

SOURCE is a folder (recursive), a .txt/.csv list or a .tar shard, listed as
classify.py lists its inputs; nothing under OUT (or the --sheet folder) is a photo
to review. OUT afterwards:
    suitable/ unsuitable/   the photos (hard links where possible, else copies), the
                            layout train.py reads: train.py --data OUT
    review.csv              one row per decision: path (classify.py's manifest path),
                            decision, by (person, auto or sheet), reason (the --auto-reject
                            rule), time (UTC), file (its name in the class folder), scores
    scores.csv              every photo's scores, reused while the file is unchanged

Every decision is written at once (the whole CSV, to a temporary name then renamed),
so quitting, closing the window or a kill loses nothing. The same command resumes:
decided photos are not shown again, and a photo filed or unfiled halfway through a
kill is put right from review.csv, which is the record.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

if __name__ == "__main__":  # as a script: quiet TensorFlow's start-up logs (sources imports it)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.cli import documented_parser, exit_code, log_to_stderr
from common.config import ConfigError, need
from common.files import atomic_write, first_line
from data.pipeline import IMAGE_EXTENSIONS, DataError
from transfer_learning import config as cfg
from transfer_learning import quality
from transfer_learning.config import ReviewConfig
from transfer_learning.outputs import output_name
from transfer_learning.quality import Scores
from transfer_learning.sources import Item, ItemReader, list_items

log = logging.getLogger(__name__)

SUITABLE, UNSUITABLE = "suitable", "unsuitable"  # train.py's pass-2 class folders
CLASSES = (SUITABLE, UNSUITABLE)
REVIEW_CSV, SCORES_CSV, SHEET_CSV = "review.csv", "scores.csv", "sheet.csv"
SCORE_FIELDS = tuple(Scores.__dataclass_fields__)
_SCORE_TYPES = {f.name: (int if f.type in ("int", int) else float)
                for f in Scores.__dataclass_fields__.values()}
COLUMNS = ("path", "decision", "by", "reason", "time", "file") + SCORE_FIELDS
SHEET_GRID = (6, 5)  # thumbnails per contact sheet: columns, rows
THUMB = 200  # pixels, longer side of a thumbnail on a contact sheet
SCREEN = 900  # pixels, longer side of a photo decoded for the window
ACCEPT_WORDS = {"a", "accept", "suitable", "y", "yes", "1"}
REJECT_WORDS = {"r", "reject", "unsuitable", "n", "no", "0"}


class ReviewError(ValueError):
    """The review cannot start or go on; the message names the file or flag and what to do."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _number(value) -> str:
    return str(value) if isinstance(value, (int, np.integer)) else f"{value:.6g}"


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write, durable=True)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a sheet saved by a spreadsheet
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise ReviewError(f"{path}: not a CSV with columns {', '.join(required)} "
                                  f"(missing {', '.join(missing)})")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ReviewError(f"{path}: cannot be read as CSV ({first_line(err)})") from None


# --------------------------------------------------------------------------- photos and scores


def list_photos(source, out, also_exclude: Sequence[str] = ()) -> list[Item]:
    """The photos of SOURCE to review (never anything under OUT); raises if there are none."""
    items = list_items([str(source)], exclude=[str(out), *also_exclude])
    bad = [item for item in items if item.error]
    for item in bad:
        log.warning("%s: skipped (%s)", item.key, item.error)
    items = [item for item in items if not item.error]
    if not items:
        raise ReviewError(f"{source}: no images to review (looked for {', '.join(IMAGE_EXTENSIONS)}"
                          f"{', recursively' if os.path.isdir(source) else ''}, outside {out})")
    return items


def _stamp(item: Item) -> tuple[str, str]:
    """(bytes, mtime) that tell whether a cached score still belongs to the file."""
    try:
        stat = os.stat(item.tar or item.path)
    except OSError:
        return "", ""
    return str(item.size if item.tar else stat.st_size), str(stat.st_mtime_ns)


def score_items(items: Sequence[Item], cache_path=None, reader: ItemReader | None = None,
                ) -> tuple[dict[str, Scores], dict[str, str]]:
    """({key: scores}, {key: why it cannot be scored}) of `items`, reusing `cache_path` (a CSV).

    The cache keeps the rows of photos not asked for now (decided ones, say) and is
    written every 500 new scores, so an interrupted first scoring is not lost.
    """
    cache: dict[str, dict] = {}
    if cache_path is not None and Path(cache_path).exists():
        try:
            cache = {row["path"]: row for row in _read_csv(Path(cache_path), ("path", "bytes", "mtime"))}
        except ReviewError as err:
            log.warning("%s; scoring again", err)
    reader = reader or ItemReader()
    scores: dict[str, Scores] = {}
    errors: dict[str, str] = {}
    rows = []
    fresh = 0

    def save_cache():
        merged = {**cache, **{row["path"]: row for row in rows}}
        _write_csv(Path(cache_path), ("path", "bytes", "mtime", "error") + SCORE_FIELDS, list(merged.values()))

    for n, item in enumerate(items, 1):
        size, mtime = _stamp(item)
        row = cache.get(item.key)
        if row and (row["bytes"], row["mtime"]) == (size, mtime) and size:
            try:
                if row.get("error"):
                    errors[item.key] = row["error"]
                else:
                    scores[item.key] = Scores(**{f: type_(row[f]) for f, type_ in _SCORE_TYPES.items()})
                rows.append(row)
                continue
            except (KeyError, ValueError):
                pass  # an unreadable row: score the photo again
        fresh += 1
        row = {"path": item.key, "bytes": size, "mtime": mtime, "error": ""}
        try:
            scores[item.key] = quality.score_file(reader.read(item) if item.tar else item.path)
            row.update({k: _number(v) for k, v in scores[item.key].as_dict().items()})
        except Exception as err:  # noqa: BLE001 — any decoding failure is this photo's reason
            errors[item.key] = row["error"] = f"cannot be decoded: {first_line(err)}"
            log.warning("%s: %s", item.key, row["error"])
        rows.append(row)
        if n % 500 == 0:
            log.info("scored %d of %d photos", n, len(items))
            if cache_path is not None and fresh:
                save_cache()
    if cache_path is not None and fresh:
        save_cache()
    return scores, errors


def sort_items(items: Sequence[Item], scores: dict[str, Scores], order: str) -> list[Item]:
    """`items` in review order: by name, or the suspects of score `order` first."""
    if order == "name":
        return sorted(items, key=lambda item: item.name)
    return sorted(items, key=lambda item: (quality.suspicion(scores[item.key], order), item.name))


def describe(scores: Scores) -> str:
    """One line of scores for a caption."""
    return (f"blur {scores.blur:.0f} · dark {scores.dark:.2f} · clipped {scores.clipped:.2f} · "
            f"{scores.width}×{scores.height} · aspect {scores.aspect:.2f}")


def _score_columns(scores: Scores | None) -> dict:
    return {k: _number(v) for k, v in scores.as_dict().items()} if scores else {}


# --------------------------------------------------------------------------- the record


class Decisions:
    """review.csv and the class folders it describes; every change is on disk when a method returns.

    Order of writes: a decision's row, then its file; an undo removes the row, then the
    file. A kill in between leaves a row without its file or a file without its row,
    both put right by the next start (`reconcile`).
    """

    def __init__(self, out, items: Sequence[Item], reader: ItemReader | None = None):
        self.out = Path(out)
        self.items = {item.key: item for item in items}
        self.reader = reader or ItemReader()
        self.csv = self.out / REVIEW_CSV
        self.rows: list[dict] = []
        if self.csv.exists():
            self.rows = _read_csv(self.csv, ("path", "decision", "file"))
            for n, row in enumerate(self.rows, 2):
                if row["decision"] not in CLASSES or not row["file"] or "/" in row["file"]:
                    raise ReviewError(f"{self.csv} line {n}: decision {row['decision']!r} and file "
                                      f"{row['file']!r}: expected {SUITABLE} or {UNSUITABLE} and a file name")
        for name in CLASSES:
            (self.out / name).mkdir(parents=True, exist_ok=True)
        self.reconcile()

    @property
    def decided(self) -> set[str]:
        return {row["path"] for row in self.rows}

    def counts(self) -> dict[str, int]:
        return {name: sum(row["decision"] == name for row in self.rows) for name in CLASSES}

    def reconcile(self) -> None:
        """Make the class folders match review.csv after a kill (touches only this review's own files)."""
        ours = {output_name(item) for item in self.items.values()} | {row["file"] for row in self.rows}
        expected = {(row["decision"], row["file"]) for row in self.rows}
        for name in CLASSES:
            for path in (self.out / name).iterdir():
                leftover = re.sub(r"^tmp-\d+-", "", path.name)
                if leftover != path.name and leftover in ours:  # an interrupted copy
                    path.unlink()
                elif path.name in ours and (name, path.name) not in expected:
                    log.info("%s: not in %s (an interrupted undo): removed", path, REVIEW_CSV)
                    path.unlink()
        for row in self.rows:
            if not (self.out / row["decision"] / row["file"]).exists():
                item = self.items.get(row["path"])
                if item is None:
                    log.warning("%s: decided in %s but neither filed nor in SOURCE any more",
                                row["path"], REVIEW_CSV)
                    continue
                self._place(item, row["decision"])

    def _place(self, item: Item, decision: str) -> str:
        """Put the photo into OUT/<decision>/ (a hard link, else a copy); returns its file name."""
        name = output_name(item)
        target = self.out / decision / name
        if item.tar:
            data = self.reader.read(item)
            atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))
            return name
        if target.exists() and os.path.samefile(target, item.path):
            return name
        try:
            atomic_write(target, lambda tmp: os.link(item.path, tmp))
        except OSError:  # another file system, or links not allowed: copy
            atomic_write(target, lambda tmp: shutil.copyfile(item.path, tmp))
        return name

    def decide(self, entries: Sequence[tuple[Item, str]], by: str, scores: dict[str, Scores],
               reasons: dict[str, str] | None = None) -> int:
        """Record (item, decision) pairs made `by` person, auto or sheet, then file the photos.

        Photos already decided are left as they are; returns how many were recorded.
        """
        reasons = reasons or {}
        decided = self.decided
        new, filed = [], []
        for item, decision in entries:
            if decision not in CLASSES:
                raise ValueError(f"decision {decision!r}: expected {SUITABLE} or {UNSUITABLE}")
            if item.key in decided:
                continue
            decided.add(item.key)
            filed.append((item, decision))
            new.append({"path": item.key, "decision": decision, "by": by, "reason": reasons.get(item.key, ""),
                        "time": _now(), "file": output_name(item), **_score_columns(scores.get(item.key))})
        if not new:
            return 0
        rows = self.rows + new
        _write_csv(self.csv, COLUMNS, rows)
        self.rows = rows
        for item, decision in filed:
            self._place(item, decision)
        return len(new)

    def undo(self) -> dict | None:
        """Forget the last decision (of any session) and remove its file; returns its row."""
        if not self.rows:
            return None
        row = self.rows[-1]
        _write_csv(self.csv, COLUMNS, self.rows[:-1])
        self.rows = self.rows[:-1]
        (self.out / row["decision"] / row["file"]).unlink(missing_ok=True)
        return row


# --------------------------------------------------------------------------- without a person


def auto_reject(decisions: Decisions, items: Sequence[Item], scores: dict[str, Scores],
                rules: Sequence[quality.Threshold]) -> int:
    """File as unsuitable (by "auto") every undecided photo that any rule catches; returns how many."""
    decided = decisions.decided
    caught, reasons = [], {}
    for item in items:
        if item.key in decided or item.key not in scores:
            continue
        hits = [str(rule) for rule in rules if rule(scores[item.key])]
        if hits:
            caught.append((item, UNSUITABLE))
            reasons[item.key] = ",".join(hits)
    return decisions.decide(caught, "auto", scores, reasons)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: one bitmap size
        return ImageFont.load_default()


def thumbnail(item: Item, reader: ItemReader, side: int) -> Image.Image:
    """The photo, upright, RGB, its longer side at most `side` (grey with the reason if unreadable)."""
    try:
        image, _ = quality.open_image(reader.read(item) if item.tar else item.path, side)
        image = image.convert("RGB")
        image.thumbnail((side, side))
        return image
    except Exception as err:  # noqa: BLE001 — shown in place of the photo
        image = Image.new("RGB", (side, side), (128, 128, 128))
        ImageDraw.Draw(image).text((4, side // 2), first_line(err, 40), fill=(255, 255, 255))
        return image


def write_sheets(items: Sequence[Item], scores: dict[str, Scores], folder, reader: ItemReader) -> list[Path]:
    """Contact sheets (sheet-001.png, … numbered thumbnails with scores) and an editable sheet.csv.

    sheet.csv has one row per photo: number, sheet, path, decision (empty: fill in a or
    suitable, r or unsuitable, or leave it empty), and its scores; give it back with
    --apply-sheet.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    columns, rows_per_sheet = SHEET_GRID
    per_sheet = columns * rows_per_sheet
    cell_w, cell_h = THUMB + 8, THUMB + 40
    font, small = _font(18), _font(11)
    sheets, rows = [], []
    for page, start in enumerate(range(0, len(items), per_sheet), 1):
        chunk = items[start:start + per_sheet]
        canvas = Image.new("RGB", (columns * cell_w, math.ceil(len(chunk) / columns) * cell_h), "white")
        draw = ImageDraw.Draw(canvas)
        for i, item in enumerate(chunk):
            number = start + i + 1
            r, c = divmod(i, columns)
            left, top = c * cell_w + 4, r * cell_h + 4
            thumb = thumbnail(item, reader, THUMB)
            canvas.paste(thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2))
            s = scores[item.key]
            draw.text((left, top + THUMB + 2), str(number), fill=(200, 0, 0), font=font)
            draw.text((left + 60, top + THUMB + 2), f"blur {s.blur:.0f}  dark {s.dark:.2f}", fill=(0, 0, 0),
                      font=small)
            draw.text((left + 60, top + THUMB + 16), f"clip {s.clipped:.2f}  {s.width}x{s.height}",
                      fill=(0, 0, 0), font=small)
            rows.append({"number": number, "sheet": page, "path": item.key, "decision": "",
                         **_score_columns(s)})
        path = folder / f"sheet-{page:03d}.png"
        atomic_write(path, lambda tmp, image=canvas: image.save(tmp, format="PNG"))
        sheets.append(path)
    for stale in folder.glob("sheet-*.png"):  # pages of an earlier, longer sheet
        if stale not in sheets and re.fullmatch(r"sheet-\d{3,}\.png", stale.name):
            stale.unlink()
    _write_csv(folder / SHEET_CSV, ("number", "sheet", "path", "decision") + SCORE_FIELDS, rows)
    return sheets


def read_sheet(path, items: dict[str, Item]) -> list[tuple[Item, str]]:
    """The (item, decision) pairs typed into a sheet.csv; raises naming the line of the first mistake."""
    path = Path(path)
    entries, seen = [], set()
    for n, row in enumerate(_read_csv(path, ("path", "decision")), 2):
        word = (row["decision"] or "").strip().lower()
        if not word:
            continue
        if word in ACCEPT_WORDS:
            decision = SUITABLE
        elif word in REJECT_WORDS:
            decision = UNSUITABLE
        else:
            raise ReviewError(f"{path} line {n}: decision {row['decision']!r}: use a or suitable, "
                              "r or unsuitable, or leave it empty")
        item = items.get(row["path"])
        if item is None:
            raise ReviewError(f"{path} line {n}: {row['path']} is not a photo of SOURCE")
        if item.key not in seen:
            seen.add(item.key)
            entries.append((item, decision))
    return entries


# --------------------------------------------------------------------------- the window

HELP = "a / →  suitable     r / ←  unsuitable     u  undo     s  skip     q  quit"
PAGE_HELP = ("1-{n}  mark exceptions     a / →  page suitable but the marked     "
             "r / ←  page unsuitable but the marked     u  undo     s  skip     q  quit")


class ReviewWindow:
    """The matplotlib window: one photo (or a page of `batch`) with its scores; keys decide.

    `press(key)` is what a key does, so tests (under Agg) and scripts drive the window
    as a person does; matplotlib's own keys (s saves, q closes, ←/→ navigate, r resets
    the view) are switched off in it.
    """

    def __init__(self, decisions: Decisions, queue: Sequence[Item], scores: dict[str, Scores],
                 batch: int = 1):
        import matplotlib.pyplot as plt

        self.decisions, self.scores, self.batch = decisions, scores, int(batch)
        self.queue = list(queue)
        self.marked: set[str] = set()
        self.closed = False
        self._images: dict[str, np.ndarray] = {}  # the page's photos, decoded once
        self.last = ""
        cols = math.ceil(math.sqrt(self.batch))
        rows = math.ceil(self.batch / cols)
        self.fig = plt.figure(figsize=(9, 7.5) if self.batch == 1 else (4 * cols, 3.6 * rows + 0.8))
        manager = self.fig.canvas.manager
        if manager is not None:
            manager.set_window_title("Castle Dreamer: review for pass 2")
            if getattr(manager, "key_press_handler_id", None) is not None:
                self.fig.canvas.mpl_disconnect(manager.key_press_handler_id)
        self.fig.canvas.mpl_connect("key_press_event", self._on_key)
        self.axes = [self.fig.add_subplot(rows, cols, i + 1) for i in range(self.batch)]
        self.fig.subplots_adjust(left=0.02, right=0.98, bottom=0.07, top=0.88, wspace=0.05, hspace=0.3)
        self.status = self.fig.text(0.5, 0.965, "", ha="center", va="top", fontsize=11)
        self.fig.text(0.5, 0.015, HELP if self.batch == 1 else PAGE_HELP.format(n=self.batch),
                      ha="center", fontsize=8, color="0.3")
        self.draw()

    @property
    def page(self) -> list[Item]:
        return self.queue[:self.batch]

    def draw(self) -> None:
        page = self.page
        for i, ax in enumerate(self.axes):
            ax.clear()
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(page):
                ax.set_axis_off()
                continue
            item = page[i]
            ax.set_axis_on()
            if item.key not in self._images:
                self._images[item.key] = np.asarray(thumbnail(item, self.decisions.reader, SCREEN))
            ax.imshow(self._images[item.key])
            marked = item.key in self.marked
            prefix = f"{i + 1}. " if self.batch > 1 else ""
            ax.set_title(f"{prefix}{'[EXCEPTION] ' if marked else ''}{item.name}\n"
                         f"{describe(self.scores[item.key])}", fontsize=8 if self.batch > 1 else 10,
                         color="tab:red" if marked else "black")
            for spine in ax.spines.values():
                spine.set_color("tab:red" if marked else "0.8")
                spine.set_linewidth(4 if marked else 1)
        self._images = {item.key: self._images[item.key] for item in page}
        counts = self.decisions.counts()
        done = f"{counts[SUITABLE]} suitable, {counts[UNSUITABLE]} unsuitable"
        if page:
            text = f"{len(self.queue)} left · {done}"
        else:
            text = f"All photos are decided: {done}. u undoes the last, q quits."
        self.status.set_text(text + (f"\n{self.last}" if self.last else ""))
        self.fig.canvas.draw_idle()

    def _on_key(self, event) -> None:
        self.press(event.key)

    def press(self, key: str | None) -> None:
        """Do what `key` does (unknown keys do nothing); letters in either case."""
        key = key.lower() if key and len(key) == 1 else key
        page = self.page
        if key in ("a", "right") and page:
            self.commit(accept=True)
        elif key in ("r", "left") and page:
            self.commit(accept=False)
        elif key == "u":
            self.undo()
        elif key == "s" and page:
            self.queue = self.queue[len(page):] + page
            self.last = f"skipped {len(page)}"
        elif key == "q":
            self.quit()
            return
        elif key and key.isdigit() and 1 <= int(key) <= len(page) and self.batch > 1:
            self.marked ^= {page[int(key) - 1].key}
        else:
            return
        self.draw()

    def commit(self, accept: bool) -> None:
        """File the page: suitable (accept) or unsuitable, the marked photos the other way."""
        page = self.page
        flip = {True: SUITABLE, False: UNSUITABLE}
        entries = [(item, flip[accept != (item.key in self.marked)]) for item in page]
        self.decisions.decide(entries, "person", self.scores)
        self.queue = self.queue[len(page):]
        self.marked -= {item.key for item in page}
        self.last = "; ".join(f"{item.name} → {decision}" for item, decision in entries)

    def undo(self) -> None:
        row = self.decisions.undo()
        if row is None:
            self.last = "nothing to undo"
            return
        item = self.decisions.items.get(row["path"])
        if item is not None:
            self.queue = [item] + [i for i in self.queue if i.key != item.key]
        self.last = f"undone: {row['path']} ({row['decision']})"

    def quit(self) -> None:
        import matplotlib.pyplot as plt

        self.closed = True
        plt.close(self.fig)

    def show(self) -> None:
        import matplotlib.pyplot as plt

        plt.show()


def has_display() -> bool:
    """Whether matplotlib's backend can open a window."""
    import matplotlib
    from matplotlib.backends import backend_registry

    return backend_registry.resolve_backend(matplotlib.get_backend())[1] is not None


# --------------------------------------------------------------------------- the program


def review(config: ReviewConfig, source, out, window_factory=None) -> dict:
    """Review SOURCE into OUT under `config`; returns the counts. The window, if any, blocks.

    `window_factory(decisions, queue, scores, batch)` makes the window (an object with
    `show()`); the default is `ReviewWindow`, which needs a display.
    """
    out = Path(out)
    sheet = Path(config.sheet) if config.sheet else None
    if sheet is not None:
        need(sheet.resolve() != out.resolve() and sheet.resolve().parent != out.resolve(), "sheet",
             f"{sheet} would be a class folder of OUT for train.py; use a folder outside {out}")
    interactive = config.window and sheet is None
    if interactive and window_factory is None:
        import matplotlib

        if not has_display():
            raise ReviewError(f"no display for the review window (matplotlib backend "
                              f"{matplotlib.get_backend()}): use --sheet DIR, or --no-window")
        window_factory = ReviewWindow
    rules = quality.parse_thresholds(config.auto_reject)
    items = list_photos(source, out, [str(sheet)] if sheet else [])
    reader = ItemReader()
    try:
        decisions = Decisions(out, items, reader)
        if decisions.decided:
            log.info("%s: %d photos already decided", decisions.csv, len(decisions.decided))
        todo = [item for item in items if item.key not in decisions.decided]
        scores, errors = score_items(todo, out / SCORES_CSV, reader)
        if errors:
            log.warning("%d photos cannot be decoded and are not reviewed (their reasons: %s)",
                        len(errors), out / SCORES_CSV)
        if config.apply_sheet:
            recorded = decisions.decide(read_sheet(config.apply_sheet, decisions.items), "sheet", scores)
            log.info("%s: %d decisions recorded", config.apply_sheet, recorded)
        auto = auto_reject(decisions, todo, scores, rules) if rules else 0
        if rules:
            log.info("--auto-reject %s: %d photos filed as unsuitable", config.auto_reject, auto)
        queue = sort_items([i for i in todo if i.key in scores and i.key not in decisions.decided],
                           scores, config.order)
        if sheet is not None and queue:
            pages = write_sheets(queue, scores, sheet, reader)
            log.info("%d undecided photos on %d contact sheets in %s; fill the decision column of %s "
                     "and run again with --apply-sheet", len(queue), len(pages), sheet, sheet / SHEET_CSV)
        if interactive and queue:
            window_factory(decisions, queue, scores, config.batch).show()
        counts = decisions.counts()
        left = len([i for i in items if i.key not in decisions.decided and i.key not in errors])
        log.info("%s: %d suitable, %d unsuitable, %d left to review", out, counts[SUITABLE],
                 counts[UNSUITABLE], left)
        return {**counts, "left": left, "auto": auto, "unreadable": len(errors)}
    finally:
        reader.close()


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser("python -m transfer_learning.review", __doc__)
    parser.add_argument("source", metavar="SOURCE", help="photos to review: a folder (recursive), "
                        "a .txt/.csv list or a .tar shard, e.g. classify.py's output folder")
    parser.add_argument("out", metavar="OUT", help="review.csv, scores.csv and the suitable/ and "
                        "unsuitable/ folders go here (train.py --data OUT)")
    cfg.add_arguments(parser, ReviewConfig)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    log_to_stderr()
    return exit_code(lambda: review(cfg.from_args(ReviewConfig, args), args.source, args.out),
                     usage=(ConfigError, DataError, ReviewError))


if __name__ == "__main__":
    sys.exit(main())
