"""``mm-live data fetch``: download a public dataset's annotation files (and, on request, the
precomputed features its authors publish), verified, unpacked and with its licence written beside it.

Everything fetched is listed in :data:`SOURCES`, one row per file: URL, sha256, size, licence and
where the file comes from. Rules of the table:

- a sha256/size is given only when it was computed from the published file itself. The annotation
  files below were hashed from the blobs of the repositories at the pinned commits in their URLs
  (jayleicn/moment_detr ``b7e553a``, line/lighthouse ``d095eaa``); the copies under
  ``/work/shared/data`` (QVHighlights val + LICENSE + sample predictions, TVSum train/val JSONL,
  YouTube Highlights val JSONL) hash to the same values, byte for byte;
- files nobody here could read (feature archives on Google Drive, KuaiLive on Zenodo) have
  ``sha256=None``. They are refused unless ``allow_unverified`` (``--allow-unverified``); then the
  sha256 actually received is printed and recorded in ``FETCHED.json`` so a second machine can
  check it has the same bytes;
- datasets whose licence does not allow redistribution or whose files sit behind a sign-in are
  not in the table; :data:`BY_HAND` says where to get them.

Downloads use :mod:`urllib` (standard library; no new dependency): a ``.part`` file grows, an
interrupted transfer is resumed with an HTTP ``Range`` request (in the same call, and by running
the command again), the sha256 is computed while bytes arrive and checked before the atomic rename
onto the final name; a mismatch deletes the ``.part`` and leaves nothing in place. ``.tar.gz`` and
``.zip`` archives are unpacked into a temporary folder next to the target (members that would land
outside it, links and device files are refused) and renamed into place. ``MM_LIVE_FETCH_MIRROR``
(or ``mirror=``) replaces every URL by ``<mirror>/<dataset>/<file name>``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mm_live.errors import ConfigError, DataError
from mm_live.fileio import atomic_open, write_json

MIRROR_ENV = "MM_LIVE_FETCH_MIRROR"
CHUNK = 1 << 16
TIMEOUT_S = 30.0
RETRIES = 3  # resumed attempts after a dropped connection, within one call

_MD = "https://raw.githubusercontent.com/jayleicn/moment_detr/b7e553ac3b0c898ee6b85e03ee507c064eab89ca"
_LH = "https://raw.githubusercontent.com/line/lighthouse/d095eaa552cecef240897a8b750306b3b2a08740"
_GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="

CC_BY_NC_SA = "CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/)"


@dataclass(frozen=True)
class Source:
    """One file of a dataset. ``name`` is where it lands under the output folder; ``unpack_to``
    (archives) is the folder it is unpacked into; ``kind`` is ``annotations`` or ``features``."""

    dataset: str
    name: str
    url: str
    sha256: str | None
    size: int | None
    licence: str
    origin: str
    kind: str = "annotations"
    unpack_to: str | None = None


SOURCES: tuple[Source, ...] = (
    # QVHighlights (Lei et al., NeurIPS 2021): annotations CC BY-NC-SA 4.0, code MIT.
    Source("qvhighlights", "LICENSE", f"{_MD}/data/LICENSE",
           "9e502ba75fd0fd30cea5497b438a4bc12f07f02bc932a7a6041fd6a18b8f46a0", 20848, CC_BY_NC_SA,
           "github.com/jayleicn/moment_detr data/LICENSE"),
    Source("qvhighlights", "highlight_train_release.jsonl", f"{_MD}/data/highlight_train_release.jsonl",
           "fd28404187468f57cf99242be2963127dc9b4aef26c7de3cb9469569801f2625", 3956580, CC_BY_NC_SA,
           "github.com/jayleicn/moment_detr data/"),
    Source("qvhighlights", "highlight_val_release.jsonl", f"{_MD}/data/highlight_val_release.jsonl",
           "f668a1eaea156ec5315e14718999cea043a8cf948d3cafbd8e8d655318c3cd02", 821101, CC_BY_NC_SA,
           "github.com/jayleicn/moment_detr data/ (= shared/data/qvhighlights copy)"),
    Source("qvhighlights", "highlight_test_release.jsonl", f"{_MD}/data/highlight_test_release.jsonl",
           "0462f0cb582b54913671ba5ebfc325931ffa6d422c60cb72520749fc6d5d05a3", 204566, CC_BY_NC_SA,
           "github.com/jayleicn/moment_detr data/ (no labels: scored on the authors' server)"),
    Source("qvhighlights", "sample_val_preds.jsonl", f"{_MD}/standalone_eval/sample_val_preds.jsonl",
           "df3227ef84985db846f102e75cda43b5f9f962d12b95b990028eed88f1901b40", 2399408, CC_BY_NC_SA,
           "github.com/jayleicn/moment_detr standalone_eval/ (a Moment-DETR model's val predictions)"),
    Source("qvhighlights", "moment_detr_features.tar.gz", _GDRIVE + "1Hiln02F1NEpoW8-iPZurRyi-47-W2_B9",
           None, None, CC_BY_NC_SA + " (features of the dataset's videos)",
           "Google Drive file linked from the moment_detr README (SlowFast + CLIP, ~8 GB)",
           kind="features", unpack_to="features"),
    # TVSum (Song et al., CVPR 2015) in the JSONL layout of UMT/QD-DETR/Lighthouse.
    Source("tvsum", "tvsum_train_release.jsonl", f"{_LH}/data/tvsum/tvsum_train_release.jsonl",
           "f23a819e3b97d1404b986995cfd84e2c8e6ec2ab6f1fb8e035984332c8918380", 455424,
           "TVSum dataset terms (Yahoo Webscope I4, research use); videos CC BY 3.0",
           "github.com/line/lighthouse data/tvsum/ (= shared/data/tvsum copy)"),
    Source("tvsum", "tvsum_val_release.jsonl", f"{_LH}/data/tvsum/tvsum_val_release.jsonl",
           "4b0788e8aa8091fd57f5a1d550d8998d9fda206e5014b716e52d3232b2d5a426", 193627,
           "TVSum dataset terms (Yahoo Webscope I4, research use); videos CC BY 3.0",
           "github.com/line/lighthouse data/tvsum/ (= shared/data/tvsum copy)"),
    Source("tvsum", "tvsum_features.zip", _GDRIVE + "1gSex1hpXLxHQu6zHyyQISKZjP7Ndt6U9", None, None,
           "TVSum dataset terms (features of its videos)",
           "Google Drive file linked from the Lighthouse README (I3D + CLIP features)",
           kind="features", unpack_to="features"),
    # YouTube Highlights (Sun et al., ECCV 2014) in the Lighthouse JSONL layout.
    Source("youtube_highlights", "youtube_highlight_train_release.jsonl",
           f"{_LH}/data/youtube_highlight/youtube_highlight_train_release.jsonl",
           "42eeb3ff6a600edadb8174cba3051cea2b323029b71e6aee750fef70f606a71e", 447223,
           "the dataset authors' terms (research use)", "github.com/line/lighthouse data/youtube_highlight/"),
    Source("youtube_highlights", "youtube_highlight_val_release.jsonl",
           f"{_LH}/data/youtube_highlight/youtube_highlight_val_release.jsonl",
           "3a0ffaa30695952f9f8c882947825328f4fea71dd34ce47b30d4160c79b37785", 232614,
           "the dataset authors' terms (research use)",
           "github.com/line/lighthouse data/youtube_highlight/ (= shared/data/youtube_highlights copy)"),
    Source("youtube_highlights", "youtube_highlight_features.zip", _GDRIVE + "12swoymGwuN5TlDlWBTo6UUWVm2DqVBpn",
           None, None, "the dataset authors' terms (features of its videos)",
           "Google Drive file linked from the Lighthouse README (CLIP + SlowFast features)",
           kind="features", unpack_to="features"),
    # KuaiLive (Kuaishou, 2025): interaction logs, CC BY-NC-SA 4.0 on Zenodo.
    Source("kuailive", "KuaiLive.zip", "https://zenodo.org/records/16565801/files/KuaiLive.zip?download=1",
           None, None, CC_BY_NC_SA, "zenodo.org/records/16565801 (linked from imgkkk574.github.io/KuaiLive)",
           unpack_to="KuaiLive"),
)

# Datasets (or parts) that cannot be fetched automatically, and why.
BY_HAND: dict[str, str] = {
    "klive": "the KLive release (github.com/djx2726889/KLive) states no licence and sits on Google Drive: "
             "download it by hand from the link in its src/dataset/README.md",
    "tvsum_mat": "the original ydata-tvsum50.mat and the videos need a Yahoo Webscope sign-in "
                 "(webscope.sandbox.yahoo.com, dataset I4)",
}

DATASETS = tuple(dict.fromkeys(s.dataset for s in SOURCES))

_LICENCE_NOTES = {
    "qvhighlights": "QVHighlights annotations: CC BY-NC-SA 4.0 (non-commercial, share alike; the full text is "
                    "in LICENSE). Code of moment_detr: MIT. Videos: YouTube content, not redistributed here. "
                    "Cite: Lei, Berg, Bansal, 'QVHighlights: Detecting Moments and Highlights in Videos via "
                    "Natural Language Queries', NeurIPS 2021.",
    "tvsum": "TVSum annotations: Yahoo Webscope dataset terms (research use); the videos are CC BY 3.0. The JSONL "
             "conversion ships in github.com/line/lighthouse. Cite: Song, Vallmitjana, Stent, Jaimes, 'TVSum: "
             "Summarizing web videos using titles', CVPR 2015.",
    "youtube_highlights": "YouTube Highlights: the dataset authors' terms (research use; "
                          "github.com/aliensunmin/DomainSpecificHighlight). The JSONL conversion ships in "
                          "github.com/line/lighthouse. Cite: Sun, Farhadi, Seitz, 'Ranking Domain-specific "
                          "Highlights by Analyzing Edited Videos', ECCV 2014.",
    "kuailive": "KuaiLive: CC BY-NC-SA 4.0 (non-commercial, share alike), zenodo.org/records/16565801. "
                "Field descriptions: imgkkk574.github.io/KuaiLive.",
}


@dataclass
class FetchResult:
    """What one fetch did: the output folder, the files written (or already there) and the licence file."""

    out: Path
    files: list[Path]
    skipped: list[str]
    unverified: list[str]
    licence: Path


def sources(dataset: str, *, features: bool = False, table: Sequence[Source] = SOURCES) -> list[Source]:
    """The table rows of ``dataset`` (annotation files; feature archives too with ``features``)."""
    rows = [s for s in table if s.dataset == dataset]
    if not rows:
        known = sorted({s.dataset for s in table})
        extra = f"; {BY_HAND[dataset]}" if dataset in BY_HAND else ""
        raise ConfigError(f"cannot fetch {dataset!r}: known datasets are {', '.join(known)}{extra}")
    return [s for s in rows if features or s.kind != "features"]


def source_url(src: Source, mirror: str | None = None) -> str:
    """The URL to download ``src`` from: the table's, or ``<mirror>/<dataset>/<name>``."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    return f"{mirror.rstrip('/')}/{src.dataset}/{src.name}" if mirror else src.url


