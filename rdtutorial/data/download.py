"""Download, verify and safely extract MVTec AD (``mvtec_anomaly_detection.tar.xz``, ~4.9 GB).

The download streams with ``urllib`` and resumes a partial ``.part`` file with an
HTTP Range request; the archive's SHA-256 is checked before anything is
extracted; extraction refuses absolute paths, ``..``, special files and links
that leave the target folder, and unpacks only the requested categories
(and top-level files that are not there yet: nothing outside the requested
category folders is overwritten). An archive that cannot be read to its end
is one error naming it.
We write the member checks ourselves so Python 3.10/3.11 without tarfile's
``data`` filter are safe too (where the filter exists it is used as well).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import ConfigError, InputError
from .io import list_images
from .mvtec import NORMAL, MVTecAD

MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
    "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
_CHUNK = 1 << 20


class DownloadError(InputError, RuntimeError):
    """The archive could not be fetched, failed its checksum, or is unsafe to extract."""


def is_complete(folder: Path) -> bool:
    """True when ``folder/train/good`` exists and holds at least one image."""
    good = folder / "train" / NORMAL
    return good.is_dir() and bool(list_images(good))


def download_mvtec(
    root: str | Path,
    categories: list[str] | tuple[str, ...] | None = None,
    url: str = MVTEC_URL,
    sha256: str = MVTEC_SHA256,
    timeout: float = 60.0,
) -> Path:
    """Make ``root/<category>`` exist for each requested MVTec AD category (default: all 15).

    Categories already complete are left alone, and nothing is fetched when all
    are. Otherwise ``root/mvtec_anomaly_detection.tar.xz`` is used if present
    (a manually placed archive), else downloaded (resuming ``.part``); its
    SHA-256 must equal ``sha256``; then only the missing categories (and the
    archive's top-level license/readme files) are extracted. The archive is
    kept so other categories can be extracted later; delete it to save space.
    Returns ``root``.
    """
    root = Path(root)
    wanted = _check_categories(categories)
    check_source(url, sha256, timeout)
    missing = [c for c in wanted if not is_complete(root / c)]
    if not missing:
        return root
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    if archive.exists():
        _verify(archive, sha256, downloaded=False)
    else:
        part = archive.with_name(ARCHIVE_NAME + ".part")
        _fetch(url, part, timeout, archive, sha256)
        _verify(part, sha256, downloaded=True)
        os.replace(part, archive)
    safe_extract(archive, root, missing)
    absent = [c for c in missing if not is_complete(root / c)]
    if absent:
        raise DownloadError(f"after extracting {archive}, these categories have no train/{NORMAL} images: {absent}")
    return root


def _check_categories(categories: list[str] | tuple[str, ...] | None) -> list[str]:
    if categories is None:
        return list(MVTecAD.CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    unknown = [c for c in categories if c not in MVTecAD.CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown MVTec AD categories {unknown}; valid ones are {list(MVTecAD.CATEGORIES)}")
    return list(categories)


def check_source(url: str, sha256: str, timeout: float) -> None:
    """Refuse a bad ``url``, ``sha256`` or ``timeout`` before anything is fetched (the archive is ~5 GB)."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256 or ""):
        raise ConfigError(f"sha256 {sha256!r} is not a SHA-256: expected 64 hexadecimal digits "
                          f"(the official archive's is {MVTEC_SHA256})")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ConfigError(f"url {url!r} is not an http(s):// or file:// address")
    if not timeout > 0:
        raise ConfigError(f"timeout {timeout!r} must be a number of seconds > 0")


def _manual_hint(archive: Path, sha256: str) -> str:
    return (
        f"To install it by hand, download {ARCHIVE_NAME} (from {MVTEC_PAGE}) on a machine with "
        f"internet access, put it at {archive} and call download_mvtec({str(archive.parent)!r}) again: "
        f"it will verify the file's SHA-256 ({sha256}) and extract the requested categories "
        "without downloading anything."
    )


def _fetch(url: str, part: Path, timeout: float, archive: Path, sha256: str) -> None:
    """Stream ``url`` into ``part``, resuming from its current size; restart if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # the partial file is already whole; the checksum decides
        raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}. " + _manual_hint(archive, sha256)) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as err:
        raise DownloadError(f"cannot reach {url} ({err}); are you offline? " + _manual_hint(archive, sha256)) from err
    with response:
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise DownloadError(
                    f"server resumed {url} at byte {start}, not at {have}; delete {part} and try again"
                )
            mode = "ab"
        else:
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = have
        try:
            with open(part, mode) as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=ARCHIVE_NAME
            ) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, ConnectionError, HTTPException, urllib.error.URLError) as err:
            raise DownloadError(
                f"download of {url} interrupted at {received} bytes ({err}); the partial file {part} "
                "is kept: call download_mvtec again to resume"
            ) from err
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} ended at {received} of {total} bytes; the partial file {part} is kept: "
            "call download_mvtec again to resume"
        )


def _content_range_start(header: str) -> int | None:
    match = re.match(r"bytes (\d+)-", header.strip())
    return int(match.group(1)) if match else None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (with a progress bar)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"checking {path.name}"
    ) as bar:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _verify(path: Path, sha256: str, downloaded: bool) -> None:
    got = sha256_of(path)
    if got == sha256.lower():
        return
    if downloaded:
        path.unlink()
        raise DownloadError(
            f"the downloaded archive has SHA-256 {got}, expected {sha256}; it was deleted. "
            "Try again; if it keeps failing, the file at the URL has changed."
        )
    raise DownloadError(
        f"{path} has SHA-256 {got}, expected {sha256}: it is incomplete or not the MVTec AD archive. "
        "Delete it (or replace it with the correct file) and call download_mvtec again."
    )


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path as parts relative to the target, or DownloadError if it is unsafe."""
    name = member.name
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"refusing archive member {name!r}: absolute or non-POSIX path")
    parts = tuple(p for p in PurePosixPath(name).parts if p != ".")
    if ".." in parts:
        raise DownloadError(f"refusing archive member {name!r}: '..' leaves the target folder")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DownloadError(f"refusing archive member {name!r}: special file (device, FIFO or unknown type)")
    if member.issym() or member.islnk():
        link = member.linkname
        base = PurePosixPath(*parts[:-1]) if member.issym() else PurePosixPath()
        target = os.path.normpath(str(base / link)) if link else ".."
        if link.startswith("/") or "\\" in link or target == ".." or target.startswith("../"):
            raise DownloadError(f"refusing archive member {name!r}: link to {link!r} leaves the target folder")
    return parts


