"""Recognising "the disk is full" in every form it reaches us, and saying so usefully.

Why one place: a full disk surfaces differently in every layer that writes. Python's own
writes raise ``OSError`` with ``ENOSPC`` (or ``EDQUOT`` past a quota); libraries wrap it
(tifffile in our ``VolumeTiffError``, torch's zip writer in a ``RuntimeError`` whose
``__context__`` is the ``OSError``) or only keep its text (safetensors' Rust error says
"No space left on device (os error 28)"; NumPy's ``tofile`` reports a short write as
"N requested and M written"); SQLite says "database or disk is full" (``SQLITE_FULL``),
which SQLAlchemy wraps in an ``OperationalError`` whose own ``code`` is ``e3q8``;
PostgreSQL answers SQLSTATE 53100 (``psycopg.errors.DiskFull``). Every job and every
request must end with the same ``disk_full`` code whichever of these it met, and with a
message that names the place that is full and how much room is left there.
"""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from microforge.settings import Settings

#: ``errno`` values that mean "no room": the disk, or the user's quota on it.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: PostgreSQL's SQLSTATE for "disk full" (class 53, insufficient resources).
POSTGRES_DISK_FULL = "53100"
#: Texts of errors that lost their errno on the way up (lower case).
_DISK_FULL_TEXTS = (
    "no space left on device",
    "disk quota exceeded",
    "database or disk is full",
    "could not extend file",  # PostgreSQL, when the SQLSTATE did not survive
)
#: NumPy's ``tofile`` (tifffile writes uncompressed pages with it) on a short write.
_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")


def _says_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == 13:
        return True  # SQLITE_FULL
    if POSTGRES_DISK_FULL in (getattr(error, "sqlstate", None), getattr(error, "pgcode", None)):
        return True
    text = str(error).lower()
    return any(marker in text for marker in _DISK_FULL_TEXTS) or bool(_SHORT_WRITE.search(text))


def _linked(error: BaseException) -> Iterable[BaseException | None]:
    """The exceptions ``error`` wraps: its cause and context, SQLAlchemy's ``orig`` (the
    driver's error), and the members of an exception group."""
    yield error.__cause__
    yield error.__context__
    yield getattr(error, "orig", None)
    if isinstance(error, BaseExceptionGroup):
        yield from error.exceptions


def find_disk_full(error: BaseException) -> BaseException | None:
    """The exception in ``error``'s chain that says the disk is full, or None."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if _says_disk_full(current):
            return current
        pending.extend(_linked(current))
    return None


def format_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KB'``: enough precision for a person deciding what to delete."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def free_space(path: Path) -> str:
    """Free space on the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return f"{format_bytes(shutil.disk_usage(path).free)} free"
    except OSError as error:
        return f"free space unknown ({error.strerror or error})"


def storage_places(settings: Settings) -> dict[str, Path | None]:
    """Where the service writes: the blob store, and the database when it is a local file."""
    url = make_url(settings.resolved_database_url)
    database = None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database)
    return {"blob store": settings.resolved_blob_dir, "database": database}


def disk_full_message(found: BaseException, places: Mapping[str, Path | None] | None = None) -> str:
    """What filled up and how much room is left there, and what the user can do.

    ``found`` is what ``find_disk_full`` returned; ``places`` names the service's storage
    (e.g. ``{"blob store": root, "database": sqlite_file}``). Which one ran out is said when
    the error tells (a file name, the database); the free space of each place follows.
    """
    places = {name: Path(path) for name, path in (places or {}).items() if path is not None}
    filename = getattr(found, "filename", None)
    if isinstance(found, sqlite3.Error) or "database or disk is full" in str(found).lower():
        database = places.get("database")
        what = f"the database {database}" if database else "the database"
    elif POSTGRES_DISK_FULL in (getattr(found, "sqlstate", None), getattr(found, "pgcode", None)):
        what = "the PostgreSQL server's disk (SQLSTATE 53100)"
    elif filename:
        what = f"writing {filename}"
    else:
        what = "writing a file"
    where = "; ".join(f"{name} {path}: {free_space(path)}" for name, path in places.items())
    return (
        f"the server ran out of disk space ({what}: {_reason(found)})"
        + (f"; {where}" if where else "")
        + ". Delete volumes, jobs or generators you no longer need (GET /v1/usage shows "
        "what you keep) or ask the operator for space, then retry"
    )


def _reason(found: BaseException) -> str:
    if isinstance(found, OSError) and found.strerror:
        return found.strerror
    text = str(found).strip().splitlines()
    return text[0] if text else type(found).__name__
