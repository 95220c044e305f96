"""Host ZDR settings, read from a live host: can the operating system write request memory to disk?

Swap, core dumps, a persistent journal, a disk-backed /tmp, ptrace, a loaded crash kernel and
hibernation each copy process memory somewhere it outlives the request. infra/ sets all of them
(cloud-init baseline); this module reads what is actually in force, so `tacet zdr report` shows
the truth rather than the intent. Every check returns a `Check` with a verdict and a one-line
reason, and never raises: a file that is absent or unreadable (containers, other kernels) gives
`unknown`, not a crash. All paths are read below `root`, so tests and image inspection can point
it at a tree of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Check", "Verdict", "check_host", "read_systemd_config"]


class Verdict(enum.StrEnum):
    """Outcome of one check: `unknown` means it could not be read, not that it is fine."""

    OK = "ok"
    UNSAFE = "unsafe"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Check:
    """One posture item: a stable name, a verdict and a one-line reason an operator can act on."""

    name: str
    verdict: Verdict
    reason: str


# systemd reads its own config files from these directories, highest priority first.
_CONFIG_DIRS = ("etc", "run", "usr/local/lib", "usr/lib", "lib")
_COREDUMP_BINARIES = ("usr/lib/systemd/systemd-coredump", "lib/systemd/systemd-coredump")
_SAFE_CORE_PIPES = frozenset({"false", "true"})
_CRASH_COLLECTORS = ("apport", "abrt-hook-ccpp", "abrt")


def _read(root: Path, rel: str) -> str | None:
    """The text of root/rel, or None when it is absent or unreadable."""
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _parse_ini(text: str, section: str, into: dict[str, str]) -> None:
    """Apply one systemd-style file: the last assignment wins, an empty one resets the key."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            continue
        if current != section or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value:
            into[key] = value
        else:
            into.pop(key, None)


def read_systemd_config(root: Path, name: str, section: str) -> dict[str, str]:
    """Effective settings of a systemd config file (`systemd/journald.conf`) and its drop-ins.

    Same precedence as systemd: the main file from the highest-priority directory, then every
    `name.d/*.conf` in file-name order, a name in /etc masking the same name further down.
    """
    values: dict[str, str] = {}
    for base in _CONFIG_DIRS:
        text = _read(root, f"{base}/{name}")
        if text is not None:
            _parse_ini(text, section, values)
            break
    dropins: dict[str, Path] = {}
    for base in reversed(_CONFIG_DIRS):
        folder = root / base / f"{name}.d"
        try:
            for path in folder.glob("*.conf"):
                dropins[path.name] = path
        except OSError:
            continue
    for file_name in sorted(dropins):
        try:
            _parse_ini(dropins[file_name].read_text(encoding="utf-8"), section, values)
        except (OSError, UnicodeDecodeError):
            continue
    return values


def _is_masked(root: Path, unit: str) -> bool:
    """A unit masked with `systemctl mask` is a link to /dev/null in /etc or /run."""
    for base in ("etc/systemd/system", "run/systemd/system"):
        path = root / base / unit
        try:
            if path.is_symlink() and str(path.readlink()) == "/dev/null":
                return True
        except OSError:
            continue
    return False


def check_swap(root: Path) -> Check:
    """Swap writes idle pages, request text included, to a disk. zram stays in RAM."""
    text = _read(root, "proc/swaps")
    if text is None:
        return Check("swap", Verdict.UNKNOWN, "cannot read /proc/swaps")
    devices = [line.split()[0] for line in text.splitlines()[1:] if line.strip()]
    on_disk = [d for d in devices if not Path(d).name.startswith("zram")]
    if on_disk:
        return Check("swap", Verdict.UNSAFE, f"swap on {', '.join(on_disk)}: run swapoff -a")
    if devices:
        return Check("swap", Verdict.OK, f"only compressed RAM swap ({', '.join(devices)})")
    return Check("swap", Verdict.OK, "no swap active")


