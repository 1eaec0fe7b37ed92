"""``SessionScopedRoute`` serialises a sync endpoint's model in the endpoint's thread only
where FastAPI would have answered the same bytes, status and headers."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from microforge.api.state import SessionScopedRoute


class Item(BaseModel):
    id: str
    size: int | None = None
    tags: list[str] = Field(default_factory=list)


class ItemWithSecret(Item):
    secret: str = "hidden"


def sets_header(response: Response) -> None:
    response.headers["X-From-Dependency"] = "yes"


def routes(route_class: type) -> APIRouter:
    router = APIRouter(route_class=route_class)

    @router.get("/plain", response_model=Item)
    def plain() -> Item:
        return Item(id="é", tags=["a"])

    @router.post("/created", response_model=Item, status_code=201)
    def created() -> Item:
        return Item(id="x", size=3)

    @router.get("/header", response_model=Item)
    def header(response: Response) -> Item:
        response.headers["Location"] = "/elsewhere"
        return Item(id="x")

    @router.get("/dependency-header", response_model=Item)
    def dependency_header(_: Annotated[None, Depends(sets_header)]) -> Item:
        return Item(id="x")

    @router.get("/exclude-none", response_model=Item, response_model_exclude_none=True)
    def exclude_none() -> Item:
        return Item(id="x")

    @router.get("/subclass", response_model=Item)
    def subclass() -> Item:
        return ItemWithSecret(id="x")

    @router.get("/dict", response_model=Item)
    def as_dict() -> dict:
        return {"id": "x", "size": "4"}

    return router


def build(route_class: type) -> FastAPI:
    app = FastAPI()
    app.include_router(routes(route_class))
    return app


def _serialise(router: APIRouter, path: str):
    route = next(r for r in router.routes if r.path == path)
    return route.endpoint.serialise


FAST = {"/plain": 200, "/created": 201}
FASTAPI_PATH = ["/header", "/dependency-header", "/exclude-none", "/subclass", "/dict"]


@pytest.mark.parametrize("path", [*FAST, *FASTAPI_PATH])
def test_answers_are_what_fastapi_answers(path: str) -> None:
    ours, theirs = build(SessionScopedRoute), build(SessionScopedRoute.__mro__[1])
    method = "post" if path == "/created" else "get"
    with TestClient(ours) as a, TestClient(theirs) as b:
        mine, reference = getattr(a, method)(path), getattr(b, method)(path)
    assert mine.status_code == reference.status_code
    assert mine.json() == reference.json()
    assert mine.headers["content-type"] == reference.headers["content-type"]
    for name in ("location", "x-from-dependency"):
        assert mine.headers.get(name) == reference.headers.get(name)
    if path == "/subclass":
        assert "secret" not in mine.json()  # FastAPI's filtering still applies
    if path == "/dict":
        assert mine.json()["size"] == 4  # and its validation


def test_only_plain_model_routes_take_the_short_way() -> None:
    router = routes(SessionScopedRoute)
    for path, status in FAST.items():
        serialise = _serialise(router, path)
        assert serialise is not None and serialise.model is Item
        assert serialise.status_code == status
    for path in FASTAPI_PATH[:3]:
        assert _serialise(router, path) is None, path
