"""API-key authentication behind one interface, so the control plane only swaps the store.

`KeyStore.authenticate(bearer)` returns a `Principal` (tenant, key id, scopes) or None. The
gateway never learns more than that about a key, and never logs the bearer value. Until the
control-plane issue lands, `DevKeyStore` holds one key in `<data-dir>/dev-api-key` (0600).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from gateway.apikeys import KeyVerifier, Peppers, Principal

__all__ = [
    "ALL_SCOPES",
    "DEV_KEY_FILE",
    "DEV_TENANT",
    "DevKeyStore",
    "KeyStore",
    "Principal",
    "StoreKeyStore",
    "bearer_token",
    "ensure_dev_key",
]

# The scope names of the control plane (gateway/apikeys.py); the dev key holds all of them.
ALL_SCOPES = frozenset({"classify", "jobs", "taxonomy:write", "audit:read", "admin"})
DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"
_DEV_KEY_PREFIX = "tacet_dev_"


class KeyStore(Protocol):
    async def authenticate(self, bearer: str) -> Principal | None:
        """The principal for this bearer token, or None for any unknown or malformed one."""
        ...


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def ensure_dev_key(data_dir: Path) -> Path:
    """Create `<data-dir>/dev-api-key` (0600, 256 random bits) unless present; return its path.

    Written with O_EXCL and mode 0600 from the start, so there is no window where the file is
    readable by others; an existing file with looser permissions is tightened.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DEV_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(_DEV_KEY_PREFIX + secrets.token_urlsafe(32) + "\n")
    return path


class DevKeyStore:
    """One key, one tenant (`dev`, every scope): the embedded default for `tacet serve --dev`."""

    def __init__(self, key_file: Path) -> None:
        secret = key_file.read_text(encoding="ascii").strip()
        if len(secret) < 32:
            raise ValueError(f"{key_file}: the dev API key is too short; delete it to regenerate")
        self._secret = secret.encode("ascii")
        self._principal = Principal(tenant_id=DEV_TENANT, key_id="dev", scopes=ALL_SCOPES)

    async def authenticate(self, bearer: str) -> Principal | None:
        try:
            candidate = bearer.encode("ascii")
        except UnicodeEncodeError:
            return None
        # Constant time: the comparison does not reveal how much of a guess was right.
        if hmac.compare_digest(candidate, self._secret):
            return self._principal
        return None

    def __repr__(self) -> str:  # never the key, even in a debugger or a traceback
        return "DevKeyStore(<1 key>)"


class StoreKeyStore:
    """Keys from the control-plane database (digests only), checked by `KeyVerifier`.

    The database is opened lazily inside the serving event loop (granian's worker), on the
    first request, and closed by `close()` at shutdown.
    """

    def __init__(self, url: Any, peppers: Peppers) -> None:
        import asyncio

        self._url, self._peppers = url, peppers
        self._store: Any = None
        self._verifier: KeyVerifier | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> KeyVerifier:
        async with self._lock:
            if self._verifier is None:
                from gateway.store import open_store

                self._store = await open_store(self._url)
                self._verifier = KeyVerifier(self._store, self._peppers)
            return self._verifier

    @property
    def peppers(self) -> Peppers:
        """The peppers keys are verified with; new key digests (admin routes) use the same."""
        return self._peppers

    async def authenticate(self, bearer: str) -> Principal | None:
        return await (await self._ready()).verify(bearer)

    async def store(self) -> Any:
        """The opened `gateway.store.Store`, shared with the taxonomy store (one engine)."""
        await self._ready()
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.engine.dispose()
            self._store, self._verifier = None, None

    def __repr__(self) -> str:
        return "StoreKeyStore(<database>)"
