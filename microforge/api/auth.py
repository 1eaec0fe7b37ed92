"""API-key authentication: before the body is read, without holding a database connection.

Why a middleware and not only a dependency: FastAPI reads and parses a JSON body before it
solves dependencies, so a malformed body without a key would get 422 and tell an
anonymous caller about the route's schema. ``AuthenticateFirst`` resolves the key of every
route that declares ``OwnerDep`` before the route runs, answers 401 itself, and leaves the
key in the request scope where ``current_key`` finds it.

Why a cache: every request would otherwise start with a query (and a thread hop) for the
same key. A lookup is trusted for ``auth_cache_seconds`` (2 s by default), so a revoked
key stops working within that time in every API process; unknown keys are cached as well
(keys are 256 random bits, so a key cannot be presented before it exists). Concurrent
misses for one key share a single lookup. The lookup's session is closed before the
request goes on: a request waiting on the network (a body being streamed) holds no
database connection.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi.routing import APIRoute
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from microforge.api.problems import ProblemError, database_busy, problem_response
from microforge.storage.api_keys import authenticate
from microforge.storage.tables import ApiKey

if TYPE_CHECKING:
    from microforge.api.state import ServiceState

#: Where the middleware leaves the caller's key, inside ``scope["state"]``.
KEY_IN_SCOPE = "microforge_api_key"
_MAX_CACHED_KEYS = 4096


def no_key() -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        "no API key: send 'Authorization: Bearer <key>' (create one with "
        "`microforge keys create NAME`)",
        headers={"WWW-Authenticate": 'Bearer realm="microforge"'},
    )


def bad_key() -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        "the API key is unknown or revoked; check it or create a new one",
        headers={"WWW-Authenticate": 'Bearer realm="microforge", error="invalid_token"'},
    )


class KeyCache:
    """Key lookups, trusted for ``ttl`` seconds; used from the event loop only."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._pending: dict[str, asyncio.Future[ApiKey | None]] = {}

    async def lookup(self, state: ServiceState, token: str) -> ApiKey | None:
        while (pending := self._pending.get(token)) is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                return pending.result()
            # The lookup this request waited on failed (or its request went away): retry.
        entry = self._entries.get(token)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            key = await anyio.to_thread.run_sync(_lookup, state, token)
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[token]
        future.set_result(key)
        if self.ttl > 0:
            now = time.monotonic()
            if len(self._entries) >= _MAX_CACHED_KEYS:
                self._entries = {t: e for t, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= _MAX_CACHED_KEYS:
                    self._entries.clear()
            self._entries[token] = (now + self.ttl, key)
        return key


def _lookup(state: ServiceState, token: str) -> ApiKey | None:
    with state.session_factory() as session:
        return authenticate(session, token)  # detached on close; only its columns are read


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def require_key(state: ServiceState, scope: Scope) -> ApiKey:
    """The caller's active key (from the scope when the middleware put it there); 401 else."""
    key = scope.get("state", {}).get(KEY_IN_SCOPE)
    if key is not None:
        return key
    token = bearer_token(scope)
    if token is None:
        raise no_key()
    key = await state.key_cache.lookup(state, token)
    if key is None:
        raise bad_key()
    return key


def _depends_on(dependant: Any, call: Any) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def keyed_routes(routes: Iterable[Any], dependency: Any) -> list[tuple[re.Pattern, set[str]]]:
    """(path pattern, methods) of every API route that depends on ``dependency``."""
    return [
        (route.path_regex, set(route.methods or ()))
        for route in routes
        if isinstance(route, APIRoute) and _depends_on(route.dependant, dependency)
    ]


class AuthenticateFirst:
    """Resolve the key of a keyed route before anything reads the request body."""

    def __init__(
        self, app: ASGIApp, *, state: ServiceState, routes: list[tuple[re.Pattern, set[str]]]
    ) -> None:
        self.app = app
        self.state = state
        self.routes = routes

    def _needs_key(self, scope: Scope) -> bool:
        path, method = scope["path"], scope["method"]
        return any(method in methods and regex.match(path) for regex, methods in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._needs_key(scope):
            try:
                try:
                    key = await require_key(self.state, scope)
                except PoolTimeoutError as exc:
                    raise database_busy() from exc
            except ProblemError as exc:
                response = problem_response(
                    Request(scope), exc.status, exc.code, exc.detail, headers=exc.headers
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[KEY_IN_SCOPE] = key
        await self.app(scope, receive, send)
