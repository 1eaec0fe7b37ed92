"""Download links that need no API key: signed, expiring, tied to one version of a volume.

Why: a volume is often wanted where the owner's key should not go (a colleague, a browser,
an HPC job). A link carries the volume id, its expiry and an HMAC over both plus the
volume's ETag, so it cannot be forged or stretched, and it dies with the volume (a
deleted or different file has another ETag or no row). Nothing is stored per link;
rotating the secret (``MICROFORGE_SHARE_SECRET``, or deleting the key file the service
made) revokes every link at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

#: The secret's file, in the blob store's root, which every API process shares.
SECRET_FILE = ".share-key"
_SECRET_BYTES = 32


class InvalidShareLink(ValueError):
    """The token is malformed, forged, or for a volume version that no longer exists."""


class ExpiredShareLink(ValueError):
    """The token was valid but its time is up."""


def load_or_create_secret(root: Path) -> bytes:
    """The service's signing secret, made on first use (readable by the service only).

    Two processes starting together must end up with one secret: the file is written
    under a temporary name and linked into place, which fails for the second writer, who
    then reads the first one's. Where the filesystem has no hard links, the file is
    created exclusively in place instead, and a reader that meets it half written waits.
    """
    path = Path(root) / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_secret(path)
    temporary = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_private(temporary, secrets.token_bytes(_SECRET_BYTES))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process was first: its secret is the one
    except OSError:  # no hard links here
        with contextlib.suppress(FileExistsError):
            _write_private(path, temporary.read_bytes())
    finally:
        temporary.unlink(missing_ok=True)
    return _read_secret(path)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) readable by this user only, and write ``data``."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_secret(path: Path, attempts: int = 50) -> bytes:
    for _ in range(attempts):
        data = path.read_bytes()
        if len(data) == _SECRET_BYTES:
            return data
        time.sleep(0.01)  # being written by another process (no hard links here)
    raise RuntimeError(f"{path} is not a share-link secret: delete it to make a new one")


def sign(secret: bytes, volume_id: str, etag: str, expires_at: int) -> str:
    """The token for ``volume_id`` (at ``etag``) valid until ``expires_at`` (Unix seconds)."""
    return f"{volume_id}.{expires_at}.{_signature(secret, volume_id, etag, expires_at)}"


def parse(token: str) -> tuple[str, int]:
    """(volume id, expiry) from a token, before its signature is checked."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        raise InvalidShareLink("malformed share link")
    return parts[0], int(parts[1])


def verify(secret: bytes, token: str, etag: str, now: float | None = None) -> str:
    """The volume id the token grants, if it was signed here for ``etag`` and is unexpired."""
    volume_id, expires_at = parse(token)
    expected = _signature(secret, volume_id, etag, expires_at)
    if not hmac.compare_digest(expected, token.rsplit(".", 1)[1]):
        raise InvalidShareLink("share link not valid for this volume")
    if (time.time() if now is None else now) >= expires_at:
        raise ExpiredShareLink(f"share link expired at {expires_at}")
    return volume_id


def _signature(secret: bytes, volume_id: str, etag: str, expires_at: int) -> str:
    message = f"microforge-share-v1:{volume_id}:{expires_at}:{etag}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