def _core_pipe_program(pattern: str) -> str | None:
    """The helper's file name when core_pattern pipes to a program, else None."""
    if not pattern.startswith("|"):
        return None
    parts = pattern[1:].split()
    return Path(parts[0]).name if parts else ""


def check_core_dumps(root: Path) -> Check:
    """core_pattern decides where every core goes; suid_dumpable whether setuid ones dump too."""
    pattern = _read(root, "proc/sys/kernel/core_pattern")
    suid = _read(root, "proc/sys/fs/suid_dumpable")
    if pattern is None or suid is None:
        return Check("core_dumps", Verdict.UNKNOWN, "cannot read core_pattern or suid_dumpable")
    pattern, suid = pattern.strip(), suid.strip()
    if suid != "0":
        return Check("core_dumps", Verdict.UNSAFE, f"fs.suid_dumpable={suid}: set it to 0")
    program = _core_pipe_program(pattern)
    if program is None:
        return Check("core_dumps", Verdict.UNSAFE, f"cores written to files ({pattern!r})")
    if program in _SAFE_CORE_PIPES:
        return Check("core_dumps", Verdict.OK, f"cores discarded ({pattern!r})")
    if program == "systemd-coredump":
        return Check("core_dumps", Verdict.OK, "cores go to systemd-coredump (see its storage)")
    if any(program.startswith(name) for name in _CRASH_COLLECTORS):
        return Check("core_dumps", Verdict.UNSAFE, f"cores go to crash collector {program}")
    return Check("core_dumps", Verdict.UNKNOWN, f"cores piped to unrecognised {program!r}")


def check_coredump_storage(root: Path) -> Check:
    """systemd-coredump keeps cores on disk unless Storage=none (its default is external)."""
    pattern = (_read(root, "proc/sys/kernel/core_pattern") or "").strip()
    in_use = _core_pipe_program(pattern) == "systemd-coredump"
    installed = any((root / rel).exists() for rel in _COREDUMP_BINARIES)
    storage = read_systemd_config(root, "systemd/coredump.conf", "Coredump").get(
        "Storage", "external"
    )
    if storage == "none":
        return Check("coredump_storage", Verdict.OK, "systemd-coredump Storage=none")
    if not installed and not in_use:
        return Check("coredump_storage", Verdict.OK, "systemd-coredump not installed")
    return Check(
        "coredump_storage",
        Verdict.UNSAFE,
        f"systemd-coredump Storage={storage}: set Storage=none in coredump.conf.d",
    )


def check_journald_storage(root: Path) -> Check:
    """A persistent journal keeps whatever was logged; volatile keeps it in RAM, capped."""
    settings = read_systemd_config(root, "systemd/journald.conf", "Journal")
    storage = settings.get("Storage", "auto")
    cap = settings.get("RuntimeMaxUse", "default cap")
    if storage in ("volatile", "none"):
        return Check("journald_storage", Verdict.OK, f"journal Storage={storage} ({cap})")
    if storage == "persistent":
        return Check("journald_storage", Verdict.UNSAFE, "journal Storage=persistent (on disk)")
    if storage != "auto":
        return Check("journald_storage", Verdict.UNKNOWN, f"unrecognised Storage={storage}")
    if (root / "var/log/journal").is_dir():
        return Check(
            "journald_storage", Verdict.UNSAFE, "Storage=auto and /var/log/journal exists (disk)"
        )
    return Check("journald_storage", Verdict.OK, "Storage=auto, no /var/log/journal: RAM only")


def _mount_fstype(mounts: str, target: str) -> str | None:
    """File system type of the last mount exactly at `target` (later mounts cover earlier)."""
    fstype = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].replace("\\040", " ") == target:
            fstype = fields[2]
    return fstype


