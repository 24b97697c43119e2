"""Every decision about a job, as named steps over the states of `daemon.jobs.states`:

    claim (arrival)  -> submit -> started -> progress ... -> done    -> publish -> release
    reject / problem (inbox_reports.py) ---------------------------> publish (a report)
    any failure ---------------------------> fail -----------------> publish (the report)
    an unwritable outbox while publishing -> block -> (retry) -----> publish

`fail` is the one failure path (worker failures, interruptions, internal errors) and `publish`
the one way an answer reaches the outbox; both record their state first, so `recover` at
start-up continues each job from its recorded state.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import structlog

from daemon import header_guard
from daemon.config import Settings
from daemon.fsutil import open_answer
from daemon.header_guard import guarded_read
from daemon.intake.pairing import Arrival
from daemon.intake.resolve import Rejected, resolve
from daemon.intake.styles import StyleLibrary, closest
from daemon.jobs import answers, outbox
from daemon.jobs.answers import FailureDetail, ResultDetail, ReuseDetail
from daemon.jobs.answers_back import AnswersBack
from daemon.jobs.estimate import Pace, queue_starts
from daemon.jobs.inbox_reports import InboxReports
from daemon.jobs.live import Returning, Running, live_items
from daemon.jobs.publisher import Publisher
from daemon.jobs.ready import ReadyPairs, top_folder
from daemon.jobs.record import Job
from daemon.jobs.recovery import recover
from daemon.jobs.resend import earlier_answer_to_this_input, resent_pair
from daemon.jobs.running import RunningJobs
from daemon.jobs.space import StateSpace, is_full
from daemon.jobs.spool import ClaimIntent, Spool
from daemon.jobs.states import State
from daemon.jobs.store import Answer, Store
from daemon.limits import Limits
from daemon.logs import job_context
from daemon.metrics import Metrics
from daemon.pool import RESULT_INFO, StyleRef, Task, WorkerPool
from daemon.pool.batching import batch_key
from daemon.pool.events import (
    Cancelled,
    Done,
    Failed,
    PoolEvent,
    Progress,
    Requeued,
    Retrying,
    Started,
)
from daemon.pool.render import photo_problem
from daemon.safefs import Changed
from daemon.status_model import Attention, InboxItem, JobItem
from service.imageio import read_header

log = structlog.get_logger("stylefold.jobs")
HEADER_MARK = ".reading-header"  # in a job's folder while the daemon reads its photo's header

CLAIM_RETRY = 10.0  # seconds before claiming again after the state folder failed a claim
# A job whose rendered result vanished from the spool this often is failed, not rendered again:
# something keeps deleting in the state folder, and rendering again would loop for ever.
MAX_RESULTS_LOST = 3
PRUNE_EVERY = 3600.0  # seconds between prunes of the finished jobs' history
# The journal's note on each such PUBLISHING -> QUEUED; counted in the `rendered_again` column
# (an upgrade counts the notes of older versions once: store_schema).
RENDERED_AGAIN = "rendered again"


# What a default_style the jobs cannot use means (`Lifecycle.check_default_style`).
_UNUSABLE = (
    "cannot be used: photos without a sidecar, and sidecars that name no style, get a report "
    "instead of a picture"
)


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pool: WorkerPool,
        library: StyleLibrary,
        metrics: Metrics,
        publish_retry: float,
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = Spool(settings, store)
        self.pool = pool
        self.library = library
        self.metrics = metrics
        self.publish_retry = publish_retry
        self.jobs: dict[str, Job] = {}  # claimed and not finished
        self.for_pool: deque[Job] = deque()  # QUEUED, waiting for room in the pool's queue
        self.deferred = ReadyPairs()  # ready in the inbox, not claimed yet
        self.held_back: dict[Path, Arrival] = {}  # a newer version of a photo a job copied
        self.twins: list[Job] = []  # QUEUED, waiting for an earlier job that renders the same
        self.unsettled: list[Path] = []  # not what settled when claimed: to settle again
        self.running: dict[str, Running] = {}
        self.pace = Pace()  # how fast workers render, for queued jobs' start estimates
        self.returning: dict[str, Returning] = {}  # originals refused their way back
        self.at_work = RunningJobs(store, self.spool, self.running)
        self.answers_back = AnswersBack(settings.inbox, self.spool)
        self.claim_pause_until = 0.0
        self.claims_failing: Attention | None = None  # the last claim failed for a reason of
        # the daemon's own (not the photo's: that one is reported), and is tried again
        self._next_prune = 0.0  # monotonic time of the next `_prune`: at once, then hourly
        self.space = StateSpace(settings.state)
        self.limits = Limits()
        self.publisher = Publisher(
            settings,
            store,
            self.spool,
            metrics,
            publish_retry,
            self.jobs,
            self.running,
            self.at_work.stopped,
            self.render_again,
        )
        self.reports = InboxReports(store, self.spool, self.publisher, self.answers_back)
        self.spool.on_kept = self.reports.kept
        self.check_default_style()

    def configure(self, settings: Settings) -> None:
        """A reload's settings, for every part that reads them: a claim and its release must
        agree (a newcomer's review found the publisher on the old ones: after `archive` went
        from keep to move, claims moved photos and releases gave them back to the inbox)."""
        self.settings = self.spool.settings = self.publisher.settings = settings
        self.spool.styles.settings = settings
        self.check_default_style()

    @property
    def busy(self) -> bool:
        return bool(self.jobs or self.deferred or self.publisher.blocked or self.returning)

    @property
    def only_blocked(self) -> bool:
        """Busy with answers blocked on the outbox or the state folder alone, which a person
        must mend."""
        blocked = self.publisher.blocked
        return bool(blocked) and not (
            self.deferred or self.returning or set(self.jobs) - set(blocked)
        )

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> int:
        return recover(self)

    def retry_due(self) -> None:
        """Whatever waits for another try and is due: blocked answers, stopped jobs' progress
        files that could not be removed, originals that could not go back."""
        self.publisher.retry_blocked()
        self.at_work.sweep()
        now = time.monotonic()
        for back in [back for back in self.returning.values() if back.retry_at <= now]:
            self._return(back)

    def arrived(self, arrival: Arrival) -> None:
        """A pair the intake found ready: claimed in turn, as the queue has room (`feed`)."""
        self.deferred.append(arrival)

    def ready_items(self) -> list[InboxItem]:
        """For `status`: the pairs ready in the inbox and not claimed yet (`deferred`)."""
        return self.deferred.items(self.settings.inbox, queue_full=not self._room_to_claim())

    def _room_to_claim(self) -> bool:
        """Claims wait while claimed jobs wait for room in the pool's queue, or it is full."""
        return not self.for_pool and self.pool.has_room()

    def settle_again(self) -> list[Path]:
        """The inbox files a claim found changed since they settled (or a roll-back gave
        back), handed over once: the intake must see them settle anew."""
        paths, self.unsettled = self.unsettled, []
        return paths

    def items(self) -> list[JobItem]:
        """Queued jobs in the order the pool takes them (its turns), with when they start."""
        queued = self.pool.queued
        turn = {job_id: index for index, job_id in enumerate(queued)}
        jobs = sorted(self.jobs.values(), key=lambda job: turn.get(job.id, -1))
        waiting = [self.jobs[job_id] for job_id in queued if job_id in self.jobs]
        starts_in = queue_starts(
            [*waiting, *self.for_pool],
            self.running.values(),
            self.pool.workers(),
            self.pace,
            time.time(),
        )
        return live_items(
            {job.id: job for job in jobs},
            self.running,
            self.publisher.blocked,
            self.returning,
            self.spool.names,
            self.settings.outbox,
            self.store.starts(),
            starts_in,
        )

    def feed(self, deadline: float) -> None:
        """Claim what is ready while the pool's queue has room (the bound keeps a burst of
        thousands of photos in the inbox, visible, rather than in memory)."""
        if time.monotonic() >= self._next_prune:
            self._prune()
        for job in self.space.released():
            self.queued_again(job, note="held: state full")  # room again: to a worker in turn
            self.for_pool.append(job)
        for image in [image for image in self.held_back if self._copied_by(image) is None]:
            self.deferred.append(self.held_back.pop(image))  # its job ended: taken in turn
        for job in [job for job in self.twins if self._twin_of(job) is None]:
            self.twins.remove(job)  # its twin is answered (or failed): skip, reuse or render
            self.for_pool.append(job)
        while self.for_pool and self.pool.has_room() and time.monotonic() < deadline:
            self._submit_one(self.for_pool.popleft())
        while (
            self.deferred
            and self._room_to_claim()
            and self.claim_pause_until <= time.monotonic() < deadline
        ):
            arrival = self.deferred.popleft()
            try:
                self.claim(arrival)
            except Exception as exc:  # one bad pair must never stop the daemon
                log.exception("job.arrival_crashed", image=str(arrival.image))
                self.reports.arrival_crashed(arrival, exc)
        self._note_queue()

    def _prune(self) -> None:
        """Forget the oldest finished jobs and answers beyond the store's KEEP_FINISHED and
        KEEP_ANSWERS, at start and then hourly, so months of service do not grow the database
        without bound."""
        self._next_prune = time.monotonic() + PRUNE_EVERY
        try:
            pruned = self.store.prune()
        except OSError as exc:  # housekeeping only: tried again at the next turn
            log.warning("jobs.not_pruned", error=str(exc))
            return
        if pruned.jobs or pruned.answers:
            log.info("jobs.pruned", jobs=pruned.jobs, answers=pruned.answers)

    def _submit_one(self, job: Job) -> None:
        """Submit a claimed job; one that crashes on the way ends through the failure path."""
        with job_context(job.id):
            try:
                self.submit(job)
            except Exception as exc:  # one bad job must never stop the daemon
                self.publisher.crashed(job.id, job, exc, "submitting it")

    def _note_queue(self) -> None:
        """queue_max reached is no fault, but it must be visible: photos then wait in the inbox."""
        if (self.deferred or self.for_pool) and not self.pool.has_room():
            self.limits.reach(
                "queue_max",
                f"queue_max ({self.settings.queue_max}) jobs are claimed and waiting for a "
                "worker; further photos wait in the inbox until the queue drains",
                "nothing to do unless this lasts: add workers, or raise queue_max",
            )
        elif not self.deferred:
            self.limits.clear("queue_max")

    def check_default_style(self) -> None:
        """A default_style the library lacks, or whose file cannot be used, is told in the log
        and by `status` from the start, at a reload and when the library changes, not first in
        a photo's report (a new user's trial: run and reload took one misspelt without a
        word)."""
        name = self.settings.default_style
        broken = None if name is None else self.library.broken(name)
        if name is None or (broken is None and self.library.find(name) is not None):
            self.limits.clear("default_style")
            return
        if broken is not None:
            told, where = f"default_style names a style whose file {_UNUSABLE}", broken
            fix = "fix or replace that file (it is taken again by itself), or set "
        else:
            close = closest(name, self.library.names())
            told = f"default_style names a style that is not in the library, so it {_UNUSABLE}"
            where = f"default_style = {name!r}" + (f" (did you mean {close!r}?)" if close else "")
            fix = "add the style's image to the styles folder under that name (.jpg, .png, "
            fix += "...), or set "
        fix += "default_style to a style of the library (`stylefold styles` lists them) and reload"
        if (known := self.limits.held("default_style")) is not None and known.what != told:
            self.limits.clear("default_style")  # its file broke, or went: told anew
        self.limits.reach("default_style", told, fix, where, whole=True)

    def attention(self) -> list[Attention]:
        """What the jobs need a person for (the queue at its limit, a full state folder,
        originals kept in the state folder), for `status`."""
        return (
            self.limits.attention()
            + ([self.claims_failing] if self.claims_failing else [])
            + self.space.attention()
            + self.spool.kept()
            + self.answers_back.attention()
        )

    def claim(self, arrival: Arrival) -> None:
        if self.spool.in_place.already_handled([arrival.image, arrival.sidecar]):
            return
        if arrival.sidecar is None and self.answers_back.left_alone(arrival.image, None):
            return
        if (holder := self._copied_by(arrival.image)) is not None:
            # Claimed by copying (archive = "keep"), a photo stays in the inbox, and a sync
            # tool still writing it settles again and again: one job at a time per photo.
            if arrival.image not in self.held_back:
                log.info("job.waits_for_copy", image=str(arrival.image), job=holder)
            self.held_back[arrival.image] = arrival
            return
        if not arrival.image.exists():  # e.g. claimed already, by a retry queued with it
            log.info("job.claim_vanished", image=str(arrival.image))
            return
        try:
            resolved = resolve(arrival, self.settings, self.library)
            job = self.spool.claim(arrival, resolved)
        except Rejected as exc:
            if self.spool.in_place.already_handled([arrival.image, arrival.sidecar]):
                return
            resent = resent_pair(self.store, self.settings, arrival)
            if resent is not None and resent.published:
                job_id = resent.answer.job_id
                self.spool.in_place.remember([arrival.image, arrival.sidecar], job_id)
                source = self.spool.in_place.relative(arrival.image)
                log.info("job.resent_refused", input=source, answered_by=job_id, reason=str(exc))
                return
            self.reports.reject(arrival, str(exc))
            return
        except FileNotFoundError:
            log.info("job.claim_vanished", image=str(arrival.image))
            return
        except Changed as exc:
            log.warning("job.claim_changed", image=str(arrival.image), reason=str(exc))
            self.unsettled += [arrival.image, *([arrival.sidecar] if arrival.sidecar else [])]
            return
        except OSError as exc:
            log.error(
                "job.claim_failed", image=str(arrival.image), error=str(exc), retry_in=CLAIM_RETRY
            )
            if is_full(exc):
                self.space.full(exc)
            else:  # status said nothing while every photo waited (a non-root trial)
                self.claims_failing = Attention(
                    what=f"photos cannot be taken from the inbox: {exc}",
                    where=str(arrival.image),
                    fix=answers.CLAIMS_FAILING_FIX.format(seconds=CLAIM_RETRY),
                )
            self.deferred.appendleft(arrival)
            self.claim_pause_until = time.monotonic() + CLAIM_RETRY
            return
        self.claims_failing = None
        self.jobs[job.id] = job
        with job_context(job.id):
            try:
                self._claimed(arrival, job, resolved.notes)
            except Exception as exc:  # its originals are in the spool now: the failure path
                self.publisher.crashed(job.id, job, exc, "claiming it")

    def _claimed(self, arrival: Arrival, job: Job, notes: tuple[str, ...]) -> None:
        self.publisher.outdate_report(job.source)  # its report held back by a full outbox
        if arrival.style_file is not None:
            # Copied, not moved (other sidecars may name it too): left in the inbox, it must
            # not be answered as a photo without a sidecar after a restart, nor keep a report
            # that said so before this pair came.
            self.reports.withdraw(self.spool.in_place.relative(arrival.style_file), style=True)
            with contextlib.suppress(OSError):  # else only that needless report, later
                self.spool.in_place.remember_style(arrival.style_file, job.id)
        if not self.space.held:
            self.space.recovered()
        with contextlib.suppress(OSError):  # else it goes when the answer comes
            # An earlier report on this photo (no sidecar yet, a bad one) is outdated now: it
            # said "failed" in the outbox for as long as the new job waited (a status trial).
            outbox.drop_stale_report(self.spool.names(job), job.inputs, self.settings.inbox)
        styles = ", ".join(f"{s.name} x{s.weight:g}" for s in job.styles)
        self.spool.append_log(job, f"claimed {job.source} (style {styles})")
        # JSON, so that it can be pasted into a sidecar's "params" (a photographer's trial)
        self.spool.append_log(job, f"params {job.params.model_dump_json()}")
        for note in notes:
            self.spool.append_log(job, note)
        if job.answer_dir is not None:
            self.spool.append_log(job, answers.answered_elsewhere(job.answer_dir, job.rel_dir))
        log.info(
            "job.claimed",
            input=job.source,
            sidecar=job.sidecar_name,
            styles=styles,
            answer_folder=job.answer_dir,
        )
        self._submit_one(job)

    def submit(self, job: Job) -> None:
        if self._skip_resent(job):
            return
        if (twin := self._twin_of(job)) is not None:
            self.twins.append(job)
            self.spool.append_log(job, f"waits for job {twin}, which renders the same")
            log.info("job.waits_for_twin", input=job.source, twin=twin)
            return
        if self.settings.dedupe:
            earlier = self.spool.earlier_answer(job)
            if earlier is not None and self._may_copy(earlier):
                self.publisher.publish(job.id, job, "reuse", _reuse(earlier))
                return
        job_dir = self.spool.job_dir(job)
        content = self.spool.input_path(job)
        files = {style.name: style.path for style in self.library.styles()}
        styles = tuple(
            StyleRef(
                job_dir / style.file,
                style.weight,
                answers.style_label(job, style, files.get(style.name)),
                style.name,
            )
            for style in job.styles
        )
        key = head = None
        with self._header_read(job) as readable:
            if readable:  # once, for the check and the batch key
                with contextlib.suppress(OSError):  # else the worker's read says what is wrong
                    head = read_header(content)
            if head is not None and (
                problem := photo_problem(
                    content,
                    self.settings.max_pixels,
                    head,
                    job.params,
                    self.settings.max_output_size,
                    job.image_name,
                )
            ):
                self.publisher.fail(job, FailureDetail(kind="input", reason=problem))
                return
            if head is not None and self.pool.may_batch():
                key = batch_key(head, [(s.sha256, s.weight) for s in job.styles], job.params)
        row = self.store.get(job.id)
        task = Task(
            job_id=job.id,
            job_dir=job_dir,
            content=content,
            styles=styles,
            params=job.params,
            output_format=job.output_format,
            output_quality=job.output_quality,
            max_pixels=self.settings.max_pixels,
            max_bytes=self.settings.max_input_bytes,
            batch_key=key,
            preview_every=self.settings.preview_every,
            strip_location=self.settings.strip_location,
            lost=row.lost if row else 0,  # its free requeues are counted across restarts
            share=top_folder(job.rel_dir),
            content_label=job.image_name,
        )
        if not self.pool.submit(task):
            self.for_pool.appendleft(job)

    @contextlib.contextmanager
    def _header_read(self, job: Job) -> Iterator[bool]:
        """Whether this process may read the photo's header (`daemon.header_guard`), marked in
        the job's folder."""
        with guarded_read(self.spool.job_dir(job) / HEADER_MARK) as readable:
            if not readable:
                log.warning("job.header_not_read", input=job.source, why=header_guard.NOT_READ)
            yield readable

    def _copied_by(self, image: Path) -> str | None:
        """The live job that copied the inbox photo `image`, if any."""
        inbox = self.settings.inbox
        for job in self.jobs.values():
            if job.copied and inbox / job.rel_dir / job.image_name == image:
                return job.id
        return None

    def _may_copy(self, earlier: Answer) -> bool:
        """An earlier result is copied for an identical photo if its manifest can still be read,
        and unless it carries the location that `strip_location` now leaves out (then the photo
        is rendered: its copy would have published the location the setting was turned on to
        keep out of the outbox)."""
        from service.imageio import carries_location

        try:
            answers.manifest_at(Path(_reuse(earlier).manifest), self.settings.outbox)
        except (OSError, ValueError):
            return False
        if not self.settings.strip_location:
            return True
        try:  # not by its path: it may be a link or a FIFO by now (another outbox writer's)
            limit = self.settings.max_answer_bytes
            with open_answer(earlier.output, self.settings.outbox, limit) as handle:
                return not carries_location(handle)
        except OSError:
            return False

    def _twin_of(self, job: Job) -> str | None:
        """An earlier unfinished job on the same photo, styles and parameters (a sync tool that
        sent it again while it rendered): with `dedupe`, this one waits for its answer and is
        then skipped or answered from it, instead of rendering it a second time. Only in the
        same inbox folder, as `Spool.earlier_answer`; not for one blocked until a person mends
        its outbox folder (an attacker's trial: identical photos elsewhere waited behind it for
        good)."""
        if not self.settings.dedupe:
            return None
        for other in self.jobs.values():
            if (
                other.id < job.id
                and other.key == job.key
                and other.rel_dir == job.rel_dir
                and other not in self.twins
                and other.id not in self.publisher.blocked
            ):
                return other.id
        return None

    # -- what the pool says -----------------------------------------------------------------

    def handle(self, event: PoolEvent) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            return
        with job_context(job.id):
            try:
                self._handle(job, event)
            except Exception as exc:  # a bug while finishing one job must not stop the rest
                name = type(event).__name__
                if isinstance(event, Done | Failed):  # the job left its worker: it ends here
                    self.publisher.crashed(job.id, job, exc, f"handling its {name} event")
                else:  # still with its worker, whose Done or Failed decides
                    log.exception("job.event_crashed", pool_event=name)

    def _handle(self, job: Job, event: PoolEvent) -> None:
        if isinstance(event, Started):
            self.at_work.started(job, event)
        elif isinstance(event, Progress):
            self.at_work.progress(job, event)
        elif isinstance(event, Done | Failed) and (changed := self._changed_under(job, event)):
            self._give_back_changed(job, changed)
        elif isinstance(event, Done):
            self.pace.record(event.info)
            if self._skip_resent(job):  # sent again while its first copy was being rendered
                return
            running = self.running.get(job.id)
            detail = ResultDetail(
                info=event.info,
                started_at=running.started if running else None,
                node=running.node if running else None,
            )
            self.publisher.publish(job.id, job, "result", detail)
        elif isinstance(event, Failed) and event.kind == "nospace":
            self._hold(job, event.reason)
        elif isinstance(event, Failed):
            self.publisher.fail(
                job, FailureDetail(kind=event.kind, reason=event.reason, traceback=event.traceback)
            )
        elif isinstance(event, Retrying):
            line = f"attempt {event.attempt - 1} failed ({event.error}); retrying"
            if event.size != job.params.size:
                line += f" at size {event.size}"
            if event.device:
                line += f" on {event.device}"
            self.spool.append_log(job, line)
            log.warning("job.retry", attempt=event.attempt, kind=event.kind, error=event.error)
            running = self.running.get(job.id)
            self.at_work.stopped(job)
            # Seen to end, and bounded by the pool's `retries`: no interruption for MAX_STARTS
            # (a reviewer's reading: five worker kills and one restart failed a job that had
            # retries left), unless its Ray node was lost, which may be the photo's doing.
            lost = event.kind == "lost"
            self.queued_again(job, event.error, note=line, lost=lost, stopped=not lost)
            seconds = None if running is None else time.time() - running.started
            self.metrics.job_finished("retried", seconds)
        elif isinstance(event, Requeued):
            self.requeue(job, event.reason, lost=True)
        elif isinstance(event, Cancelled):
            self.requeue(job, event.reason)

    def _changed_under(self, job: Job, event: Done | Failed) -> str | None:
        """An original that changed while the job ran (`Spool.changed_original`). A job held
        for room renders again later and is looked at then."""
        if isinstance(event, Failed) and event.kind == "nospace":
            return None
        return self.spool.changed_original(job)

    def _give_back_changed(self, job: Job, name: str) -> None:
        """RUNNING -> RETURNING -> ROLLED_BACK: the render is of neither version of `name`, so
        nothing is published (a result would have taken the photo's names); the originals go
        back to the inbox, not remembered, and settle again like new arrivals. RETURNING holds
        the way back, so a restart in between finishes it."""
        self.at_work.stopped(job)
        reason = answers.ORIGINAL_CHANGED.format(name=name)
        intent = ClaimIntent.of(job).model_copy(update={"changed": name})
        self.store.move(job.id, State.RETURNING, detail=intent, reason=reason)
        self.jobs.pop(job.id, None)
        log.warning("job.original_changed", input=job.source, changed=name)
        self._return(Returning(job, intent, reason, "", retry_at=0.0))

    def _return(self, back: Returning) -> None:
        """The originals of a RETURNING job back into the inbox; a way back that is refused
        is tried again every `publish_retry` seconds, the job shown meanwhile (it had left
        `status` until a restart)."""
        try:
            rolled = self.spool.give_back(back.job.id, back.intent, note=back.reason)
        except OSError as exc:
            error = answers.public(str(exc), self.publisher.roots)
            log.error("job.originals_unreturned", input=back.job.source, error=error)
            back.error, back.retry_at = error, time.monotonic() + self.publish_retry
            self.returning[back.job.id] = back
            return
        self.returning.pop(back.job.id, None)
        self.unsettled += rolled.inbox

    def _hold(self, job: Job, reason: str) -> None:
        """The result could not be stored (state full): not a failure; the job waits, queued,
        and is submitted again once there is room for its result (`StateSpace.released`)."""
        self.at_work.stopped(job)
        self.spool.append_log(job, f"waiting for room in the state folder ({reason})")
        self.queued_again(job, reason, note="held: state full")
        self.space.hold(job, reason)
        self.space.full("a result could not be stored")

    def queued_again(
        self,
        job: Job,
        reason: str | None = None,
        *,
        note: str,
        lost: bool = False,
        stopped: bool = False,
    ) -> None:
        """Record a job that left its worker as QUEUED (`lost`: its worker went with its
        cluster, counted against the free requeues; `stopped`: its start ended as the daemon
        saw, in order or retried by the pool, so recovery's MAX_STARTS does not count it). With
        the state folder full that may fail (and RUNNING may never have been recorded): the job
        goes on all the same, and a restart queues a RUNNING job again anyway."""
        row = self.store.get(job.id)
        if row is not None and row.state is State.RUNNING:
            try:
                self.store.move(
                    job.id, State.QUEUED, reason=reason, note=note, lost=lost, stopped=stopped
                )
            except OSError as exc:
                log.warning("job.not_recorded", state=str(State.QUEUED), error=str(exc))

    def render_again(self, job: Job, reason: str) -> None:
        """PUBLISHING -> QUEUED: the rendered result vanished from the spool before it was
        written out, so the job is rendered again (its originals are still in the spool), or
        failed after `MAX_RESULTS_LOST` such losses. The result's record goes too, or a restart
        would try to publish it again."""
        self.store.move(
            job.id, State.QUEUED, reason=reason, note=RENDERED_AGAIN, rendered_again=True
        )
        row = self.store.get(job.id)
        times = row.rendered_again if row is not None else 1
        (self.spool.job_dir(job) / RESULT_INFO).unlink(missing_ok=True)
        self.spool.append_log(job, reason)
        log.warning("job.result_lost", input=job.source, reason=reason, times=times)
        if times >= MAX_RESULTS_LOST:
            why = answers.RESULT_KEEPS_VANISHING.format(times=times)
            self.publisher.fail(job, FailureDetail(kind="result_lost", reason=why))
        else:
            self.for_pool.append(job)

    def requeue(self, job: Job, reason: str, *, lost: bool = False) -> None:
        """The job is QUEUED again: cancelled at shutdown (it runs at the next start), or
        requeued by the pool after its Ray cluster went away (`lost`: it runs when a worker is
        free, and the loss is counted with the job, as the pool frees only so many;
        daemon.pool.retry.MAX_REQUEUES). A stop of the daemon is never the job's doing and
        does not count towards recovery's MAX_STARTS; a loss still does (it may be the job's
        doing: a photo that brings its node down)."""
        self.at_work.stopped(job)
        note = f"put back in the queue ({reason})"
        self.queued_again(job, note=note, lost=lost, stopped=not lost)
        self.spool.append_log(job, note)
        log.info("job.requeued", input=job.source, reason=reason, lost=lost)

    # -- answers ----------------------------------------------------------------------------

    def _skip_resent(self, job: Job) -> bool:
        """A photo sent again (daemon.jobs.resend) with resend = "skip": the earlier answer
        stands and nothing new is written."""
        if not (self.settings.dedupe and self.settings.resend == "skip"):
            return False
        earlier = earlier_answer_to_this_input(self.store, job, self.settings)
        if earlier is None:
            return False
        self.publisher.publish(job.id, job, "skip", _reuse(earlier))
        return True


def _reuse(answer: Answer) -> ReuseDetail:
    return ReuseDetail(
        job_id=answer.job_id,
        output=str(answer.output),
        manifest=str(answer.manifest),
        sha256=answer.sha256,
    )
