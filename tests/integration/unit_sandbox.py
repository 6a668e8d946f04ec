"""Run a command under a systemd unit's ``SystemCallFilter=`` (calls outside it fail with EPERM, as with
``SystemCallErrorNumber=EPERM``) and ``MemoryDenyWriteExecute=yes`` (``PR_SET_MDWE``), without systemd:

    FILTER='@system-service;~@privileged @resources' python3 unit_sandbox.py COMMAND...

Needs libseccomp's Python binding (Debian: python3-seccomp, for /usr/bin/python3) and Linux >= 6.3.
Both restrictions are inherited by COMMAND and its children."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys

import seccomp  # type: ignore[import-not-found]

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def syscall_sets() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: each @set and what it holds (calls and other sets)."""
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    )
    sets: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.stdout.splitlines():
        item = line.strip()
        if line.startswith("@"):
            current = sets.setdefault(item, [])
        elif item and not item.startswith("#"):
            current.append(item)
    return sets


def allowed_calls(filters: list[str]) -> set[str]:
    """The calls a unit's ``SystemCallFilter=`` lines allow (a ``~`` line removes from the allow list)."""
    sets = syscall_sets()

    def expand(item: str) -> set[str]:
        return set().union(*(expand(i) for i in sets[item])) if item.startswith("@") else {item}

    allowed: set[str] = set()
    for line in filters:
        names = set().union(*(expand(i) for i in line.lstrip("~").split()))
        allowed = allowed - names if line.startswith("~") else allowed | names
    return allowed


def main() -> None:
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed_calls(os.environ["FILTER"].split(";"))):
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):  # a call this kernel or libseccomp does not know
            continue
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
    rules.load()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
