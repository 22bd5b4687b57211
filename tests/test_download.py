"""data.fetch, data.archives and data.download against a local HTTP server on 127.0.0.1: never the internet.

The server serves bytes from a dict, honours `Range: bytes=N-` (or, switched,
ignores it), can drop a connection half-way through once, and records every
request with its Range header.
"""

import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data import archives, download, fetch
from data.archives import UnsafeArchiveError
from data.fetch import DownloadError


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.requests.append((path, rng))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        if_range = self.headers.get("If-Range")
        srv.if_ranges.append(if_range)
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and srv.honour_range and if_range in (None, etag):
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("ETag", etag)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in srv.drop_once:  # announce everything, send half, hang up
            srv.drop_once.discard(path)
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.drop_once, srv.honour_range = {}, [], set(), True
    srv.if_ranges = []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connection refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _payload(n=200_000, seed=0):
    return bytes((i * 7919 + seed) % 251 for i in range(n))


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _zip_bytes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(members, mode="w"):
    """members: (name, bytes) for files, (name, ("symlink" | "hardlink", target)) for links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = content[1]
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# --------------------------------------------------------------------------- download_file


def test_download_checks_md5_and_gives_the_final_name_only_when_complete(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    dest = fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(data),
                               expected_size=len(data), progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    server.drop_once.add("/a.bin")
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match=r"a\.bin.*100000 of 200000 bytes.*run again to resume"):
        fetch.download_file(f"{server.url}/a.bin", dest, md5=_md5(data), progress=False)
    assert not dest.exists()  # a partial file is never taken for the real one
    assert (tmp_path / "a.bin.part").stat().st_size == len(data) // 2

    fetch.download_file(f"{server.url}/a.bin", dest, md5=_md5(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1] == ("/a.bin", f"bytes={len(data) // 2}-")
    assert not (tmp_path / "a.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    server.honour_range = False
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes that must not survive")
    dest = fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(data),
                               progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/a.bin", "bytes=33-")]  # asked to resume, got a 200


def test_md5_mismatch_deletes_the_download_and_names_the_file(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    with pytest.raises(DownloadError, match=r"a\.bin: md5 .* does not match the published"):
        fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5="0" * 32,
                            progress=False)
    assert _files_under(tmp_path) == []


def test_resumed_part_that_does_not_add_up_fails_md5_and_is_deleted(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(b"x" * 1000)  # wrong first bytes, resumed at 1000
    with pytest.raises(DownloadError, match="md5"):
        fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(data),
                            progress=False)
    assert _files_under(tmp_path) == []


def test_complete_part_is_verified_and_renamed_without_downloading_again(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)  # e.g. killed between transfer and rename
    dest = fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(data),
                               progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/a.bin", f"bytes={len(data)}-")]  # answered 416: nothing left


def test_second_call_makes_no_request(server, tmp_path):
    data = _payload()
    server.files["/a.bin"] = data
    for _ in range(2):
        fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=_md5(data),
                            progress=False)
    assert len(server.requests) == 1


def test_unreachable_server_is_one_line_naming_file_and_url(closed_port_url, tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch.download_file(f"{closed_port_url}/a.bin", tmp_path / "a.bin", progress=False,
                            timeout=5)
    message = str(info.value)
    assert message.startswith(f"could not download a.bin from {closed_port_url}/a.bin: ")
    assert "refused" in message.lower() and "\n" not in message


def test_progress_bar_only_when_asked_off_a_terminal(server, tmp_path, capsys):
    server.files["/a.bin"] = _payload()
    fetch.download_file(f"{server.url}/a.bin", tmp_path / "a.bin", progress=True)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    fetch.download_file(f"{server.url}/a.bin", tmp_path / "b.bin", progress="always")
    assert "100%" in capsys.readouterr().err


# --------------------------------------------------------------------------- safe_extract


def test_zip_and_tar_gz_unpack_with_a_completion_marker(tmp_path):
    files = {"photos/a.jpg": b"jpeg a", "photos/sub/b.jpg": b"jpeg b"}
    (tmp_path / "x.zip").write_bytes(_zip_bytes(files))
    (tmp_path / "x.tar.gz").write_bytes(_tar_bytes(list(files.items()), mode="w:gz"))
    for name in ("x.zip", "x.tar.gz"):
        out = archives.safe_extract(tmp_path / name, tmp_path / f"out-{name}")
        assert (out / "photos/sub/b.jpg").read_bytes() == b"jpeg b"
        assert (out / archives.MARKER).exists()
        assert not (tmp_path / f"out-{name}.partial").exists()
    # a marked folder is finished: the archive is not even opened again
    (tmp_path / "x.zip").write_bytes(b"no longer an archive")
    out = tmp_path / "out-x.zip"
    assert archives.safe_extract(tmp_path / "x.zip", out) == out


def test_folder_without_marker_is_not_taken_for_finished(tmp_path):
    (tmp_path / "x.zip").write_bytes(_zip_bytes({"a.jpg": b"a"}))
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match=r"out exists but has no \.complete marker"):
        archives.safe_extract(tmp_path / "x.zip", tmp_path / "out")


@pytest.mark.parametrize("attack", [
    "dotdot", "absolute", "symlink_to_etc", "write_through_symlink", "symlink_chain",
    "symlink_chain_only", "hardlink",
])
def test_traversal_tar_is_refused_before_anything_is_written(tmp_path, attack):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = {
        "dotdot": [("../evil.txt", b"evil")],
        "absolute": [(str(outside / "abs.txt"), b"evil")],
        "symlink_to_etc": [("etc", ("symlink", "/etc"))],
        "write_through_symlink": [("out", ("symlink", "../outside")), ("out/evil.txt", b"evil")],
        # each link looks harmless on paper; together l1 is the target's parent
        "symlink_chain": [("l2", ("symlink", ".")), ("l1", ("symlink", "l2/..")),
                          ("l1/outside/evil.txt", b"evil")],
        "symlink_chain_only": [("l2", ("symlink", ".")), ("l1", ("symlink", "l2/.."))],
        "hardlink": [("passwd", ("hardlink", "/etc/passwd"))],
    }[attack]
    archive = tmp_path / "attack.tar"
    archive.write_bytes(_tar_bytes([("ok.txt", b"fine")] + members))
    target = tmp_path / "target"
    refused = r"attack\.tar: refusing to unpack \(nothing was written\)"  # by our own check
    with pytest.raises(UnsafeArchiveError, match=refused):
        archives.safe_extract(archive, target)
    assert not target.exists() and not (tmp_path / "target.partial").exists()
    assert _files_under(tmp_path) == ["attack.tar", "outside"]
    assert not (tmp_path / "evil.txt").exists()


def test_zip_with_dotdot_member_is_refused(tmp_path):
    (tmp_path / "attack.zip").write_bytes(_zip_bytes({"ok.txt": b"ok", "../evil.txt": b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="'../evil.txt' would be written outside"):
        archives.safe_extract(tmp_path / "attack.zip", tmp_path / "target")
    assert _files_under(tmp_path) == ["attack.zip"]


def test_links_that_stay_inside_are_unpacked(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar_bytes([("img/a.jpg", b"a"), ("latest.jpg", ("symlink", "img/a.jpg")),
                                    ("copy.jpg", ("hardlink", "img/a.jpg"))]))
    out = archives.safe_extract(archive, tmp_path / "out")
    assert (out / "latest.jpg").read_bytes() == b"a" and (out / "copy.jpg").read_bytes() == b"a"


# --------------------------------------------------------------------------- datasets


def test_fetch_dataset_end_to_end_from_a_mirror(server, tmp_path):
    server.files["/mirror/reduced_128.zip"] = _zip_bytes(
        {"reduced_128/0a1b.jpg": b"img0", "reduced_128/0a1c.jpg": b"img1"})
    folder = download.fetch_dataset("reduced_128", tmp_path, base_url=f"{server.url}/mirror/",
                                    progress=False)
    assert folder == tmp_path / "reduced_128"
    assert (folder / "reduced_128/0a1c.jpg").read_bytes() == b"img1"
    assert not (tmp_path / "downloads/reduced_128.zip").exists()  # deleted once unpacked
    count = len(server.requests)
    again = download.fetch_dataset("reduced_128", tmp_path, base_url=f"{server.url}/mirror")
    assert again == folder
    assert len(server.requests) == count  # nothing to do the second time


def test_fetch_dataset_joins_all_parts_of_reduced_256(server, tmp_path, monkeypatch):
    spec = download.DATASETS["reduced_256"]
    assert len(spec.urls) == 5
    for part in range(5):
        server.files[f"/m/{spec.filename(part)}"] = _zip_bytes(
            {f"red_256_part_{part + 1}/img{part}.jpg": bytes([part])})
    monkeypatch.setenv(download.DATA_URL_ENV, f"{server.url}/m")
    folder = download.fetch_dataset("reduced_256", tmp_path, progress=False, keep_archives=True)
    assert sorted(p.name for p in folder.rglob("*.jpg")) == [f"img{i}.jpg" for i in range(5)]
    assert len(list((tmp_path / "downloads").glob("*.zip.zip"))) == 5


def test_fetch_dataset_offline_is_one_clear_line(closed_port_url, tmp_path):
    with pytest.raises(DownloadError) as info:
        download.fetch_dataset("reduced_128", tmp_path, base_url=closed_port_url, progress=False)
    message = str(info.value)
    url = f"{closed_port_url}/reduced_128.zip"
    assert message.startswith(f"could not download reduced_128 from {url}: ")
    assert "\n" not in message
    assert not (tmp_path / "reduced_128").exists()


def test_registry_points_at_the_original_projects_zenodo_files():
    assert download.DATASETS["reduced_128"].urls == (
        "https://zenodo.org/record/5655491/files/reduced_128.zip?download=1",)
    assert download.DATASETS["reduced_256"].filename(4) == "red_256_part_5.zip.zip"
    assert all(md5 is None for spec in download.DATASETS.values() for md5 in spec.md5)


def test_fetch_gldv2_shards_checks_each_against_its_md5_file(server, tmp_path):
    tars = {i: _tar_bytes([(f"0/a/{i}/0a{i}ff.jpg", b"img%d" % i)]) for i in (0, 1)}
    for i, data in tars.items():
        server.files[f"/train/images_{i:03d}.tar"] = data
        server.files[f"/md5sum/train/md5.images_{i:03d}.txt"] = \
            f"{_md5(data)}  images_{i:03d}.tar\n".encode()
    paths = download.fetch_gldv2_shards(tmp_path, [0, 1], base_url=server.url, progress=False)
    folder = tmp_path / "gldv2/train"
    assert paths == [folder / "images_000.tar", folder / "images_001.tar"]
    assert paths[1].read_bytes() == tars[1]

    unpacked = download.fetch_gldv2_shards(tmp_path, [1], extract=True, base_url=server.url)
    assert (unpacked[0] / "0/a/1/0a1ff.jpg").read_bytes() == b"img1"
    assert not (folder / "images_001.tar").exists()


def test_local_gldv2_md5_file_is_used_and_a_mismatch_rejects_the_shard(server, tmp_path):
    server.files["/train/images_007.tar"] = _tar_bytes([("a.jpg", b"a")])
    folder = tmp_path / "gldv2/train"
    folder.mkdir(parents=True)
    (folder / "md5.images_007.txt").write_text("0123456789abcdef0123456789abcdef  images_007.tar\n")
    with pytest.raises(DownloadError, match=r"images_007\.tar: md5 .* does not match"):
        download.fetch_gldv2_shards(tmp_path, [7], base_url=server.url, progress=False)
    assert [path for path, _ in server.requests] == ["/train/images_007.tar"]
    assert sorted(os.listdir(folder)) == ["md5.images_007.txt"]


# --------------------------------------------------------------------------- CLI


def test_cli_unknown_dataset_exits_2_listing_known_names(capsys):
    assert download.main(["castles_in_the_air"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'castles_in_the_air'" in err and "reduced_128" in err and "gldv2" in err


def test_cli_bad_shards_exit_2(capsys):
    assert download.main(["gldv2", "--shards", "9-3"]) == 2
    assert download.main(["gldv2", "--shards", "500"]) == 2
    assert download.main(["gldv2"]) == 2
    assert download.parse_shards("0-2,7,1") == [0, 1, 2, 7]


def test_cli_network_failure_exits_1_with_one_line(closed_port_url, tmp_path, capsys):
    code = download.main(["reduced_128", "--root", str(tmp_path), "--base-url", closed_port_url])
    assert code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "could not download reduced_128 from" in err[0]


def test_cli_downloads_gldv2_shards_and_prints_their_paths(server, tmp_path, capsys):
    data = _tar_bytes([("a.jpg", b"a")])
    server.files["/train/images_003.tar"] = data
    server.files["/md5sum/train/md5.images_003.txt"] = f"{_md5(data)}  images_003.tar".encode()
    code = download.main(["gldv2", "--shards", "3", "--extract", "--root", str(tmp_path),
                          "--base-url", server.url, "--progress", "never"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "gldv2/train/images_003")


def test_a_file_changed_on_the_server_is_fetched_whole_not_spliced(server, tmp_path):
    old, new = _payload(seed=1), _payload(seed=2)
    server.files["/f.bin"] = old
    server.drop_once.add("/f.bin")
    with pytest.raises(DownloadError):
        fetch.download_file(server.url + "/f.bin", tmp_path / "f.bin", progress=False)
    assert 0 < (tmp_path / "f.bin.part").stat().st_size < len(old)
    server.files["/f.bin"] = new  # same size, other bytes: only the ETag tells
    fetch.download_file(server.url + "/f.bin", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == new
    assert server.if_ranges[-1] == f'"{_md5(old)}"'  # the resume asked "only if still this file"
    assert not list(tmp_path.glob("*.part*"))


def test_an_unchanged_file_resumes_with_if_range(server, tmp_path):
    data = _payload(seed=3)
    server.files["/g.bin"] = data
    server.drop_once.add("/g.bin")
    with pytest.raises(DownloadError):
        fetch.download_file(server.url + "/g.bin", tmp_path / "g.bin", progress=False)
    fetch.download_file(server.url + "/g.bin", tmp_path / "g.bin", progress=False)
    assert (tmp_path / "g.bin").read_bytes() == data
    assert server.requests[-1][1].startswith("bytes=") and server.if_ranges[-1] == f'"{_md5(data)}"'


def test_a_zip_bomb_or_too_many_members_is_refused_before_anything_is_written(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 20_000_000)  # 20 MB in about 20 KB
    with pytest.raises(UnsafeArchiveError, match="times its own size"):
        archives.safe_extract(bomb, tmp_path / "out")
    many = tmp_path / "many.tar"
    many.write_bytes(_tar_bytes([(f"f{i}.txt", b"x") for i in range(20)]))
    with pytest.raises(UnsafeArchiveError, match="20 members"):
        archives.safe_extract(many, tmp_path / "out", archives.Limits(members=10))
    with pytest.raises(UnsafeArchiveError, match="20 bytes, more than 10$"):
        archives.safe_extract(many, tmp_path / "out", archives.Limits(total_bytes=10))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert archives.safe_extract(many, tmp_path / "out") == tmp_path / "out"  # the defaults allow it


# --------------------------------------------------------------------------- GLDv2 metadata

_TRAIN_CSV = b"id,url,landmark_id\n" + b"".join(
    b"%016x,https://example.org/%d.jpg,%d\n" % (i, i, i % 7) for i in range(4000))
_HIERARCHY_CSV = (b"landmark_id,category,supercategory,hierarchical_label,natural_or_human_made\n"
                  b"0,http://commons.wikimedia.org/wiki/Category:X,church,church,human-made\n")


def _serve_metadata(server, train=_TRAIN_CSV, hierarchy=_HIERARCHY_CSV):
    server.files["/metadata/train.csv"] = train
    server.files["/metadata/train_label_to_hierarchical.csv"] = hierarchy


def test_catalogue_names_the_official_gldv2_metadata_urls(tmp_path, monkeypatch):
    asked = []
    monkeypatch.delenv(download.GLDV2_URL_ENV, raising=False)
    monkeypatch.setattr(download, "download_file", lambda url, dest, **kw: asked.append(url) or dest)
    paths = download.fetch_gldv2_metadata(tmp_path, progress=False)
    assert asked == ["https://s3.amazonaws.com/google-landmark/metadata/train.csv",
                     "https://s3.amazonaws.com/google-landmark/metadata/train_label_to_hierarchical.csv"]
    assert paths == [tmp_path / "gldv2/metadata/train.csv",
                     tmp_path / "gldv2/metadata/train_label_to_hierarchical.csv"]
    assert download.GLDV2_METADATA["train_label_to_hierarchical.csv"] == (
        "landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made")


def test_gldv2_metadata_download_is_resumed_and_checked(server, tmp_path):
    _serve_metadata(server)
    server.drop_once.add("/metadata/train.csv")
    folder = tmp_path / "gldv2/metadata"
    with pytest.raises(DownloadError, match=r"train\.csv.*run again to resume"):
        download.fetch_gldv2_metadata(tmp_path, base_url=server.url, progress=False)
    assert not (folder / "train.csv").exists()
    assert 0 < (folder / "train.csv.part").stat().st_size < len(_TRAIN_CSV)

    paths = download.fetch_gldv2_metadata(tmp_path, base_url=server.url, progress=False)
    assert [p.read_bytes() for p in paths] == [_TRAIN_CSV, _HIERARCHY_CSV]
    assert ("/metadata/train.csv", f"bytes={len(_TRAIN_CSV) // 2}-") in server.requests
    assert sorted(os.listdir(folder)) == ["train.csv", "train_label_to_hierarchical.csv"]
    count = len(server.requests)
    download.fetch_gldv2_metadata(tmp_path, base_url=server.url, progress=False)
    assert len(server.requests) == count  # verified files are not fetched again


def test_gldv2_metadata_with_another_header_is_rejected_and_deleted(server, tmp_path):
    _serve_metadata(server, train=b"<html><body>Access Denied</body></html>\n<p>x</p>\n")
    with pytest.raises(DownloadError) as info:
        download.fetch_gldv2_metadata(tmp_path, ["train.csv"], base_url=server.url, progress=False)
    message = str(info.value)
    assert "train.csv" in message and "'id,url,landmark_id'" in message and "\n" not in message
    assert "<html>" in message and "deleted" in message
    assert _files_under(tmp_path / "gldv2/metadata") == []
    _serve_metadata(server, hierarchy=b"landmark_id,category,supercategory,hierarchical_label,"
                                      b"natural_or_human_made\n")  # a header and nothing else
    with pytest.raises(DownloadError, match="no rows after its header"):
        download.fetch_gldv2_metadata(tmp_path, ["train_label_to_hierarchical.csv"],
                                      base_url=server.url, progress=False)


def test_gldv2_metadata_already_there_but_wrong_is_fetched_again(server, tmp_path):
    _serve_metadata(server)
    folder = tmp_path / "gldv2/metadata"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("id,landmark_id\n0123,5\n")  # another file of that name
    (path,) = download.fetch_gldv2_metadata(tmp_path, ["train.csv"], base_url=server.url,
                                            progress=False)
    assert path.read_bytes() == _TRAIN_CSV
    assert server.requests == [("/metadata/train.csv", None)]


def test_cli_downloads_gldv2_metadata_and_prints_their_paths(server, tmp_path, capsys):
    _serve_metadata(server)
    code = download.main(["gldv2_metadata", "--root", str(tmp_path), "--base-url", server.url,
                          "--progress", "never"])
    assert code == 0
    folder = tmp_path / "gldv2/metadata"
    assert capsys.readouterr().out.split() == [str(folder / "train.csv"),
                                               str(folder / "train_label_to_hierarchical.csv")]
    assert download.main(["gldv2_metadata", "--shards", "0"]) == 2
