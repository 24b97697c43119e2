"""Run a command under a seccomp allow-list, as systemd's `SystemCallFilter=` would (calls
outside it fail with EPERM, `SystemCallErrorNumber=EPERM`), through libseccomp with ctypes.

    python tests/seccomp_exec.py ALLOWED_NAMES_FILE COMMAND [ARG...]
    python tests/seccomp_exec.py --deny REFUSED_NAMES_FILE COMMAND [ARG...]

The file lists system call names, one per line; names this architecture does not have are
skipped, as systemd skips them. With --deny, every other call is allowed and the listed ones
fail with EPERM (what a file system that refuses them answers: FAT and chmod).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000


def main() -> None:
    deny = sys.argv[1] == "--deny"
    names_file, *command = sys.argv[2:] if deny else sys.argv[1:]
    listed, others = SCMP_ACT_ERRNO | errno.EPERM, SCMP_ACT_ALLOW
    if not deny:
        listed, others = others, listed
    library = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    seccomp = ctypes.CDLL(library, use_errno=True)
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    context = seccomp.seccomp_init(others)
    if not context:
        raise SystemExit("seccomp_init failed")
    with open(names_file) as handle:
        names = [line.strip() for line in handle if line.strip()]
    for name in names:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not on this architecture
        if seccomp.seccomp_rule_add(context, listed, number, 0) != 0:
            raise SystemExit(f"seccomp_rule_add({name}) failed")
    if seccomp.seccomp_load(context) != 0:
        raise SystemExit("seccomp_load failed")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
