"""Host ZDR checks read from fake /proc, /sys and /etc trees, and the `tacet zdr report` CLI.

Each test starts from a tree that is safe on every count, breaks one setting and asserts that
exactly that check changes verdict: so a check that always said "ok" would fail here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from compliance.host import Check, Verdict, check_host, read_systemd_config
from gateway import _cli_zdr

CHECK_NAMES = [
    "swap",
    "core_dumps",
    "coredump_storage",
    "journald_storage",
    "tmp_tmpfs",
    "ptrace_scope",
    "kdump",
    "hibernation",
]

SAFE_FILES = {
    "proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n",
    "proc/sys/kernel/core_pattern": "|/bin/false\n",
    "proc/sys/fs/suid_dumpable": "0\n",
    "proc/sys/kernel/yama/ptrace_scope": "3\n",
    "proc/self/mounts": (
        "/dev/nvme0n1p1 / ext4 rw,relatime 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev,size=1024k 0 0\n"
    ),
    "proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p1 ro\n",
    "sys/kernel/kexec_crash_loaded": "0\n",
    "sys/power/state": "freeze mem disk\n",
    "usr/lib/systemd/systemd-coredump": "",
    "etc/systemd/coredump.conf": "[Coredump]\n#Storage=external\n",
    "etc/systemd/coredump.conf.d/90-tacet-zdr.conf": "[Coredump]\nStorage=none\n",
    "etc/systemd/journald.conf": "[Journal]\n#Storage=auto\n",
    "etc/systemd/journald.conf.d/90-tacet-zdr.conf": "[Journal]\nStorage=volatile\n",
    "etc/systemd/sleep.conf.d/90-tacet-zdr.conf": "[Sleep]\nAllowHibernation=no\n",
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def safe_root(tmp_path: Path) -> Path:
    return write_tree(tmp_path, SAFE_FILES)


def verdicts(root: Path) -> dict[str, Verdict]:
    return {check.name: check.verdict for check in check_host(root)}


def only_changed(root: Path) -> dict[str, Verdict]:
    """The checks whose verdict is not ok."""
    return {name: v for name, v in verdicts(root).items() if v is not Verdict.OK}


def test_safe_tree_is_ok_on_every_check(safe_root: Path) -> None:
    checks = check_host(safe_root)
    assert [c.name for c in checks] == CHECK_NAMES
    assert all(c.verdict is Verdict.OK for c in checks), checks


@pytest.mark.parametrize(
    ("rel", "text", "name", "verdict"),
    [
        (
            "proc/swaps",
            "Filename Type Size Used Priority\n/dev/xvdb partition 1 0 -2\n",
            "swap",
            Verdict.UNSAFE,
        ),
        (
            "proc/swaps",
            "Filename Type Size Used Priority\n/swapfile file 1 0 -2\n",
            "swap",
            Verdict.UNSAFE,
        ),
        ("proc/sys/kernel/core_pattern", "core\n", "core_dumps", Verdict.UNSAFE),
        ("proc/sys/kernel/core_pattern", "/var/crash/core.%e.%p\n", "core_dumps", Verdict.UNSAFE),
        (
            "proc/sys/kernel/core_pattern",
            "|/usr/share/apport/apport -p%p -s%s\n",
            "core_dumps",
            Verdict.UNSAFE,
        ),
        ("proc/sys/kernel/core_pattern", "|/opt/vendor/dumper %p\n", "core_dumps", Verdict.UNKNOWN),
        ("proc/sys/fs/suid_dumpable", "2\n", "core_dumps", Verdict.UNSAFE),
        (
            "etc/systemd/coredump.conf.d/90-tacet-zdr.conf",
            "[Coredump]\nStorage=external\n",
            "coredump_storage",
            Verdict.UNSAFE,
        ),
        (
            "etc/systemd/journald.conf.d/90-tacet-zdr.conf",
            "[Journal]\nStorage=persistent\n",
            "journald_storage",
            Verdict.UNSAFE,
        ),
        ("proc/self/mounts", "/dev/nvme0n1p1 / ext4 rw 0 0\n", "tmp_tmpfs", Verdict.UNSAFE),
        (
            "proc/self/mounts",
            "/dev/root / ext4 rw 0 0\n/dev/xvdc /tmp xfs rw 0 0\n",
            "tmp_tmpfs",
            Verdict.UNSAFE,
        ),
        ("proc/sys/kernel/yama/ptrace_scope", "1\n", "ptrace_scope", Verdict.UNSAFE),
        ("proc/sys/kernel/yama/ptrace_scope", "0\n", "ptrace_scope", Verdict.UNSAFE),
        ("sys/kernel/kexec_crash_loaded", "1\n", "kdump", Verdict.UNSAFE),
        (
            "etc/systemd/sleep.conf.d/90-tacet-zdr.conf",
            "[Sleep]\nAllowSuspend=no\n",
            "hibernation",
            Verdict.UNSAFE,
        ),
    ],
)
def test_one_unsafe_setting_flips_only_its_check(
    safe_root: Path, rel: str, text: str, name: str, verdict: Verdict
) -> None:
    write_tree(safe_root, {rel: text})
    assert only_changed(safe_root) == {name: verdict}


@pytest.mark.parametrize(
    ("rel", "name"),
    [
        ("proc/swaps", "swap"),
        ("proc/sys/kernel/core_pattern", "core_dumps"),
        ("proc/sys/fs/suid_dumpable", "core_dumps"),
        ("proc/self/mounts", "tmp_tmpfs"),
        ("proc/sys/kernel/yama/ptrace_scope", "ptrace_scope"),
        ("sys/kernel/kexec_crash_loaded", "kdump"),
    ],
)
def test_missing_file_gives_unknown_not_an_error(safe_root: Path, rel: str, name: str) -> None:
    (safe_root / rel).unlink()
    assert only_changed(safe_root) == {name: Verdict.UNKNOWN}


def test_empty_root_gives_a_result_for_every_check(tmp_path: Path) -> None:
    checks = check_host(tmp_path)
    assert [c.name for c in checks] == CHECK_NAMES
    assert {c.name: c.verdict for c in checks}["swap"] is Verdict.UNKNOWN


def test_zram_swap_stays_in_ram(safe_root: Path) -> None:
    write_tree(
        safe_root,
        {"proc/swaps": "Filename Type Size Used Priority\n/dev/zram0 partition 8 0 100\n"},
    )
    (check,) = [c for c in check_host(safe_root) if c.name == "swap"]
    assert check.verdict is Verdict.OK
    assert "zram0" in check.reason


def test_systemd_coredump_pipe_defers_to_its_storage(safe_root: Path) -> None:
    pipe = "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n"
    write_tree(safe_root, {"proc/sys/kernel/core_pattern": pipe})
    assert only_changed(safe_root) == {}
    (safe_root / "etc/systemd/coredump.conf.d/90-tacet-zdr.conf").unlink()
    assert only_changed(safe_root) == {"coredump_storage": Verdict.UNSAFE}


def test_coredump_not_installed_is_ok_without_config(safe_root: Path) -> None:
    (safe_root / "usr/lib/systemd/systemd-coredump").unlink()
    (safe_root / "etc/systemd/coredump.conf.d/90-tacet-zdr.conf").unlink()
    assert only_changed(safe_root) == {}


def test_journal_auto_depends_on_var_log_journal(safe_root: Path) -> None:
    (safe_root / "etc/systemd/journald.conf.d/90-tacet-zdr.conf").unlink()
    assert only_changed(safe_root) == {}
    (safe_root / "var/log/journal").mkdir(parents=True)
    assert only_changed(safe_root) == {"journald_storage": Verdict.UNSAFE}


def test_later_tmp_mount_covers_earlier(safe_root: Path) -> None:
    mounts = "/dev/root / ext4 rw 0 0\n/dev/xvdc /tmp xfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n"
    write_tree(safe_root, {"proc/self/mounts": mounts})
    assert only_changed(safe_root) == {}


def test_crashkernel_reserved_but_unloaded_is_ok(safe_root: Path) -> None:
    write_tree(safe_root, {"proc/cmdline": "root=/dev/xvda1 crashkernel=512M\n"})
    (check,) = [c for c in check_host(safe_root) if c.name == "kdump"]
    assert check.verdict is Verdict.OK
    assert "crashkernel" in check.reason


def test_hibernation_masked_target_or_no_disk_state_is_ok(safe_root: Path) -> None:
    (safe_root / "etc/systemd/sleep.conf.d/90-tacet-zdr.conf").unlink()
    assert only_changed(safe_root) == {"hibernation": Verdict.UNSAFE}
    target = safe_root / "etc/systemd/system/hibernate.target"
    target.parent.mkdir(parents=True)
    target.symlink_to("/dev/null")
    assert only_changed(safe_root) == {}
    target.unlink()
    write_tree(safe_root, {"sys/power/state": "freeze mem\n"})
    assert only_changed(safe_root) == {}


def test_systemd_config_precedence(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "etc/systemd/journald.conf": "[Journal]\nStorage=persistent\nSeal=yes\n",
            # Same file name in /usr/lib is masked by /etc's.
            "usr/lib/systemd/journald.conf.d/50-x.conf": "[Journal]\nStorage=none\n",
            "etc/systemd/journald.conf.d/50-x.conf": "[Journal]\nStorage=auto\n",
            # Later file name wins, whatever its directory.
            "usr/lib/systemd/journald.conf.d/60-y.conf": "[Journal]\nStorage=volatile\n",
            # An empty assignment resets to the default; other sections are ignored.
            "run/systemd/journald.conf.d/70-z.conf": "[Journal]\nSeal=\n[Other]\nStorage=x\n",
        },
    )
    assert read_systemd_config(tmp_path, "systemd/journald.conf", "Journal") == {
        "Storage": "volatile"
    }


def test_unreadable_check_becomes_unknown(tmp_path: Path) -> None:
    def broken(root: Path) -> Check:
        raise PermissionError("denied")

    broken.__name__ = "check_broken"
    (result,) = check_host(tmp_path, checks=[broken])
    assert result == Check("broken", Verdict.UNKNOWN, "could not read: PermissionError")


def test_unreadable_file_gives_unknown(safe_root: Path) -> None:
    # A directory where a file should be fails to read for root too (IsADirectoryError).
    path = safe_root / "proc/sys/kernel/yama/ptrace_scope"
    path.unlink()
    path.mkdir()
    assert only_changed(safe_root) == {"ptrace_scope": Verdict.UNKNOWN}


def test_live_host_checks_are_well_formed() -> None:
    """Runs on whatever machine runs the tests: only the shape of the results is asserted."""
    checks = check_host()
    assert [c.name for c in checks] == CHECK_NAMES
    for check in checks:
        assert isinstance(check.verdict, Verdict)
        assert check.reason.strip()
        assert "\n" not in check.reason


# ---- `tacet zdr report` ----


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tacet")
    _cli_zdr.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["zdr", "report", *argv])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = parse(*argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_report_table_passes_on_safe_host(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "--root", str(safe_root))
    assert code == 0
    assert "[host]" in out
    for name in CHECK_NAMES:
        assert name in out
    assert out.rstrip().endswith("result: ok")


def test_report_fails_on_unsafe_setting(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(safe_root, {"proc/sys/kernel/core_pattern": "core\n"})
    code, out = run(capsys, "--root", str(safe_root))
    assert code == 1
    assert "result: UNSAFE" in out


def test_report_json_lists_sections(safe_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(safe_root, {"proc/sys/kernel/yama/ptrace_scope": "0\n"})
    code, out = run(capsys, "--json", "--root", str(safe_root))
    report = json.loads(out)
    assert code == 1
    assert report["ok"] is False
    section = report["sections"][0]
    assert section["name"] == "host"
    assert section["enforced"] is True
    assert [c["name"] for c in section["checks"]] == CHECK_NAMES
    by_name = {c["name"]: c for c in section["checks"]}
    assert by_name["ptrace_scope"]["verdict"] == "unsafe"
    assert set(by_name["swap"]) == {"name", "verdict", "reason"}


def test_warn_host_reports_without_failing(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(safe_root, {"sys/kernel/kexec_crash_loaded": "1\n"})
    code, out = run(capsys, "--json", "--warn-host", "--root", str(safe_root))
    report = json.loads(out)
    assert code == 0
    assert report["sections"][0]["enforced"] is False
    assert {c["name"]: c["verdict"] for c in report["sections"][0]["checks"]}["kdump"] == "unsafe"


def test_unknown_fails_only_when_strict(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (safe_root / "sys/kernel/kexec_crash_loaded").unlink()
    assert run(capsys, "--root", str(safe_root))[0] == 0
    assert run(capsys, "--strict", "--root", str(safe_root))[0] == 1


def test_other_sections_plug_in(
    safe_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def extra(args: argparse.Namespace) -> _cli_zdr.Section:
        return _cli_zdr.Section("gateway", [Check("isolation", Verdict.UNSAFE, "no netns")])

    monkeypatch.setattr(_cli_zdr, "SECTION_BUILDERS", [*_cli_zdr.SECTION_BUILDERS, extra])
    code, out = run(capsys, "--json", "--root", str(safe_root))
    assert code == 1
    names = [s["name"] for s in json.loads(out)["sections"]]
    assert names[:2] == ["host", "engine"]
    assert names[-1] == "gateway"


def test_engine_section_names_the_slot_scoring_implementation(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _code, out = run(capsys, "--json", "--root", str(safe_root))
    engine = next(s for s in json.loads(out)["sections"] if s["name"] == "engine")
    (check,) = engine["checks"]
    assert check["name"] == "slot_scoring"
    assert check["reason"].split()[0] in {"torch-chunked", "triton"}


def test_tacet_command_line_routes_to_the_report(
    safe_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    write_tree(safe_root, {"proc/swaps": "Filename Type\n/swap.img file 1 0 -2\n"})
    assert main(["zdr", "report", "--root", str(safe_root)]) == 1
    assert "swap on /swap.img" in capsys.readouterr().out
