"""The shipped systemd files: accepted by systemd's own tools, and consistent with the daemon.

`systemd-analyze verify` needs no running systemd, but checks that ExecStart's binary exists, so
the units are verified as copies whose ExecStart points at the stylefold this test suite runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import can_unshare_mounts
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from daemon.app import CANCEL_GRACE, READY_TIMEOUT
from daemon.config import Settings, load_settings
from daemon.exitcodes import RESTART_PREVENT
from daemon.gpu_probe import PROBE_TIMEOUT
from daemon.sdnotify import EXTEND_EVERY, EXTEND_STEP

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ("stylefold.service", "stylefold@.service")  # the daemon's
WEB_UNIT = "stylefold-web.service"
SHIPPED_EXEC = "/usr/local/bin/stylefold"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd; .ci/run installs it)")
    return path


def _stylefold_command() -> str:
    """The stylefold entry point of this environment (a console script, else the module)."""
    script = Path(sys.executable).with_name("stylefold")
    if script.exists():
        return str(script)
    return f"{sys.executable} -m daemon.cli"


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; unit files repeat keys, which configparser cannot hold."""
    section, found = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _values(text: str, key: str) -> list[str]:
    return [value for _, k, value in _directives(text) if k == key]


def _one(text: str, key: str) -> str:
    values = _values(text, key)
    assert len(values) == 1, f"{key} appears {len(values)} times"
    return values[0]


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total