def _inside(path: str | Path, folder: Path) -> bool:
    """True when ``path``, with every symlink resolved, lies in ``folder`` (already resolved)."""
    real = Path(os.path.realpath(path))
    return real == folder or folder in real.parents


def safe_extract(archive: str | Path, dest: str | Path, categories: list[str]) -> None:
    """Extract ``categories`` (and top-level files) of a tar archive into ``dest``, refusing unsafe members.

    Every member is checked (any unsafe one aborts the whole extraction);
    the wanted ones go to a fresh staging folder inside ``dest``, each checked
    again against the real file system before and after it is written, and
    are moved into place only once everything succeeded. Only the category
    folders are merged into existing ones: a top-level file (license, readme)
    is placed only where ``dest`` has nothing of its name, so no member can
    replace the archive itself or a file of the user's. An archive that
    cannot be read to its end (truncated, damaged, not a tar file) is a
    DownloadError naming it.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    real_staging = Path(os.path.realpath(staging))
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        _extract_wanted(archive, categories, staging, real_staging, options)
        _check_links(staging, real_staging)
        found = [c for c in categories if (staging / c).is_dir()]
        if sorted(found) != sorted(categories):
            raise DownloadError(f"{archive} has no folder for categories {sorted(set(categories) - set(found))}")
        for entry in staging.iterdir():
            if entry.name in categories:
                _move(entry, dest / entry.name)
            elif not os.path.lexists(dest / entry.name):
                os.replace(entry, dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# What reading a truncated or damaged tar, tar.gz, tar.bz2 or tar.xz raises (ReadError: not a tar file, or a
# member's data cut short; EOFError: a compressed stream cut short).
_UNREADABLE = (tarfile.ReadError, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile)


def _extract_wanted(archive: Path, categories: list[str], staging: Path, real_staging: Path, options: dict) -> None:
    """Extract the members under ``categories`` and the top-level files into ``staging``; an archive that
    cannot be read to its end is one DownloadError naming it (not tarfile's or lzma's exception)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, unit=" files", desc=f"extracting {archive.name}"):
                parts = _member_parts(member)
                if not parts or not (parts[0] in categories or (len(parts) == 1 and member.isfile())):
                    continue
                _extract_member(tar, member, parts, staging, real_staging, options)
    except _UNREADABLE as err:
        reason = str(err).splitlines()[0].rstrip(":")  # tarfile lists each compression it tried below
        raise DownloadError(
            f"cannot read {archive}: {reason}. The archive is truncated or damaged: delete it and download it again"
        ) from err


def _extract_member(tar, member, parts, staging: Path, real_staging: Path, options: dict) -> None:
    target = staging.joinpath(*parts)
    if not _inside(target, real_staging):
        raise DownloadError(f"refusing archive member {member.name!r}: its path resolves outside the target folder")
    if member.islnk() and not _inside(staging / member.linkname, real_staging):
        raise DownloadError(f"refusing archive member {member.name!r}: hard link resolves outside the target folder")
    try:
        tar.extract(member, staging, **options)
    except tarfile.ReadError:
        raise  # damaged data, not an unsafe member: safe_extract names the archive
    except tarfile.TarError as err:  # includes the data filter's refusals
        raise DownloadError(f"refusing archive member {member.name!r}: {err}") from err
    if member.issym() and not _inside(target, real_staging):
        raise DownloadError(f"refusing archive member {member.name!r}: symlink resolves outside the target folder")


def _check_links(staging: Path, real_staging: Path) -> None:
    """Every extracted symlink must still resolve inside the staging folder (catches chains of links)."""
    for folder, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not _inside(path, real_staging):
                raise DownloadError(f"refusing archive: symlink {path.relative_to(staging)} resolves outside the target folder")


def _move(src: Path, dst: Path) -> None:
    """Move a staged file or folder into place, merging into an existing (incomplete) folder."""
    if src.is_dir() and not src.is_symlink() and dst.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        os.replace(src, dst)
