"""Control-plane admin commands that work directly on the database (no running gateway needed).

`tacet tenants create|list|limits`, `tacet keys create|list|rotate|revoke`,
`tacet taxonomy import|list|show|diff`, `tacet policy set`. The database is the one `tacet
serve` uses: `TACET_DATABASE_URL`, else `<--data-dir>/tacet.db`. A new key's token is written
once, alone, to stdout (so `tacet keys create ... > keyfile` captures it) and nowhere else:
not to stderr, not to any log.

Every act that changes state appends its audit event (metadata only: tenant, key id, taxonomy
reference, never a token) before it reports success; if the trail cannot be written, the
command exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["register"]

_Action = Callable[[Any, argparse.Namespace], Awaitable[int]]


class AdminError(Exception):
    """A failure to report on stderr as one line, with exit status 1."""


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# ---- plumbing -------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    from gateway.settings import ServeSettings

    return (args.data_dir or ServeSettings.from_env(os.environ).data_dir).resolve()


async def _with_store(args: argparse.Namespace, action: _Action) -> int:
    from gateway.store import database_url, open_store

    store = await open_store(database_url(_data_dir(args), os.environ))
    try:
        return await action(store, args)
    finally:
        await store.engine.dispose()


async def _audit(
    store: Any,
    operation: str,
    activity: str,
    *,
    tenant_id: str | None = None,
    key_id: str | None = None,
    taxonomy: str | None = None,
) -> None:
    """Append one administrative act to the tenant's chain; raises AuditWriteError."""
    from compliance.audit import Activity, AuditEvent, AuditLog

    await AuditLog(store.engine).append(
        AuditEvent(
            operation,
            200,
            activity=Activity[activity],
            tenant_id=tenant_id,
            key_id=key_id,
            taxonomy=taxonomy,
        )
    )