def _verify(unit_dir: Path, unit_name: str) -> str:
    result = subprocess.run(
        [_tool("systemd-analyze"), "verify", str(unit_dir / unit_name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    return output


def _installed_copy(tmp_path: Path, unit: str, as_name: str) -> Path:
    text = (DEPLOY / unit).read_text()
    assert SHIPPED_EXEC in text
    (tmp_path / as_name).write_text(text.replace(SHIPPED_EXEC, _stylefold_command()))
    return tmp_path


@pytest.mark.parametrize(
    ("unit", "as_name"),
    [
        ("stylefold.service", "stylefold.service"),
        ("stylefold@.service", "stylefold@demo.service"),
        (WEB_UNIT, WEB_UNIT),
    ],
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path, unit: str, as_name: str) -> None:
    unit_dir = _installed_copy(tmp_path, unit, as_name)
    assert _verify(unit_dir, as_name) == ""


def test_shipped_drop_ins_pass_verify(tmp_path: Path) -> None:
    unit_dir = _installed_copy(tmp_path, "stylefold.service", "stylefold.service")
    drop_in_dir = unit_dir / "stylefold.service.d"
    drop_in_dir.mkdir()
    for drop_in in sorted((DEPLOY / "drop-ins").glob("*.conf")):
        shutil.copy(drop_in, drop_in_dir / drop_in.name)
    assert _verify(unit_dir, "stylefold.service") == ""


OFFERED_TMPFILES = re.compile(r"^# ?([a-zA-Z]\s+/\S+\s+.*\d+[smhdw])$", re.MULTILINE)
OFFERED = re.compile(r"^# ?([A-Z][A-Za-z]+=\S*|\[(?:Unit|Service|Install)\])$", re.MULTILINE)


def test_directives_offered_in_comments_pass_verify_once_uncommented(tmp_path: Path) -> None:
    """A drop-in's commented-out directive is an instruction ("uncomment for a network mount"):
    folders.conf offered RequiresMountsFor= under [Service], where systemd ignores it."""
    unit_dir = _installed_copy(tmp_path, "stylefold.service", "stylefold.service")
    drop_in_dir = unit_dir / "stylefold.service.d"
    drop_in_dir.mkdir()
    offered = 0
    for drop_in in sorted((DEPLOY / "drop-ins").glob("*.conf")):
        text, count = OFFERED.subn(r"\1", drop_in.read_text())
        offered += count
        (drop_in_dir / drop_in.name).write_text(text)
    assert offered > 0
    assert _verify(unit_dir, "stylefold.service") == ""


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """Guards the test above: a misspelt key must produce output, or `== ""` proves nothing."""
    unit_dir = _installed_copy(tmp_path, "stylefold.service", "stylefold.service")
    unit = unit_dir / "stylefold.service"
    unit.write_text(unit.read_text().replace("ProtectHome=", "ProtectHomee="))
    assert "Unknown key 'ProtectHomee'" in _verify(unit_dir, "stylefold.service")


@pytest.mark.parametrize("unit", UNITS)
def test_unit_supervision_and_hardening(unit: str) -> None:
    text = (DEPLOY / unit).read_text()
    assert _one(text, "Type") == "notify"
    assert _one(text, "NotifyAccess") == "main"
    assert _seconds(_one(text, "WatchdogSec")) > 0
    assert _one(text, "Restart") == "on-failure"
    assert _one(text, "KillMode") == "mixed"
    config = _one(text, "ExecStart").split("--config ")[1]
    assert _one(text, "ExecReload") == (
        f"{SHIPPED_EXEC} reload --config {config} --pid $MAINPID"
    ), "systemctl reload must hear the verdict, and about the config the daemon runs"
    assert _one(text, "RestartPreventExitStatus").split() == [str(int(c)) for c in RESTART_PREVENT]
    # Grace for running jobs, then the cancel wait, then up to 15 s to stop the workers.
    shutdown = Settings.model_fields["grace_period"].default + CANCEL_GRACE + 15
    assert _seconds(_one(text, "TimeoutStopSec")) > shutdown, "systemd would kill a clean stop"
    # Loading may take READY_TIMEOUT, longer than TimeoutStartSec=: the daemon extends the
    # timeout while it loads (the device probe included), each extension outlasting the pause
    # until the next one and the longest blocking call between them (stopping workers, 10 s).
    assert READY_TIMEOUT > _seconds(_one(text, "TimeoutStartSec")) > PROBE_TIMEOUT
    assert max(EXTEND_EVERY, 10.0) < EXTEND_STEP
    assert _one(text, "ProtectSystem") == "strict"
    assert _one(text, "NoNewPrivileges") == "yes"
    assert _one(text, "PrivateTmp") == "yes"
    assert _one(text, "ProtectHome") == "yes"
    assert _one(text, "CapabilityBoundingSet") == ""
    assert _one(text, "DevicePolicy") == "closed"
    assert _one(text, "ProtectProc") == "invisible"
    assert _one(text, "PrivateMounts") == "yes"
    assert _one(text, "RemoveIPC") == "yes"
    assert _values(text, "SystemCallFilter") == ["@system-service", "~@privileged"]
    assert _one(text, "SystemCallErrorNumber") == "EPERM"
    assert _one(text, "IPAddressDeny") == "any"
    assert _one(text, "IPAddressAllow") == "localhost"
    assert _values(text, "MemoryDenyWriteExecute") == [], "CUDA and Triton JIT-compile kernels"
    assert int(_one(text, "CPUWeight")) < 100, "the sync tool gets the CPU first"
    assert _one(text, "IOSchedulingClass") == "best-effort"
    assert _one(text, "IOSchedulingPriority") == "7"
    assert _values(text, "PrivateDevices") == [], "PrivateDevices=yes hides the GPU from CUDA"
    allowed = {value.split()[0] for value in _values(text, "DeviceAllow")}
    assert {"char-nvidia-frontend", "char-nvidia-uvm"} <= allowed
    assert len(_values(text, "ReadWritePaths")) == 1
    # UMask=0002 shares results with the sync tool's group; the state (spool, archive, kept
    # originals) must not be readable by every local user for it.
    assert _one(text, "StateDirectoryMode") == "0750"


def test_template_differs_only_by_instance() -> None:
    plain = (DEPLOY / "stylefold.service").read_text()
    template = (DEPLOY / "stylefold@.service").read_text()
    assert _one(template, "ExecStart").endswith("--config /etc/stylefold/%i.toml")
    assert _one(template, "EnvironmentFile") == "-/etc/stylefold/%i.env"
    assert _one(template, "StateDirectory") == "stylefold/%i"
    assert _one(template, "ReadWritePaths") == "-/srv/stylefold/%i/inbox -/srv/stylefold/%i/outbox"
    assert _one(template, "ExecReload").startswith(
        f"{SHIPPED_EXEC} reload --config /etc/stylefold/%i.toml"
    )
    same_keys = {
        "ExecStart",
        "ExecReload",
        "EnvironmentFile",
        "StateDirectory",
        "ReadWritePaths",
        "Description",
    }
    plain_rest = [d for d in _directives(plain) if d[1] not in same_keys]
    template_rest = [d for d in _directives(template) if d[1] not in same_keys]
    assert plain_rest == template_rest


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize(("key", "command"), [("ExecStart", "run"), ("ExecReload", "reload")])
def test_exec_arguments_parse_with_the_real_cli(unit: str, key: str, command: str) -> None:
    from daemon.cli import build_parser

    argv = shlex.split(_one((DEPLOY / unit).read_text(), key).replace("$MAINPID", "4242"))
    assert argv[0] == SHIPPED_EXEC
    args = build_parser().parse_args(argv[1:])
    assert args.command == command


# Hardening of the daemon's unit that the web page's keeps as it is.
_SAME_HARDENING = (
    "User",
    "Group",
    "EnvironmentFile",
    "ConfigurationDirectory",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictSUIDSGID",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictNamespaces",
    "ProtectProc",
    "PrivateMounts",
    "RemoveIPC",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "RestrictAddressFamilies",
    "IPAddressDeny",
    "IPAddressAllow",
    "RestartPreventExitStatus",
)


def test_web_unit_is_the_daemons_hardening_and_more() -> None:
    """The page only reads and listens: nothing writable but its thumbnail cache, no devices,
    no code written at run time, fewer system calls; the rest as the daemon's unit."""
    daemon = (DEPLOY / "stylefold.service").read_text()
    web = (DEPLOY / WEB_UNIT).read_text()
    for key in _SAME_HARDENING:
        assert _values(web, key) == _values(daemon, key), key
    assert _values(web, "ReadWritePaths") == [] and _values(web, "BindPaths") == []
    assert _one(web, "StateDirectory") == _one(daemon, "StateDirectory") + "/thumbnails"
    assert _one(web, "StateDirectoryMode") == "0700"
    assert _values(web, "CacheDirectory") == [] and _values(web, "DeviceAllow") == []
    assert _one(web, "PrivateDevices") == "yes"
    assert _one(web, "MemoryDenyWriteExecute") == "yes"
    assert _one(web, "ProcSubset") == "pid"
    assert _one(web, "UMask") == "0077"
    assert _values(web, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert _values(web, "ExecStartPre") == [], "nothing runs outside the sandbox"
    assert _one(web, "Restart") == "on-failure"
    assert int(_one(web, "CPUWeight")) < 100, "the sync tool gets the CPU first"
    assert _mib(_one(web, "MemoryMax")) >= 1.25 * _mib(_one(web, "MemoryHigh"))


def test_web_unit_serves_the_daemons_configuration_on_loopback() -> None:
    from daemon.cli import build_parser

    web = (DEPLOY / WEB_UNIT).read_text()
    argv = shlex.split(_one(web, "ExecStart"))
    assert argv[0] == SHIPPED_EXEC
    args = build_parser().parse_args(argv[1:])
    assert args.command == "web"
    daemon_argv = shlex.split(_one((DEPLOY / "stylefold.service").read_text(), "ExecStart"))
    assert args.config == Path(daemon_argv[daemon_argv.index("--config") + 1])
    # No --host: web_host decides, and its default is loopback (IPAddressAllow= too).
    assert args.host is None and Settings.model_fields["web_host"].default == "127.0.0.1"
    assert args.port is None


def _mib(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value)
    assert match, f"{value}: not a size systemd reads"
    number, unit = match.groups()
    return float(number) * {"": 2**-20, "K": 2**-10, "M": 1, "G": 2**10, "T": 2**20}[unit]


@pytest.mark.parametrize("unit", UNITS)
def test_memory_limits_follow_the_measured_peak(unit: str) -> None:
    """deploy/README.md's formula with docs/BENCH.md's figure: one worker, outputs up to
    2048 px, 0.5 GiB for the daemon; MemoryMax a quarter above MemoryHigh."""
    bench = (DEPLOY.parent / "docs" / "BENCH.md").read_text()
    row = re.search(r"^\| cpu \| 2048 \| [^|]+\| [^|]+\| (\d+) \|", bench, re.M)
    assert row, "docs/BENCH.md lost its 2048 px peak memory row"
    high = int(row.group(1)) + 512
    text = (DEPLOY / unit).read_text()
    assert _mib(_one(text, "MemoryHigh")) >= high
    assert _mib(_one(text, "MemoryMax")) >= 1.25 * _mib(_one(text, "MemoryHigh"))
    readme = (DEPLOY / "README.md").read_text()
    assert "MemoryHigh = workers x peak" in readme and "MemoryMax = 1.25 x MemoryHigh" in readme


def _syscalls(group: str) -> set[str]:
    listing = subprocess.run(
        [_tool("systemd-analyze"), "syscall-filter", group],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()[1:]
    names: set[str] = set()
    for item in (line.strip() for line in listing):
        if item.startswith("@"):
            names |= _syscalls(item)
        elif item and not item.startswith("#"):
            names.add(item)
    return names


def _allowed_syscalls(text: str) -> set[str]:
    """SystemCallFilter= as systemd reads it: an allow list, less the `~` lines after it."""
    allowed: set[str] = set()
    for value in _values(text, "SystemCallFilter"):
        names = set().union(*(_syscalls(g) for g in value.lstrip("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


@pytest.mark.heavy
def test_a_job_renders_under_the_units_system_call_filter(tmp_path: Path) -> None:
    """torch, the worker processes, inotify and the state database under the unit's filter
    (the CPU path; CUDA's needs are unmeasured here, which is why @resources stays)."""
    from conftest import CLI, REPO, make_folders, make_image, write_json

    names = tmp_path / "allowed.txt"
    names.write_text("\n".join(sorted(_allowed_syscalls((DEPLOY / UNITS[0]).read_text()))))
    launcher = [sys.executable, str(Path(__file__).with_name("seccomp_exec.py")), str(names)]
    refused = subprocess.run(
        [*launcher, sys.executable, "-c", "import os; os.setuid(0)"], capture_output=True, text=True
    )
    assert "Operation not permitted" in refused.stderr, (
        "the filter must bite, or this proves nothing"
    )
    folders = make_folders(tmp_path / "run")
    write_json(folders.inbox / "photo.json", {"style": "mosaic"})
    make_image(folders.inbox / "photo.jpg")
    once = [*CLI, "once", "--config", str(folders.config()), "--log-format", "json"]
    done = subprocess.run([*launcher, *once], cwd=REPO, capture_output=True, text=True, timeout=240)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert (folders.outbox / "photo.manifest.json").exists(), log[-3000:]
    assert "Operation not permitted" not in log


def _example_with_every_option(text: str) -> str:
    """Uncomment `# key = value` lines, so that every documented key is checked too."""
    return re.sub(r"^# (\w+ = .+)$", r"\1", text, flags=re.MULTILINE)


def test_example_config_loads_with_every_option(tmp_path: Path) -> None:
    text = _example_with_every_option((DEPLOY / "stylefold.toml.example").read_text())
    values = tomllib.loads(text)
    assert {"inbox", "outbox", "styles", "state"} <= values.keys()
    for name in ("inbox", "outbox", "styles", "state", "archive_dir"):
        text = text.replace(f'{name} = "{values[name]}"', f'{name} = "{tmp_path / name}"')
    (tmp_path / "inbox").mkdir()
    (tmp_path / "styles").mkdir()
    config = tmp_path / "stylefold.toml"
    config.write_text(text)
    settings = load_settings(config, {})
    # The commented keys were read, the nested tables' ones included.
    assert settings.metrics_port is not None
    assert settings.weights.vgg19 is not None
    assert settings.archive_path == tmp_path / "archive_dir"


def test_example_config_paths_match_the_unit() -> None:
    values = tomllib.loads((DEPLOY / "stylefold.toml.example").read_text())
    unit = (DEPLOY / "stylefold.service").read_text()
    writable = [path.lstrip("-") for path in _one(unit, "ReadWritePaths").split()]
    assert writable == [values["inbox"], values["outbox"]]
    assert values["state"] == "/var/lib/" + _one(unit, "StateDirectory")
    assert _one(unit, "ExecStart").endswith("--config /etc/stylefold/stylefold.toml")


def test_example_environment_names_real_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (DEPLOY / "stylefold.env.example").read_text().splitlines()
    assignments = [line.lstrip("#") for line in lines if re.match(r"^#?[A-Z_]+=", line)]
    stylefold_vars = dict(
        line.split("=", 1) for line in assignments if line.startswith("STYLEFOLD_")
    )
    assert stylefold_vars
    for name, value in stylefold_vars.items():
        monkeypatch.setenv(name, value)
    for name in ("inbox", "styles"):
        (tmp_path / name).mkdir()
    overrides = {name: tmp_path / name for name in ("inbox", "outbox", "styles", "state")}
    settings = load_settings(None, overrides)
    assert settings.metrics_port == int(stylefold_vars["STYLEFOLD_METRICS_PORT"])
    assert settings.defaults.size == int(stylefold_vars["STYLEFOLD_DEFAULTS__SIZE"])


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles must be root to chown")
def test_sysusers_and_tmpfiles_create_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for kind in ("sysusers.d", "tmpfiles.d"):
        (root / "etc" / kind).mkdir(parents=True)
        shutil.copy(DEPLOY / kind / "stylefold.conf", root / "etc" / kind / "stylefold.conf")
    subprocess.run([_tool("systemd-sysusers"), f"--root={root}"], check=True, timeout=60)
    passwd = (root / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("stylefold:"))
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert home == "/var/lib/stylefold" and shell.endswith("nologin")
    assert "stylefold" in (root / "etc" / "group").read_text().split("video:")[1].split("\n")[0]

    tmpfiles = [_tool("systemd-tmpfiles"), f"--root={root}", "--create"]
    subprocess.run(tmpfiles, check=True, timeout=60)
    inbox = root / "srv" / "stylefold" / "inbox"
    for folder in (inbox, inbox.with_name("outbox")):
        info = folder.stat()
        assert (info.st_uid, info.st_gid) == (int(uid), int(gid))
        assert info.st_mode & 0o7777 == 0o2775
    # An administrator's later chgrp/chmod (for a sync tool's group) survives the next boot.
    os.chown(inbox, int(uid), 0)
    inbox.chmod(0o2770)
    subprocess.run(tmpfiles, check=True, timeout=60)
    assert inbox.stat().st_gid == 0 and inbox.stat().st_mode & 0o7777 == 0o2770


def test_the_offered_archive_age_removes_only_what_was_archived_long_ago(tmp_path: Path) -> None:
    """The archive grows with every answered photo (an operator's trial); tmpfiles.d offers an
    age for it. Its age counts from the move into the archive (ctime), not from the photo's own
    mtime, which may be years old; tried here with the age lowered to 2 s."""
    root = tmp_path / "root"
    (root / "etc" / "tmpfiles.d").mkdir(parents=True)
    [line] = OFFERED_TMPFILES.findall((DEPLOY / "tmpfiles.d/stylefold.conf").read_text())
    (root / "etc/tmpfiles.d/stylefold.conf").write_text(line.replace(":90d", ":2s") + "\n")
    archive = root / "var/lib/stylefold/archive/2024"
    archive.mkdir(parents=True)
    old, new = archive / "old.jpg", archive / "new.jpg"
    old.write_bytes(b"answered long ago")
    os.utime(old, (0, 0))  # a photo taken decades ago, archived now
    time.sleep(3)
    new.write_bytes(b"answered just now")
    os.utime(new, (0, 0))
    # A backup (tar) or the web page reads it: a read's atime kept it for good (an
    # operator's trial), which only the age of its ctime ignores.
    assert old.read_bytes() and old.stat().st_atime > time.time() - 2
    clean = [_tool("systemd-tmpfiles"), f"--root={root}", "--clean"]
    subprocess.run(clean, check=True, timeout=60)
    assert not old.exists() and new.exists()


# What the shipped unit does to the file system, done with unshare(1): every writable path is a
# mount of its own (ReadWritePaths=, StateDirectory=, CacheDirectory=, PrivateTmp=), and
# everything else is read-only (ProtectSystem=strict). Renames between them fail with EXDEV.
# With INBOX_FS=tmpfs the inbox is a file system of its own instead (a NAS or USB disk).
_SANDBOX = """
set -e
if [ "$INBOX_FS" = tmpfs ]; then mount -t tmpfs tmpfs "$INBOX"; fi
for writable in "$INBOX" "$OUTBOX" "$STATE" "$CACHE" "$PRIVATE_TMP"; do
  mount --bind "$writable" "$writable"
done
mount -o remount,bind,ro /
exec "$@"
"""


def _in_sandbox(pid: int, code: str) -> None:
    """Run Python inside the daemon's mount namespace (where a tmpfs inbox is visible)."""
    tests = str(Path(__file__).parent)
    prelude = f"import sys; sys.path.insert(0, {tests!r}); "
    argv = ["nsenter", f"--target={pid}", "--mount", sys.executable, "-c", prelude + code]
    subprocess.run(argv, check=True, timeout=30)


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and unshare(1) mount namespaces")
@pytest.mark.parametrize(
    "inbox_fs",
    [
        "bind",
        "tmpfs",
    ],
)
def test_daemon_works_inside_the_units_file_system_sandbox(tmp_path: Path, inbox_fs: str) -> None:
    from conftest import REPO, make_folders, wait_for

    folders = make_folders(tmp_path)
    cache, private_tmp = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir()
    private_tmp.mkdir()
    config = folders.config()
    env = {
        **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        "INBOX_FS": inbox_fs,
        "INBOX": str(folders.inbox),
        "OUTBOX": str(folders.outbox),
        "STATE": str(folders.state),
        "CACHE": str(cache),
        "PRIVATE_TMP": str(private_tmp),
        # As the unit sets them: HOME is the user's home (the state), caches in the cache.
        "HOME": str(folders.state),
        "TMPDIR": str(private_tmp),
        "XDG_CACHE_HOME": str(cache),
        "TORCH_HOME": str(cache / "torch"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    sandbox = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SANDBOX, "sh"]
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*sandbox, *command, "--log-format", "json"],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: "daemon.ready" in log_path.read_text(), 90, "the daemon to be ready")
        assert "inbox unavailable" not in log_path.read_text()
        album = folders.inbox / "album"
        _in_sandbox(
            process.pid,
            "from conftest import make_image, write_json; from pathlib import Path; "
            f"write_json(Path({str(album / 'photo.json')!r}), {{'style': 'mosaic'}}); "
            f"make_image(Path({str(album / 'photo.jpg')!r}))",
        )
        manifest = folders.outbox / "album" / "photo.manifest.json"
        wait_for(lambda: manifest.exists() or process.poll() is not None, 60, "the result")
        assert manifest.exists(), log_path.read_text()[-3000:]
        # The original crossed from the inbox's mount into the state's.
        _in_sandbox(
            process.pid, f"import os; assert not os.path.exists({str(album / 'photo.jpg')!r})"
        )
        assert list((folders.state / "archive").rglob("photo.jpg")), "original not archived"
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = log_path.read_text()
    assert "Read-only file system" not in log
    assert "cross-device" not in log


@pytest.mark.parametrize(
    ("unit", "as_name"),
    [("ray-head.service", "ray-head.service"), ("ray-worker@.service", "ray-worker@gpu0.service")],
)
def test_ray_units_pass_systemd_analyze_verify(tmp_path: Path, unit: str, as_name: str) -> None:
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        pytest.skip("the ray extra is not installed (pip install 'stylefold[ray]')")
    text = (DEPLOY / unit).read_text()
    assert "/usr/local/bin/ray " in text
    (tmp_path / as_name).write_text(text.replace("/usr/local/bin/ray", str(ray)))
    assert _verify(tmp_path, as_name) == ""


_RAY_TASK = """
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir={temp!r})

@ray.remote
def render(n):
    import torch
    return float(torch.ones(n).sum())

print("ray task:", ray.get(render.remote(3)))
ray.shutdown()
"""


@pytest.mark.heavy
@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and unshare(1) mount namespaces")
def test_ray_runs_under_its_units_sandbox(tmp_path: Path) -> None:
    """A Ray cluster (GCS, raylet, object store, a worker importing torch) under the Ray units'
    system call filter and file system view: / read-only but /tmp, and a writable home."""
    pytest.importorskip("ray")
    import tempfile

    text = (DEPLOY / "ray-head.service").read_text()
    assert _one(text, "ProtectSystem") == "strict" and _one(text, "ReadWritePaths") == "/tmp"
    assert "HOME=/var/lib/ray" in _values(text, "Environment")
    worker = (DEPLOY / "ray-worker@.service").read_text()
    assert _values(text, "SystemCallFilter") == _values(worker, "SystemCallFilter")
    for unit in (text, worker):  # no node joins, and nothing is submitted, without the secret
        assert "RAY_AUTH_MODE=token" in _values(unit, "Environment")
        assert _values(unit, "EnvironmentFile") == ["/etc/ray/auth.env"]
    names = tmp_path / "allowed.txt"
    names.write_text("\n".join(sorted(_allowed_syscalls(text))))
    home = tmp_path / "home"
    home.mkdir()
    temp = tempfile.mkdtemp(prefix="sfray", dir="/tmp")  # Ray's socket paths must stay short
    sandbox = 'mount --bind /tmp /tmp; mount --bind "$HOME" "$HOME"; mount -o remount,bind,ro /'
    command = [
        *("unshare", "--mount", "--propagation", "private", "sh", "-c", sandbox + '; exec "$@"'),
        "sh",
        *(sys.executable, str(Path(__file__).with_name("seccomp_exec.py")), str(names)),
        *(sys.executable, "-c", _RAY_TASK.format(temp=temp)),
    ]
    unit_env = dict(value.split("=", 1) for value in " ".join(_values(text, "Environment")).split())
    auth = {"RAY_AUTH_TOKEN": "0123456789abcdef" * 4}  # what /etc/ray/auth.env holds
    env = {**os.environ, **unit_env, **auth, "HOME": str(home)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert "ray task: 3.0" in done.stdout, (done.stdout + done.stderr)[-3000:]


# The web unit's file system view: / read-only (the daemon's folders and state included) but
# the thumbnail cache (StateDirectory=) and a private /tmp; /proc with other users' processes
# hidden and only the process folders (ProtectProc=invisible, ProcSubset=pid).
_WEB_SANDBOX = """
set -e
mount --bind "$THUMBNAILS" "$THUMBNAILS"
mount --bind "$PRIVATE_TMP" "$PRIVATE_TMP"
mount -o remount,bind,ro /
mount -t proc -o hidepid=invisible,subset=pid proc /proc
if touch "$STATE/probe" 2>/dev/null; then echo "the state is writable" >&2; exit 99; fi
exec "$@"
"""
# MemoryDenyWriteExecute=yes: no mapping may become executable once writable (PR_SET_MDWE).
_NO_WRITE_EXECUTE = (
    "import ctypes, os, sys; "
    "assert ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE'; "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _page(url: str) -> dict[str, str]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}api/page", timeout=30) as response:
        sections = json.load(response)["sections"]
    return {name: section["html"] for name, section in sections.items()}


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and unshare(1) mount namespaces")
def test_web_page_works_inside_its_units_sandbox(tmp_path: Path) -> None:
    """The page of a running daemon, then of the same daemon stopped, served under the web
    unit's file system view, system call filter and MemoryDenyWriteExecute=: every picture
    and log readable, the thumbnails cached (the only folder it may write); SIGTERM stops
    it with 0."""
    import urllib.request

    pytest.importorskip("starlette", reason="the page needs the web extra")
    from conftest import CLI, REPO, make_folders, make_image, start_daemon, wait_for, write_json

    folders = make_folders(tmp_path / "run")
    config = folders.config()
    thumbnails, private_tmp = folders.state / "thumbnails", tmp_path / "tmp"
    thumbnails.mkdir()  # StateDirectory= makes it before the start
    private_tmp.mkdir()
    daemon = start_daemon(folders, config=config)
    write_json(folders.inbox / "photo.json", {"style": "mosaic"})
    make_image(folders.inbox / "photo.jpg")
    wait_for(lambda: (folders.outbox / "photo.manifest.json").exists(), 120, "the result")

    names = tmp_path / "allowed.txt"
    names.write_text("\n".join(sorted(_allowed_syscalls((DEPLOY / WEB_UNIT).read_text()))))
    env = {
        **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        "THUMBNAILS": str(thumbnails),
        "PRIVATE_TMP": str(private_tmp),
        "STATE": str(folders.state),
        "TMPDIR": str(private_tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        *("unshare", "--mount", "--propagation", "private", "sh", "-c", _WEB_SANDBOX, "sh"),
        *(sys.executable, "-c", _NO_WRITE_EXECUTE),
        *(sys.executable, str(Path(__file__).with_name("seccomp_exec.py")), str(names)),
        *(*CLI, "web", "--config", str(config), "--port", "0"),
    ]
    web = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert web.stdout is not None
        first = web.stdout.readline()
        opened = re.search(r"open (http://127\.0\.0\.1:\d+/)", first)
        assert opened, first + web.stdout.read()
        url = opened[1]
        for daemon_runs in (True, False):
            if not daemon_runs:
                assert daemon.stop() == 0
            page = _page(url)
            assert ("running, pid" in page["health"]) is daemon_runs, page["health"]
            job = re.search(r'<article class="card" data-job="([^"]+)"', page["gallery"])
            assert job and "photo.jpg" in page["gallery"], page["gallery"]
            for path in ("thumb/result", "thumb/original", "full", "log"):
                with urllib.request.urlopen(f"{url}jobs/{job[1]}/{path}", timeout=30) as answer:
                    assert answer.status == 200 and answer.read(), path
            with urllib.request.urlopen(f"{url}styles/mosaic/thumb", timeout=30) as answer:
                assert answer.status == 200
        assert list(thumbnails.iterdir()), "the thumbnail cache was not written"
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        printed = web.stdout.read()
    except BaseException:
        web.kill()
        print(web.communicate(timeout=10)[0])  # the page's own account, shown by pytest
        raise
    finally:
        daemon.stop()
    for problem in ("Traceback", "Read-only file system", "Operation not permitted", "unwritable"):
        assert problem not in printed, printed


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields |= _leaf_fields(annotation, f"{name}.")
        else:
            fields[prefix + name] = field
    return fields


def test_example_config_lists_every_setting_with_its_real_default() -> None:
    """It said `iterations = 500` and `style_weight = 10000.0` were the defaults (300, and
    unset: strength decides), left out gif, and did not name 25 settings at all (a new user's
    trial). Every key is on a line now, and a value not marked "example" is the default."""
    table = ""
    shown: dict[str, tuple[str, bool]] = {}
    for line in (DEPLOY / "stylefold.toml.example").read_text().splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            table = header[1] + "."
        elif entry := re.fullmatch(r"#? ?(\w+) = (.+?)(\s+#.*)?", line):
            shown[table + entry[1]] = (entry[2], "example" in (entry[3] or ""))
    fields = _leaf_fields(Settings)
    assert sorted(fields.keys() - shown.keys()) == []
    assert sorted(shown.keys() - fields.keys()) == []
    for key, (text, example) in shown.items():
        field = fields[key]
        if field.is_required() or example:
            continue
        value = tomllib.loads(f"v = {text}")["v"]
        default = field.get_default(call_default_factory=True)
        assert value == (list(default) if isinstance(default, tuple) else default), key
