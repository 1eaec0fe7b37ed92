"""What every volume writer does on closing: publish only a complete volume, else nothing.

Why one place: a TIFF stack and an OME-Zarr store are both written under a scratch name
beside their target and renamed into place at the end, so that a reader never sees half a
volume and a failed or short write leaves nothing behind. The rule (every z-slice written,
or an error and no file; any failure while publishing also removes the scratch copy) is the
same for each format, so it lives here once and a writer supplies ``_publish`` and
``_discard``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType


def scratch_path(path: Path) -> Path:
    """A hidden, unique name beside ``path`` to build it under."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")


class StagedVolumeWriter:
    """Base of the volume writers: subclasses set ``path``, ``shape``, ``slices_written`` and
    ``error`` (their exception class) and implement ``_publish`` and ``_discard``."""

    path: Path
    shape: tuple[int, int, int]
    slices_written: int
    error: type[Exception] = ValueError
    #: Whether the generator should fill the next slab while this writer writes the last one
    #: (``generate_volume``'s ``background_writes``). Worth it only when a write is quick
    #: next to generating a slab: while a write runs, both slabs are in memory, so a slow
    #: write makes the peak two slabs instead of one.
    overlap_writes: bool = True

    def _publish(self) -> None:
        """Make the finished scratch copy the volume at ``path``."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Remove the scratch copy, if any."""
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        if self.slices_written != self.shape[0]:
            self._discard()
            raise self.error(
                f"only {self.slices_written} of {self.shape[0]} z-slices were written to "
                f"{self.path.name}; nothing was saved (write every slice before closing)"
            )
        try:
            self._publish()
        except BaseException:
            self._discard()
            raise
