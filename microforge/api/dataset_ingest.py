"""Turning uploaded files into a stored dataset: check headers, decode, analyse, store.

Why this order: headers are checked (dimensions, pixel and page counts, decoded bytes summed
over the upload's files) before a single pixel is decoded, so a small file claiming a
giant image cannot exhaust memory; blobs are written before the row and removed again if
the row cannot be written, so a failure leaves neither a row nor a blob behind.

Why decoding stays in the API process: with ``max_decoded_bytes`` checked first, the peak
is bounded (about twice the decoded bytes, plus a constant for the statistics crop;
measured in docs/benchmarks.md), so a worst accepted upload fits in ~1.5 GB with the
default, and a subprocess would only add its start-up time to every upload.
"""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy.orm import Session

from microforge.api.dataset_stats import dataset_statistics
from microforge.api.problems import ProblemError
from microforge.api.rendering import render_dataset_preview
from microforge.api.state import ServiceState
from microforge.api.uploads import ParsedForm, UploadedFile
from microforge.models.phases import IMAGE_TYPES, DataError, analyse_images
from microforge.storage.images import (
    MAX_TIFF_PAGES,
    ImageError,
    ImageTooLargeError,
    format_bytes,
    inspect_image,
    read_image,
)
from microforge.storage.tables import Dataset
from microforge.units import UnitError, check_length_unit

FILES_FIELD = "files"
_FORMAT_SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}


#: The setting behind each limit an ``ImageTooLargeError`` names (pages: a fixed cap).
_LIMIT_SETTINGS = {
    "max_pixels": "MICROFORGE_MAX_IMAGE_PIXELS",
    "max_decoded_bytes": "MICROFORGE_MAX_DECODED_BYTES",
}


def _image_problem(upload: UploadedFile, exc: ImageError) -> ProblemError:
    """422 naming the client's file: ``image_too_large`` for a limit, else ``invalid_image``.

    422, not 413: the request's bytes were within ``max_upload_bytes``; it is the image
    they describe that is too large to process.
    """
    message = str(exc).replace(upload.path.name, upload.filename)
    if not message.startswith(f"{upload.filename}: "):
        message = f"{upload.filename}: {message}"
    if isinstance(exc, ImageTooLargeError):
        setting = _LIMIT_SETTINGS.get(exc.limit)
        if setting:
            message += f" (the limit is set by {setting})"
        return ProblemError(422, "image_too_large", message)
    return ProblemError(422, "invalid_image", message)


def check_form_image_type(form: ParsedForm) -> str | None:
    image_type = (form.fields.get("image_type") or "").strip() or None
    if image_type is not None and image_type not in IMAGE_TYPES:
        raise ProblemError(
            422,
            "invalid_image_type",
            f"image_type {image_type!r} is unknown: use one of {', '.join(IMAGE_TYPES)} "
            "or leave it out to detect it",
        )
    return image_type


def check_form_pixel_size(form: ParsedForm) -> tuple[float | None, str | None]:
    """The images' pixel size and unit from the form, if given; 422 with the fix if bad."""
    raw = (form.fields.get("pixel_size") or "").strip()
    unit = (form.fields.get("unit") or "").strip() or None
    if not raw:
        if unit is not None:
            raise ProblemError(
                422, "invalid_pixel_size", "unit was given without pixel_size: give both"
            )
        return None, None
    try:
        size = float(raw)
    except ValueError:
        size = math.nan
    if not (math.isfinite(size) and size > 0):
        raise ProblemError(
            422,
            "invalid_pixel_size",
            f"pixel_size {raw!r} is not a positive number: give the edge of one pixel, "
            "e.g. 0.05 with unit um",
        )
    if unit is not None:
        try:
            check_length_unit(unit)
        except UnitError as error:
            raise ProblemError(422, "invalid_pixel_size", str(error)) from None
    return size, unit or "um"


