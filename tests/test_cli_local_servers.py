"""Administrators' commands find the running server's database, and never create one by surprise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from microforge.cli.keys_commands import keys_group
from microforge.cli.local_servers import register_server, running_servers
from microforge.settings import get_settings
from microforge.storage.db import upgrade_database


@pytest.fixture
def clean_env(monkeypatch, tmp_path: Path) -> Path:
    """No database named by the environment, and a working folder with no data in it."""
    for name in ("MICROFORGE_DATABASE_URL", "MICROFORGE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_keys_create_refuses_without_a_database(clean_env: Path) -> None:
    result = CliRunner().invoke(keys_group, ["create", "laptop"])
    assert result.exit_code != 0
    assert "no MicroForge database" in result.output and "--data-dir" in result.output
    assert not (clean_env / "microforge-data").exists()  # nothing created by surprise


def test_keys_create_uses_the_running_server(clean_env: Path, tmp_path_factory) -> None:
    data_dir = tmp_path_factory.mktemp("served")
    upgrade_database(f"sqlite:///{data_dir / 'microforge.sqlite3'}")
    record = register_server("http://127.0.0.1:8765", data_dir)  # this process stands in for up
    result = CliRunner().invoke(keys_group, ["create", "laptop"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8765" in result.stderr
    assert os.environ["MICROFORGE_DATA_DIR"] == str(data_dir.resolve())
    listed = CliRunner().invoke(keys_group, ["list"])
    assert "laptop" in listed.stdout
    record.unlink()


def test_stale_records_are_ignored_and_removed(clean_env: Path, tmp_path_factory) -> None:
    data_dir = tmp_path_factory.mktemp("gone")
    record = register_server("http://127.0.0.1:1", data_dir, pid=_dead_pid())
    assert running_servers() == []
    assert not record.exists()
    result = CliRunner().invoke(keys_group, ["create", "laptop"])
    assert result.exit_code != 0 and "no MicroForge database" in result.output


def test_several_running_servers_need_a_choice(clean_env: Path, tmp_path_factory) -> None:
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    register_server("http://127.0.0.1:8001", one)
    register_server("http://127.0.0.1:8002", two, pid=os.getppid())
    result = CliRunner().invoke(keys_group, ["list"])
    assert result.exit_code != 0 and "several MicroForge servers" in result.output
    assert str(one.resolve()) in result.output and str(two.resolve()) in result.output
    chosen = CliRunner().invoke(keys_group, ["create", "laptop", "--data-dir", str(two)])
    assert chosen.exit_code == 0, chosen.output
    assert (two / "microforge.sqlite3").is_file()


def test_existing_default_database_is_used(clean_env: Path) -> None:
    upgrade_database(f"sqlite:///{clean_env / 'microforge-data' / 'microforge.sqlite3'}")
    result = CliRunner().invoke(keys_group, ["create", "laptop"])
    assert result.exit_code == 0, result.output
