"""The blob store: where large things (images, checkpoints, generators, volumes) live.

Why a small interface in front of the disk: rows hold only keys, and every key is made
by the server (``new_key``), so no client-supplied name ever becomes a path. Every write
is atomic (written to a temporary file inside the store, fsynced, then renamed), so a
reader never sees half a file and a crash leaves no partial blob at a real key. Keeping
the surface small leaves room for an object-store backend later.

A blob is a file, or (an OME-Zarr store: thousands of chunk files that viewers fetch one
by one) a directory tree (``writing_tree``). A tree is published the same way, written
under a scratch name and renamed into place, and ``size``, ``exists``, ``delete``, the
listing and the scratch sweep treat it as one blob: nothing outside this module needs to
know which kind a key is, except to serve its files (``tree_files``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from microforge.settings import Settings
from microforge.storage.scratch_owner import owner_prefix

#: The kinds of blob the service stores; a key starts with one of them.
BLOB_KINDS = ("datasets", "checkpoints", "generators", "volumes", "previews", "reports")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,16}){0,2}$")
_TEMP_DIR = ".tmp"
#: Names of directory blobs (``writing_tree``); the listing treats such a tree as one key.
TREE_SUFFIXES = (".zarr",)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; not possible (nor needed) on every platform."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def path_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (0 when it has vanished)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.stat().st_size
        total = 0
        for directory, _, files in os.walk(path):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(directory, name)).st_size
        return total
    except FileNotFoundError:
        return 0


def remove_path(path: Path) -> None:
    """Remove a scratch file or tree (what ``temp_files`` lists); a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under ``root``; keys are relative POSIX paths such as ``volumes/<id>.tif``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._temp_root = self.root / _TEMP_DIR
        self._temp_root.mkdir(exist_ok=True)

    # -- keys --------------------------------------------------------------------------
    def new_key(self, kind: str, suffix: str = "") -> str:
        """A fresh, unguessable key of a known kind, e.g. ``new_key("volumes", ".tif")``."""
        if kind not in BLOB_KINDS:
            raise ValueError(f"unknown blob kind {kind!r}: use one of {', '.join(BLOB_KINDS)}")
        if suffix and not suffix.startswith("."):
            suffix = "." + suffix
        if not _SUFFIX.match(suffix):
            raise ValueError(f"bad blob suffix {suffix!r}: use letters and digits, like '.tif'")
        return f"{kind}/{uuid.uuid4().hex}{suffix.lower()}"

    def path(self, key: str) -> Path:
        """The local file for ``key`` (it may not exist yet). Rejects keys that could escape."""
        if not isinstance(key, str) or not key:
            raise ValueError("blob key must be a non-empty string")
        if key.startswith("/") or "\\" in key:
            raise ValueError(f"bad blob key {key!r}: keys are relative paths with '/' separators")
        segments = key.split("/")
        if len(segments) < 2 or segments[0] not in BLOB_KINDS:
            raise ValueError(
                f"bad blob key {key!r}: a key starts with one of {', '.join(BLOB_KINDS)}/"
            )
        for segment in segments:
            if segment in (".", "..") or not _SEGMENT.match(segment):
                raise ValueError(
                    f"bad blob key {key!r}: segment {segment!r} is not allowed "
                    "(letters, digits, '.', '_' and '-' only, no '..')"
                )
        resolved = self.root.joinpath(*segments)
        if not resolved.resolve().is_relative_to(self.root):
            raise ValueError(f"bad blob key {key!r}: it resolves outside the store")
        return resolved

    # -- writing -----------------------------------------------------------------------
    def _temp_path(self, suffix: str = "") -> Path:
        """A fresh scratch path whose name says which process writes it (``scratch_owner``),
        so that what a killed process leaves can be removed without touching live writes."""
        return self._temp_root / f"{owner_prefix()}{uuid.uuid4().hex}{suffix}"

    def _publish(self, temp: Path, key: str) -> int:
        destination = self.path(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _fsync_file(temp)
        size = temp.stat().st_size
        os.replace(temp, destination)
        _fsync_dir(destination.parent)
        return size

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """Yield a temporary path to write; it appears at ``key`` only on a clean exit.

        The temporary file keeps the key's suffix, so writers that choose a format from the
        file name (tifffile, Pillow) behave. On an exception it is removed and nothing is
        published.
        """
        self.path(key)  # validate before any work is done
        temp = self._temp_path("".join(Path(key).suffixes))
        try:
            yield temp
            if not temp.exists():
                raise FileNotFoundError(
                    f"nothing was written to the temporary file for blob {key!r}"
                )
            self._publish(temp, key)
        finally:
            temp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def writing_tree(self, key: str) -> Iterator[Path]:
        """Yield a scratch path (not yet existing) to create a directory tree at; it appears
        at ``key`` only on a clean exit, by one rename. On an exception it is removed."""
        destination = self.path(key)
        temp = self._temp_path("".join(Path(key).suffixes))
        try:
            yield temp
            if not temp.is_dir():
                raise FileNotFoundError(f"no directory was written for blob {key!r}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists():
                raise FileExistsError(f"blob {key!r} exists already; a key is written once")
            os.replace(temp, destination)
            # A fresh mtime: the garbage collector's grace period counts from publication,
            # not from when the writing began (hours, for a big volume).
            os.utime(destination)
            _fsync_dir(destination.parent)
        finally:
            remove_path(temp)

    def put_file(self, key: str, source: Path) -> int:
        """Store ``source`` at ``key`` and return its size; ``source`` is consumed.

        A rename when ``source`` is on the store's filesystem (no copy of a large upload),
        otherwise a copy into the store followed by a rename; either way atomic.
        """
        self.path(key)
        source = Path(source)
        temp = self._temp_path()
        try:
            try:
                os.replace(source, temp)
            except OSError:
                shutil.copyfile(source, temp)
                source.unlink(missing_ok=True)
            return self._publish(temp, key)
        finally:
            temp.unlink(missing_ok=True)

    def duplicate(self, source_key: str, key: str) -> int:
        """Make ``key`` a second blob with the content of ``source_key``; returns its size.

        A hard link where the filesystem allows it (free, even for a checkpoint of
        hundreds of MB), else a copy. Sharing the bytes is safe because a blob is never
        changed in place, only replaced by a new one, and deleting either key leaves the
        other intact. ``FileNotFoundError`` when the source does not exist.
        """
        source = self.path(source_key)
        self.path(key)
        temp = self._temp_path()
        try:
            try:
                os.link(source, temp)
                # A fresh mtime, so the garbage collector's grace period protects the new
                # key until the row that names it is committed (links share the inode).
                os.utime(temp)
            except OSError:  # another filesystem, or no links: copy (a missing source raises)
                shutil.copyfile(source, temp)
            return self._publish(temp, key)
        finally:
            temp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> int:
        """Store ``data`` at ``key`` atomically and return its size."""
        with self.writing(key) as temp:
            temp.write_bytes(data)
        return len(data)

    # -- reading -----------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        """Open a blob for binary reading; ``FileNotFoundError`` when it does not exist."""
        return open(self.path(key), "rb")  # noqa: SIM115 - the caller closes it

    def size(self, key: str) -> int:
        """Bytes a blob takes: a file's size, or the sum over a tree's files."""
        return path_size(self.path(key))

    def exists(self, key: str) -> bool:
        path = self.path(key)
        return path.is_file() or path.is_dir()

    def is_tree(self, key: str) -> bool:
        """Whether the blob is a directory tree (``writing_tree``)."""
        return self.path(key).is_dir()

    def tree_files(self, key: str) -> Iterator[tuple[str, Path]]:
        """A tree blob's files as (relative POSIX path, local path), sorted by path."""
        root = self.path(key)
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path

    def delete(self, key: str) -> None:
        """Remove a blob; a missing one is fine, so deletes can be retried safely.

        A tree is first renamed into the scratch folder (one atomic step: no reader sees
        half a store at its key), then removed there; if that is interrupted, the scratch
        sweep removes the rest."""
        path = self.path(key)
        if path.is_dir() and not path.is_symlink():
            doomed = self._temp_path(".deleted")
            try:
                os.replace(path, doomed)
            except FileNotFoundError:
                return
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        """Free space on the store's filesystem."""
        return shutil.disk_usage(self.root).free

    # -- listing (for the garbage collector) ---------------------------------------------
    def published_keys(self) -> Iterator[str]:
        """Every published blob's key. Files whose names no key could have (left there by
        hand, say) are not listed, so nothing but the store's own files is ever touched."""
        for kind in BLOB_KINDS:
            folder = self.root / kind
            if not folder.is_dir():
                continue
            for directory, subdirectories, files in os.walk(folder):
                subdirectories.sort()
                here = Path(directory)
                for name in [d for d in subdirectories if d.lower().endswith(TREE_SUFFIXES)]:
                    subdirectories.remove(name)  # a tree blob is one key: not descended
                    yield from self._valid_key(here / name)
                for name in sorted(files):
                    yield from self._valid_key(here / name)

    def _valid_key(self, path: Path) -> Iterator[str]:
        key = path.relative_to(self.root).as_posix()
        try:
            self.path(key)
        except ValueError:
            return
        yield key

    def temp_files(self) -> Iterator[Path]:
        """Entries of the store's scratch folder (files, or trees being written or deleted):
        writes under way, or left by a killed process."""
        yield from (
            path
            for path in sorted(self._temp_root.iterdir())
            if path.is_file() or (path.is_dir() and not path.is_symlink())
        )

    def new_temp_file(self, suffix: str = "") -> Path:
        """A path for scratch data on the store's filesystem (so ``put_file`` is a rename).

        The caller removes it, or hands it to ``put_file``, which consumes it.
        """
        if suffix and not _SUFFIX.match(suffix):
            raise ValueError(f"bad suffix {suffix!r}")
        return self._temp_path(suffix)


def get_blob_store(settings: Settings) -> LocalBlobStore:
    """The blob store the settings point at (``MICROFORGE_BLOB_DIR`` or ``data_dir/blobs``)."""
    return LocalBlobStore(settings.resolved_blob_dir)
