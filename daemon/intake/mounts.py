"""Which file system holds the inbox, read from /proc/self/mountinfo: changes made on other
machines never reach inotify on network and FUSE file systems, so those are polled, and an
unmounted share is told apart from an empty folder (for the outbox too: an answer written into
the mount point of a stick that is gone lands on the local disk, hidden under it)."""

from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

# File systems whose changes made elsewhere never reach inotify (or that are FUSE front-ends of
# remote stores: sshfs, rclone mount, s3fs, gcsfuse, ...). fuseblk (ntfs-3g, exfat) is local.
POLLING_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
        "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "davfs", "coda", "fuse", "virtiofs",
        "vboxsf", "vmhgfs", "prl_fs",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if len(fields) < 5 or len(fields) < separator + 3:
            continue
        mounts.append(
            Mount(_unescape(fields[4]), fields[separator + 1], _unescape(fields[separator + 2]))
        )
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount holding `path`: the longest mount point above it (the last one if stacked)."""
    real = str(path.resolve())
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = real == point or real.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def needs_polling(fstype: str) -> bool:
    return fstype in POLLING_FILESYSTEMS or fstype.startswith("fuse.")


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    try:
        return parse_mountinfo(mountinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def held_mount(mount: Mount | None) -> Path | None:
    """The point of `mount` (`mount_of` a folder), unless that is the root file system
    (nothing to lose), or None."""
    return None if mount is None or mount.mount_point == "/" else Path(mount.mount_point)


def still_mounted(point: Path, mountinfo: Path = MOUNTINFO) -> bool:
    """Whether `point` is still listed as a mount point. os.path.ismount cannot tell: a bind
    mount of a folder onto itself on the same file system (what systemd's ReadWritePaths=
    makes of the inbox) has the same device as its parent. An unreadable mountinfo tells
    nothing, so it counts as mounted."""
    mounts = read_mounts(mountinfo)
    return not mounts or any(Path(m.mount_point) == point for m in mounts)
