"""Where the answers of claimed jobs will go in the outbox, before they are written: the file
names and folders each job in progress holds (a new claim may take neither), the numbered
folder an inbox folder's answers go to (`outbox.answer_folder`), and whether the outbox can take
an answer now."""

from __future__ import annotations

from pathlib import Path

from daemon.intake.mounts import held_mount, mount_of, read_mounts, still_mounted
from daemon.jobs.outbox import answer_folder, folder_clash, is_folder, mark_folders


class AnswerPlaces:
    """The outbox places held by jobs from claim to release."""

    def __init__(self, outbox: Path, inbox: Path) -> None:
        self.outbox = outbox
        self.inbox = inbox
        self._reserved: dict[str, tuple[Path, ...]] = {}  # job id -> its output names
        # job id -> (its answer folder, relative to the outbox; its photo's inbox folder)
        self._answering: dict[str, tuple[str, str]] = {}
        self._outbox_mount = held_mount(mount_of(outbox, read_mounts()))  # outbox_gone

    def hold(self, job_id: str, names: tuple[Path, ...], folder: str, rel_dir: str) -> None:
        """Job `job_id` will write `names` in the answer folder `folder` (relative to the
        outbox) for the inbox folder `rel_dir`."""
        self._reserved[job_id] = names
        self._answering[job_id] = (folder, rel_dir)

    def let_go(self, job_id: str) -> None:
        self._reserved.pop(job_id, None)
        self._answering.pop(job_id, None)

    def reserved(self, but: str | None = None) -> list[Path]:
        """The outbox names every job claimed and not yet released (`but` the job of that id)
        will write: a queued job has no file there yet, and nothing else may take them
        meanwhile."""
        return [path for job, paths in self._reserved.items() if job != but for path in paths]

    def holders(self) -> dict[Path, str]:
        """Each reserved outbox name, with the id of the job that holds it."""
        return {path: job for job, paths in self._reserved.items() for path in paths}

    def outbox_gone(self) -> str | None:
        """Why the outbox cannot take answers now, or None: missing, or its file system (a
        stick, a share) no longer mounted where it was at start. A user's trial: a stick
        unmounted mid-job got no answer, which was written under its mount point on the local
        disk (the outbox folder made again there), hidden once the stick was back."""
        outbox = self.outbox
        if not outbox.is_dir():
            return (
                f"the outbox folder ({outbox}) is missing (a share or stick not mounted?); mount it"
            )
        point = self._outbox_mount
        if point is not None and not still_mounted(point):
            return (
                f"the outbox's file system, mounted at {point} when the daemon started, is no "
                "longer mounted; mount it again"
            )
        return None

    def refusal(self, folder: str, job_id: str) -> str | None:
        """Why job `job_id` may not write into the outbox folder `folder` (relative to the
        outbox) now: the outbox is gone, or that folder would have to be made and take another
        answer's name (see `outbox.folder_clash`); None when it may."""
        if (gone := self.outbox_gone()) is not None:
            return gone
        if not folder or is_folder(self.outbox, folder):
            return None
        return folder_clash(self.outbox, folder, self.reserved(but=job_id))

    def folder_for(self, rel_dir: str, reserved: list[Path] | None = None) -> str:
        """The outbox folder, relative to the outbox, for answers about the inbox folder
        `rel_dir` (`outbox.answer_folder`)."""
        if reserved is None:
            reserved = self.reserved()
        claimed = self._answering.values()
        return answer_folder(self.outbox, rel_dir, reserved, self.inbox, claimed)

    def mark(self, folder: str, rel_dir: str) -> None:
        """Make the numbered parts of the answer folder `folder` (`outbox.mark_folders`), at
        once, so that the inbox folder's next photos find theirs; not where the outbox is gone
        (the answer waits for it, and marks them then)."""
        if folder != rel_dir and self.outbox_gone() is None:
            mark_folders(self.outbox, folder, rel_dir)
