"""``bddseg download`` against a local mirror on 127.0.0.1 that each test starts and stops.

The mirror serves small zips in the official internal layout and supports Range requests;
it can drop a connection after N bytes, stall, answer 503 once, or ignore Range altogether.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import stat
import struct
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bddseg import download as dl
from bddseg.cli import main
from bddseg.download import ARCHIVES, DOWNLOADS, download, unsafe_reason
from bddseg.errors import BddsegError

TRAIN, VAL, TEST = ARCHIVES["images"]
(LABELS,) = ARCHIVES["labels"]


# ---------------------------------------------------------------- zips in the official layout
def _official_members() -> dict[str, dict[str, bytes]]:
    rnd = random.Random(0)
    images = {
        TRAIN: ("train", 3),
        VAL: ("val", 2),
        TEST: ("test", 2),
    }
    members = {}
    for name, (split, n) in images.items():
        members[name] = {
            f"bdd100k/images/10k/{split}/{split}{i:02d}.jpg": rnd.randbytes(40_000)
            for i in range(n)
        }
    members[LABELS] = {
        f"bdd100k/labels/sem_seg/{kind}/{split}/{split}{i:02d}.png": rnd.randbytes(5_000)
        for kind in ("masks", "colormaps")
        for split, n in (("train", 3), ("val", 2))
        for i in range(n)
    }
    return members


MEMBERS = _official_members()


def _zip(members: dict[str, bytes], dirs: bool = False, extra: list[zipfile.ZipInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if dirs:  # like the official zips, folders first
            folders = sorted({p.rsplit("/", k)[0] + "/" for p in members for k in (1, 2, 3)})
            for folder in folders:
                zf.writestr(folder, b"")
        for name, data in members.items():
            zf.writestr(name, data)
        for info in extra:
            zf.writestr(info, b"not really a file")
    return buf.getvalue()


ZIPS = {name: _zip(m, dirs=name == TRAIN) for name, m in MEMBERS.items()}


def _corrupt(data: bytes) -> bytes:
    """Flip bytes in the middle of the first member's data: the central directory stays intact."""
    b = bytearray(data)
    for i in range(200, 260):
        b[i] ^= 0xFF
    return bytes(b)


def _assert_layout(root: Path, names=tuple(ZIPS)) -> None:
    for name in names:
        for member, data in MEMBERS[name].items():
            assert (root / member).read_bytes() == data, member


def _leftovers(root: Path) -> list[str]:
    """Anything in .downloads but the done markers."""
    return sorted(p.name for p in (root / DOWNLOADS).iterdir() if not p.name.endswith(".done"))


# ---------------------------------------------------------------- the local mirror
class Mirror:
    def __init__(self, url: str):
        self.url = url
        self.files = dict(ZIPS)
        self.log: list[tuple[str, str | None]] = []  # (name, Range header) per request
        self.drop_after: dict[str, int] = {}  # name -> bytes sent before closing (once)
        self.reset_after: dict[str, int] = {}  # name -> bytes sent before a TCP reset (once)
        self.stall_after: dict[str, int] = {}  # name -> bytes sent before stalling (once)
        self.fail_once: dict[str, int] = {}  # name -> HTTP status answered once
        self.ignore_range = False

    def ranges(self, name: str) -> list[str | None]:
        return [r for n, r in self.log if n == name]


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a stuck client cannot hold a handler thread for long

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        m: Mirror = self.server.mirror
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        m.log.append((name, rng))
        if name in m.fail_once:
            self.send_error(m.fail_once.pop(name))
            return
        data = m.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not m.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
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
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if name in m.drop_after:
            self.wfile.write(body[: m.drop_after.pop(name)])
        elif name in m.reset_after:
            self.wfile.write(body[: m.reset_after.pop(name)])
            self.wfile.flush()
            time.sleep(0.05)  # let the client read the bytes before the reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(self.connection.detach())  # close now, with linger 0: the peer gets a RST
        elif name in m.stall_after:
            self.wfile.write(body[: m.stall_after.pop(name)])
            self.wfile.flush()
            time.sleep(1.0)  # longer than the client's timeout
        else:
            self.wfile.write(body)
        self.close_connection = True


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-body are part of the tests


