"""The one exception tree of mlwarden.

Every error mlwarden raises on purpose derives from `MlwardenError`, so callers can tell
"mlwarden refused this, with a reason" from a bug::

    MlwardenError
    ├── ConfigError        settings or a detector config that cannot work; says which key
    ├── PlaybookError      an invalid playbook; says file, line, column and field path
    ├── TelemetryError     a record that breaks the telemetry contract; carries the DLQ reason code
    ├── BrokerError        the embedded broker could not start or stopped unexpectedly
    └── ResponderError     an effect failed; `retryable` says whether trying again can help

Errors are raised with a message that tells the user what to do next, not only what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MlwardenError(Exception):
    """Root of every error mlwarden raises on purpose."""


class ConfigError(MlwardenError):
    """Settings or detector configuration that cannot work as given."""


class BrokerError(MlwardenError):
    """The embedded Kafka broker could not be started or reached."""


class ResponderError(MlwardenError):
    """An effect (page, rate limit, rollback, evidence) failed.

    `retryable` is False for failures that another attempt cannot fix (a 400 from an API,
    a missing model), so the playbook engine can stop retrying at once.
    """

    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        """The backend's own hint (HTTP Retry-After) for when to try again, if it gave one."""


@dataclass(frozen=True)
class SourceLocation:
    """Where in a YAML file a problem sits (1-based, as editors count)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class PlaybookError(MlwardenError):
    """A playbook that must not load. The message reads `file:line:col: field.path: problem`."""

    def __init__(self, location: SourceLocation, field_path: str, problem: str) -> None:
        self.location = location
        self.field_path = field_path
        self.problem = problem
        where = f"{field_path}: " if field_path else ""
        super().__init__(f"{location}: {where}{problem}")


class RejectReason(StrEnum):
    """Why a record went to the dead-letter queue. Stable codes: dashboards count them."""

    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TIMESTAMP = "invalid_timestamp"


class TelemetryError(MlwardenError):
    """A record that breaks the telemetry contract; `reason` is the DLQ reason code."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
