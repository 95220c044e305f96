"""API keys: format and checksum, peppered digests, scopes, pepper loading, verifier cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.apikeys import (
    SCOPES,
    ApiKeyError,
    InvalidScope,
    KeyRow,
    KeyVerifier,
    MalformedKey,
    PepperError,
    Peppers,
    digest_secret,
    format_key,
    generate_key,
    load_peppers,
    normalize_scopes,
    parse_key,
    rotation_deadline,
)

PEPPER = b"p" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_generated_key_has_the_documented_shape_and_round_trips() -> None:
    token, parsed = generate_key("test")
    brand, env, key_id, rest = token.split("_")
    assert (brand, env, key_id) == ("tacet", "test", parsed.key_id)
    assert len(key_id) == 16 and len(rest) == 43 + 6
    assert parse_key(token) == parsed
    assert parsed.secret not in repr(parsed)


def test_keys_are_unique_and_secrets_carry_256_bits() -> None:
    tokens = {generate_key()[0] for _ in range(200)}
    assert len(tokens) == 200
    secret = generate_key()[1].secret
    assert 62**43 >= 2**256 and len(secret) == 43


@pytest.mark.parametrize("position", [0, 6, 11, 20, 30, 60, -1])
def test_checksum_rejects_any_single_character_typo(position: int) -> None:
    token, _ = generate_key()
    chars = list(token)
    chars[position] = "B" if chars[position] != "B" else "C"
    with pytest.raises(MalformedKey):
        parse_key("".join(chars))


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "tacet_live_", "sk-123", "tacet_prod_aaaaaaaaaaaaaaaa_" + "A" * 49, "x" * 500],
)
def test_junk_is_rejected_offline_with_an_opaque_message(token: str) -> None:
    with pytest.raises(MalformedKey) as info:
        parse_key(token)
    assert str(info.value) == "not a Tacet API key"


def test_truncated_key_is_rejected() -> None:
    token, _ = generate_key()
    with pytest.raises(MalformedKey):
        parse_key(token[:-1])


def test_unknown_environment_cannot_be_generated() -> None:
    with pytest.raises(ApiKeyError):
        generate_key("prod")


def test_digest_is_peppered_and_bound_to_the_key_id() -> None:
    _, parsed = generate_key()
    digest = digest_secret(PEPPER, parsed.key_id, parsed.secret)
    assert digest != hashlib.sha256(parsed.secret.encode()).digest()
    assert digest != digest_secret(b"q" * 32, parsed.key_id, parsed.secret)
    assert digest != digest_secret(PEPPER, "a" * 16, parsed.secret)


def test_scopes_are_checked() -> None:
    assert normalize_scopes(["classify", " jobs "]) == {"classify", "jobs"}
    assert {"classify", "jobs", "taxonomy:write", "audit:read", "admin"} == SCOPES
    with pytest.raises(InvalidScope, match="classify:write"):
        normalize_scopes(["classify:write"])
    with pytest.raises(InvalidScope):
        normalize_scopes([])


def test_peppers_need_32_bytes_and_have_stable_ids() -> None:
    with pytest.raises(PepperError):
        Peppers([b"short"])
    with pytest.raises(PepperError):
        Peppers([])
    a, b = Peppers([PEPPER, b"q" * 32]), Peppers([PEPPER])
    assert a.current_id == b.current_id and a.current == PEPPER
    assert a.get(Peppers([b"q" * 32]).current_id) == b"q" * 32
    assert "ppp" not in repr(a)


def test_load_peppers_refuses_to_start_without_one_outside_dev(tmp_path: Path) -> None:
    with pytest.raises(PepperError, match="TACET_KEY_PEPPER_FILE"):
        load_peppers({}, data_dir=tmp_path, dev=False)


def test_dev_pepper_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_peppers({}, data_dir=tmp_path / "d", dev=True)
    second = load_peppers({}, data_dir=tmp_path / "d", dev=True)
    assert first.current_id == second.current_id
    mode = stat.S_IMODE(os.stat(tmp_path / "d" / "key-pepper").st_mode)
    assert mode == 0o600


def test_pepper_file_list_puts_the_first_one_current(tmp_path: Path) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    for path, value in ((new, "n" * 40), (old, "o" * 40)):
        path.write_text(value + "\n")
        path.chmod(0o600)
    env = {"TACET_KEY_PEPPER_FILE": f"{new}{os.pathsep}{old}"}
    peppers = load_peppers(env, data_dir=tmp_path, dev=False)
    assert peppers.current == b"n" * 40
    assert peppers.get(Peppers([b"o" * 40]).current_id) == b"o" * 40


def test_pepper_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    path.write_text("z" * 40)
    path.chmod(0o644)
    with pytest.raises(PepperError, match="chmod 600"):
        load_peppers({"TACET_KEY_PEPPER_FILE": str(path)}, data_dir=tmp_path, dev=False)


def test_pepper_from_environment(tmp_path: Path) -> None:
    peppers = load_peppers({"TACET_KEY_PEPPER": "e" * 32}, data_dir=tmp_path, dev=False)
    assert peppers.current == b"e" * 32


def test_rotation_deadline_is_bounded() -> None:
    assert rotation_deadline(NOW, timedelta(hours=1), None) == NOW + timedelta(hours=1)
    earlier = NOW + timedelta(minutes=5)
    assert rotation_deadline(NOW, timedelta(hours=1), earlier) == earlier
    with pytest.raises(ApiKeyError):
        rotation_deadline(NOW, timedelta(days=31), None)
    with pytest.raises(ApiKeyError):
        rotation_deadline(NOW, timedelta(seconds=-1), None)


# --- verifier ------------------------------------------------------------------------------


class FakeLookup:
    """An in-memory twin of the store's two verification reads, counting them."""

    def __init__(self) -> None:
        self.rows: dict[str, KeyRow] = {}
        self.epoch = 0
        self.key_reads = 0
        self.epoch_reads = 0
        self.epoch_fails = False

    async def get_key(self, key_id: str) -> KeyRow | None:
        self.key_reads += 1
        return self.rows.get(key_id)

    async def key_epoch(self) -> int:
        self.epoch_reads += 1
        if self.epoch_fails:
            raise ConnectionError("database down")
        return self.epoch

    def add(self, peppers: Peppers, **changes: object) -> str:
        token, parsed = generate_key()
        row = KeyRow(
            key_id=parsed.key_id,
            tenant_id="tn_a",
            env=parsed.env,
            digest=digest_secret(peppers.current, parsed.key_id, parsed.secret),
            pepper_id=peppers.current_id,
            scopes=frozenset({"classify"}),
            created_at=NOW,
            expires_at=None,
            revoked_at=None,
        )
        self.rows[parsed.key_id] = replace(row, **changes)  # type: ignore[arg-type]
        return token


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _verifier(lookup: FakeLookup, clock: Clock, peppers: Peppers, **kw: object) -> KeyVerifier:
    return KeyVerifier(lookup, peppers, clock=clock, now=lambda: NOW, **kw)  # type: ignore[arg-type]


