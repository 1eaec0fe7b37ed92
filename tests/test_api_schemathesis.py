"""The OpenAPI document stays truthful: schemathesis drives every operation against it.

Why property-based: hand-written API tests check what their authors thought of; this
sends schema-valid and schema-violating requests (huge integers, odd strings, wrong
types, wrong methods and media types) to every operation, with a valid key and without,
and fails on any 5xx other than the declared 503/507, any status, media type, header or
body the document does not declare. It runs in-process against the real ASGI app, with a
SQLite data dir of its own, a key made with the storage API and the embedded broker (so
that job creation is real), bounded and derandomized so that it is quick (well under
90 s on 2 cores) and reproducible: a failure prints a curl command that replays it.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import NotAServerErrorConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from microforge.api.app import create_app
from microforge.settings import Settings

#: Examples per operation and mode; about 30 operations x 2 key phases.
MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _settings(data_dir: Path, redis_url: str | None = None) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'microforge.sqlite3'}",
        redis_url=redis_url,
        blob_dir=data_dir / "blobs",
    )


# The schema is read at import (pytest parametrizes one test per operation from it) from
# an app of its own; the requests go to the ``service`` fixture's app (``app=``).
_schema_dir = tempfile.TemporaryDirectory(prefix="microforge-openapi-")
atexit.register(_schema_dir.cleanup)
_schema_app = create_app(_settings(Path(_schema_dir.name)))
schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app)
schema.config.generation.update(
    max_examples=MAX_EXAMPLES,
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    deterministic=True,
    # Unknown query parameters and headers are ignored, as HTTP APIs do; not a violation.
    allow_extra_parameters=False,
)
# Declared server errors: 503 (overload, queue down) and 507 (disk full) are answers.
schema.config.checks.not_a_server_error = NotAServerErrorConfig(
    expected_statuses=["2xx", "3xx", "4xx", "503", "507"]
)


def _seed(app) -> dict[str, str]:
    """One of each resource, owned by the key, so that requests get past the 404s:
    a dataset, an ended training job with history and a checkpoint, a generator and a
    volume with its TIFF and report. Returns path parameter -> id."""
    import numpy as np
    from PIL import Image

    from microforge.storage.api_keys import create_api_key
    from microforge.storage.tables import Dataset, Generator, Job, JobMetric, Volume
    from microforge.storage.tiff import write_volume_tiff

    state = app.state.service
    blobs = state.blobs

    def blob(kind: str, suffix: str, write) -> str:  # noqa: ANN001
        key = blobs.new_key(kind, suffix)
        with blobs.writing(key) as path:
            write(path)
        return key

    image = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    volume = (np.indices((8, 8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    with state.session_factory() as session:
        key, plaintext = create_api_key(session, "schemathesis")
        dataset = Dataset(
            owner_id=key.id,
            name="checkers",
            image_type="nphase",
            layout="isotropic",
            phases=[0, 255],
            fractions=[0.5, 0.5],
            shapes=[[32, 32]],
            blob_keys=[blob("datasets", ".png", lambda p: Image.fromarray(image).save(p))],
            preview_blob=blob("previews", ".png", lambda p: Image.fromarray(image).save(p)),
            size_bytes=1024,
        )
        session.add(dataset)
        session.flush()
        job = Job(
            owner_id=key.id,
            kind="train",
            state="succeeded",
            spec={"dataset_id": dataset.id, "config": {"arch": "tiny", "iterations": 10}},
            dataset_id=dataset.id,
            progress={"fraction": 1.0, "iteration": 10, "total": 10},
            checkpoint_iteration=10,
            checkpoint_blob=blob("checkpoints", ".pt", lambda p: p.write_bytes(b"checkpoint")),
        )
        session.add(job)
        session.flush()
        session.add_all(JobMetric(job_id=job.id, iteration=i, data={"loss": 1.0}) for i in (5, 10))
        generator = Generator(
            owner_id=key.id,
            source_job_id=job.id,
            blob_key=blob("generators", ".safetensors", lambda p: p.write_bytes(b"weights")),
            image_type="nphase",
            phases=[0, 255],
            config={},
            size_bytes=7,
        )
        session.add(generator)
        session.flush()
        volume_row = Volume(
            owner_id=key.id,
            job_id=job.id,
            generator_id=generator.id,
            blob_key=blob("volumes", ".tif", lambda p: write_volume_tiff(p, volume)),
            shape=[8, 8, 8],
            dtype="uint8",
            image_type="nphase",
            phases=[0, 255],
            size_bytes=4096,
            etag="seeded",
            seed=1,
            report={"verdict": None, "note": "seeded"},
        )
        session.add(volume_row)
        session.commit()
        app.state.test_key = plaintext
        return {
            "dataset_id": dataset.id,
            "job_id": job.id,
            "generator_id": generator.id,
            "volume_id": volume_row.id,
        }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, broker_url: str):
    """The app under test, with an API key (``app.state.test_key``) and its resources
    (``app.state.test_ids``)."""
    app = create_app(_settings(tmp_path_factory.mktemp("schemathesis"), broker_url))
    app.state.test_ids = _seed(app)
    app.state.calls = 0
    yield app
    app.state.service.engine.dispose()


def _aim_at_real_resources(case, app) -> None:  # noqa: ANN001
    """Two requests in three name a resource that exists (a generated id is always 404);
    never for DELETE, so that the resources stay for the operations tested after it."""
    app.state.calls += 1
    if case.method.upper() == "DELETE" or app.state.calls % 3 == 0:
        return
    for name in case.path_parameters or {}:
        if name in app.state.test_ids:
            case.path_parameters[name] = app.state.test_ids[name]


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
@schema.parametrize()
@settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case, service, with_key: bool) -> None:
    headers = {"Authorization": f"Bearer {service.state.test_key}"} if with_key else {}
    _aim_at_real_resources(case, service)
    # Without a key, the key is checked before anything reads the body (api/auth.py), so a
    # schema-violating request is answered 401, which the rejection check accepts.
    case.call_and_validate(app=service, headers=headers, checks=CHECKS)
