"""API keys: format, checksum, peppered digests, scopes and a revocation-aware verification cache.

Key format (one token, no spaces, safe to double-click)::

    tacet_<env>_<key id>_<secret><checksum>

- `env` is `live`, `test` or `dev`; the `tacet_` brand lets secret scanners find leaked keys.
- `key id` is 16 lowercase base32 characters (80 random bits); public, logged, the row's key.
- `secret` is 43 base62 characters (256 random bits) from `secrets`; shown once, never stored.
- `checksum` is 6 base62 characters of CRC32 over everything before it (GitHub's token design),
  so a typo or a truncated paste is rejected offline, before any database lookup.

Storage: `digest = HMAC-SHA256(pepper, "tacet-key-v1" NUL key_id NUL secret)` and the id of the
pepper that made it. The pepper never enters the database (file or environment, a secrets
manager in production), so a database dump does not allow offline guessing; binding the key id
means a digest copied onto another row does not verify. High-entropy secrets need no slow KDF.

Verification cache (`KeyVerifier`): only positive results are cached, for at most `ttl` seconds
(<= 60). Every revoke, expiry change, rotation or tenant disable increments one counter row in
the same transaction (`key_epoch`). The verifier reads that counter at most every
`epoch_interval` seconds (one primary-key read) and drops its whole cache when it moved. Bound:
a change committed at time t through any process sharing the database is honoured everywhere by
t + epoch_interval (default 1 s); if the counter cannot be read, cached entries still die at
t + ttl. Expiry is checked against the clock on every call, cache or not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

__all__ = [
    "ENVIRONMENTS",
    "SCOPES",
    "ApiKeyError",
    "InvalidScope",
    "IssuedKey",
    "KeyLookup",
    "KeyRow",
    "KeyVerifier",
    "MalformedKey",
    "ParsedKey",
    "PepperError",
    "Peppers",
    "Principal",
    "digest_secret",
    "format_key",
    "generate_key",
    "load_peppers",
    "normalize_scopes",
    "parse_key",
]

# ApiKeyError
#  +-- MalformedKey   the token is not a well-formed Tacet key (bad shape or checksum)
#  +-- InvalidScope   a scope name outside SCOPES
#  +-- PepperError    no usable pepper: the gateway must not start


class ApiKeyError(Exception):
    """Base of every API-key error; messages never contain a key or a secret."""


class MalformedKey(ApiKeyError):
    pass


class InvalidScope(ApiKeyError):
    pass


class PepperError(ApiKeyError):
    pass


SCOPES = frozenset({"classify", "jobs", "taxonomy:write", "audit:read", "admin"})
ENVIRONMENTS = frozenset({"live", "test", "dev"})
BRAND = "tacet"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_LEN = 43  # ceil(256 / log2(62))
_CHECKSUM_LEN = 6  # 62**6 > 2**32
_KEY_ID_LEN = 16  # 80 bits in lowercase base32
_KEY_RE = re.compile(
    rf"^{BRAND}_(?P<env>[a-z]{{3,4}})_(?P<key_id>[a-z2-7]{{{_KEY_ID_LEN}}})_"
    rf"(?P<secret>[0-9A-Za-z]{{{_SECRET_LEN}}})(?P<checksum>[0-9A-Za-z]{{{_CHECKSUM_LEN}}})$"
)
_DIGEST_DOMAIN = b"tacet-key-v1"
_MIN_PEPPER_BYTES = 32
MAX_CACHE_TTL = 60.0


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_B62[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(binascii.crc32(body.encode("ascii")), _CHECKSUM_LEN)


@dataclass(frozen=True)
class ParsedKey:
    """A well-formed key split into parts. `repr` hides the secret."""

    env: str
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedKey(env={self.env!r}, key_id={self.key_id!r}, secret=<hidden>)"


def format_key(env: str, key_id: str, secret: str) -> str:
    body = f"{BRAND}_{env}_{key_id}_{secret}"
    return body + _checksum(body)


def parse_key(token: str) -> ParsedKey:
    """Split and check a presented key offline; MalformedKey (opaque) for any defect."""
    match = _KEY_RE.fullmatch(token) if len(token) < 128 else None
    if match is None or match["env"] not in ENVIRONMENTS:
        raise MalformedKey("not a Tacet API key")
    body = token[:-_CHECKSUM_LEN]
    if not hmac.compare_digest(_checksum(body), match["checksum"]):
        raise MalformedKey("not a Tacet API key")
    return ParsedKey(env=match["env"], key_id=match["key_id"], secret=match["secret"])


def generate_key(env: str = "live") -> tuple[str, ParsedKey]:
    """A fresh key: (token shown once to its owner, its parts)."""
    if env not in ENVIRONMENTS:
        raise ApiKeyError(f"key environment must be one of {sorted(ENVIRONMENTS)}")
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    secret = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _SECRET_LEN)
    parsed = ParsedKey(env=env, key_id=key_id, secret=secret)
    return format_key(env, key_id, secret), parsed


def normalize_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scope set, or InvalidScope naming the unknown ones (scope names are not secret)."""
    given = frozenset(s.strip() for s in scopes if s.strip())
    unknown = given - SCOPES
    if unknown:
        raise InvalidScope(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    if not given:
        raise InvalidScope("a key needs at least one scope")
    return given


# --- peppers -------------------------------------------------------------------------------


class Peppers:
    """Server-side HMAC keys: the first signs new digests, all of them verify old ones.

    A pepper is identified by a short HMAC of itself (`pepper_id`), stored beside each digest,
    so pepper rotation needs no version bookkeeping: list the new pepper first and keep the old
    one until every key it digested has expired.
    """

    def __init__(self, peppers: Iterable[bytes]) -> None:
        items = list(peppers)
        if not items:
            raise PepperError("no API-key pepper given")
        for pepper in items:
            if len(pepper) < _MIN_PEPPER_BYTES:
                raise PepperError(f"an API-key pepper must hold at least {_MIN_PEPPER_BYTES} bytes")
        self._by_id = {self._id_of(p): p for p in items}
        self.current_id = self._id_of(items[0])

    @staticmethod
    def _id_of(pepper: bytes) -> str:
        return hmac.new(pepper, b"tacet-pepper-id", hashlib.sha256).hexdigest()[:12]

    def get(self, pepper_id: str) -> bytes | None:
        return self._by_id.get(pepper_id)

    @property
    def current(self) -> bytes:
        return self._by_id[self.current_id]

    def derive(self, purpose: str) -> bytes:
        """A key for another purpose (e.g. review sampling), derived from the current pepper."""
        return hmac.new(self.current, b"tacet-derive:" + purpose.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Peppers(<{len(self._by_id)} hidden>)"


def digest_secret(pepper: bytes, key_id: str, secret: str) -> bytes:
    message = b"\0".join((_DIGEST_DOMAIN, key_id.encode("ascii"), secret.encode("ascii")))
    return hmac.new(pepper, message, hashlib.sha256).digest()


PEPPER_ENV = "TACET_KEY_PEPPER"
PEPPER_FILE_ENV = "TACET_KEY_PEPPER_FILE"
DEV_PEPPER_FILE = "key-pepper"


def _read_pepper_file(path: Path) -> bytes:
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise PepperError(f"{PEPPER_FILE_ENV}: cannot read {path} ({exc.strerror})") from None
    if path.stat().st_mode & 0o077:
        raise PepperError(f"{PEPPER_FILE_ENV}: {path} is readable by others; chmod 600 it")
    return data


def _dev_pepper(data_dir: Path) -> bytes:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DEV_PEPPER_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_pepper_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return _read_pepper_file(path)


def load_peppers(env: Mapping[str, str], *, data_dir: Path, dev: bool) -> Peppers:
    """Peppers from `TACET_KEY_PEPPER_FILE` (os.pathsep-separated, first is current) or
    `TACET_KEY_PEPPER`; with `dev` only, a generated `<data-dir>/key-pepper` (0600).

    Refuses (PepperError) outside dev when none is configured: a gateway that made up its own
    pepper would digest keys that no other gateway sharing the database could verify.
    """
    peppers: list[bytes] = []
    files = [Path(p) for p in env.get(PEPPER_FILE_ENV, "").split(os.pathsep) if p]
    peppers.extend(_read_pepper_file(p) for p in files)
    if env.get(PEPPER_ENV):
        peppers.append(env[PEPPER_ENV].encode("utf-8"))
    if not peppers:
        if not dev:
            raise PepperError(
                f"no API-key pepper: set {PEPPER_FILE_ENV} to a 0600 file of >= 32 random bytes "
                f"(or {PEPPER_ENV}); only --dev generates one"
            )
        peppers.append(_dev_pepper(data_dir))
    return Peppers(peppers)


# --- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRow:
    """What the database holds for one key (never the secret)."""

    key_id: str
    tenant_id: str
    env: str
    digest: bytes
    pepper_id: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    tenant_disabled: bool = False

    def __repr__(self) -> str:
        return f"KeyRow(key_id={self.key_id!r}, tenant_id={self.tenant_id!r}, digest=<hidden>)"

    def usable_at(self, now: datetime) -> bool:
        if self.revoked_at is not None or self.tenant_disabled:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Principal:
    """Who is calling: ids that may be logged, and the scopes; never the secret."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Exact match: `admin` manages the control plane and grants nothing else by itself."""
        return scope in self.scopes


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `token` is shown once and then dropped."""

    token: str
    row: KeyRow

    def __repr__(self) -> str:
        return f"IssuedKey(token=<hidden>, key_id={self.row.key_id!r})"


class KeyLookup(Protocol):
    async def get_key(self, key_id: str) -> KeyRow | None: ...

    async def key_epoch(self) -> int: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    row: KeyRow
    cached_at: float


class KeyVerifier:
    """Turns a bearer token into a Principal, with a short positive cache (see module doc)."""

    def __init__(
        self,
        lookup: KeyLookup,
        peppers: Peppers,
        *,
        ttl: float = 30.0,
        epoch_interval: float = 1.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 0 <= ttl <= MAX_CACHE_TTL:
            raise ValueError(f"cache ttl must be between 0 and {MAX_CACHE_TTL} seconds")
        if not 0 <= epoch_interval <= ttl or epoch_interval > MAX_CACHE_TTL:
            raise ValueError("epoch_interval must be between 0 and the ttl")
        self._lookup, self._peppers = lookup, peppers
        self._ttl, self._epoch_interval, self._max = ttl, epoch_interval, max_entries
        self._clock, self._now = clock, now
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._epoch: int | None = None
        self._epoch_checked = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh_epoch(self) -> None:
        """Drop the cache when another process changed any key since we last looked."""
        now = self._clock()
        if now - self._epoch_checked < self._epoch_interval:
            return
        async with self._lock:
            if self._clock() - self._epoch_checked < self._epoch_interval:
                return
            try:
                epoch = await self._lookup.key_epoch()
            except Exception:
                # Unknown state: keep entries, but they still die at their ttl.
                return
            if epoch != self._epoch:
                self._cache.clear()
                self._epoch = epoch
            self._epoch_checked = now

    def _cached(self, key_id: str) -> KeyRow | None:
        entry = self._cache.get(key_id)
        if entry is None:
            return None
        if self._clock() - entry.cached_at >= self._ttl:
            del self._cache[key_id]
            return None
        self._cache.move_to_end(key_id)
        return entry.row

    def _remember(self, row: KeyRow) -> None:
        if self._ttl <= 0:
            return
        self._cache[row.key_id] = _Entry(row=row, cached_at=self._clock())
        self._cache.move_to_end(row.key_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one key (or all): call after a local revoke for an immediate effect."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    async def verify(self, token: str) -> Principal | None:
        """The principal for a presented key, or None (malformed, unknown, wrong, expired,
        revoked or disabled: one answer for all, so the caller cannot tell which)."""
        try:
            parsed = parse_key(token)
        except MalformedKey:
            return None
        await self._refresh_epoch()
        row = self._cached(parsed.key_id)
        from_cache = row is not None
        if row is None:
            row = await self._lookup.get_key(parsed.key_id)
            if row is None:
                return None
        pepper = self._peppers.get(row.pepper_id)
        if pepper is None or row.env != parsed.env:
            return None
        candidate = digest_secret(pepper, parsed.key_id, parsed.secret)
        if not hmac.compare_digest(candidate, row.digest):
            return None
        if not row.usable_at(self._now()):
            self.invalidate(row.key_id)
            return None
        if not from_cache:
            self._remember(row)
        return Principal(tenant_id=row.tenant_id, key_id=row.key_id, scopes=row.scopes)


def rotation_deadline(now: datetime, overlap: timedelta, current: datetime | None) -> datetime:
    """When the old key stops working after a rotation: now + overlap, never later than it
    would have anyway. Overlap is bounded to 30 days so a rotation always ends."""
    if overlap < timedelta(0) or overlap > timedelta(days=30):
        raise ApiKeyError("rotation overlap must be between 0 and 30 days")
    deadline = now + overlap
    return deadline if current is None else min(deadline, current)
