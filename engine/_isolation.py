"""What the engine process does to itself before it loads a model, and the peer-uid check.

Order matters (measured on Linux 6.x):
1. The network namespace comes first. An unprivileged process enters it together with a new
   user namespace and must then write its own `/proc/self/uid_map`; once the process is
   non-dumpable those /proc files belong to root and the write is refused.
2. Then PR_SET_DUMPABLE 0 (no ptrace by same-uid processes, no core, /proc/<pid>/mem closed)
   and RLIMIT_CORE 0.

unshare() moves only the calling thread, and CLONE_NEWUSER refuses a multithreaded process, so
the namespace is entered only while the process has one thread (see `thread_count`). A
path-bound Unix socket is a filesystem object: it stays reachable from both namespaces, which is
how the gateway reaches an engine that has no network at all.

Every failure is reported in `Isolation.network_detail` with constant wording, never hidden.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import resource
import socket
import struct

from engine.protocol import Isolation

__all__ = [
    "DETAIL_ENTERED",
    "isolate",
    "loopback_probe",
    "peer_allowed",
    "peer_uid",
    "thread_count",
]

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_UCRED = struct.Struct("3i")  # pid, uid, gid

DETAIL_ENTERED = "entered"
_DETAIL_THREADS = "process had more than one thread; namespace not entered"
_DETAIL_NO_PRIVILEGE = "unshare refused and user namespaces are unavailable"
_DETAIL_MAP_FAILED = "user namespace entered but the uid map could not be written"
_DETAIL_NO_LIBC = "libc unshare is unavailable"


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def thread_count() -> int:
    """Threads of this process; unshare() is only whole-process while this is 1."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _write_proc(name: str, value: str) -> None:
    fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _map_identity(uid: int, gid: int) -> None:
    """Map our own uid/gid into the new user namespace, so SO_PEERCRED still sees them."""
    with contextlib.suppress(FileNotFoundError):  # kernels before 3.19 have no setgroups file
        _write_proc("setgroups", "deny")
    _write_proc("uid_map", f"{uid} {uid} 1")
    _write_proc("gid_map", f"{gid} {gid} 1")


def enter_network_namespace() -> tuple[bool, str]:
    """An empty network namespace (only a down loopback): plain as root, with a user ns if not."""
    libc = _libc()
    if libc is None or not hasattr(libc, "unshare"):
        return False, _DETAIL_NO_LIBC
    if thread_count() != 1:
        return False, _DETAIL_THREADS
    if libc.unshare(_CLONE_NEWNET) == 0:
        return True, DETAIL_ENTERED
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return False, _DETAIL_NO_PRIVILEGE
    try:
        _map_identity(uid, gid)
    except OSError:
        return False, _DETAIL_MAP_FAILED
    return True, DETAIL_ENTERED


def make_non_dumpable() -> bool:
    libc = _libc()
    if libc is None:
        return False
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    return libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


def zero_core_limit() -> bool:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        return False
    return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)


def isolate() -> Isolation:
    """Harden this process in the order the module docstring explains; report what held."""
    network, detail = enter_network_namespace()
    return Isolation(
        non_dumpable=make_non_dumpable(),
        core_limit_zero=zero_core_limit(),
        network_namespace=network,
        network_detail=detail,
    )


def loopback_probe(port: int) -> str:
    """Try a TCP connect to 127.0.0.1:port; a constant word for the outcome (self-test only)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(("127.0.0.1", port))
    except OSError as exc:
        return {
            errno.ENETUNREACH: "unreachable",
            errno.ECONNREFUSED: "refused",
            errno.EHOSTUNREACH: "unreachable",
        }.get(exc.errno or 0, "failed")
    finally:
        probe.close()
    return "connected"


def peer_uid(sock: socket.socket) -> int:
    """The uid the kernel recorded for the peer of a connected Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return uid


def peer_allowed(sock: socket.socket, uid: int | None = None) -> bool:
    """Only a peer running as our own uid (or `uid`) may talk to the engine."""
    expected = os.geteuid() if uid is None else uid
    try:
        return peer_uid(sock) == expected
    except OSError:
        return False
