"""The error report, `<stem>.error.json`: the one answer of a photo that failed, or of inbox
files that could not become a job. People and their scripts read its `error` (what was wrong and
what to do), so its keys are a contract and these models their single source, as `Manifest` is
for a result."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from daemon.pool.events import FailureKind
from service.params import RenderParams


class ErrorReport(BaseModel):
    """A report about inbox files that never became a job (a rejected pair, a lone file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str = Field(description="What was wrong and what to do about it.")
    job_id: str = Field(description="The id this answer was published under.")
    input: str = Field(description="The photo's path relative to the inbox.")
    sidecar: str | None = Field(description="The sidecar's file name; null when there was none.")
    original: str = Field(description="Where the original photo is now, in words.")
    at: str = Field(description="When the report was written (local time, ISO 8601).")

    @field_validator("error")
    @classmethod
    def _says_something(cls, error: str) -> str:
        # Not Field(min_length=1): pydantic then refuses the lone surrogates of a file name that
        # is not UTF-8, and such names are quoted in reports.
        if not error.strip():
            raise ValueError("an error report says what was wrong")
        return error


class FailureReport(ErrorReport):
    """A job that was claimed and failed: also what it was asked to do."""

    kind: FailureKind = Field(description="What failed: input, oom, engine, lost, ...")
    styles: list[str] = Field(description="The styles the job named, in blend order.")
    params: RenderParams = Field(description="The parameters it was asked to render with.")


_ANY_REPORT: TypeAdapter[FailureReport | ErrorReport] = TypeAdapter(FailureReport | ErrorReport)


def as_report(value: Any) -> ErrorReport | None:
    """A report as the daemon wrote it (`value`: its parsed JSON), or None for anything else:
    the outbox is shared with people and sync tools, who may leave any file under its name."""
    try:
        return _ANY_REPORT.validate_python(value)
    except ValidationError:
        return None
