"""``mm-live data fetch`` against a local HTTP server on 127.0.0.1 that the test starts (Range
support, a mode that drops the connection mid-file, and a watchdog that stops it by itself)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mm_live.cli import main
from mm_live.data.fetch import SOURCES, Source, download, fetch, unpack
from mm_live.errors import DataError


class Server:
    """Serves ``files`` {url path: bytes}; ``drop`` {url path: n}: the first GET of that path sends
    only n bytes (with the full Content-Length) and closes the connection. ``log`` keeps
    (path, Range header) of every request."""

    def __init__(self, files: dict[str, bytes], drop: dict[str, int] | None = None, lifetime: float = 30.0):
        self.files, self.drop, self.log = files, dict(drop or {}), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                cut = outer.drop.pop(self.path, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.watchdog = threading.Timer(lifetime, self.httpd.shutdown)  # bounded: stops by itself
        self.watchdog.daemon = True

    def __enter__(self) -> "Server":
        self.thread.start()
        self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


ANN = b"".join(b'{"qid": %d, "vid": "v%d", "label": [[1], [0]]}\n' % (i, i) for i in range(400))
TGZ = _tar_gz({"feats/v0.npy": random.Random(0).randbytes(6000), "feats/v1.npy": b"abc" * 1000})
ZIP = _zip({"clip/v0.npz": b"z" * 3000})


def _table(ann=ANN, ann_sha=None, tgz=TGZ):
    return (
        Source("toy", "toy_val_release.jsonl", "https://example.invalid/toy_val_release.jsonl",
               ann_sha or _sha(ann), len(ann), "CC BY-NC-SA 4.0", "test table"),
        Source("toy", "toy_features.tar.gz", "https://example.invalid/f.tgz", _sha(tgz), len(tgz), "toy terms",
               "test table", kind="features", unpack_to="features"),
        Source("toy", "toy_clip.zip", "https://example.invalid/c.zip", _sha(ZIP), len(ZIP), "toy terms",
               "test table", kind="features", unpack_to="clip_features"),
    )


FILES = {"/toy/toy_val_release.jsonl": ANN, "/toy/toy_features.tar.gz": TGZ, "/toy/toy_clip.zip": ZIP}


def test_fetch_downloads_verifies_unpacks_and_writes_the_licence(tmp_path):
    lines = []
    with Server(FILES) as srv:
        res = fetch("toy", tmp_path / "toy", features=True, mirror=srv.url, table=_table(), progress=False,
                    echo=lines.append)
        assert (tmp_path / "toy" / "toy_val_release.jsonl").read_bytes() == ANN
        assert (tmp_path / "toy" / "features" / "feats" / "v1.npy").read_bytes() == b"abc" * 1000
        assert (tmp_path / "toy" / "clip_features" / "clip" / "v0.npz").read_bytes() == b"z" * 3000
        assert not (tmp_path / "toy" / "toy_features.tar.gz").exists()  # unpacked archives are removed
        assert not list((tmp_path / "toy").glob("*.part")) and not list((tmp_path / "toy").glob(".*tmp*"))
        licence = (tmp_path / "toy" / "LICENCE.txt").read_text()
        assert "CC BY-NC-SA 4.0" in licence and "toy_val_release.jsonl" in licence
        assert "CC BY-NC-SA 4.0" in lines[0]  # printed too
        record = json.loads((tmp_path / "toy" / "FETCHED.json").read_text())
        assert record["toy_val_release.jsonl"]["sha256"] == _sha(ANN) and record["toy_val_release.jsonl"]["verified"]
        assert res.skipped == [] and len(res.files) == 3
        n = len(srv.log)
        again = fetch("toy", tmp_path / "toy", features=True, mirror=srv.url, table=_table(), progress=False,
                      echo=lines.append)
        assert len(srv.log) == n and len(again.skipped) == 3  # complete files are not fetched twice
        # without features only the annotation file is fetched
        fetch("toy", tmp_path / "ann_only", mirror=srv.url, table=_table(), progress=False, echo=lines.append)
        assert sorted(p.name for p in (tmp_path / "ann_only").iterdir()) == ["FETCHED.json", "LICENCE.txt",
                                                                            "toy_val_release.jsonl"]
        # an archive put in place by hand (e.g. from a browser) is checked and used, not downloaded
        (tmp_path / "hand").mkdir()
        (tmp_path / "hand" / "toy_features.tar.gz").write_bytes(TGZ)
        n = len(srv.log)
        fetch("toy", tmp_path / "hand", features=True, mirror=srv.url, table=_table(), progress=False,
              echo=lines.append)
        assert "/toy/toy_features.tar.gz" not in [p for p, _ in srv.log[n:]] and len(srv.log) == n + 2
        assert (tmp_path / "hand" / "features" / "feats" / "v1.npy").is_file()


def test_a_dropped_connection_is_resumed_with_a_range_request(tmp_path):
    half = len(ANN) // 2
    with Server(FILES, drop={"/toy/toy_val_release.jsonl": half}) as srv:  # resumed inside the same call
        fetch("toy", tmp_path / "a", mirror=srv.url, table=_table(), progress=False, echo=lambda s: None)
        assert (tmp_path / "a" / "toy_val_release.jsonl").read_bytes() == ANN
        assert srv.log == [("/toy/toy_val_release.jsonl", None), ("/toy/toy_val_release.jsonl", f"bytes={half}-")]
    url = "/toy/toy_features.tar.gz"
    with Server(FILES, drop={url: 1000}) as srv:  # no retries: the next call resumes from the .part
        dest = tmp_path / "b" / "f.tar.gz"
        with pytest.raises(DataError, match="run the same command again to resume"):
            download(srv.url + url, dest, sha256=_sha(TGZ), size=len(TGZ), retries=0, progress=False)
        assert (tmp_path / "b" / "f.tar.gz.part").stat().st_size == 1000 and not dest.exists()
        assert download(srv.url + url, dest, sha256=_sha(TGZ), size=len(TGZ), progress=False) == _sha(TGZ)
        assert dest.read_bytes() == TGZ and srv.log[-1] == (url, "bytes=1000-")


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path):
    with Server(FILES) as srv:
        with pytest.raises(DataError, match="expected sha256 0000"):
            fetch("toy", tmp_path / "t", mirror=srv.url, table=_table(ann_sha="0" * 64), progress=False,
                  echo=lambda s: None)
        assert not (tmp_path / "t" / "toy_val_release.jsonl").exists()
        assert not (tmp_path / "t" / "toy_val_release.jsonl.part").exists()
        bad_tgz = _table(tgz=TGZ[:-10] + b"0123456789")  # the server serves another archive than the table's
        with pytest.raises(DataError, match="the download was deleted"):
            fetch("toy", tmp_path / "t", features=True, mirror=srv.url, table=bad_tgz, progress=False,
                  echo=lambda s: None)
        assert not (tmp_path / "t" / "features").exists() and not list((tmp_path / "t").glob("*.part"))


def test_unverified_entries_need_the_flag():
    with pytest.raises(DataError, match="--allow-unverified"):
        fetch("kuailive", "/nonexistent/never_written", progress=False, echo=lambda s: None)


def test_archives_with_paths_outside_the_target_are_refused(tmp_path):
    for name, data in (("evil.tar.gz", _tar_gz({"../escape.txt": b"x"})), ("evil.zip", _zip({"../escape.txt": b"x"}))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match="lands outside"):
            unpack(tmp_path / name, tmp_path / f"out_{name}")
        assert not (tmp_path / "escape.txt").exists() and not (tmp_path / f"out_{name}").exists()


def test_offline_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MM_LIVE_FETCH_MIRROR", f"http://127.0.0.1:{port}")
    assert main(["data", "fetch", "qvhighlights", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach 127.0.0.1" in err and "offline" in err
    assert not list((tmp_path / "q").glob("*.jsonl*"))


def test_the_table_has_a_checksum_or_none_and_a_licence_for_every_row():
    for s in SOURCES:
        assert s.licence and s.origin and s.url.startswith("https://")
        assert s.sha256 is None or (len(s.sha256) == 64 and s.size)


def test_table_checksums_match_the_shared_copies(real_data):
    """The annotation rows' sha256 were taken from the published files; the shared copies are byte-identical."""
    copies = {"highlight_val_release.jsonl": "qvhighlights", "LICENSE": "qvhighlights",
              "sample_val_preds.jsonl": "qvhighlights", "tvsum_val_release.jsonl": "tvsum",
              "tvsum_train_release.jsonl": "tvsum", "youtube_highlight_val_release.jsonl": "youtube_highlights"}
    rows = {s.name: s for s in SOURCES}
    for name, folder in copies.items():
        data = (real_data / folder / name).read_bytes()
        assert (_sha(data), len(data)) == (rows[name].sha256, rows[name].size), name


def test_klive_is_not_fetched_and_says_where_to_get_it(tmp_path, capsys):
    assert main(["data", "fetch", "klive", "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "states no licence" in err and "by hand" in err and not (tmp_path / "k").exists()
