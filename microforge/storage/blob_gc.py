"""Finding blobs that nothing needs any more: unreferenced keys and abandoned scratch files.

Why: a process killed between publishing a blob and committing the row that names it (a
worker OOM-killed after writing a 40 GB volume, say) leaves the blob behind with no way to
reach it, and a process killed mid-write leaves its scratch file. Neither is ever cleaned
by the normal flow. A grace period by modification time protects work under way: a blob
is published moments before its row is committed, and a file being written keeps a fresh
modification time (a tree blob's, that of its top directory, set when it is published).
A scratch file also names the process writing it (``scratch_owner``):
once that process is gone the file is garbage at once, whatever its age, which is what
lets the API remove a killed upload's partial file when it starts again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from microforge.storage.blobs import LocalBlobStore, path_size, remove_path
from microforge.storage.scratch_owner import owner_is_alive
from microforge.storage.tables import Dataset, Generator, Job, Volume

UNREFERENCED = "unreferenced"
ABANDONED_TEMPORARY = "abandoned temporary file"
#: Scratch files untouched this long are left by killed processes even when their writer
#: cannot be checked (another host, say): a file being written, even a volume of many GB,
#: keeps a fresh modification time.
ABANDONED_TEMPORARY_SECONDS = 24 * 3600


class NothingReferencedError(RuntimeError):
    """The database names no blob while the store holds some: most likely the wrong database
    (a fresh SQLite file instead of the production PostgreSQL), so nothing is deleted."""


@dataclass(frozen=True)
class Garbage:
    path: Path
    size: int
    age_seconds: float
    reason: str
    #: The blob key, or None for a scratch file.
    key: str | None = None


def referenced_keys(session: Session) -> set[str]:
    """Every blob key any row names."""
    keys: set[str] = set()
    for blob_keys, preview in session.execute(select(Dataset.blob_keys, Dataset.preview_blob)):
        keys.update(blob_keys or [])
        keys.add(preview)
    keys.update(session.scalars(select(Job.checkpoint_blob)))
    keys.update(session.scalars(select(Job.preview_blob)))
    keys.update(session.scalars(select(Generator.blob_key)))
    keys.update(session.scalars(select(Volume.blob_key)))
    keys.update(session.scalars(select(Volume.report_blob)))
    keys.discard(None)
    return keys


def find_garbage(
    blobs: LocalBlobStore,
    session: Session,
    *,
    older_than_seconds: float,
    allow_empty_database: bool = False,
) -> list[Garbage]:
    """Unreferenced blobs and scratch files untouched for ``older_than_seconds``.

    Raises ``NothingReferencedError`` when the store holds blobs but the database names
    none, unless ``allow_empty_database``.
    """
    now = time.time()
    published = [(key, blobs.path(key)) for key in blobs.published_keys()]
    referenced = referenced_keys(session)
    if published and not referenced and not allow_empty_database:
        raise NothingReferencedError(
            f"the database names no blob, yet {blobs.root} holds {len(published)}: check "
            "MICROFORGE_DATABASE_URL (and MICROFORGE_BLOB_DIR); if the database really is "
            "empty, pass --force to treat every blob as garbage"
        )
    found: list[Garbage] = []
    for key, path in published:
        if key not in referenced:
            found += _if_old(path, now, older_than_seconds, UNREFERENCED, key)
    return found + _abandoned_scratch(blobs, now, older_than_seconds)


def _if_old(
    path: Path, now: float, older_than_seconds: float, reason: str, key: str | None
) -> list[Garbage]:
    try:
        stat = path.stat()
    except FileNotFoundError:  # removed meanwhile (published, or deleted by its owner)
        return []
    age = now - stat.st_mtime
    if age < older_than_seconds:
        return []
    return [Garbage(path, path_size(path), age, reason, key)]


def _abandoned_scratch(
    blobs: LocalBlobStore, now: float, older_than_seconds: float
) -> list[Garbage]:
    """Scratch files whose writer has died, or untouched for ``older_than_seconds``."""
    found: list[Garbage] = []
    for path in blobs.temp_files():
        # A tree's writer may keep its own partial copy beside it, named ".<scratch name>...".
        dead_writer = owner_is_alive(path.name.lstrip(".")) is False
        found += _if_old(
            path, now, 0 if dead_writer else older_than_seconds, ABANDONED_TEMPORARY, None
        )
    return found


def remove_abandoned_temporary_files(
    blobs: LocalBlobStore, older_than_seconds: float = ABANDONED_TEMPORARY_SECONDS
) -> int:
    """Delete scratch files whose writer has died, or untouched for ``older_than_seconds``;
    returns the bytes freed.

    Safe without the database (a live writer's files are kept, and a write under way keeps
    its file's time fresh), so every worker and API process does it when it starts."""
    return remove_garbage(blobs, _abandoned_scratch(blobs, time.time(), older_than_seconds))


def remove_garbage(blobs: LocalBlobStore, garbage: list[Garbage]) -> int:
    """Delete what ``find_garbage`` found; returns the bytes freed."""
    freed = 0
    for item in garbage:
        if item.key is not None:
            blobs.delete(item.key)
        else:
            remove_path(item.path)
        freed += item.size
    return freed
