"""A small Python client for the MicroForge HTTP API.

Why a client in the package: scientists script their runs (a notebook that uploads, trains,
waits and downloads), and the ``microforge remote`` commands need the same calls. Errors
come back as ``MicroForgeError`` carrying the problem+json ``code`` and ``detail``, so a
script can branch on ``code`` instead of parsing messages. Creation calls send an
``Idempotency-Key`` and are retried with it after a dropped connection, so a retry never
starts a second job.

    with MicroForgeClient("http://127.0.0.1:8000", "mf_...") as client:
        job = client.train(["micrograph.png"], config={"iterations": 2000})
        job = client.wait(job["id"], on_update=lambda j: print(j["progress"]))
        gen = client.generate(job["result"]["generator_id"], shape=(256, 256, 256))
        vol = client.wait(gen["id"])
        client.download_volume(vol["result"]["volume_id"], "volume.tif")
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: Connection failures worth one more try of a request that is safe to repeat.
_RETRYABLE = (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError)
_ATTEMPTS = 3
#: What ``list_page`` can list.
LISTABLE = ("datasets", "generators", "volumes", "jobs")


class MicroForgeError(Exception):
    """The server refused or failed a request; ``code`` is stable, ``detail`` is for people."""

    def __init__(
        self, status: int, code: str, detail: str, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code} ({status}): {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem or {}


class JobFailed(MicroForgeError):
    """``wait`` saw the job end failed or cancelled; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        code = error.get("code") or job["state"]
        detail = error.get("message") or f"job {job['id']} ended {job['state']}"
        super().__init__(200, code, detail)
        self.job = job


class MicroForgeClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is empty: pass the server URL, e.g. http://127.0.0.1:8000")
        if not api_key:
            raise ValueError(
                "api_key is empty: create one on the server with `microforge keys create NAME`"
            )
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MicroForgeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool = False,
        make_files: Callable[[], tuple[list, list[Any]]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        attempts = _ATTEMPTS if retry or method == "GET" else 1
        for attempt in range(1, attempts + 1):
            opened: list[Any] = []
            try:
                if make_files is not None:
                    kwargs["files"], opened = make_files()
                response = self._http.request(method, path, **kwargs)
            except _RETRYABLE:
                if attempt == attempts:
                    raise
                time.sleep(0.5 * attempt)
                continue
            finally:
                for handle in opened:
                    handle.close()
            _raise_for_problem(response)
            return response
        raise AssertionError("unreachable")

    def _create(self, path: str, idempotency_key: str | None, **kwargs: Any) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._request("POST", path, retry=True, headers=headers, **kwargs).json()

    # -- service ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/v1/health").json()

    # -- datasets --------------------------------------------------------------------------
    def upload_dataset(
        self,
        images: Sequence[str | os.PathLike[str]],
        *,
        image_type: str | None = None,
        name: str | None = None,
        pixel_size: float | None = None,
        unit: str | None = None,
    ) -> dict[str, Any]:
        """Upload one 2D image, three (x, y, z) or one 3D TIFF; returns the dataset.
        ``pixel_size`` (in ``unit``, default um) makes statistics and volumes physical.

        Not retried: uploads carry no idempotency key, so a retry could store it twice.
        """
        data = _form(image_type=image_type, name=name, **_pixel_fields(pixel_size, unit))
        return self._request(
            "POST", "/v1/datasets", data=data, make_files=_files_opener(images)
        ).json()

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/datasets/{dataset_id}").json()

    # -- jobs ------------------------------------------------------------------------------
    def create_train_job(
        self,
        dataset_id: str,
        config: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {"kind": "train", "dataset_id": dataset_id, "config": config or {}}
        return self._create("/v1/jobs", idempotency_key, json=body)

    def train(
        self,
        images: Sequence[str | os.PathLike[str]],
        config: dict[str, Any] | None = None,
        *,
        image_type: str | None = None,
        name: str | None = None,
        pixel_size: float | None = None,
        unit: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload images and start training in one request (``POST /v1/train``)."""
        data = _form(
            image_type=image_type,
            name=name,
            config=json.dumps(config or {}),
            **_pixel_fields(pixel_size, unit),
        )
        return self._create(
            "/v1/train", idempotency_key, data=data, make_files=_files_opener(images)
        )

    def generate(
        self,
        generator_id: str,
        shape: Sequence[int],
        *,
        seed: int | None = None,
        periodic: Sequence[bool] = (False, False, False),
        chunk: int | None = None,
        compression: str | None = None,
        voxel_size: float | None = None,
        unit: str = "um",
        idempotency_key: str | None = None,
        format: str = "tiff",  # noqa: A002 - the API's field name
    ) -> dict[str, Any]:
        """Start generating a volume of ``shape`` = (z, y, x) voxels (``compression``:
        None, ``"zlib"`` or ``"lzw"``, lossless, TIFF only; ``format``: ``"tiff"`` or
        ``"ome-zarr"``, whose ``download_volume`` is a zip of the store)."""
        body: dict[str, Any] = {
            "kind": "generate",
            "generator_id": generator_id,
            "shape": [int(n) for n in shape],
            "periodic": [bool(p) for p in periodic],
        }
        if seed is not None:
            body["seed"] = seed
        if chunk is not None:
            body["chunk"] = chunk
        if compression is not None:
            body["compression"] = compression
        if format != "tiff":
            body["format"] = format
        if voxel_size is not None:
            body["voxel_size"] = voxel_size
            body["unit"] = unit
        return self._create("/v1/jobs", idempotency_key, json=body)

    def continue_training(
        self, job_id: str, iterations: int, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A new training job that picks up where the ended job ``job_id`` stopped and runs
        to ``iterations`` in all (same data, network and settings)."""
        body = {"iterations": int(iterations)}
        return self._create(f"/v1/jobs/{job_id}/continue", idempotency_key, json=body)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def list_jobs(self, *, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        return self.list_page("jobs", limit=limit, cursor=cursor)

    def list_page(
        self,
        collection: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        **filters: str | None,
    ) -> dict[str, Any]:
        """One page, newest first, of ``datasets``, ``generators``, ``volumes`` or ``jobs``:
        ``{"items": [...], "next_cursor": ...}``. Jobs take ``kind`` and ``state`` filters."""
        if collection not in LISTABLE:
            raise ValueError(f"cannot list {collection!r}: use one of {', '.join(LISTABLE)}")
        params: dict[str, Any] = {"limit": limit}
        params.update({name: value for name, value in filters.items() if value})
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", f"/v1/{collection}", params=params).json()

    def usage(self) -> dict[str, Any]:
        """Counts and bytes of what this key keeps on the server (``GET /v1/usage``)."""
        return self._request("GET", "/v1/usage").json()

    def iter_jobs(self, *, page_size: int = 50) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel", retry=True).json()

    def job_metrics(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/metrics").json()

    def wait(
        self,
        job_id: str,
        *,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_seconds: float = 2.0,
        timeout: float | None = None,
        raise_on_failure: bool = True,
    ) -> dict[str, Any]:
        """Poll until the job ends; ``on_update`` sees every poll. Raises ``JobFailed``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL_STATES:
                if raise_on_failure and job["state"] != "succeeded":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll_seconds)

    # -- artifacts -------------------------------------------------------------------------
    def get_generator(self, generator_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/generators/{generator_id}").json()

    def import_generator(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload a generator file exported elsewhere (``microforge train`` or another
        server); it is checked without being loaded. Not retried (no idempotency key)."""
        return self._request(
            "POST", "/v1/generators", make_files=_files_opener([path], field="file")
        ).json()

    def import_slicegan(
        self,
        weights: str | os.PathLike[str],
        params: str | os.PathLike[str],
        *,
        image_type: str | None = None,
        phases: Sequence[int] | None = None,
        pixel_size: float | None = None,
        unit: str | None = None,
    ) -> dict[str, Any]:
        """Upload a generator trained by the public SliceGAN code (``NAME_Gen.pt`` and
        ``NAME_params.data``), with what those files cannot say: ``image_type`` (required
        for 3 channels), n-phase label values ``phases`` (default 0..n-1) and the pixel
        size. Returns the generator. Not retried (no idempotency key)."""
        paths = [Path(weights), Path(params)]
        opener = _files_opener(paths)

        def make_files() -> tuple[list, list[Any]]:
            files, handles = opener()
            named = [(field, part[1]) for field, part in zip(("weights", "params"), files)]
            return named, handles

        data = _form(
            image_type=image_type,
            phases=",".join(str(int(v)) for v in phases) if phases is not None else None,
            **_pixel_fields(pixel_size, unit),
        )
        return self._request("POST", "/v1/generators", data=data, make_files=make_files).json()

    def download_job_preview(self, job_id: str, out: str | os.PathLike[str]) -> Path:
        """The training job's latest preview (slices along x, y, z, and the score curve)."""
        return self._download(f"/v1/jobs/{job_id}/preview.png", Path(out), None)

    def get_volume(self, volume_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/volumes/{volume_id}").json()

    def delete(self, artifact_id: str) -> None:
        """Delete a dataset (``ds_...``), generator (``gen_...``), volume (``vol_...``) or
        ended job (``job_...``) with its files; the server refuses (409) while a queued or
        running job needs it, or is it."""
        self._request("DELETE", f"/v1/{_collection(artifact_id)}/{artifact_id}")

    def share_volume(self, volume_id: str, *, expires_in: int = 24 * 3600) -> dict[str, Any]:
        """A link to the volume's TIFF that works without a key for ``expires_in`` seconds:
        ``{"url", "path", "expires_at"}``."""
        body = {"expires_in": int(expires_in)}
        return self._request("POST", f"/v1/volumes/{volume_id}/share", json=body).json()

    def volume_report(self, volume_id: str) -> dict[str, Any]:
        """The volume's quality report (statistics, comparison, verdict); raises
        ``MicroForgeError`` with code ``report_not_ready`` while it is being made."""
        return self._request("GET", f"/v1/volumes/{volume_id}/report").json()

    def download_volume_report_png(self, volume_id: str, out: str | os.PathLike[str]) -> Path:
        """The report drawn as a PNG: training image beside slices, S2 curves, verdict."""
        return self._download(f"/v1/volumes/{volume_id}/report.png", Path(out), None)

    def download_volume(
        self,
        volume_id: str,
        out: str | os.PathLike[str],
        *,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Stream the volume's TIFF to ``out``; a dropped download resumes with Range."""
        return self._download(f"/v1/volumes/{volume_id}/file", Path(out), on_bytes)

    def download_generator(
        self,
        generator_id: str,
        out: str | os.PathLike[str],
        *,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        return self._download(f"/v1/generators/{generator_id}/file", Path(out), on_bytes)

    def _download(
        self, path: str, out: Path, on_bytes: Callable[[int, int | None], None] | None
    ) -> Path:
        """Write to ``out.part`` and rename at the end: ``out`` is never a partial file."""
        partial = out.with_name(out.name + ".part")
        out.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _ATTEMPTS + 1):
            have = partial.stat().st_size if partial.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._http.stream("GET", path, headers=headers) as response:
                    if response.status_code == 416 and have:
                        partial.unlink()  # the file changed or is complete: start over
                        continue
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_problem(response)
                    resumed = response.status_code == 206
                    total = _total_size(response, have if resumed else 0)
                    done = have if resumed else 0
                    with open(partial, "ab" if resumed else "wb") as handle:
                        for block in response.iter_bytes(1024 * 1024):
                            handle.write(block)
                            done += len(block)
                            if on_bytes is not None:
                                on_bytes(done, total)
                if total is not None and done != total:
                    raise httpx.RemoteProtocolError(f"got {done} of {total} bytes")
                os.replace(partial, out)
                return out
            except _RETRYABLE:
                if attempt == _ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
        raise MicroForgeError(0, "download_failed", f"could not download {path}")


_COLLECTIONS = {"ds_": "datasets", "gen_": "generators", "vol_": "volumes", "job_": "jobs"}


def _collection(artifact_id: str) -> str:
    """The API collection an id belongs to, from its prefix (ids are made by the server)."""
    for prefix, collection in _COLLECTIONS.items():
        if artifact_id.startswith(prefix):
            return collection
    raise ValueError(
        f"{artifact_id!r} is not a dataset, generator, volume or job id "
        "(ds_..., gen_..., vol_..., job_...)"
    )


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    problem: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        parsed = response.json()
        if isinstance(parsed, dict):
            problem = parsed
    code = problem.get("code") or f"http_{response.status_code}"
    detail = (
        problem.get("detail")
        or problem.get("title")
        or response.text[:500]
        or (response.reason_phrase)
    )
    raise MicroForgeError(response.status_code, str(code), str(detail), problem)


def _total_size(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _pixel_fields(pixel_size: float | None, unit: str | None) -> dict[str, str | None]:
    if pixel_size is None:
        return {}
    return {"pixel_size": repr(float(pixel_size)), "unit": unit}


def _form(**fields: str | None) -> dict[str, str]:
    return {name: value for name, value in fields.items() if value is not None}


def _files_opener(
    images: Sequence[str | os.PathLike[str]], field: str = "files"
) -> Callable[[], tuple[list, list[Any]]]:
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("no images given: pass one 2D image, three (x, y, z) or one 3D TIFF")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}")

    def open_all() -> tuple[list, list[Any]]:
        handles = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed by _request
        files = [(field, (p.name, h, "application/octet-stream")) for p, h in zip(paths, handles)]
        return files, handles

    return open_all
