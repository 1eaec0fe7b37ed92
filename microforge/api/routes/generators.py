"""/v1/generators: trained generators, their files, and importing one made elsewhere."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from microforge.api.admission import receive_upload
from microforge.api.downloads import add_head_route, file_download, file_responses
from microforge.api.problems import UPLOAD_PROBLEMS, ProblemError, problem_responses
from microforge.api.routes.common import (
    CursorQuery,
    LimitQuery,
    bad_cursor,
    in_use,
    multipart_body,
    not_found,
)
from microforge.api.schemas import GeneratorOut, Page, generator_out
from microforge.api.slicegan_upload import PARAMS_FIELD, WEIGHTS_FIELD, convert_slicegan_upload
from microforge.api.state import OwnerDep, SessionDep, SessionScopedRoute, StateDep
from microforge.api.uploads import ParsedForm
from microforge.models.generator_file import GeneratorFileError, inspect_generator_file
from microforge.models.slicegan_import import write_generator_file
from microforge.storage.queries import (
    InvalidCursorError,
    count_active_jobs_using_generator,
    get_owned,
    list_owned,
)
from microforge.storage.tables import Generator
from microforge.units import LENGTH_UNITS

router = APIRouter(prefix="/v1/generators", tags=["generators"], route_class=SessionScopedRoute)
FILE_FIELD = "file"


@router.get(
    "",
    response_model=Page[GeneratorOut],
    summary="List generators",
    responses=problem_responses(401, 422),
)
def list_generators(
    session: SessionDep, owner: OwnerDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[GeneratorOut]:
    try:
        rows, next_cursor = list_owned(session, Generator, owner.id, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise bad_cursor(exc) from exc
    return Page[GeneratorOut](items=[generator_out(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=GeneratorOut,
    summary="Import a generator: a MicroForge file, or the two files of the public SliceGAN code",
    openapi_extra=multipart_body(
        {
            FILE_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "A MicroForge generator file (safetensors), exported elsewhere.",
            },
            WEIGHTS_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "Or: NAME_Gen.pt of the public SliceGAN code (with params).",
            },
            PARAMS_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "NAME_params.data of the same run (with weights).",
            },
            "image_type": {
                "type": "string",
                "enum": ["nphase", "grayscale", "colour"],
                "description": "SliceGAN only. Default from the channels: 1 = grayscale, "
                "2 or 4+ = nphase; required for 3 channels (colour or three phases).",
            },
            "phases": {
                "type": "string",
                "description": "SliceGAN n-phase only: label values, e.g. 0,128,255 "
                "(default 0..n-1).",
            },
            "pixel_size": {
                "type": "number",
                "description": "SliceGAN only: edge of one voxel, used by generate jobs.",
            },
            "unit": {"type": "string", "enum": list(LENGTH_UNITS), "default": "um"},
        },
        [],
    ),
    responses=problem_responses(*UPLOAD_PROBLEMS),
)
async def import_generator(request: Request, owner: OwnerDep, state: StateDep) -> GeneratorOut:
    """Form field ``file``: a MicroForge generator file, validated (header, network, tensor
    shapes) without loading it. Form fields ``weights`` + ``params``: a generator trained by
    the public SliceGAN code, read without unpickling anything but tensors and integer
    lists, converted, then stored like any generator file."""
    form = await receive_upload(request, state, owner.id, {FILE_FIELD, WEIGHTS_FIELD, PARAMS_FIELD})
    try:
        return await run_in_threadpool(_store_generator, state, owner.id, form)
    finally:
        form.cleanup()


def _store_generator(state, owner_id: str, form: ParsedForm) -> GeneratorOut:
    if any(upload.field != FILE_FIELD for upload in form.files):
        imported = convert_slicegan_upload(form)
        key = state.blobs.new_key("generators", ".safetensors")
        with state.blobs.writing(key) as temporary:
            write_generator_file(imported, Path(temporary))
            info = inspect_generator_file(temporary)
        names = "+".join(upload.filename for upload in form.files)
        return _add_row(state, owner_id, key, info, names, source="slicegan")
    if len(form.files) != 1:
        raise ProblemError(
            422,
            "wrong_number_of_files",
            f"got {len(form.files)} files: send exactly one generator file in form field "
            "'file' (or a SliceGAN generator's two files in 'weights' and 'params')",
        )
    upload = form.files[0]
    if upload.size == 0:
        raise ProblemError(422, "empty_file", f"{upload.filename} is empty (0 bytes)")
    try:
        info = inspect_generator_file(upload.path)
    except GeneratorFileError as exc:
        message = str(exc).replace(upload.path.name, upload.filename)
        raise ProblemError(422, "invalid_generator_file", f"{upload.filename}: {message}") from exc
    key = state.blobs.new_key("generators", ".safetensors")
    state.blobs.put_file(key, upload.path)
    return _add_row(state, owner_id, key, info, upload.filename)


def _add_row(
    state, owner_id: str, key: str, info, imported_from: str, source: str | None = None
) -> GeneratorOut:
    config = {**info.summary(), "imported_from": imported_from}
    if source:
        config["source"] = source
    row = Generator(
        owner_id=owner_id,
        blob_key=key,
        image_type=info.image_type,
        phases=list(info.phases),
        config=config,
        size_bytes=state.blobs.size(key),
    )
    try:
        with state.session_factory() as session:
            session.add(row)
            session.commit()
    except BaseException:
        state.blobs.delete(key)
        raise
    return generator_out(row)


def _owned(session, owner_id: str, generator_id: str) -> Generator:
    row = get_owned(session, Generator, owner_id, generator_id)
    if row is None:
        raise not_found("generator", generator_id)
    return row


@router.get(
    "/{generator_id}",
    response_model=GeneratorOut,
    summary="Get a generator",
    responses=problem_responses(401, 404),
)
def get_generator(generator_id: str, session: SessionDep, owner: OwnerDep) -> GeneratorOut:
    return generator_out(_owned(session, owner.id, generator_id))


@router.delete(
    "/{generator_id}",
    status_code=204,
    summary="Delete a generator and its file",
    responses=problem_responses(401, 404, 409),
)
def delete_generator(
    generator_id: str, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    """Refused (409) while a queued or running generate job uses the generator. Volumes
    made from it stay; the training job that made it keeps its id in ``result``."""
    row = _owned(session, owner.id, generator_id)
    active = count_active_jobs_using_generator(session, owner.id, generator_id)
    if active:
        raise in_use("generator", generator_id, active)
    session.delete(row)
    session.commit()
    state.blobs.delete(row.blob_key)
    return Response(status_code=204)


@router.get(
    "/{generator_id}/file",
    response_class=Response,
    summary="Download the generator file (HTTP Range supported)",
    responses={**file_responses("application/octet-stream"), **problem_responses(401, 404, 416)},
)
def generator_file(
    generator_id: str, request: Request, session: SessionDep, owner: OwnerDep, state: StateDep
) -> Response:
    row = _owned(session, owner.id, generator_id)
    if not state.blobs.exists(row.blob_key):
        raise ProblemError(404, "file_missing", f"the file of generator {row.id} is missing")
    return file_download(
        request,
        state.blobs.path(row.blob_key),
        etag=f"{row.id}-{row.size_bytes}",
        media_type="application/octet-stream",
        filename=f"{row.id}.safetensors",
    )


add_head_route(router, generator_file)