def check_tmp_tmpfs(root: Path) -> Check:
    """Temporary files written by any library must land in RAM, not on a disk."""
    mounts = _read(root, "proc/self/mounts") or _read(root, "proc/mounts")
    if mounts is None:
        return Check("tmp_tmpfs", Verdict.UNKNOWN, "cannot read /proc/self/mounts")
    fstype = _mount_fstype(mounts, "/tmp")
    if fstype == "tmpfs":
        return Check("tmp_tmpfs", Verdict.OK, "/tmp is tmpfs")
    if fstype is None:
        below = _mount_fstype(mounts, "/") or "unknown"
        return Check("tmp_tmpfs", Verdict.UNSAFE, f"/tmp lives on the root file system ({below})")
    return Check("tmp_tmpfs", Verdict.UNSAFE, f"/tmp is {fstype}, not tmpfs")


def check_ptrace_scope(root: Path) -> Check:
    """With Yama ptrace_scope >= 2 no ordinary process can attach to the engine and read it."""
    text = _read(root, "proc/sys/kernel/yama/ptrace_scope")
    if text is None:
        return Check("ptrace_scope", Verdict.UNKNOWN, "Yama ptrace_scope not readable")
    scope = text.strip()
    if scope in ("2", "3"):
        return Check("ptrace_scope", Verdict.OK, f"kernel.yama.ptrace_scope={scope}")
    return Check("ptrace_scope", Verdict.UNSAFE, f"kernel.yama.ptrace_scope={scope}: use 2 or 3")


def check_kdump(root: Path) -> Check:
    """A loaded crash kernel dumps all of RAM to disk when the kernel panics."""
    text = _read(root, "sys/kernel/kexec_crash_loaded")
    if text is None:
        return Check("kdump", Verdict.UNKNOWN, "cannot read /sys/kernel/kexec_crash_loaded")
    if text.strip() == "1":
        return Check("kdump", Verdict.UNSAFE, "a crash kernel is loaded: unload it (kexec -p -u)")
    reserved = "crashkernel=" in (_read(root, "proc/cmdline") or "")
    extra = " (crashkernel= reserved, nothing loaded)" if reserved else ""
    return Check("kdump", Verdict.OK, f"no crash kernel loaded{extra}")


def check_hibernation(root: Path) -> Check:
    """Hibernation writes all of RAM to disk; it must be disabled, not merely unused."""
    allowed = read_systemd_config(root, "systemd/sleep.conf", "Sleep").get(
        "AllowHibernation", "yes"
    )
    if allowed == "no":
        return Check("hibernation", Verdict.OK, "AllowHibernation=no")
    if _is_masked(root, "hibernate.target"):
        return Check("hibernation", Verdict.OK, "hibernate.target masked")
    state = _read(root, "sys/power/state")
    if state is not None and "disk" not in state.split():
        return Check("hibernation", Verdict.OK, "kernel offers no hibernation")
    if state is None and not (root / "etc/systemd").is_dir():
        return Check("hibernation", Verdict.UNKNOWN, "no systemd config and no /sys/power/state")
    return Check(
        "hibernation", Verdict.UNSAFE, "hibernation allowed: set AllowHibernation=no, mask target"
    )


HOST_CHECKS: tuple[Callable[[Path], Check], ...] = (
    check_swap,
    check_core_dumps,
    check_coredump_storage,
    check_journald_storage,
    check_tmp_tmpfs,
    check_ptrace_scope,
    check_kdump,
    check_hibernation,
)


def _guarded(check: Callable[[Path], Check], root: Path) -> Check:
    """Run one check; an unexpected read error becomes `unknown` so the report always prints."""
    name = check.__name__.removeprefix("check_")
    try:
        return check(root)
    except (OSError, ValueError, UnicodeError) as exc:
        return Check(name, Verdict.UNKNOWN, f"could not read: {type(exc).__name__}")


def check_host(
    root: Path = Path("/"), checks: Iterable[Callable[[Path], Check]] = HOST_CHECKS
) -> list[Check]:
    """Every host check, in a fixed order, read below `root`."""
    return [_guarded(check, root) for check in checks]
