"""`tacet serve --dev`: a `dev` tenant and a key for it in `<data-dir>/dev-api-key` (0600).

The key lives in the database like any other (digest only); the file holds the token so a
local client can read it. A file whose key no longer verifies (database reset, pepper changed)
is replaced, so the dev default always works after a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.apikeys import SCOPES, KeyVerifier, Peppers
from gateway.store.errors import Conflict
from gateway.store.repository import Store, TenantRecord

__all__ = ["DEV_KEY_FILE", "DEV_TENANT_NAME", "ensure_dev_key"]

DEV_TENANT_NAME = "dev"
DEV_KEY_FILE = "dev-api-key"


async def _dev_tenant(store: Store) -> TenantRecord:
    tenant = await store.tenant_by_name(DEV_TENANT_NAME)
    if tenant is not None:
        return tenant
    try:
        return await store.create_tenant(DEV_TENANT_NAME)
    except Conflict:  # another process created it first
        tenant = await store.tenant_by_name(DEV_TENANT_NAME)
        assert tenant is not None
        return tenant


async def _still_valid(store: Store, peppers: Peppers, path: Path, tenant_id: str) -> bool:
    token = path.read_text(encoding="ascii", errors="replace").strip()
    principal = await KeyVerifier(store, peppers, ttl=0, epoch_interval=0).verify(token)
    return principal is not None and principal.tenant_id == tenant_id


def _write_private(path: Path, token: str) -> None:
    """O_EXCL with mode 0600 from the start: no moment where others could read the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")


async def ensure_dev_key(store: Store, peppers: Peppers, data_dir: Path) -> Path:
    """The path of a file holding a working dev key (every scope); never prints the key."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DEV_KEY_FILE
    tenant = await _dev_tenant(store)
    if path.exists():
        os.chmod(path, 0o600)
        if await _still_valid(store, peppers, path, tenant.id):
            return path
        path.unlink()
    issued = await store.create_key(tenant.id, peppers, scopes=SCOPES, env="dev")
    _write_private(path, issued.token)
    return path
