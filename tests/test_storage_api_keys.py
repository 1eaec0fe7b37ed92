"""API keys: hashed storage, prefixes, revocation, and the ``microforge keys`` commands."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from microforge.cli.keys_commands import keys_group
from microforge.settings import get_settings
from microforge.storage.api_keys import (
    AmbiguousApiKeyError,
    ApiKeyNotFoundError,
    authenticate,
    create_api_key,
    hash_key,
    list_api_keys,
    revoke_api_key,
)


def test_keys_are_stored_hashed_and_authenticate(session_factory) -> None:
    with session_factory() as session:
        row, plaintext = create_api_key(session, "alice")
        assert plaintext.startswith("mf_") and len(plaintext) > 40
        assert row.key_hash == hash_key(plaintext) and plaintext not in row.key_hash
        assert plaintext.startswith(row.prefix) and len(row.prefix) == 11
        assert authenticate(session, plaintext).id == row.id
        assert authenticate(session, plaintext + "x") is None
        assert authenticate(session, "not-a-key") is None
        revoke_api_key(session, row.prefix)
        assert authenticate(session, plaintext) is None
        with pytest.raises(ValueError):
            create_api_key(session, "   ")


def test_revoke_needs_an_unambiguous_id_or_prefix(session_factory) -> None:
    with session_factory() as session:
        first, _ = create_api_key(session, "a")
        create_api_key(session, "b")
        with pytest.raises(ApiKeyNotFoundError):
            revoke_api_key(session, "mf_zzzzzzzz")
        with pytest.raises(ApiKeyNotFoundError):
            revoke_api_key(session, "mf")
        with pytest.raises(ApiKeyNotFoundError, match="at least"):
            revoke_api_key(session, "mf_")  # too short to name one key: refused before matching
        revoke_api_key(session, first.id)
        assert [row.revoked_at is not None for row in list_api_keys(session)] == [True, False]


def test_ambiguous_prefix(session_factory) -> None:
    with session_factory() as session:
        one, _ = create_api_key(session, "a")
        two, _ = create_api_key(session, "b")
        one.prefix, two.prefix = "mf_abcd1111", "mf_abcd2222"
        session.commit()
        with pytest.raises(AmbiguousApiKeyError):
            revoke_api_key(session, "mf_abcd")


def test_cli_create_list_revoke(migrated_database_url, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("MICROFORGE_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("MICROFORGE_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(keys_group, ["create", "laptop"])
        assert created.exit_code == 0, created.output
        plaintext = created.stdout.strip().splitlines()[0]
        assert plaintext.startswith("mf_")
        listed = runner.invoke(keys_group, ["list"])
        assert "laptop" in listed.stdout and plaintext[:11] in listed.stdout
        assert plaintext not in listed.stdout  # the secret is shown only once
        revoked = runner.invoke(keys_group, ["revoke", plaintext[:11]])
        assert revoked.exit_code == 0 and "Revoked" in revoked.stdout
        assert "revoked" in runner.invoke(keys_group, ["list"]).stdout
        missing = runner.invoke(keys_group, ["revoke", "mf_nothere1"])
        assert missing.exit_code != 0 and "no key" in missing.output
    finally:
        get_settings.cache_clear()