def test_verifier_accepts_a_good_key_and_caches_it() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers)
    verifier = _verifier(lookup, clock, peppers)

    async def run() -> None:
        principal = await verifier.verify(token)
        assert principal is not None and principal.tenant_id == "tn_a"
        assert principal.allows("classify") and not principal.allows("admin")
        for _ in range(5):
            assert await verifier.verify(token) == principal
        assert lookup.key_reads == 1

    asyncio.run(run())


def test_cached_key_still_needs_the_right_secret() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers)
    verifier = _verifier(lookup, clock, peppers)
    _, other = generate_key()
    forged = format_key("live", parse_key(token).key_id, other.secret)

    async def run() -> None:
        assert await verifier.verify(token) is not None
        assert await verifier.verify(forged) is None

    asyncio.run(run())


def test_wrong_pepper_env_mismatch_and_unknown_keys_are_refused() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers, pepper_id="000000000000")
    env_token = lookup.add(peppers, env="test")
    unknown, _ = generate_key()
    verifier = _verifier(lookup, clock, peppers)

    async def run() -> None:
        assert await verifier.verify(token) is None
        assert await verifier.verify(env_token) is None
        assert await verifier.verify(unknown) is None
        assert await verifier.verify("not a key") is None

    asyncio.run(run())


def test_old_pepper_still_verifies_after_pepper_rotation() -> None:
    old, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(old)
    rotated = Peppers([b"n" * 32, PEPPER])
    assert rotated.current_id != old.current_id

    async def run() -> None:
        assert await _verifier(lookup, clock, rotated).verify(token) is not None

    asyncio.run(run())


