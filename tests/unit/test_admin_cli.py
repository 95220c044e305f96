"""`tacet tenants|keys|taxonomy|policy` against a real SQLite file in a temp data dir."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from gateway.apikeys import KeyVerifier, load_peppers
from gateway.cli import main
from gateway.store import database_url, open_store

HEADER = "facet,id,name,description,parent\n"
CANARY = f"ZDR-CANARY-{uuid.uuid4().hex}"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TACET_DATABASE_URL", "TACET_KEY_PEPPER", "TACET_KEY_PEPPER_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _verify(data_dir: Path, token: str) -> str | None:
    """The tenant id the token authenticates as, through a fresh verifier (no cache)."""

    async def check() -> str | None:
        store = await open_store(database_url(data_dir.resolve(), {}))
        try:
            peppers = load_peppers({}, data_dir=data_dir.resolve(), dev=True)
            principal = await KeyVerifier(store, peppers, ttl=0, epoch_interval=0).verify(token)
            return principal.tenant_id if principal else None
        finally:
            await store.engine.dispose()

    return asyncio.run(check())


def test_tenants_create_and_list(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(data_dir)
    rc, out, _ = _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    assert rc == 0 and out.split("\t")[1].strip() == "acme"
    rc, _, err = _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    assert rc == 1 and "exists" in err
    _run(capsys, "tenants", "create", "beta", "--data-dir", d)
    rc, out, _ = _run(capsys, "tenants", "list", "--data-dir", d)
    assert [line.split("\t")[1] for line in out.splitlines()] == ["acme", "beta"]


def test_key_lifecycle_prints_the_token_once_to_stdout_only(
    data_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    rc, out, err = _run(
        capsys, "keys", "create", "--tenant", "acme", "--scopes", "classify,taxonomy:write",
        "--dev", "--data-dir", d,
    )
    assert rc == 0
    token = out.strip()
    assert out.count(token) == 1 and token.startswith("tacet_live_")
    assert token not in err and token not in caplog.text
    tenant_of_key = _verify(data_dir, token)
    assert tenant_of_key is not None

    rc, out, _ = _run(capsys, "keys", "list", "--tenant", "acme", "--data-dir", d)
    key_id = out.split("\t")[0]
    assert rc == 0 and "classify,taxonomy:write" in out and "usable" in out
    assert token not in out and key_id in token

    rc, out, err = _run(
        capsys, "keys", "rotate", key_id, "--tenant", "acme", "--dev", "--data-dir", d
    )
    new_token = out.strip()
    assert rc == 0 and new_token != token and new_token not in err
    assert _verify(data_dir, new_token) == tenant_of_key
    assert _verify(data_dir, token) == tenant_of_key  # the overlap window

    rc, out, _ = _run(capsys, "keys", "revoke", key_id, "--tenant", "acme", "--data-dir", d)
    assert rc == 0 and "revoked" in out
    assert _verify(data_dir, token) is None
    assert _verify(data_dir, new_token) == tenant_of_key


def test_keys_of_another_tenant_cannot_be_revoked(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    _run(capsys, "tenants", "create", "beta", "--data-dir", d)
    _, out, _ = _run(capsys, "keys", "create", "--tenant", "acme", "--dev", "--data-dir", d)
    token = out.strip()
    _, listing, _ = _run(capsys, "keys", "list", "--tenant", "acme", "--data-dir", d)
    key_id = listing.split("\t")[0]
    rc, _, err = _run(capsys, "keys", "revoke", key_id, "--tenant", "beta", "--data-dir", d)
    assert rc == 1 and "no such key" in err
    assert _verify(data_dir, token) is not None
    rc, _, err = _run(capsys, "keys", "list", "--tenant", "nobody", "--data-dir", d)
    assert rc == 1 and "no tenant" in err


def test_key_commands_refuse_without_a_pepper_outside_dev(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    rc, out, err = _run(capsys, "keys", "create", "--tenant", "acme", "--data-dir", d)
    assert rc == 1 and out == "" and "pepper" in err


def test_taxonomy_import_list_show_diff(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    v1 = tmp_path / "subjects.csv"
    v1.write_text(HEADER + "subject,med,Medicine,,\nsubject,cardio,Cardiology,,med\n")
    v2 = tmp_path / "v2.csv"
    v2.write_text(HEADER + "subject,med,Medicine,,\nsubject,cardio,Heart,,\nsubject,derm,Skin,,\n")
    rc, out, _ = _run(capsys, "taxonomy", "import", str(v1), "--tenant", "acme", "--data-dir", d)
    assert (rc, out.strip()) == (0, "subjects@1")
    rc, out, _ = _run(
        capsys, "taxonomy", "import", str(v2), "--name", "subjects", "--tenant", "acme",
        "--data-dir", d,
    )
    assert (rc, out.strip()) == (0, "subjects@2")
    rc, out, _ = _run(capsys, "taxonomy", "list", "--tenant", "acme", "--data-dir", d)
    assert out.strip() == "subjects\t1 2"
    rc, out, _ = _run(capsys, "taxonomy", "show", "subjects@1", "--tenant", "acme", "--data-dir", d)
    assert rc == 0 and '"cardio"' in out and '"version": "1"' in out
    rc, out, _ = _run(
        capsys, "taxonomy", "diff", "subjects@1", "subjects", "--tenant", "acme", "--data-dir", d
    )
    assert rc == 0
    assert out.splitlines() == [
        "added\tsubject/derm",
        "renamed\tsubject/cardio\tCardiology\tHeart",
        "moved\tsubject/cardio\tmed\t-",
    ]
    _run(capsys, "tenants", "create", "beta", "--data-dir", d)
    rc, _, err = _run(capsys, "taxonomy", "show", "subjects", "--tenant", "beta", "--data-dir", d)
    assert rc == 1 and "no taxonomy" in err


def test_taxonomy_import_reports_every_bad_row_without_values(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "subject,a,A,,\n"
        + f"subject,a,{CANARY},,\n"  # row 3: duplicate id
        + f"subject,b,B,,{CANARY}\n"  # row 4: unknown parent
        + "subject,,C,,\n"  # row 5: missing id
    )
    rc, out, err = _run(capsys, "taxonomy", "import", str(bad), "--tenant", "acme", "--data-dir", d)
    assert rc == 1 and out == ""
    assert "row 3: duplicate_id" in err
    assert "row 4: unknown_parent" in err
    assert "row 5: missing_id" in err
    assert CANARY not in err
    _, listing, _ = _run(capsys, "taxonomy", "list", "--tenant", "acme", "--data-dir", d)
    assert listing == ""


def test_policy_set_validates_and_stores(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    _run(capsys, "tenants", "create", "acme", "--data-dir", d)
    good = tmp_path / "policy.yaml"
    good.write_text(
        "tasks:\n"
        "  archive_retag: {mode: diffusion, human_review: sample_based, review_rate: 0.1}\n"
        "  member_answers: {mode: autoregressive, priority: accuracy,"
        " human_review: below_threshold, review_threshold: 0.8}\n"
    )
    rc, out, _ = _run(capsys, "policy", "set", str(good), "--tenant", "acme", "--data-dir", d)
    assert rc == 0
    assert out.splitlines() == [
        "archive_retag\tdiffusion\tsample_based",
        "member_answers\tautoregressive\tbelow_threshold",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  x: {mode: telepathy, human_review: sample_based}\n")
    rc, out, err = _run(capsys, "policy", "set", str(bad), "--tenant", "acme", "--data-dir", d)
    assert rc == 1 and "tasks.x.mode" in err and "tasks.x.review_rate" in err
