"""Turn an exception from a job into the ``{code, message}`` a user can act on.

Why here: the engine raises typed errors (``TrainingError`` with a code, ``DataError``,
``ImageError``, ``GeneratorFileError``, ``ConfigError``); the job row needs a stable code
and a message that says what to change, never a traceback. Unknown errors become
``internal_error`` with the exception's type, and the traceback goes to the worker log.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


def describe_failure(error: BaseException) -> Failure:
    code = getattr(error, "code", None)
    if isinstance(code, str) and code:
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
    if isinstance(error, OSError) and getattr(error, "errno", None) == 28:
        return Failure(
            "disk_full",
            "the server's disk is full: delete volumes, jobs or generators you no longer need "
            "(GET /v1/usage shows what you keep) or ask the operator for space, then retry",
        )
    return Failure(
        "internal_error",
        f"the worker failed unexpectedly ({name}: {error}); the worker log has the details",
    )