def test_expired_revoked_and_disabled_keys_are_refused() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    tokens = [
        lookup.add(peppers, expires_at=NOW),
        lookup.add(peppers, revoked_at=NOW - timedelta(days=1)),
        lookup.add(peppers, tenant_disabled=True),
    ]
    live = lookup.add(peppers, expires_at=NOW + timedelta(seconds=1))
    verifier = _verifier(lookup, clock, peppers)

    async def run() -> None:
        for token in tokens:
            assert await verifier.verify(token) is None
        assert await verifier.verify(live) is not None

    asyncio.run(run())


def test_expiry_is_checked_on_every_call_even_from_cache() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers, expires_at=NOW + timedelta(seconds=10))
    now = [NOW]
    verifier = KeyVerifier(lookup, peppers, clock=clock, now=lambda: now[0])

    async def run() -> None:
        assert await verifier.verify(token) is not None
        now[0] = NOW + timedelta(seconds=10)
        assert await verifier.verify(token) is None

    asyncio.run(run())


def test_revocation_elsewhere_is_seen_after_the_epoch_interval() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers)
    key_id = parse_key(token).key_id
    verifier = _verifier(lookup, clock, peppers, ttl=30.0, epoch_interval=1.0)

    async def run() -> None:
        assert await verifier.verify(token) is not None
        # Another process revokes: the row changes and the epoch moves.
        lookup.rows[key_id] = replace(lookup.rows[key_id], revoked_at=NOW)
        lookup.epoch += 1
        clock.t += 0.5
        assert await verifier.verify(token) is not None  # within the documented bound
        clock.t += 0.6
        assert await verifier.verify(token) is None

    asyncio.run(run())


def test_epoch_is_read_at_most_once_per_interval() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers)
    verifier = _verifier(lookup, clock, peppers, epoch_interval=1.0)

    async def run() -> None:
        for _ in range(50):
            await verifier.verify(token)
        assert lookup.epoch_reads == 1
        clock.t += 1.0
        await verifier.verify(token)
        assert lookup.epoch_reads == 2

    asyncio.run(run())


def test_entries_die_at_ttl_even_when_the_epoch_cannot_be_read() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token = lookup.add(peppers)
    key_id = parse_key(token).key_id
    verifier = _verifier(lookup, clock, peppers, ttl=10.0, epoch_interval=1.0)

    async def run() -> None:
        assert await verifier.verify(token) is not None
        lookup.epoch_fails = True
        lookup.rows[key_id] = replace(lookup.rows[key_id], revoked_at=NOW)
        clock.t += 9.0
        assert await verifier.verify(token) is not None  # cached, epoch unknown
        clock.t += 1.0
        assert await verifier.verify(token) is None  # ttl over: re-read, revoked

    asyncio.run(run())


def test_negative_results_are_not_cached() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    token, parsed = generate_key()
    verifier = _verifier(lookup, clock, peppers)

    async def run() -> None:
        assert await verifier.verify(token) is None
        lookup.rows[parsed.key_id] = KeyRow(
            key_id=parsed.key_id,
            tenant_id="tn_b",
            env="live",
            digest=digest_secret(PEPPER, parsed.key_id, parsed.secret),
            pepper_id=peppers.current_id,
            scopes=frozenset({"jobs"}),
            created_at=NOW,
            expires_at=None,
            revoked_at=None,
        )
        assert await verifier.verify(token) is not None

    asyncio.run(run())


def test_cache_is_bounded_lru() -> None:
    peppers, lookup, clock = Peppers([PEPPER]), FakeLookup(), Clock()
    tokens = [lookup.add(peppers) for _ in range(5)]
    verifier = _verifier(lookup, clock, peppers, max_entries=3)

    async def run() -> None:
        for token in tokens:
            await verifier.verify(token)
        reads = lookup.key_reads
        await verifier.verify(tokens[-1])
        assert lookup.key_reads == reads
        await verifier.verify(tokens[0])
        assert lookup.key_reads == reads + 1

    asyncio.run(run())


@pytest.mark.parametrize(("ttl", "interval"), [(61.0, 1.0), (-1.0, 0.0), (10.0, 11.0)])
def test_verifier_refuses_a_cache_beyond_the_bound(ttl: float, interval: float) -> None:
    with pytest.raises(ValueError):
        KeyVerifier(FakeLookup(), Peppers([PEPPER]), ttl=ttl, epoch_interval=interval)
