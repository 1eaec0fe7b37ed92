"""The SliceGAN form of ``POST /v1/generators``: NAME_Gen.pt + NAME_params.data + what the
files cannot say (image_type, phases, pixel_size, unit), converted in the API process.

Why here and not in a worker job: the conversion is torch-free (restricted unpicklers and
NumPy, ``microforge.models.slicegan_import``), takes well under a second for the public
code's largest generators, and so answers like the safetensors import, with the generator
(201), instead of a job that would wait behind hours of volume generation on a GPU queue.
"""

from __future__ import annotations

import json
from pathlib import Path

from microforge.api.dataset_ingest import check_form_pixel_size
from microforge.api.problems import ProblemError
from microforge.api.uploads import ParsedForm, UploadedFile
from microforge.models.safe_pickle import MAX_PARAMS_BYTES, UnsafePickleError, load_state_dict
from microforge.models.slicegan_import import (
    ImportedGenerator,
    SliceGANImportError,
    convert,
    read_params,
)

WEIGHTS_FIELD = "weights"
PARAMS_FIELD = "params"


def convert_slicegan_upload(form: ParsedForm) -> ImportedGenerator:
    """The uploaded pair as a MicroForge generator; 422 problems name the file and the fix."""
    by_field: dict[str, list[UploadedFile]] = {}
    for upload in form.files:
        by_field.setdefault(upload.field, []).append(upload)
    weights, params = by_field.get(WEIGHTS_FIELD, []), by_field.get(PARAMS_FIELD, [])
    if len(weights) != 1 or len(params) != 1 or len(form.files) != 2:
        raise ProblemError(
            422,
            "wrong_number_of_files",
            "a SliceGAN generator is two files: NAME_Gen.pt in form field 'weights' and "
            "NAME_params.data in form field 'params'",
        )
    weights_file, params_file = weights[0], params[0]
    for upload in (weights_file, params_file):
        if upload.size == 0:
            raise ProblemError(422, "empty_file", f"{upload.filename} is empty (0 bytes)")
    if params_file.size > MAX_PARAMS_BYTES:
        raise ProblemError(
            422,
            "invalid_slicegan_params",
            f"{params_file.filename} is {params_file.size} bytes: a SliceGAN params file "
            "is a few hundred",
        )
    pixel_size, unit = check_form_pixel_size(form)
    try:
        state = load_state_dict(weights_file.path, weights_file.filename)
        return convert(
            state,
            read_params(Path(params_file.path).read_bytes()),
            image_type=(form.fields.get("image_type") or "").strip() or None,
            phases=_phases(form.fields.get("phases")),
            voxel_size=pixel_size,
            voxel_unit=unit,
            source=weights_file.filename,
        )
    except UnsafePickleError as error:
        raise ProblemError(422, "invalid_slicegan_weights", str(error)) from error
    except SliceGANImportError as error:
        raise ProblemError(422, error.code, _name_files(str(error), form)) from error


def _name_files(message: str, form: ParsedForm) -> str:
    """Messages say 'params file' / 'weights file': add the names the client sent."""
    names = {upload.field: upload.filename for upload in form.files}
    for field, label in ((PARAMS_FIELD, "params file"), (WEIGHTS_FIELD, "weights file")):
        if message.startswith(f"{label}:"):
            return f"{label} {names[field]}:{message[len(label) + 1 :]}"
    return message


def _phases(raw: str | None) -> list[int] | None:
    """'0,128,255' or '[0, 128, 255]'; None when not given."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        values = (
            json.loads(text)
            if text.startswith("[")
            else [int(word) for word in text.split(",") if word.strip()]
        )
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ProblemError(
            422,
            "invalid_phases",
            f"phases {text[:80]!r} is not a list of integer label values such as 0,128,255",
        )
    return values
