"""A job's life, written down in one place: its states and the transitions allowed between them.

A photo is not a job while it settles or waits for its sidecar (that lives in
`daemon.intake.pairing`, in memory). It becomes one when the daemon records it as CLAIMING,
before it moves the originals into the spool; an input that is answered without a claim (a
refused pair, a photo without a sidecar: a report, and the input stays in the inbox) is a job
from PUBLISHING on, and ends REJECTED (`NEW`). From then on every change of state goes through
`daemon.jobs.store.Store.move`, which refuses any transition not listed here and records each
one durably, so a restart continues from the recorded state instead of guessing from files.

    claiming -> queued -> running -> publishing -> releasing -> done | failed | skipped
       |           \\          |  \\         |   \\
       |            \\         |   queued    |    blocked -> publishing   (outbox/state unwritable)
       v             publishing (answered   |\\
    rolled_back      from an earlier       | queued    (its rendered result vanished: render again)
       ^             result, or given up)  v
       |                                 rejected  (a report for an input never claimed)
    returning <- running | queued  (an original changed under the job: nothing is published;
                                    from queued where its start went unrecorded, the
                                    state folder full)

A report held back by an outbox that cannot be written (`blocked`) is outdated when its input
changes and is told again otherwise, or is claimed, before it is written: it ends `rolled_back`,
never written, so the outbox has the input's one current answer.

A photo sent again (the same inbox path, content and parameters as one already answered) is
`skipped`: nothing new is written to the outbox, and its originals are released like any
answered job's.

A failure or rejection whose input leaves the inbox (deleted, renamed away) has its report
withdrawn (`daemon.jobs.inbox_reports`): the job keeps its end, marked `withdrawn`, and status
no longer lists it among the failures a person has to act on.

An original that changed while its job ran (a copy tool still writing in place through a file
it had open when the photo was claimed) makes the render worthless: the job is `returning`, its
originals go back to the inbox to settle again, and it ends `rolled_back` with no answer.

Any unfinished job may become `broken`, its originals kept for a person (`status` lists it):
its record or spool folder cannot be read (`daemon.jobs.recovery`: a spool folder the database
does not know, without a readable claim, is recorded CLAIMING and set aside at once), or its
failure path itself crashed on the same bad data (`Publisher.crashed`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class State(StrEnum):
    CLAIMING = "claiming"  # the originals are moving into the spool; rolled back after a crash
    QUEUED = "queued"  # waiting for a worker (in the pool's queue or for room in it)
    RUNNING = "running"  # a worker is rendering it
    PUBLISHING = "publishing"  # its answer (result or report) is being written to the outbox
    BLOCKED = "blocked"  # the outbox (or the state folder) refused the answer; retried
    RELEASING = "releasing"  # the answer is in the outbox; the originals leave the spool
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # sent again: the earlier answer stands (daemon.jobs.resend)
    REJECTED = "rejected"  # never claimed: the input got a report and stays in the inbox
    RETURNING = "returning"  # an original changed under the job; the originals go back
    # unanswered: the originals went back to the inbox (or, a report its input outdated while
    # it was blocked, never left it)
    ROLLED_BACK = "rolled_back"
    BROKEN = "broken"  # unreadable record or folder, or a crashed failure path: kept aside


# What a job in PUBLISHING or BLOCKED is about to write.
Outcome = Literal["result", "reuse", "failure", "report", "skip"]

NEW: frozenset[State] = frozenset({State.CLAIMING, State.PUBLISHING})
TERMINAL: frozenset[State] = frozenset(
    {State.DONE, State.FAILED, State.SKIPPED, State.REJECTED, State.ROLLED_BACK, State.BROKEN}
)
ACTIVE: frozenset[State] = frozenset(State) - TERMINAL

# The end each outcome leads to: a report straight from PUBLISHING, the others through
# RELEASING once the originals have left the spool.
END_OF: dict[Outcome, State] = {
    "result": State.DONE,
    "reuse": State.DONE,
    "skip": State.SKIPPED,
    "failure": State.FAILED,
    "report": State.REJECTED,
}

# The groups of states the rest of the daemon asks about, named here with the rules.
# The outcome is recorded and its answer is being written (again, after a block): a restart
# writes it again.
ANSWERING: frozenset[State] = frozenset({State.PUBLISHING, State.BLOCKED})
# The originals are on their way between the inbox and the spool: a restart rolls them back.
MOVING_ORIGINALS: frozenset[State] = frozenset({State.CLAIMING, State.RETURNING})
# Entered the moment the answer is in the outbox; the transition's note names the answer.
ANSWERED_INTO: frozenset[State] = frozenset({State.RELEASING, State.REJECTED})
# Ends whose answer is a result, and ends whose answer is an error report (the photo is back
# in, or still in, the inbox, waiting for the fix the report asks for).
ENDS_WITH_RESULT: frozenset[State] = frozenset({State.DONE, State.SKIPPED})
ENDS_WITH_REPORT: frozenset[State] = frozenset({State.FAILED, State.REJECTED})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.CLAIMING: frozenset({State.QUEUED, State.ROLLED_BACK}),
    State.QUEUED: frozenset({State.RUNNING, State.PUBLISHING, State.RETURNING}),
    State.RUNNING: frozenset({State.QUEUED, State.PUBLISHING, State.RETURNING}),
    State.PUBLISHING: frozenset({State.RELEASING, State.BLOCKED, State.REJECTED, State.QUEUED}),
    # a report its input outdated (changed, or claimed) before it could be written
    State.BLOCKED: frozenset({State.PUBLISHING, State.ROLLED_BACK}),
    State.RELEASING: frozenset({State.DONE, State.FAILED, State.SKIPPED}),
    State.RETURNING: frozenset({State.ROLLED_BACK}),
    **{state: frozenset() for state in TERMINAL},
}


class IllegalTransition(RuntimeError):
    """A bug: the code asked for a transition the lifecycle does not allow."""


def check(old: State | None, new: State) -> None:
    """Raise IllegalTransition unless `old -> new` is allowed (None: a new job). Any active
    job may become BROKEN."""
    if old is None:
        allowed = new in NEW
    else:
        allowed = new in TRANSITIONS[old] or (new is State.BROKEN and old in ACTIVE)
    if not allowed:
        raise IllegalTransition(f"a job may not go from {old or 'nothing'} to {new}")
