"""Download and verify the MovieLens 100K dataset.

The GroupLens terms of use for MovieLens do not allow redistributing the data,
so this project never ships it: users fetch it themselves from GroupLens with
:func:`download_ml100k` (or ``fedrec data download ml-100k --dir DIR``).

The download is careful about the user's file system:

* an already verified copy (``u.data`` with the published MD5) is reused
  without touching the network;
* an existing but unverified ``ml-100k`` folder is never overwritten;
* the archive is streamed into a temporary directory inside the target
  directory, extracted with a zip-slip check, verified, and only then moved
  into place with a single rename on the same file system;
* on any failure nothing is left behind (no temporary files, no partial
  ``ml-100k`` folder, and no target directory that this call created).

Only the Python standard library is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

__all__ = [
    "ML100K_URL",
    "ML100K_UDATA_MD5",
    "ML100K_FOLDER",
    "DownloadError",
    "md5_of",
    "download_ml100k",
]

#: Official GroupLens location of the MovieLens 100K archive.
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
#: MD5 of ``ml-100k/u.data`` as published by GroupLens.
ML100K_UDATA_MD5 = "6e47046882bad158b0efbb84cd5cb987"
#: Name of the folder inside the archive (and inside the target directory).
ML100K_FOLDER = "ml-100k"

_CHUNK_SIZE = 1 << 16
_USER_AGENT = "fedrec-data-download (Python urllib)"


class DownloadError(RuntimeError):
    """Raised when a dataset cannot be downloaded, verified or installed."""


def md5_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex MD5 digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk_size: Number of bytes read per chunk.

    Returns:
        The lowercase hexadecimal MD5 digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_verified(folder: Path) -> bool:
    """Return True if ``folder/u.data`` exists and has the expected MD5."""
    udata = folder / "u.data"
    try:
        return udata.is_file() and md5_of(udata) == ML100K_UDATA_MD5
    except OSError:
        return False


def _missing_dirs(path: Path) -> list[Path]:
    """Return ``path`` and its ancestors that do not exist yet, deepest first."""
    missing: list[Path] = []
    current = path.absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def _remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the given directories (deepest first) while they are empty."""
    for directory in dirs:
        try:
            directory.rmdir()
        except OSError:
            # Not empty, already gone or not removable: stop climbing.
            break


def _fetch(url: str, dest: Path, timeout_s: float) -> None:
    """Stream ``url`` into the file ``dest``.

    Args:
        url: Address to fetch (any scheme urllib supports, e.g. https or file).
        dest: File to write; created or truncated.
        timeout_s: Socket timeout in seconds for connecting and each read.

    Raises:
        DownloadError: On HTTP errors, connection errors, timeouts or
            truncated responses.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            with open(dest, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK_SIZE)
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"Downloading {url} failed: HTTP {exc.code} {exc.reason}"
        ) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"Downloading {url} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise DownloadError(
            f"Downloading {url} failed: timed out after {timeout_s} s"
        ) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"Downloading {url} failed: {exc!r}") from exc


def _safe_extract(archive: Path, dest: Path, url: str) -> None:
    """Extract a zip archive into ``dest``, refusing members that escape it.

    Every member is checked before anything is written, so a malicious
    archive leaves no partial extraction behind.

    Args:
        archive: Path of the zip file.
        dest: Extraction directory (created if missing).
        url: Source of the archive, used in error messages.

    Raises:
        DownloadError: If the file is not a valid zip archive or a member's
            path would resolve outside ``dest`` (zip-slip).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename
                target = (root / name).resolve()
                if target != root and root not in target.parents:
                    raise DownloadError(
                        f"Refusing to extract {url}: archive member {name!r} "
                        "would be written outside the extraction directory"
                    )
            zf.extractall(root)
    except zipfile.BadZipFile as exc:
        raise DownloadError(
            f"Downloaded file from {url} is not a valid zip archive: {exc}"
        ) from exc


def download_ml100k(
    target_dir: Path, url: str = ML100K_URL, timeout_s: float = 60.0
) -> Path:
    """Download, verify and install MovieLens 100K under ``target_dir``.

    The archive's ``ml-100k`` folder is installed at ``target_dir / "ml-100k"``,
    so the ratings end up at ``target_dir/ml-100k/u.data``. If that file
    already exists with the expected MD5 the call returns at once without
    network access.

    Args:
        target_dir: Directory that will contain the ``ml-100k`` folder;
            created (with parents) if missing.
        url: Where to fetch the zip from (override for mirrors or
            ``file://`` copies).
        timeout_s: Socket timeout in seconds for the download.

    Returns:
        The path of the installed ``ml-100k`` folder.

    Raises:
        DownloadError: If ``target_dir/ml-100k`` exists but is not a verified
            copy, or the download, extraction or checksum verification fails.
            On failure nothing created by this call is left behind.
    """
    target_dir = Path(target_dir)
    final = target_dir / ML100K_FOLDER

    if final.exists() or final.is_symlink():
        if _is_verified(final):
            return final
        raise DownloadError(
            f"{final} already exists but is not a verified MovieLens 100K copy "
            f"(expected {final / 'u.data'} with MD5 {ML100K_UDATA_MD5}). "
            "Remove it (or choose another --dir) and try again; it will not be "
            "overwritten."
        )

    created_dirs = _missing_dirs(target_dir)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty_dirs(created_dirs)
        raise DownloadError(f"Cannot create {target_dir}: {exc}") from exc

    succeeded = False
    tmp_dir: Path | None = None
    try:
        tmp_dir = Path(
            tempfile.mkdtemp(prefix=".ml-100k-download-", dir=target_dir)
        )
        archive = tmp_dir / "ml-100k.zip"
        _fetch(url, archive, timeout_s)

        extract_dir = tmp_dir / "extracted"
        _safe_extract(archive, extract_dir, url)

        folder = extract_dir / ML100K_FOLDER
        udata = folder / "u.data"
        if not udata.is_file():
            raise DownloadError(
                f"Archive from {url} does not contain {ML100K_FOLDER}/u.data"
            )
        actual = md5_of(udata)
        if actual != ML100K_UDATA_MD5:
            raise DownloadError(
                f"Checksum mismatch for {ML100K_FOLDER}/u.data downloaded from "
                f"{url}: expected MD5 {ML100K_UDATA_MD5}, got {actual}"
            )

        if final.exists() or final.is_symlink():
            # Appeared while we were downloading (e.g. a concurrent call).
            if _is_verified(final):
                succeeded = True
                return final
            raise DownloadError(
                f"{final} appeared during the download and is not a verified "
                "copy; remove it and try again"
            )
        try:
            os.rename(folder, final)
        except OSError as exc:
            raise DownloadError(
                f"Cannot move the extracted data to {final}: {exc}"
            ) from exc
        succeeded = True
        return final
    except OSError as exc:
        # Disk full, permission problems, ... while writing temporary files.
        raise DownloadError(
            f"Installing MovieLens 100K into {target_dir} failed: {exc}"
        ) from exc
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if not succeeded:
            _remove_empty_dirs(created_dirs)
