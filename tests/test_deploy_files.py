"""What can be checked about the Docker and Compose files without a Docker engine.

Why: a deployment file that names a missing Dockerfile, a setting that does not exist or
a command the image lacks fails only on the operator's machine. These checks catch that
in CI: the YAML parses, every referenced file exists, every ``MICROFORGE_*`` variable is a
settings field, the API image has no torch, and every command the images run exists.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from microforge.cli.main import cli
from microforge.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"api": ROOT / "docker/Dockerfile.api", "worker": ROOT / "docker/Dockerfile.worker"}
GPU_EXAMPLE = ROOT / "docker/compose.gpus.example.yml"
ENV_NAME = re.compile(r"\bMICROFORGE_[A-Z0-9_]+\b")


class _ComposeLoader(yaml.SafeLoader):
    """Compose's own tags (``!override``, ``!reset``) are fine; keep the tagged value."""


_ComposeLoader.add_multi_constructor(
    "!",
    lambda loader, _tag, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - safe loader subclass


def setting_env_names() -> set[str]:
    return {f"MICROFORGE_{name.upper()}" for name in Settings.model_fields}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    heredoc = None
    for line in text.splitlines():
        if heredoc:
            if line.strip() == heredoc:
                heredoc = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments.split()
    return value if isinstance(value, list) else [str(value)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


def test_compose_has_the_four_services_and_builds_from_existing_files(compose):
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker"} <= set(services)
    for name in ("api", "worker"):
        build = services[name]["build"]
        context = (ROOT / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert (context / build["dockerfile"]).is_file(), f"{name}: Dockerfile missing"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILES[name].resolve()


def test_every_microforge_variable_is_a_settings_field(compose):
    known = setting_env_names()
    used: set[str] = set()
    for path in [COMPOSE, GPU_EXAMPLE, *DOCKERFILES.values(), ROOT / "docker/api-entrypoint.sh"]:
        used |= set(ENV_NAME.findall(path.read_text()))
    assert used, "the deployment files configure nothing?"
    unknown = used - known
    assert not unknown, f"not settings fields (typo?): {sorted(unknown)}; known: {sorted(known)}"
    for name in ("api", "worker"):
        environment = compose["services"][name]["environment"]
        assert environment["MICROFORGE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["MICROFORGE_REDIS_URL"].startswith("redis://redis:")


def test_segments_leases_and_visibility_timeout_agree(compose):
    """The worker refuses to start unless a dead worker's lease expires before redelivery."""
    from microforge.worker.launch import check_worker_settings

    environment = compose["services"]["worker"]["environment"]
    values = {
        k.removeprefix("MICROFORGE_").lower(): v
        for k, v in environment.items()
        if k.startswith("MICROFORGE_") and "${" not in str(v)
    }
    check_worker_settings(Settings(**values))


def test_worker_reserves_one_gpu_and_shares_blobs_with_the_api(compose):
    services = compose["services"]
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"]["MICROFORGE_DEVICE"] == "cuda"
    assert "container_name" not in worker, "a fixed name would break --scale worker=N"
    assert "ports" not in worker
    api_volumes = set(services["api"]["volumes"])
    assert api_volumes & set(worker["volumes"]), "api and worker must share the blob volume"
    for volume in api_volumes:
        assert volume.split(":")[0] in compose["volumes"]


def test_api_health_checked_on_v1_health_and_the_worker_waits_for_it(compose):
    services = compose["services"]
    assert "/v1/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_api_image_installs_no_torch():
    instructions = dockerfile_instructions(DOCKERFILES["api"])
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "pip install ." in runs
    assert not re.search(r"pip install[^&]*\btorch\b", runs)
    assert "[worker]" not in runs
    base = [args for keyword, args in instructions if keyword == "FROM"]
    assert base and base[0].startswith("python:3.11") and "cuda" not in base[0]


def test_worker_image_installs_cuda_torch_and_the_worker_extra():
    instructions = dockerfile_instructions(DOCKERFILES["worker"])
    text = " ".join(args for _keyword, args in instructions)
    assert [args for keyword, args in instructions if keyword == "FROM"][0].startswith(
        "nvidia/cuda:"
    )
    assert "download.pytorch.org/whl/cu" in text
    assert 'pip install ".[worker]"' in text


@pytest.mark.parametrize("name", ["api", "worker"])
def test_copied_files_exist(name):
    for keyword, args in dockerfile_instructions(DOCKERFILES[name]):
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY source {source} is missing"


def _check_command(argv: list[str]) -> None:
    """The command exists: our CLI subcommand, the entrypoint script, or the ASGI factory."""
    program = argv[0]
    if program == "microforge":
        assert argv[1] in cli.commands, f"`microforge {argv[1]}` does not exist"
        command = cli.commands[argv[1]]
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for arg in argv[2:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"`microforge {argv[1]}` has no {arg}"
        return
    if program == "/usr/local/bin/microforge-api":
        script = ROOT / "docker/api-entrypoint.sh"
        assert os.access(script, os.X_OK), "the entrypoint script must be executable"
        targets = re.findall(r"uvicorn (\S+):(\S+) --factory", script.read_text())
        assert targets, "the entrypoint must run uvicorn with the app factory"
        for module, attribute in targets:
            assert callable(getattr(importlib.import_module(module), attribute))
        return
    raise AssertionError(f"unknown program {program!r}")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_entrypoints_and_commands_name_commands_that_exist(name, compose):
    instructions = dockerfile_instructions(DOCKERFILES[name])
    entry = [exec_form(a) for k, a in instructions if k == "ENTRYPOINT"]
    cmd = [exec_form(a) for k, a in instructions if k == "CMD"]
    assert entry or cmd, f"{name}: the image runs nothing"
    _check_command(entry[-1] if entry else cmd[-1])
    if entry:
        copies = " ".join(a for k, a in instructions if k == "COPY")
        assert entry[-1][0] in copies, "the entrypoint must be copied into the image"
    command = compose["services"][name].get("command")
    if command:
        _check_command(command)


def test_gpu_example_pins_distinct_devices():
    example = load_compose(GPU_EXAMPLE)
    pinned = []
    for service in example["services"].values():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device
        pinned.extend(device["device_ids"])
    assert len(pinned) == len(set(pinned)) >= 2
    extends = example["services"]["worker-gpu1"]["extends"]
    assert (GPU_EXAMPLE.parent / extends["file"]).resolve() == COMPOSE.resolve()
    assert extends["service"] in load_compose(COMPOSE)["services"]


def test_dockerignore_keeps_what_the_images_need():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    assert not ignored & {"microforge", "pyproject.toml", "README.md", "docker", "*"}