def _sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "mm-live-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part already holds every byte
            return None
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}; the file moved or the mirror lacks it "
                        f"(set {MIRROR_ENV} or fetch it by hand)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot reach {_host(url)} ({reason}): offline or the server is down; "
                        f"retry later, or set {MIRROR_ENV} to a reachable mirror") from None


def _transfer(url: str, part: Path, state: dict, timeout: float, progress: bool, desc: str) -> None:
    """Append the bytes of ``url`` from ``part``'s current size on, updating ``state["sha"]``;
    raises on a dropped connection."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    resp = _open(url, have, timeout)
    if resp is None:
        return
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start over
            have = 0
            part.unlink(missing_ok=True)
            state["sha"] = hashlib.sha256()
        elif have:
            rng = resp.headers.get("Content-Range", "")
            if not rng.startswith(f"bytes {have}-"):
                raise DataError(f"{url}: the server answered the resume request with range {rng!r}; "
                                f"delete {part} and fetch again")
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html") and not desc.endswith((".html", ".htm")):
            raise DataError(f"{url} returned a web page instead of {desc} (a sign-in or virus-scan page?); "
                            f"download it in a browser and put it at {part.with_suffix('')}")
        with open(part, "ab") as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc,
                                          disable=not progress, leave=False) as bar:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                fh.write(block)
                state["sha"].update(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
             retries: int = RETRIES, timeout: float = TIMEOUT_S, progress: bool = True) -> str:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed with HTTP Range after a dropped
    connection, ``retries`` times here and again on the next call); the sha256 (and size) is checked
    before the atomic rename. Returns the sha256 of the file. A mismatch removes the ``.part``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    state = {"sha": hashlib.sha256()}
    if part.exists():  # resume: hash what is already there
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                state["sha"].update(block)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, state, timeout, progress, dest.name)
            break
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
            if attempt == retries:
                got = part.stat().st_size if part.exists() else 0
                raise DataError(f"{url}: connection lost after {got} bytes ({type(exc).__name__}); run the "
                                f"same command again to resume from {part.name}") from None
    digest, got = state["sha"].hexdigest(), part.stat().st_size if part.exists() else 0
    if (size is not None and got != size) or (sha256 is not None and digest != sha256):
        part.unlink(missing_ok=True)
        expect = f"sha256 {sha256}" + (f", {size} bytes" if size is not None else "")
        raise DataError(f"{url}: got sha256 {digest} ({got} bytes), expected {expect}; the download was "
                        "deleted; the file changed upstream or the mirror serves another file")
    os.replace(part, dest)
    return digest


def _safe_members_tar(tf: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    root = dest.resolve()
    for m in tf.getmembers():
        target = (root / m.name).resolve()
        if not (m.isfile() or m.isdir()) or (target != root and root not in target.parents):
            raise DataError(f"archive member {m.name!r} is a link/device or lands outside {dest}: refusing to unpack")
    return tf.getmembers()


def unpack(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a ``.tar(.gz|.bz2|.xz)`` or ``.zip`` into ``dest`` (built in a temporary sibling and
    renamed into place). Members with absolute paths, ``..``, links or devices are refused."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(f"{dest} already exists: remove it to unpack {archive.name} again")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            # zipfile has no extraction filter like tarfile's 'data' filter: check every member here.
            with zipfile.ZipFile(archive) as zf:
                root = tmp.resolve()
                for info in zf.infolist():
                    target = (root / info.filename).resolve()
                    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                    if is_link or (target != root and root not in target.parents):
                        raise DataError(f"archive member {info.filename!r} is a link or lands outside {dest}: "
                                        "refusing to unpack")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = _safe_members_tar(tf, tmp)
                # Python's 'data' filter does the same checks again where it exists (3.11.4+).
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, members=members, **kwargs)
        else:
            raise DataError(f"{archive}: not a tar or zip archive; delete it and fetch again")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _record(out: Path) -> dict:
    path = out / "FETCHED.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return {}
    return {}


def licence_note(dataset: str, rows: Sequence[Source]) -> str:
    """The licence text written to ``LICENCE.txt`` and printed: terms, sources, per-file licences."""
    lines = [f"{dataset}: {_LICENCE_NOTES.get(dataset, 'see the sources below')}", "", "Files and where they come from:"]
    lines += [f"- {s.name}: {s.licence}; from {s.origin}" for s in rows]
    return "\n".join(lines) + "\n"


def fetch(dataset: str, out: str | Path, *, features: bool = False, allow_unverified: bool = False,
          mirror: str | None = None, table: Sequence[Source] = SOURCES, retries: int = RETRIES,
          timeout: float = TIMEOUT_S, progress: bool = True, echo=print) -> FetchResult:
    """Fetch ``dataset``'s files (see :data:`SOURCES`) into ``out``; files already complete are
    kept (checked against the table, or the recorded sha256 when the table has none)."""
    rows = sources(dataset, features=features, table=table)
    unverified = [s.name for s in rows if s.sha256 is None]
    if unverified and not allow_unverified:
        raise DataError(f"{', '.join(unverified)} of {dataset} ha{'s' if len(unverified) == 1 else 've'} no published "
                        "checksum to verify against: pass --allow-unverified to download anyway (the sha256 "
                        "received is recorded in FETCHED.json)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    note = licence_note(dataset, rows)
    echo(note.rstrip())
    licence = out / "LICENCE.txt"
    with atomic_open(licence, "w", encoding="utf-8") as fh:
        fh.write(note)
    done = _record(out)
    files, skipped = [], []
    for src in rows:
        final = out / (src.unpack_to or src.name)
        known = src.sha256 or done.get(src.name, {}).get("sha256")
        if src.unpack_to and final.is_dir() and src.name in done:
            skipped.append(src.name)
            files.append(final)
            continue
        target = out / src.name
        # A file at its final name is complete (downloads grow as .part): ours, or put there by hand.
        have = _sha256_file(target)[0] if target.is_file() else None
        if have is not None and not src.unpack_to and have == known:
            skipped.append(src.name)
            files.append(target)
            continue
        url = source_url(src, mirror)
        if have is not None and (src.sha256 is None or have == src.sha256):
            digest = have
        else:
            digest = download(url, target, sha256=src.sha256, size=src.size, retries=retries, timeout=timeout,
                              progress=progress)
        if src.sha256 is None:
            echo(f"UNVERIFIED {src.name}: no published checksum; received sha256 {digest}")
        if src.unpack_to:
            unpack(target, final)
            target.unlink()
        done[src.name] = {"sha256": digest, "url": url, "verified": src.sha256 is not None,
                          "unpacked_to": src.unpack_to}
        write_json(out / "FETCHED.json", done)
        files.append(final)
        echo(f"fetched {src.name} -> {final}")
    return FetchResult(out, files, skipped, unverified, licence)
