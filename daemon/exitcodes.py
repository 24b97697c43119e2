"""The exit codes of `stylefold run`, `stylefold once` and `stylefold web`, so systemd can tell
what to do next.

The units restart on failure (`Restart=on-failure`) except after a configuration error
(`RestartPreventExitStatus=78`): retrying the same broken file five times only buries the
first, readable error. The values are the sysexits.h ones where one fits.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # also after SIGTERM/SIGINT at any moment, start-up included
    FAILURE = 1  # anything unforeseen: a restart may help
    GPU_UNUSABLE = 69  # EX_UNAVAILABLE: gpu_required, and CUDA cannot be used on this host
    TEMPFAIL = 75  # EX_TEMPFAIL: restart-worthy, e.g. a folder became a read-only stand-in
    # EX_CONFIG: the configuration is wrong (or names another daemon's folders), or the state
    # database is damaged: a person must act first
    CONFIG = 78


RESTART_PREVENT: tuple[ExitCode, ...] = (ExitCode.CONFIG,)
"""The codes after which systemd must not restart (`RestartPreventExitStatus=` in the units)."""