@pytest.fixture
def mirror(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.mirror = Mirror(f"http://127.0.0.1:{server.server_address[1]}/bdd100k/data/")
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run(root: Path, mirror: Mirror, what=("images", "labels"), **kw) -> list[Path]:
    kw = {"progress": False, "retries": 3, "retry_wait": 0.0, "timeout": 5.0, **kw}
    return download(root, base_url=mirror.url, what=list(what), **kw)


# ---------------------------------------------------------------- clean runs
def test_clean_run_extracts_the_official_layout(tmp_path, mirror):
    root = tmp_path / "root"
    got = _run(root, mirror)
    assert got == [root / DOWNLOADS / n for n in (TRAIN, VAL, TEST, LABELS)]
    _assert_layout(root)
    assert mirror.log == [(n, None) for n in (TRAIN, VAL, TEST, LABELS)]
    assert _leftovers(root) == []  # zips deleted, no .part, no staging folder
    assert sorted(p.name for p in root.iterdir()) == [DOWNLOADS, "bdd100k"]


def test_rerun_skips_finished_archives_without_any_request(tmp_path, mirror, capsys):
    root = tmp_path / "root"
    _run(root, mirror, what=["labels"])
    mirror.log.clear()
    capsys.readouterr()
    assert _run(root, mirror, what=["labels"]) == []
    assert mirror.log == []
    assert "already done" in capsys.readouterr().out
    # a later run for everything fetches only what is missing
    assert _run(root, mirror) == [root / DOWNLOADS / n for n in (TRAIN, VAL, TEST)]
    assert [n for n, _ in mirror.log] == [TRAIN, VAL, TEST]
    _assert_layout(root)


def test_keep_archives_keeps_the_verified_zip(tmp_path, mirror):
    root = tmp_path / "root"
    _run(root, mirror, what=["labels"], keep_archives=True)
    assert (root / DOWNLOADS / LABELS).read_bytes() == ZIPS[LABELS]
    done = (root / DOWNLOADS / f"{LABELS}.done").read_text()
    assert hashlib.sha256(ZIPS[LABELS]).hexdigest() in done


# ---------------------------------------------------------------- interrupted transfers
@pytest.mark.parametrize(
    "how, said",
    [
        ("drop_after", "connection closed after 50000 of"),
        ("reset_after", "Connection"),  # reset by peer, or closed, depending on timing
        ("stall_after", "timed out"),
    ],
)
def test_interrupted_download_resumes_with_range(tmp_path, mirror, capsys, how, said):
    root = tmp_path / "root"
    cut = 50_000
    getattr(mirror, how)[TRAIN] = cut
    _run(root, mirror, what=["images"], timeout=0.5)
    ranges = mirror.ranges(TRAIN)
    assert ranges[0] is None and len(ranges) == 2, ranges
    if how != "reset_after":  # a reset may discard bytes in flight: the offset may be lower
        assert ranges[1] == f"bytes={cut}-"
    err = capsys.readouterr().err
    assert "retrying from byte" in err and said.lower() in err.lower()
    _assert_layout(root, [TRAIN, VAL, TEST])
    assert _leftovers(root) == []


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, mirror):
    root = tmp_path / "root"
    (root / DOWNLOADS).mkdir(parents=True)
    (root / DOWNLOADS / f"{LABELS}.part").write_bytes(ZIPS[LABELS][:12_345])
    _run(root, mirror, what=["labels"])
    assert mirror.log == [(LABELS, "bytes=12345-")]
    _assert_layout(root, [LABELS])


