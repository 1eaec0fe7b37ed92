"""Download links without an API key: signing, expiry, and the routes on a real app."""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np
import pytest

from microforge.storage.share_links import (
    SECRET_FILE,
    ExpiredShareLink,
    InvalidShareLink,
    load_or_create_secret,
    sign,
    verify,
)
from tests.test_api_files import add_volume, owner_id

SECRET = b"s" * 32


def test_a_token_grants_its_volume_until_it_expires() -> None:
    token = sign(SECRET, "vol_1", "etag-a", expires_at=2000)
    assert verify(SECRET, token, "etag-a", now=1999) == "vol_1"
    with pytest.raises(ExpiredShareLink):
        verify(SECRET, token, "etag-a", now=2000)


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t.replace("vol_1", "vol_2"),  # another volume
        lambda t: t.replace(".2000.", ".9000."),  # a longer life
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # a made-up signature
        lambda t: "vol_1.2000",  # no signature
        lambda t: "",
    ],
)
def test_forged_or_stretched_tokens_are_refused(forge) -> None:
    token = sign(SECRET, "vol_1", "etag-a", expires_at=2000)
    with pytest.raises(InvalidShareLink):
        verify(SECRET, forge(token), "etag-a", now=1000)


def test_a_token_dies_with_its_volume_version_and_its_secret() -> None:
    token = sign(SECRET, "vol_1", "etag-a", expires_at=2000)
    with pytest.raises(InvalidShareLink):
        verify(SECRET, token, "etag-b", now=1000)  # the file was replaced
    with pytest.raises(InvalidShareLink):
        verify(b"t" * 32, token, "etag-a", now=1000)  # the secret was rotated


def test_concurrent_first_uses_agree_on_one_private_secret(tmp_path) -> None:
    found: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: found.append(load_or_create_secret(tmp_path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found[0]) == 32
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]  # no temporary left


def test_a_shared_link_downloads_without_a_key(client, auth, other_auth, api_app) -> None:
    array = np.random.default_rng(1).integers(0, 3, size=(5, 6, 8), dtype=np.uint8)
    volume_id = add_volume(api_app, owner_id(api_app, auth), array)
    whole = client.get(f"/v1/volumes/{volume_id}/file", headers=auth).content
    refused = client.post(f"/v1/volumes/{volume_id}/share", headers=other_auth)
    assert refused.status_code == 404
    response = client.post(
        f"/v1/volumes/{volume_id}/share", headers=auth, json={"expires_in": 3600}
    )
    assert response.status_code == 201, response.text
    link = response.json()
    assert link["url"].endswith(link["path"]) and link["path"].startswith("/v1/shared/")
    shared = client.get(link["path"])  # no Authorization header
    assert shared.status_code == 200 and shared.content == whole
    assert shared.headers["content-type"] == "image/tiff"
    part = client.get(link["path"], headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == whole[:10]
    forged = client.get(link["path"][:-3] + "abc")
    assert forged.status_code == 404 and forged.json()["code"] == "link_not_found"

    # CORS, as on the store's routes: a page on another site may fetch the TIFF (ranges,
    # HEAD, 304, errors), after a preflight; the keyed route stays same-origin.
    origin = {"Origin": "https://viewer.example"}
    head = client.head(link["path"], headers=origin)
    unchanged = client.get(link["path"], headers=origin | {"If-None-Match": head.headers["etag"]})
    outside = client.get(link["path"], headers=origin | {"Range": "bytes=99999-"})
    assert (unchanged.status_code, outside.status_code) == (304, 416)
    for answer in (shared, part, head, unchanged, outside, forged):
        assert answer.headers["access-control-allow-origin"] == "*", answer.status_code
        assert "Content-Range" in answer.headers["access-control-expose-headers"]
    assert outside.headers["content-range"] == f"bytes */{len(whole)}"
    preflight = client.options(
        link["path"], headers=origin | {"Access-Control-Request-Headers": "range"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Range" in preflight.headers["access-control-allow-headers"]
    keyed = client.get(f"/v1/volumes/{volume_id}/file", headers=auth | origin)
    assert keyed.status_code == 200 and "access-control-allow-origin" not in keyed.headers
    documented = client.get("/openapi.json").json()["paths"]["/v1/shared/{token}"]
    assert "Access-Control-Allow-Origin" in documented["get"]["responses"]["200"]["headers"]
    assert "options" in documented
    too_short = {"expires_in": 5}
    assert (
        client.post(f"/v1/volumes/{volume_id}/share", headers=auth, json=too_short).status_code
        == 422
    )
    state = api_app.state.service
    expired = sign(state.share_secret(), volume_id, "v1-etag", expires_at=1)
    gone = client.get(f"/v1/shared/{expired}")
    assert gone.status_code == 410 and gone.json()["code"] == "link_expired"
    assert gone.headers["access-control-allow-origin"] == "*"
    assert client.delete(f"/v1/volumes/{volume_id}", headers=auth).status_code == 204
    assert client.get(link["path"]).status_code == 404


def test_a_configured_secret_replaces_the_stored_one(api_settings) -> None:
    from microforge.api.app import create_app

    app = create_app(api_settings.model_copy(update={"share_secret": "rotate-me"}))
    secret = app.state.service.share_secret()
    assert secret == hashlib.sha256(b"rotate-me").digest()
    assert not (app.state.service.blobs.root / SECRET_FILE).exists()


def test_a_filesystem_without_hard_links_still_gets_one_secret(tmp_path, monkeypatch) -> None:
    def no_links(*_: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    first = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == first and len(first) == 32
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(RuntimeError, match="delete it"):
        load_or_create_secret(tmp_path)
