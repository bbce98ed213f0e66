"""Decode and validate raw telemetry in batches: every input becomes a record or a dead letter.

Pure code with no Kafka client in sight, so the worker, backtest and property tests share it.
The happy path is one `model_validate_json` call per record (pydantic-core parses and
validates in Rust); the work of explaining a failure is only paid for records that fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from mlwarden.schemas.dead_letter import DeadLetter
from mlwarden.schemas.errors import RejectReason
from mlwarden.schemas.telemetry import TelemetryRecord

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_MAX_DETAIL_ERRORS = 3


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One record as it came off the wire (or out of a file), with its coordinates."""

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(slots=True)
class DecodedBatch:
    """Records that honour the contract, and dead letters for the rest, in input order."""

    records: list[TelemetryRecord] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)


def decode_batch(
    messages: Iterable[RawMessage], max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> DecodedBatch:
    """Split `messages` into valid records and dead letters; never raises on bad input."""
    decoded = DecodedBatch()
    validate = TelemetryRecord.model_validate_json
    for message in messages:
        value = message.value
        if len(value) > max_record_bytes:
            decoded.rejects.append(
                _dead_letter(
                    message,
                    RejectReason.TOO_LARGE,
                    f"record is {len(value)} bytes; the limit is {max_record_bytes}",
                )
            )
            continue
        try:
            decoded.records.append(validate(value))
        except ValidationError as error:
            reason, detail = explain(value, error.errors(include_url=False, include_input=False))
            decoded.rejects.append(_dead_letter(message, reason, detail))
    return decoded


def explain(value: bytes, errors: Sequence[ErrorDetails]) -> tuple[RejectReason, str]:
    """The DLQ reason code of the first problem, and a one-line account of the first few."""
    first = errors[0]
    if first["type"] == "json_invalid":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RejectReason.NOT_UTF8, f"not UTF-8: {exc.reason} at byte {exc.start}"
        return RejectReason.INVALID_JSON, first["msg"]
    if first["type"] == "model_type":
        return RejectReason.NOT_AN_OBJECT, "a telemetry record must be a JSON object"
    detail = "; ".join(
        f"{_field_path(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
        for error in errors[:_MAX_DETAIL_ERRORS]
    )
    if len(errors) > _MAX_DETAIL_ERRORS:
        detail += f"; and {len(errors) - _MAX_DETAIL_ERRORS} more"
    if first["type"] == "missing":
        return RejectReason.MISSING_FIELD, detail
    if first["loc"] and first["loc"][0] == "timestamp":
        return RejectReason.INVALID_TIMESTAMP, detail
    return RejectReason.INVALID_FIELD, detail


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`features[1]` from pydantic's ('features', 'list[float]', 1), dropping union branch tags."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not path:
            path = part
        elif "[" in part or part in {"str", "int", "float"}:
            continue  # the name of a union member pydantic tried, not a field
        else:
            path += f".{part}"
    return path or "(record)"


def _dead_letter(message: RawMessage, reason: RejectReason, detail: str) -> DeadLetter:
    return DeadLetter(
        original=message.value,
        key=message.key,
        reason=reason,
        detail=detail,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
    )