def test_complete_part_gets_416_and_is_verified(tmp_path, mirror):
    root = tmp_path / "root"
    (root / DOWNLOADS).mkdir(parents=True)
    size = len(ZIPS[LABELS])
    (root / DOWNLOADS / f"{LABELS}.part").write_bytes(ZIPS[LABELS])
    _run(root, mirror, what=["labels"])
    assert mirror.log == [(LABELS, f"bytes={size}-")]
    _assert_layout(root, [LABELS])


def test_server_ignoring_range_restarts_from_zero(tmp_path, mirror, capsys):
    root = tmp_path / "root"
    mirror.ignore_range = True
    mirror.drop_after[TRAIN] = 30_000
    (root / DOWNLOADS).mkdir(parents=True)
    (root / DOWNLOADS / f"{LABELS}.part").write_bytes(b"stale bytes from another version")
    _run(root, mirror)
    assert mirror.ranges(TRAIN) == [None, "bytes=30000-"]
    assert mirror.ranges(LABELS) == [f"bytes={len(b'stale bytes from another version')}-"]
    assert "ignored the Range request" in capsys.readouterr().out
    _assert_layout(root)


def test_a_503_is_retried(tmp_path, mirror):
    root = tmp_path / "root"
    mirror.fail_once[LABELS] = 503
    _run(root, mirror, what=["labels"])
    assert mirror.ranges(LABELS) == [None, None]
    _assert_layout(root, [LABELS])


# ---------------------------------------------------------------- corrupted archives
@pytest.mark.parametrize(
    "bad, words",
    [
        (_corrupt(ZIPS[LABELS]), "corrupted archive: member"),
        (b"<html>oops</html>", "not a readable zip"),
    ],
)
def test_corrupted_zip_is_a_clear_error_and_a_rerun_downloads_afresh(
    tmp_path, mirror, capsys, bad, words
):
    root = tmp_path / "root"
    mirror.files[LABELS] = bad
    argv = ["download", str(root), "--base-url", mirror.url, "--what", "labels"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and err.startswith("error: ") and LABELS in err and words in err
    )
    assert not (root / "bdd100k").exists()
    assert _leftovers(root) == [f"{LABELS}.bad"]
    assert not (root / DOWNLOADS / f"{LABELS}.done").exists()

    mirror.files[LABELS] = ZIPS[LABELS]
    mirror.log.clear()
    assert main(argv) == 0
    assert mirror.log == [(LABELS, None)]
    _assert_layout(root, [LABELS])
    assert _leftovers(root) == []


