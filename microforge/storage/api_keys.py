"""API keys: how a caller proves which owner it is.

Why only a hash is stored: a leaked database must not leak usable keys. The plaintext
key (``mf_<random>``) is shown once, at creation; afterwards a short prefix identifies it
in lists and in ``revoke``. SHA-256 suffices (no slow KDF) because keys are 256 bits of
randomness, not guessable passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from microforge.storage.tables import ApiKey, utcnow

KEY_PREFIX = "mf_"
#: Characters of the key shown in lists: "mf_" plus 8 random characters.
DISPLAY_PREFIX_LENGTH = 11
MAX_NAME_LENGTH = 200


class ApiKeyNotFoundError(LookupError):
    """No key matches the given id or prefix."""


class AmbiguousApiKeyError(LookupError):
    """A prefix matches several keys; the caller must give the id instead."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Create and commit a key; returns the row and the plaintext (never stored)."""
    name = name.strip()
    if not name:
        raise ValueError("a key needs a name, e.g. the person or machine that will use it")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"key name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    plaintext = generate_key()
    row = ApiKey(name=name, key_hash=hash_key(plaintext), prefix=plaintext[:DISPLAY_PREFIX_LENGTH])
    session.add(row)
    session.commit()
    return row, plaintext


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The active key matching ``presented``, or None (unknown, malformed or revoked)."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    digest = hash_key(presented)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        return None
    return row


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def find_api_key(session: Session, id_or_prefix: str) -> ApiKey:
    """Resolve an id (``key_...``) or a displayed prefix (``mf_...``) to exactly one key."""
    row = session.get(ApiKey, id_or_prefix)
    if row is not None:
        return row
    if not id_or_prefix.startswith(KEY_PREFIX) or len(id_or_prefix) < len(KEY_PREFIX) + 4:
        raise ApiKeyNotFoundError(
            f"no key with id {id_or_prefix!r}; give an id (key_...) or a prefix of at least "
            f"{len(KEY_PREFIX) + 4} characters (mf_...) from `microforge keys list`"
        )
    matches = [row for row in list_api_keys(session) if row.prefix.startswith(id_or_prefix)]
    if not matches:
        raise ApiKeyNotFoundError(f"no key with prefix {id_or_prefix!r}")
    if len(matches) > 1:
        ids = ", ".join(row.id for row in matches)
        raise AmbiguousApiKeyError(f"prefix {id_or_prefix!r} matches {len(matches)} keys: {ids}")
    return matches[0]


def revoke_api_key(session: Session, id_or_prefix: str) -> ApiKey:
    """Revoke (idempotently) and commit; the owner's data stays, the key stops working."""
    row = find_api_key(session, id_or_prefix)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row
