"""Integer ranges every integer a client sends is held to, with a message naming the range.

Why: an integer is stored (SQLite and PostgreSQL hold 64-bit integers, an ``INTEGER``
column 32 bits), compared in SQL or handed to torch and NumPy; one out of their range
failed deep inside them as a 500 (SQLite's ``OverflowError`` for ``after=2**63``).
So each one is declared with the range it can really take, which also puts
``minimum``/``maximum`` into the OpenAPI document, and a value outside it is refused as
422 saying "must be an integer from A to B" rather than naming only the bound it crossed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

#: Largest value of a 32-bit ``INTEGER`` column (PostgreSQL's ``integer``).
INT32_MAX = 2**31 - 1
#: Largest value of a 64-bit ``BIGINT`` column, and of SQLite's integers.
INT64_MAX = 2**63 - 1
#: Largest seed: stored as BIGINT; torch (up to 2**64 - 1) and NumPy take any of these.
SEED_MAX = INT64_MAX


def int_range(low: int, high: int) -> Any:
    """``int`` limited to ``low..high`` inclusive (use it as a type, also in ``Query``)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str):
            return value  # floats, None, ...: pydantic's own checks follow
        try:
            number = int(value)
        except ValueError:
            return value  # not an integer at all: pydantic says so
        if not low <= number <= high:
            raise PydanticCustomError(
                "out_of_range",
                "must be an integer from {low} to {high}",
                {"low": low, "high": high},
            )
        return value

    return Annotated[int, Field(ge=low, le=high), BeforeValidator(check)]
