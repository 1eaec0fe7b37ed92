"""Errors that say what happened: out-of-range integers, 405 with Allow, the document."""

from __future__ import annotations


def test_an_integer_past_what_the_database_holds_is_422_naming_the_range(client, auth):
    response = client.get("/v1/jobs/job_x/metrics?after=9223372036854775808", headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "query.after"
    assert "from 0 to 2147483647" in response.json()["detail"]
    body = {"kind": "generate", "generator_id": "g", "shape": [1, 1, 2**40], "seed": 2**64}
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"body.shape.2", "body.seed"}


def test_405_lists_every_method_of_the_path(client, auth):
    response = client.put("/v1/volumes/vol_x", headers=auth)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].split(", ")) >= {"GET", "DELETE"}


def test_the_document_declares_problems_as_problem_json_only(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "503" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/v1/health":
                    assert list(response["content"]) == ["application/problem+json"], status
    upload = spec["paths"]["/v1/datasets"]["post"]["responses"]
    assert {"400", "401", "408", "413", "415", "422", "429", "507"} <= set(upload)
    volume_file = spec["paths"]["/v1/volumes/{volume_id}/file"]["get"]["responses"]
    assert list(volume_file["206"]["content"]) == ["image/tiff", "multipart/byteranges"]