def _runner(action: _Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from compliance.audit import AuditError
        from gateway.apikeys import ApiKeyError
        from gateway.store import StoreError

        try:
            return asyncio.run(_with_store(args, action))
        except (AdminError, StoreError, ApiKeyError, ValueError, AuditError) as exc:
            _err(f"tacet {args.command}: {exc}")
            return 1

    return run


async def _tenant_id(store: Any, name: str) -> str:
    tenant = await store.tenant_by_name(name)
    if tenant is None:
        raise AdminError(f"no tenant named {name!r}")
    return str(tenant.id)


def _peppers(args: argparse.Namespace) -> Any:
    from gateway.apikeys import load_peppers

    return load_peppers(os.environ, data_dir=_data_dir(args), dev=args.dev)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


# ---- tenants --------------------------------------------------------------------------------


async def _tenants_create(store: Any, args: argparse.Namespace) -> int:
    tenant = await store.create_tenant(args.name)
    await _audit(store, "tenants.create", "CREATE", tenant_id=tenant.id)
    print(f"{tenant.id}\t{tenant.name}")
    return 0


async def _tenants_list(store: Any, args: argparse.Namespace) -> int:
    for tenant in await store.list_tenants():
        state = "disabled" if tenant.disabled_at else "active"
        print(f"{tenant.id}\t{tenant.name}\t{state}\t{_when(tenant.created_at)}")
    return 0


_UNLIMITED = -1  # `--rpm none`: clear the limit (NULL in the row)


def _limit(value: str) -> int:
    if value.strip().lower() in ("none", "unlimited"):
        return _UNLIMITED
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a positive integer, or 'none' for no limit") from None
    if number < 1:
        raise argparse.ArgumentTypeError("a positive integer, or 'none' for no limit")
    return number


def _show_limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


async def _tenants_limits(store: Any, args: argparse.Namespace) -> int:
    """Set the given limits (others unchanged) and print all three; no flag: just print."""
    from gateway.store import TenantLimits

    tenant_id = await _tenant_id(store, args.name)
    tenant = await store.get_tenant(tenant_id)
    current = tenant.limits
    given = {
        "requests_per_minute": args.rpm,
        "documents_per_minute": args.dpm,
        "max_concurrency": args.concurrency,
    }
    if any(v is not None for v in given.values()):
        merged: dict[str, int | None] = {}
        for name, value in given.items():
            if value is None:  # flag not given: keep the current value
                merged[name] = getattr(current, name)
            else:
                merged[name] = None if value == _UNLIMITED else value
        tenant = await store.set_tenant_limits(tenant_id, TenantLimits(**merged))
        await _audit(store, "tenants.limits", "UPDATE", tenant_id=tenant_id)
    limits = tenant.limits
    print(
        f"{tenant.name}\trequests_per_minute={_show_limit(limits.requests_per_minute)}"
        f"\tdocuments_per_minute={_show_limit(limits.documents_per_minute)}"
        f"\tmax_concurrency={_show_limit(limits.max_concurrency)}"
    )
    return 0


# ---- keys -----------------------------------------------------------------------------------


def _show_new_key(issued: Any) -> None:
    """The token once, alone on stdout; its id and scopes on stderr for the operator."""
    print(issued.token)
    sys.stdout.flush()
    row = issued.row
    _err(f"key {row.key_id} for scopes {' '.join(sorted(row.scopes))} (shown once; store it now)")


async def _keys_create(store: Any, args: argparse.Namespace) -> int:
    tenant_id = await _tenant_id(store, args.tenant)
    expires = None
    if args.expires_days is not None:
        expires = datetime.now(UTC) + timedelta(days=args.expires_days)
    scopes = [s for s in args.scopes.replace(",", " ").split() if s]
    issued = await store.create_key(
        tenant_id, _peppers(args), scopes=scopes, env=args.env, expires_at=expires
    )
    await _audit(store, "keys.create", "CREATE", tenant_id=tenant_id, key_id=issued.row.key_id)
    _show_new_key(issued)
    return 0


async def _keys_list(store: Any, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    for row in await store.list_keys(await _tenant_id(store, args.tenant)):
        state = "revoked" if row.revoked_at else ("usable" if row.usable_at(now) else "expired")
        scopes = ",".join(sorted(row.scopes))
        print(f"{row.key_id}\t{row.env}\t{scopes}\t{state}\texpires={_when(row.expires_at)}")
    return 0


async def _keys_rotate(store: Any, args: argparse.Namespace) -> int:
    tenant_id = await _tenant_id(store, args.tenant)
    issued = await store.rotate_key(
        tenant_id, args.key_id, _peppers(args), overlap=timedelta(hours=args.overlap_hours)
    )
    await _audit(store, "keys.rotate", "UPDATE", tenant_id=tenant_id, key_id=issued.row.key_id)
    _show_new_key(issued)
    return 0


async def _keys_revoke(store: Any, args: argparse.Namespace) -> int:
    tenant_id = await _tenant_id(store, args.tenant)
    row = await store.revoke_key(tenant_id, args.key_id)
    await _audit(store, "keys.revoke", "DELETE", tenant_id=tenant_id, key_id=row.key_id)
    print(f"{row.key_id}\trevoked {_when(row.revoked_at)}")
    return 0


# ---- taxonomies -----------------------------------------------------------------------------


def _load_taxonomy(path: Path, name: str | None) -> Any:
    from gateway.taxonomy_io import Taxonomy, parse_csv, parse_json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        return parse_csv(text, name=name or path.stem)
    taxonomy = parse_json(text)
    return Taxonomy(name, taxonomy.version, taxonomy.facets) if name else taxonomy


async def _taxonomy_import(store: Any, args: argparse.Namespace) -> int:
    from gateway.taxonomy_io import TaxonomyInvalid

    tenant_id = await _tenant_id(store, args.tenant)
    try:
        taxonomy = _load_taxonomy(args.file, args.name)
    except TaxonomyInvalid as exc:
        for problem in exc.problems:
            _err(f"{args.file}: {problem.location}: {problem.code}: {problem.message}")
        _err(f"tacet taxonomy: {len(exc.problems)} problem(s); nothing imported")
        return 1
    record = await store.put_taxonomy(tenant_id, taxonomy)
    await _audit(store, "taxonomy.import", "CREATE", tenant_id=tenant_id, taxonomy=record.reference)
    print(record.reference)
    return 0


async def _taxonomy_list(store: Any, args: argparse.Namespace) -> int:
    tenant_id = await _tenant_id(store, args.tenant)
    for name, _latest in await store.list_taxonomies(tenant_id):
        versions = await store.list_versions(tenant_id, name)
        print(f"{name}\t{' '.join(versions)}")
    return 0


async def _resolve(store: Any, tenant_id: str, reference: str) -> Any:
    record = await store.resolve_taxonomy(tenant_id, reference)
    if record is None:
        raise AdminError(f"no taxonomy {reference!r} in this tenant")
    return record


async def _taxonomy_show(store: Any, args: argparse.Namespace) -> int:
    record = await _resolve(store, await _tenant_id(store, args.tenant), args.reference)
    print(json.dumps(record.taxonomy.to_document(), indent=2, ensure_ascii=False))
    return 0


async def _taxonomy_diff(store: Any, args: argparse.Namespace) -> int:
    from gateway.taxonomy_io import diff

    tenant_id = await _tenant_id(store, args.tenant)
    a = await _resolve(store, tenant_id, args.a)
    b = await _resolve(store, tenant_id, args.b)
    change = diff(a.taxonomy, b.taxonomy)
    for facet, label in change.added:
        print(f"added\t{facet}/{label}")
    for facet, label in change.removed:
        print(f"removed\t{facet}/{label}")
    for facet, label, old, new in change.renamed:
        print(f"renamed\t{facet}/{label}\t{old}\t{new}")
    for facet, label, old_parent, new_parent in change.moved:
        print(f"moved\t{facet}/{label}\t{old_parent or '-'}\t{new_parent or '-'}")
    return 0


# ---- policies -------------------------------------------------------------------------------


async def _policy_set(store: Any, args: argparse.Namespace) -> int:
    from gateway.policies import PolicyInvalid, parse_policy

    tenant_id = await _tenant_id(store, args.tenant)
    try:
        policy = parse_policy(args.file.read_bytes())
    except OSError as exc:
        raise AdminError(f"cannot read {args.file}: {exc.strerror}") from None
    except PolicyInvalid as exc:
        for problem in exc.problems:
            _err(f"{args.file}: {problem}")
        return 1
    await store.set_policy(tenant_id, policy)
    await _audit(store, "policy.set", "UPDATE", tenant_id=tenant_id)
    for task, settings in sorted(policy.items()):
        print(f"{task}\t{settings.mode}\t{settings.human_review}")
    return 0


# ---- registration ---------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--data-dir", type=Path, help="state directory (default .tacet)")
    return parent


def _add(
    group: Any, name: str, action: _Action, help_text: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, parents=[common])
    parser.set_defaults(func=_runner(action))
    return parser


def _register_keys(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="API keys of a tenant").add_subparsers(
        dest="action", required=True
    )
    peppered = argparse.ArgumentParser(add_help=False, parents=[common])
    peppered.add_argument("--dev", action="store_true", help="use the dev pepper of --data-dir")
    peppered.add_argument("--tenant", required=True, help="tenant name")
    create = _add(keys, "create", _keys_create, "issue a key (printed once)", peppered)
    create.add_argument("--scopes", default="classify", help="comma-separated scopes")
    create.add_argument("--env", default="live", help="key environment label (default live)")
    create.add_argument("--expires-days", type=int, help="expire after this many days")
    listing = _add(keys, "list", _keys_list, "list keys (ids, never secrets)", common)
    listing.add_argument("--tenant", required=True, help="tenant name")
    rotate = _add(keys, "rotate", _keys_rotate, "new key; the old one lapses later", peppered)
    rotate.add_argument("key_id")
    rotate.add_argument("--overlap-hours", type=float, default=24.0)
    revoke = _add(keys, "revoke", _keys_revoke, "revoke a key now", common)
    revoke.add_argument("key_id")
    revoke.add_argument("--tenant", required=True, help="tenant name")


def _register_taxonomy(sub: Any, common: argparse.ArgumentParser) -> None:
    taxonomy = sub.add_parser("taxonomy", help="taxonomy versions of a tenant").add_subparsers(
        dest="action", required=True
    )
    scoped = argparse.ArgumentParser(add_help=False, parents=[common])
    scoped.add_argument("--tenant", required=True, help="tenant name")
    imp = _add(taxonomy, "import", _taxonomy_import, "import JSON or CSV as a version", scoped)
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", help="taxonomy name (CSV default: the file's stem)")
    _add(taxonomy, "list", _taxonomy_list, "names and versions", scoped)
    show = _add(taxonomy, "show", _taxonomy_show, "print name or name@version as JSON", scoped)
    show.add_argument("reference")
    change = _add(taxonomy, "diff", _taxonomy_diff, "added/removed/renamed/moved labels", scoped)
    change.add_argument("a")
    change.add_argument("b")


def register(sub: argparse._SubParsersAction) -> None:
    common = _common()
    tenants = sub.add_parser("tenants", help="tenants").add_subparsers(
        dest="action", required=True
    )
    create = _add(tenants, "create", _tenants_create, "create a tenant", common)
    create.add_argument("name")
    _add(tenants, "list", _tenants_list, "list tenants", common)
    limits = _add(
        tenants, "limits", _tenants_limits,
        "show or set a tenant's per-minute and concurrency limits (per gateway process)", common,
    )
    limits.add_argument("name")
    limits.add_argument("--rpm", type=_limit, help="requests per minute ('none': no limit)")
    limits.add_argument("--dpm", type=_limit, help="documents per minute ('none': no limit)")
    limits.add_argument(
        "--concurrency", type=_limit, help="requests in flight at once ('none': no limit)"
    )
    _register_keys(sub, common)
    _register_taxonomy(sub, common)
    policy = sub.add_parser("policy", help="task policies of a tenant").add_subparsers(
        dest="action", required=True
    )
    set_policy = _add(policy, "set", _policy_set, "replace the tenant's policy (YAML/JSON)", common)
    set_policy.add_argument("file", type=Path)
    set_policy.add_argument("--tenant", required=True, help="tenant name")
