"""microforge.jobs: one registry of job kinds, typed specs, ids in columns (old rows read)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from microforge.api.schemas import spec_out
from microforge.jobs import (
    JOB_KINDS,
    KIND_OF_QUEUE,
    GenerateSpec,
    TrainSpec,
    job_generator_id,
    read_spec,
    stored_spec,
)
from microforge.storage.tables import Job
from microforge.worker.celery_app import make_celery_app
from microforge.worker.dispatch import job_message


def test_every_kind_routes_to_its_queue_everywhere() -> None:
    app = make_celery_app(broker_url="memory://")
    for kind in JOB_KINDS.values():
        assert app.conf.task_routes[kind.task] == {"queue": kind.queue}
        assert job_message(kind.name, "job_1", 3) == (kind.task, ["job_1", 3], kind.queue)
        assert KIND_OF_QUEUE[kind.queue] == kind.name


def test_a_generate_spec_reads_back_typed_and_an_old_row_still_works() -> None:
    old = Job(
        kind="generate",
        generator_id=None,
        spec={"generator_id": "gen_1", "shape": [4, 5, 6], "seed": 2, "periodic": True},
    )
    spec = read_spec(old)
    assert isinstance(spec, GenerateSpec)
    assert spec.shape == (4, 5, 6) and spec.periodic == (True, True, True)
    assert job_generator_id(old) == "gen_1"
    assert spec_out(old)["generator_id"] == "gen_1"
    with pytest.raises(ValidationError, match="shape"):
        read_spec(Job(kind="generate", spec={"shape": [0, 1, 1]}))


def test_new_rows_store_no_ids_but_clients_still_see_them() -> None:
    stored = stored_spec(GenerateSpec(shape=(2, 2, 2), seed=1))
    assert "generator_id" not in stored and stored["periodic"] == [False, False, False]
    job = Job(kind="generate", generator_id="gen_2", spec=stored)
    assert spec_out(job) == {"generator_id": "gen_2", **stored}
    train = stored_spec(TrainSpec())
    assert set(train) == {"config"}  # no dataset id, and no lineage unless continued
    continued = stored_spec(TrainSpec(continued_from="job_1", continued_at=4))
    assert (continued["continued_from"], continued["continued_at"]) == ("job_1", 4)
    assert spec_out(Job(kind="train", dataset_id="ds_1", spec=train))["dataset_id"] == "ds_1"