def test_known_sha256_is_checked(tmp_path, mirror, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setitem(dl.KNOWN_SHA256, LABELS, "0" * 64)
    with pytest.raises(BddsegError, match="SHA-256"):
        _run(root, mirror, what=["labels"])
    assert not (root / "bdd100k").exists()
    monkeypatch.setitem(dl.KNOWN_SHA256, LABELS, hashlib.sha256(ZIPS[LABELS]).hexdigest())
    _run(root, mirror, what=["labels"])
    _assert_layout(root, [LABELS])


# ---------------------------------------------------------------- unsafe entries
def _evil_zip(info: zipfile.ZipInfo) -> bytes:
    return _zip(MEMBERS[LABELS], extra=[info])


@pytest.mark.parametrize(
    "entry",
    [
        "../evil.txt",
        "bdd100k/../../evil.txt",
        "..\\evil.txt",
        "ABSOLUTE",
        "C:/evil.txt",
        f"{DOWNLOADS}/{LABELS}.done",
    ],
)
def test_entries_outside_root_are_refused_before_writing(tmp_path, mirror, capsys, entry):
    root = tmp_path / "root"
    outside = tmp_path / "evil.txt"
    entry = str(outside) if entry == "ABSOLUTE" else entry
    mirror.files[LABELS] = _evil_zip(zipfile.ZipInfo(entry))
    assert main(["download", str(root), "--base-url", mirror.url, "--what", "labels"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and repr(entry) in err and LABELS in err
    assert not outside.exists()
    assert not (root / "bdd100k").exists()  # the good members were not written either
    assert not (root / DOWNLOADS / f"{LABELS}.done").exists()
    assert _leftovers(root) == [f"{LABELS}.bad"]  # no staging folder, the zip moved aside


def test_symlink_entry_is_refused(tmp_path, mirror):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    link = zipfile.ZipInfo("bdd100k/labels/sem_seg/masks/train/link.png")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    mirror.files[LABELS] = _zip(MEMBERS[LABELS], extra=[link])
    with pytest.raises(BddsegError, match="symbolic link") as e:
        _run(root, mirror, what=["labels"])
    assert LABELS in str(e.value) and "link.png" in str(e.value)
    assert not outside.exists()
    assert not (root / "bdd100k").exists()
    assert _leftovers(root) == [f"{LABELS}.bad"]


def test_a_folder_the_user_symlinked_inside_root_is_followed(tmp_path, mirror):
    root, disk = tmp_path / "root", tmp_path / "bigdisk"
    disk.mkdir()
    root.mkdir()
    (root / "bdd100k").symlink_to(disk, target_is_directory=True)
    _run(root, mirror, what=["labels"])
    _assert_layout(root, [LABELS])
    assert (disk / "labels" / "sem_seg" / "masks" / "train").is_dir()


ALPHABET = st.sampled_from(["a", ".", "..", "/", "\\", "C:", DOWNLOADS, "b/"])


@given(st.lists(ALPHABET, max_size=8).map("".join))
def test_a_safe_name_always_lands_inside_root(name):
    root = Path("/srv/root")
    if unsafe_reason(name) is None:
        target = (root / name).resolve()
        assert target.is_relative_to(root) and target != root
        assert not target.is_relative_to(root / DOWNLOADS)


# ---------------------------------------------------------------- interrupted extraction
def test_interrupted_extraction_leaves_no_final_names(tmp_path, mirror, monkeypatch):
    root = tmp_path / "root"
    real_copy, calls = dl._copy, []

    def dying_copy(src, dst):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_copy(src, dst)

    monkeypatch.setattr(dl, "_copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        _run(root, mirror, what=["labels"])
    assert not (root / "bdd100k").exists()
    assert _leftovers(root) == [LABELS]  # the verified zip stays; the staging folder is gone

    monkeypatch.setattr(dl, "_copy", real_copy)
    mirror.log.clear()
    _run(root, mirror, what=["labels"])
    assert mirror.log == []  # the complete zip was reused
    _assert_layout(root, [LABELS])


# ---------------------------------------------------------------- bad arguments, network errors
def test_unknown_what_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(BddsegError, match="valid: images, labels"):
        download(tmp_path, what=["images", "videos"], progress=False)
    assert main(["download", str(tmp_path), "--what", "masks"]) == 2
    assert "images, labels" in capsys.readouterr().err


def test_unreachable_server_names_the_url_and_suggests_a_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data"
    start = time.monotonic()
    with pytest.raises(BddsegError) as e:
        download(tmp_path, base_url=url, what=["labels"], progress=False)
    assert time.monotonic() - start < 1.0  # refused is final: no retries with backoff
    assert f"{url}/{LABELS}" in str(e.value) and "--base-url" in str(e.value)


def test_missing_file_on_the_mirror_is_not_retried(tmp_path, mirror):
    del mirror.files[LABELS]
    with pytest.raises(BddsegError, match="HTTP 404"):
        _run(tmp_path, mirror, what=["labels"])
    assert mirror.log == [(LABELS, None)]


def test_base_url_must_be_http(tmp_path):
    with pytest.raises(BddsegError, match="http"):
        download(tmp_path, base_url="ftp://example.org/", progress=False)


def test_progress_bar_on_a_terminal(tmp_path, mirror, monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    mirror.drop_after[LABELS] = 10_000
    _run(tmp_path, mirror, what=["labels"], progress=True)
    _assert_layout(tmp_path, [LABELS])
    assert "kB" in capsys.readouterr().err  # the bar's DownloadColumn was drawn
