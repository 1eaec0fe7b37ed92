"""The length units a pixel or voxel size may be given in, and how files spell them.

Why one module: the unit is typed by people in four places (``microforge train`` and
``generate``, ``microforge remote ...``, the API's upload form and job body) and written
into TIFF headers that Fiji, napari and Bio-Formats read. Each place once had its own
list, and one had none, so ``--unit furlong`` ended up in a volume's header. Every
place now takes its list, its check and its spellings from here. No dependencies beyond
the standard library, so the API (no torch), the CLI and storage can all import it.
"""

from __future__ import annotations

from typing import Literal, get_args

#: The type to annotate a unit with (pydantic validates it and lists it in OpenAPI).
LengthUnit = Literal["nm", "um", "mm", "cm", "m"]
#: The units offered, smallest first: the one list every command and route uses.
LENGTH_UNITS: tuple[str, ...] = get_args(LengthUnit)
#: Size of one unit in centimetres: TIFF resolution tags count pixels per centimetre.
UNIT_IN_CM: dict[str, float] = {"nm": 1e-7, "um": 1e-4, "mm": 1e-1, "cm": 1.0, "m": 100.0}
#: How OME-XML writes each unit (its UnitsLength symbols: micrometre is "µm").
OME_SYMBOLS: dict[str, str] = {"nm": "nm", "um": "\u00b5m", "mm": "mm", "cm": "cm", "m": "m"}
#: How OME-NGFF (OME-Zarr) axes spell each unit (UDUNITS-2 names).
NGFF_UNITS: dict[str, str] = {
    "nm": "nanometer",
    "um": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}
#: Other spellings found in files written by other tools (ImageJ writes "micron").
_ALIASES = {
    "\u00b5m": "um",  # micro sign
    "\u03bcm": "um",  # Greek mu
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "\\u00b5m": "um",  # ImageJ escapes non-ASCII in its description
    "nanometer": "nm",
    "nanometre": "nm",
    "millimeter": "mm",
    "millimetre": "mm",
    "centimeter": "cm",
    "centimetre": "cm",
    "meter": "m",
    "metre": "m",
}
#: Units that mean "not calibrated": the size is in pixels.
_UNCALIBRATED = {"", "pixel", "pixels", "px", "voxel", "voxels"}


class UnitError(ValueError):
    """A unit that is not one of LENGTH_UNITS; the message lists the valid ones."""


def check_length_unit(unit: str) -> str:
    """``unit`` if it is offered, else UnitError with a one-line message listing them."""
    if unit in LENGTH_UNITS:
        return unit
    raise UnitError(f"unit {unit!r} is not offered: use one of {', '.join(LENGTH_UNITS)}")


def normalise_unit(unit: str | None) -> str | None:
    """A unit read from a file as one of LENGTH_UNITS when it is one under another
    spelling; None when it means pixels; otherwise unchanged (reported as it is)."""
    if unit is None:
        return None
    text = unit.strip()
    if text.lower() in _UNCALIBRATED:
        return None
    if text in LENGTH_UNITS:
        return text
    return _ALIASES.get(text.lower(), _ALIASES.get(text, text))
