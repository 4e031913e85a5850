"""``bddseg download``: fetch the official BDD100K 10K zips, resume, verify, extract safely.

Everything lives under ``ROOT/.downloads/``:

* ``NAME.part``       the download in progress; a re-run resumes it with an HTTP Range request
* ``NAME``            the complete zip (deleted after extraction unless ``keep_archives``)
* ``NAME.bad``        a zip that failed verification, moved aside so a re-run downloads afresh
* ``NAME.extracting`` the staging folder; members land here first and are renamed into ROOT
* ``NAME.done``       written atomically after a complete extraction; a re-run skips NAME

Nothing from a zip is written before every member has passed the safety checks (no absolute
paths, no ``..``, no links, nothing under ``.downloads``), and nothing reaches its final name
before the whole archive has been extracted and every member's CRC has matched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from bddseg._version import __version__
from bddseg.errors import BddsegError, warn
from bddseg.files import atomic_write_text

DEFAULT_BASE_URL = "https://dl.cv.ethz.ch/bdd100k/data/"
ARCHIVES: dict[str, tuple[str, ...]] = {
    "images": ("10k_images_train.zip", "10k_images_val.zip", "10k_images_test.zip"),
    "labels": ("bdd100k_sem_seg_labels_trainval.zip",),
}
# Known SHA-256 digests, checked when present. Empty because the official sums could not be
# fetched when this was written; each run prints (and records in NAME.done) the digest it saw.
KNOWN_SHA256: dict[str, str] = {}
DOWNLOADS = ".downloads"

_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_MIRROR_HINT = (
    "check the network, or pass --base-url URL for a mirror serving the official zip names"
)
_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RE = re.compile(r"bytes\s+\*/(\d+)")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)

Report = Callable[[int, "int | None"], None]


class _Transient(Exception):
    """A dropped connection, a timeout or a 5xx: worth retrying."""


class _Rejected(BddsegError):
    """A corrupted or unsafe zip: it is moved aside so a re-run fetches it again."""


def archive_names(what: Sequence[str]) -> list[str]:
    """The zip names for ``what`` (``images``, ``labels``), in order, without duplicates."""
    unknown = [w for w in what if w not in ARCHIVES]
    if unknown or not what:
        got = ", ".join(unknown) if unknown else "nothing"
        raise BddsegError(f"unknown --what {got}; valid: {', '.join(ARCHIVES)}")
    return list(dict.fromkeys(n for w in what for n in ARCHIVES[w]))


def download(
    root: Path,
    base_url: str | None = None,
    what: Sequence[str] = ("images", "labels"),
    progress: bool = True,
    keep_archives: bool = False,
    retries: int = 5,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
) -> list[Path]:
    """Download, verify and extract the official zips into ``root``.

    Archives with a ``ROOT/.downloads/NAME.done`` marker are skipped without any request
    (delete the marker to fetch one again). A dropped connection is retried up to ``retries``
    times in a row (waits ``retry_wait * 2**k`` seconds), resuming each time.

    Returns the paths ``ROOT/.downloads/NAME`` of the archives processed by this call (skipped
    ones excluded); the files themselves are deleted after extraction unless ``keep_archives``.
    """
    from rich import progress as rp
    from rich.console import Console

    names = archive_names(what)
    base = _base_url(base_url)
    root = Path(root)
    dl = root / DOWNLOADS
    try:
        dl.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BddsegError(f"cannot create the download folder ({e.strerror or e})", dl) from None
    console = Console(stderr=True)
    columns = (rp.DownloadColumn(), rp.TransferSpeedColumn(), rp.TimeRemainingColumn())
    bar = rp.Progress(
        *rp.Progress.get_default_columns()[:2],
        *columns,
        console=console,
        disable=not (progress and console.is_terminal),
    )
    processed, tasks = [], {}
    with bar:
        for name in names:
            done = dl / f"{name}.done"
            if done.exists():
                print(f"{name}: already done ({done})")
                continue

            def report(completed: int, total: int | None, name: str = name) -> None:
                if name not in tasks:  # only archives that are actually fetched get a bar
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=completed, total=total)

            url = base + urllib.parse.quote(name)
            _process(name, url, root, report, keep_archives, retries, retry_wait, timeout)
            processed.append(dl / name)
    return processed


def _base_url(base_url: str | None) -> str:
    base = base_url or DEFAULT_BASE_URL
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise BddsegError("--base-url must be an http:// or https:// URL", base)
    return base if base.endswith("/") else base + "/"


def _process(name, url, root, report, keep_archives, retries, retry_wait, timeout) -> None:
    """One archive: fetch (unless a complete zip is already there), verify, extract, mark done."""
    dl = root / DOWNLOADS
    archive = dl / name
    if archive.exists():
        print(f"{name}: using the complete download from an earlier run")
    else:
        print(f"{name}: downloading {url}")
        part = dl / f"{name}.part"
        fetch(url, part, retries=retries, retry_wait=retry_wait, timeout=timeout, report=report)
        os.replace(part, archive)
    try:
        print(f"{name}: verifying the CRC of every member")
        sha256 = verify_archive(archive, KNOWN_SHA256.get(name))
        print(f"{name}: extracting into {root}")
        files = extract_archive(archive, root)
    except _Rejected as e:
        bad = dl / f"{name}.bad"
        os.replace(archive, bad)
        raise BddsegError(
            f"{e.problem}; nothing extracted; moved it aside to {bad.name} "
            "(run the command again to download it afresh)",
            archive,
        ) from None
    record = {
        "archive": name,
        "url": url,
        "bytes": archive.stat().st_size,
        "sha256": sha256,
        "files": files,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(dl / f"{name}.done", json.dumps(record, indent=2) + "\n")
    (dl / f"{name}.bad").unlink(missing_ok=True)
    if not keep_archives:
        archive.unlink()
    print(f"{name}: extracted {files} files into {root} (sha256 {sha256})")


# ---------------------------------------------------------------- fetching
def fetch(
    url: str,
    part: Path,
    *,
    retries: int = 5,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    report: Report | None = None,
) -> None:
    """Download ``url`` into ``part``, resuming from the bytes already there, until complete.

    Complete means: as many bytes as the server's Content-Length / Content-Range total (when
    it gives one), or a 416 whose total equals the size on disk. ``retries`` counts failures
    in a row; any progress resets the count.
    """
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        try:
            if _fetch_once(url, part, have, timeout, report):
                return
        except _Transient as e:
            now = part.stat().st_size if part.exists() else 0
            failures = 1 if now > have else failures + 1
            if failures > retries:
                raise BddsegError(
                    f"cannot download ({e}) after {failures} attempts; {_MIRROR_HINT}", url
                ) from None
            warn(f"{part.name}: {e}; retrying from byte {now}")
            time.sleep(retry_wait * 2 ** (failures - 1))


def _fetch_once(url: str, part: Path, have: int, timeout: float, report: Report | None) -> bool:
    """One request. True when ``part`` is complete; False to start again at once."""
    headers = {"User-Agent": f"bddseg/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        e.close()
        if e.code == 416 and have:
            return _check_unsatisfied(e.headers.get("Content-Range"), part, have)
        if e.code in _RETRY_STATUS:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise BddsegError(f"HTTP {e.code} {e.reason}; {_MIRROR_HINT}", url) from None
    except (URLError, HTTPException, OSError) as e:
        cause = e.reason if isinstance(e, URLError) else e
        if isinstance(cause, (socket.gaierror, ConnectionRefusedError)):  # retrying won't help
            raise BddsegError(f"cannot download ({_reason(e)}); {_MIRROR_HINT}", url) from None
        raise _Transient(_reason(e)) from None
    with resp:
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:  # a confused server: start over rather than splice wrong bytes
                part.unlink(missing_ok=True)
                raise _Transient(f"asked for byte {have} onwards, got {start} onwards")
            mode = "ab"
        else:
            if have:
                print(f"{part.name}: the server ignored the Range request; starting over")
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        size = have + _stream(resp, part, mode, have, total, report)
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink(missing_ok=True)
        raise BddsegError(f"received {size} bytes but the server announced {total}", url)
    return True


def _stream(resp, part: Path, mode: str, have: int, total: int | None, report) -> int:
    """Append the response body to ``part``; return the bytes written."""
    written = 0
    try:
        with open(part, mode) as f:
            while True:
                try:  # read1: what has arrived, so a stall loses nothing already received
                    chunk = resp.read1(_CHUNK)
                except (HTTPException, OSError) as e:
                    raise _Transient(_reason(e)) from None
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
                if report:
                    report(have + written, total)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise BddsegError(f"cannot write ({e.strerror or e})", part) from None
    return written


def _check_unsatisfied(content_range: str | None, part: Path, have: int) -> bool:
    """A 416 to ``Range: bytes=HAVE-``: complete if the total is HAVE; otherwise start over."""
    m = _UNSATISFIED_RE.match(content_range or "")
    if m is None or int(m.group(1)) == have:
        return True  # without a total, the zip checks decide
    print(f"{part.name}: {have} bytes on disk but the server has {m.group(1)}; starting over")
    part.unlink()
    return False


def _content_range(value: str | None) -> tuple[int, int | None]:
    m = _RANGE_RE.match(value or "")
    if m is None:
        raise _Transient(f"a 206 response with a bad Content-Range {value!r}")
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def _reason(e: BaseException) -> str:
    if isinstance(e, URLError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason
    detail = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {detail}" if detail else type(e).__name__


# ---------------------------------------------------------------- verifying and extracting
def verify_archive(archive: Path, sha256: str | None = None) -> str:
    """Check the SHA-256 (when known), the central directory and every member's CRC.

    Returns the SHA-256 seen. A damaged zip raises (a subclass of) :class:`BddsegError`.
    """
    digest = hashlib.sha256()
    try:
        with open(archive, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        seen = digest.hexdigest()
        if sha256 and seen != sha256.lower():
            raise _Rejected(f"SHA-256 {seen} differs from the known {sha256}", archive)
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():  # zipfile.testzip, naming the member and the cause
                try:
                    with zf.open(info) as member:
                        while member.read(_CHUNK):
                            pass
                except (*_ZIP_ERRORS, NotImplementedError, RuntimeError) as e:
                    problem = f"corrupted archive: member {info.filename!r}: {e}"
                    raise _Rejected(problem, archive) from None
    except (*_ZIP_ERRORS, ValueError) as e:
        raise _Rejected(f"corrupted archive: not a readable zip ({e})", archive) from None
    except OSError as e:
        raise BddsegError(f"cannot read ({e.strerror or e})", archive) from None
    return seen


def unsafe_reason(name: str, external_attr: int = 0) -> str | None:
    """Why a zip entry must not be extracted, or None when it is safe."""
    kind = stat.S_IFMT(external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a device, FIFO or socket"
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        return "is an absolute path"
    if ".." in parts:
        return "climbs out with '..'"
    if not parts:
        return "has an empty name"
    if parts[0] == DOWNLOADS:
        return f"would write into {DOWNLOADS}/"
    return None


def check_members(zf: zipfile.ZipFile, archive: Path, dest: Path) -> list[zipfile.ZipInfo]:
    """Every member, after refusing the whole archive if any one of them is unsafe.

    ``dest`` is the fresh staging folder: resolving there (not in ROOT) judges the zip alone,
    so a folder the user symlinked inside ROOT (say, to a bigger disk) is not refused.
    """
    base = dest.resolve()
    infos = zf.infolist()
    for info in infos:
        reason = unsafe_reason(info.filename, info.external_attr)
        if reason is None and not (base / info.filename).resolve().is_relative_to(base):
            reason = "lands outside the destination"
        if reason:
            raise _Rejected(f"refused: entry {info.filename!r} {reason}", archive)
    return infos


def extract_archive(archive: Path, root: Path) -> int:
    """Extract ``archive`` into ``root`` through a staging folder; return the files written."""
    staging = root / DOWNLOADS / f"{archive.name}.extracting"
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = check_members(zf, archive, staging)
            need = sum(i.file_size for i in infos)
            free = shutil.disk_usage(root).free
            if need > free:
                raise BddsegError(
                    f"needs {need / 1e9:.1f} GB free in {root}, has {free / 1e9:.1f}", archive
                )
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            files = 0
            for info in infos:
                target = staging / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    _copy(src, dst)
                files += 1
            _merge_into(staging, root)
        return files
    except _ZIP_ERRORS as e:
        raise _Rejected(f"corrupted archive: {e}", archive) from None
    except OSError as e:
        raise BddsegError(f"cannot extract into {root} ({e.strerror or e})", archive) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy(src, dst) -> None:
    shutil.copyfileobj(src, dst, _CHUNK)  # zipfile checks the CRC when the member ends


def _merge_into(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst`` by renames: whole folders where ``dst`` lacks them.

    Each rename is atomic, so every final name is either absent or complete.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_into(entry, target)
        else:
            os.replace(entry, target)
