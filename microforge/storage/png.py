"""Writing preview images as PNG (Pillow), atomically so a reader never sees half a file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) colour -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_png(path: str | Path, image: np.ndarray | bytes) -> Path:
    """Write an image array, or PNG bytes already rendered, to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = image if isinstance(image, bytes) else png_bytes(image)
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