def ingest_dataset(
    state: ServiceState, session: Session, owner_id: str, form: ParsedForm
) -> Dataset:
    """Validate the uploaded images and store them as a dataset row plus blobs.

    The caller owns ``form`` and must call ``form.cleanup()`` afterwards; files stored in
    the blob store are moved out of it, so cleanup only removes what was not kept.
    """
    uploads = [upload for upload in form.files if upload.field == FILES_FIELD]
    if len(uploads) not in (1, 3):
        raise ProblemError(
            422,
            "wrong_number_of_files",
            f"got {len(uploads)} file(s) in form field 'files': send one 2D image (isotropic), "
            "three 2D images perpendicular to x, y and z (anisotropic), or one 3D TIFF stack",
        )
    image_type = check_form_image_type(form)
    pixel_size, unit = check_form_pixel_size(form)
    settings = state.settings
    limits = {
        "max_pixels": settings.max_image_pixels,
        "max_pages": MAX_TIFF_PAGES,
        "max_decoded_bytes": settings.max_decoded_bytes,
    }
    infos = []
    for upload in uploads:
        if upload.size == 0:
            raise ProblemError(
                422, "empty_file", f"{upload.filename} is empty (0 bytes); upload it again"
            )
        try:
            infos.append(inspect_image(upload.path, **limits))
        except ImageError as exc:
            raise _image_problem(upload, exc) from exc
    if len(uploads) == 3 and any(info.is_volume for info in infos):
        raise ProblemError(
            422,
            "wrong_number_of_files",
            "three files must be three 2D images (x, y, z); a 3D stack is uploaded alone",
        )
    total_pixels = sum(info.pixels for info in infos)
    if total_pixels > settings.max_image_pixels:
        raise ProblemError(
            422,
            "image_too_large",
            f"the images hold {total_pixels} pixels together; the limit is "
            f"{settings.max_image_pixels} (MICROFORGE_MAX_IMAGE_PIXELS)",
        )
    total_bytes = sum(info.decoded_bytes for info in infos)
    if total_bytes > settings.max_decoded_bytes:
        raise ProblemError(
            422,
            "image_too_large",
            f"the images decode to {format_bytes(total_bytes)} together, over the limit of "
            f"{format_bytes(settings.max_decoded_bytes)} (MICROFORGE_MAX_DECODED_BYTES); crop "
            "or downscale them (or save them as 8-bit grey or labels)",
        )
    with state.decode_budget.reserve(total_bytes):
        arrays = []
        for upload in uploads:
            try:
                arrays.append(read_image(upload.path, **limits))
            except ImageError as exc:
                raise _image_problem(upload, exc) from exc
        try:
            analysis = analyse_images(arrays, image_type)
        except DataError as exc:
            raise ProblemError(422, "invalid_training_data", str(exc)) from exc
        preview = render_dataset_preview(arrays, analysis.image_type, analysis.phases)
        statistics = dataset_statistics(
            arrays,
            analysis.image_type,
            [upload.filename for upload in uploads],
            pixel_size=pixel_size,
            unit=unit,
        )
        del arrays

    name = (form.fields.get("name") or "").strip() or Path(uploads[0].filename).stem or "dataset"
    stored: list[str] = []
    try:
        size = 0
        for upload, info in zip(uploads, infos):
            key = state.blobs.new_key("datasets", _FORMAT_SUFFIX.get(info.format, ""))
            size += state.blobs.put_file(key, upload.path)
            stored.append(key)
        preview_key = state.blobs.new_key("previews", ".png")
        state.blobs.put_bytes(preview_key, preview)
        stored.append(preview_key)
        dataset = Dataset(
            owner_id=owner_id,
            name=name[:200],
            image_type=analysis.image_type,
            layout=analysis.layout,
            phases=list(analysis.phases),
            fractions=list(analysis.fractions),
            shapes=[list(shape) for shape in analysis.shapes],
            blob_keys=stored[:-1],
            preview_blob=preview_key,
            stats={
                "detected": analysis.detected,
                "channels": analysis.channels,
                "description": analysis.describe(),
                "formats": [info.format for info in infos],
                "file_names": [upload.filename for upload in uploads],
                "sha256": [upload.sha256 for upload in uploads],
                "statistics": statistics,
                "pixel_size": pixel_size,
                "unit": unit,
            },
            size_bytes=size,
        )
        session.add(dataset)
        session.flush()
    except BaseException:
        session.rollback()
        for key in stored:
            state.blobs.delete(key)
        raise
    return dataset


def delete_dataset_blobs(state: ServiceState, dataset: Dataset) -> None:
    for key in [*(dataset.blob_keys or []), dataset.preview_blob]:
        if key:
            state.blobs.delete(key)
