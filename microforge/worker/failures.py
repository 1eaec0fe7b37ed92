"""Turn an exception from a job into the ``{code, message}`` a user can act on.

Why here: the engine raises typed errors (``TrainingError`` with a code, ``DataError``,
``ImageError``, ``GeneratorFileError``, ``ConfigError``); the job row needs a stable code
and a message that says what to change, never a traceback. Unknown errors become
``internal_error`` with the exception's type, and the traceback goes to the worker log.

A full disk is looked for first, anywhere in the exception's chain (see
``storage.disk_full``): it can surface from any layer, often wrapped in an error of the
layer above (SQLAlchemy's ``OperationalError`` even carries a ``code`` of its own,
``e3q8``, which is no code of ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from microforge.storage.disk_full import disk_full_message, find_disk_full


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


def describe_failure(
    error: BaseException, places: Mapping[str, Path | None] | None = None
) -> Failure:
    """``places`` names where the service stores things (see ``disk_full_message``)."""
    full = find_disk_full(error)
    if full is not None:
        return Failure("disk_full", disk_full_message(full, places))
    code = getattr(error, "code", None)
    if isinstance(code, str) and code and not isinstance(error, SQLAlchemyError):
        return Failure(code, str(getattr(error, "message", None) or error))
    name = type(error).__name__
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'config'}: {item['msg']}"
            for item in error.errors()
        )
        return Failure("invalid_config", f"the job's configuration is not valid: {problems}")
    if name in ("DataError", "ImageError"):
        return Failure("invalid_data", str(error))
    if name == "ConfigError":
        return Failure("invalid_config", str(error))
    if name == "GeneratorFileError":
        return Failure("invalid_generator", str(error))
    if name == "GenerationError":
        return Failure("invalid_generation", str(error))
    if name == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return Failure(
            "out_of_memory",
            "the worker ran out of memory: use a smaller chunk, volume, batch or arch",
        )
    if isinstance(error, FileNotFoundError):
        return Failure(
            "missing_file",
            f"a stored file this job needs is missing ({error.filename or error}); "
            "upload the data again or ask the operator to check the blob store",
        )
    return Failure(
        "internal_error",
        f"the worker failed unexpectedly ({name}: {error}); the worker log has the details",
    )
