"""/v1/generators: trained generators, their files, and importing one made elsewhere."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from microforge.api.downloads import FILE_RESPONSES, file_download
from microforge.api.problems import ProblemError, problem_responses
from microforge.api.routes.common import (
    CursorQuery,
    LimitQuery,
    bad_cursor,
    in_use,
    multipart_body,
    not_found,
)
from microforge.api.schemas import GeneratorOut, Page, generator_out
from microforge.api.state import OwnerDep, SessionDep, StateDep
from microforge.api.uploads import ParsedForm, receive_multipart
from microforge.models.generator_file import GeneratorFileError, inspect_generator_file
from microforge.storage.queries import (
    InvalidCursorError,
    count_active_jobs_using_generator,
    get_owned,
    list_owned,
)
from microforge.storage.tables import Generator

router = APIRouter(prefix="/v1/generators", tags=["generators"])
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
    summary="Import a generator file exported elsewhere",
    openapi_extra=multipart_body(
        {"file": {"type": "string", "format": "binary", "description": "An exported generator."}},
        ["file"],
    ),
    responses=problem_responses(400, 401, 413, 415, 422),
)
async def import_generator(request: Request, owner: OwnerDep, state: StateDep) -> GeneratorOut:
    """The file is validated (header, network, tensor shapes) without loading it."""
    form = await receive_multipart(
        request,
        new_temp_path=state.blobs.new_temp_file,
        max_bytes=state.settings.max_upload_bytes,
        file_fields={FILE_FIELD},
    )
    try:
        return await run_in_threadpool(_store_generator, state, owner.id, form)
    finally:
        form.cleanup()


def _store_generator(state, owner_id: str, form: ParsedForm) -> GeneratorOut:
    if len(form.files) != 1:
        raise ProblemError(
            422,
            "wrong_number_of_files",
            f"got {len(form.files)} files: send exactly one generator file in form field 'file'",
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
    size = state.blobs.put_file(key, upload.path)
    config = {**info.summary(), "imported_from": upload.filename}
    row = Generator(
        owner_id=owner_id,
        blob_key=key,
        image_type=info.image_type,
        phases=list(info.phases),
        config=config,
        size_bytes=size,
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
    responses={**FILE_RESPONSES, **problem_responses(401, 404, 416)},
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
