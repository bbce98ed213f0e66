"""Telemetry record v1: one record per inference, published by model servers.

This model *is* the contract (ARCHITECTURE.md): the JSON Schema in `schemas/json/` is generated
from it. Decoding is lenient where the contract allows choice (features and probabilities as a
list or a mapping, timestamps as epoch seconds or RFC 3339) and strict everywhere else, because a
detector fed a string where it expects a number fails far from the cause. Timestamps are
normalised to float epoch seconds so detectors do arithmetic, not parsing, on the hot path.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

TELEMETRY_SCHEMA_VERSION: Final = 1

# Epoch seconds outside this range are almost always a unit mistake (milliseconds) or garbage.
_EARLIEST_EPOCH_S: Final = 946_684_800.0  # 2000-01-01T00:00:00Z
_LATEST_EPOCH_S: Final = 7_258_118_400.0  # 2200-01-01T00:00:00Z


def _parse_timestamp(value: object) -> float:
    """Accept epoch seconds (int or float) or an RFC 3339 string; return epoch seconds (UTC)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be epoch seconds or an RFC 3339 string, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"timestamp {value[:40]!r} is not RFC 3339 (e.g. 2026-11-23T14:05:00Z)"
            ) from None
        if parsed.tzinfo is None:
            raise ValueError("timestamp has no UTC offset; add 'Z' or '+00:00' (RFC 3339)")
        seconds = parsed.timestamp()
    else:
        raise ValueError("timestamp must be epoch seconds or an RFC 3339 string")
    if not math.isfinite(seconds):
        raise ValueError("timestamp must be a finite number")
    if not _EARLIEST_EPOCH_S <= seconds < _LATEST_EPOCH_S:
        hint = " (milliseconds? send seconds)" if seconds >= _LATEST_EPOCH_S else ""
        raise ValueError(f"timestamp {seconds!r} is outside 2000..2200 in epoch seconds{hint}")
    return seconds


def _check_probabilities(value: list[float] | dict[str, float] | None) -> Any:
    if value is None:
        return None
    values = value.values() if isinstance(value, dict) else value
    if not values:
        raise ValueError("probabilities must not be empty; omit the field instead")
    if any(p < 0.0 or p > 1.0 for p in values):
        raise ValueError("every probability must lie in [0, 1]")
    return value


# Numbers from JSON: ints and floats, never booleans or numeric strings; NaN/inf are refused.
Number = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=256)]
EpochSeconds = Annotated[
    float,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]},
        mode="validation",
    ),
]
FeatureVector = list[FiniteFloat] | dict[StrictStr, FiniteFloat]
ProbabilityVector = Annotated[
    list[FiniteFloat] | dict[StrictStr, FiniteFloat] | None, AfterValidator(_check_probabilities)
]


class TelemetryRecord(BaseModel):
    """One inference as the model server saw it. Unknown fields are ignored (forward compatible)."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        protected_namespaces=(),
        title="TelemetryRecord",
        json_schema_extra={"$comment": f"mlwarden telemetry contract v{TELEMETRY_SCHEMA_VERSION}"},
    )

    event_id: Identifier = Field(description="Unique per request; the dedup key of the event.")
    timestamp: EpochSeconds = Field(
        description="When the inference happened: epoch seconds or an RFC 3339 string."
    )
    model_id: Identifier
    model_version: Identifier
    client_id: Identifier = Field(description="An account or API-key id, never the secret itself.")
    features: FeatureVector | None = Field(
        default=None, description="Model input as a list of numbers or a {name: number} mapping."
    )
    input_hash: Annotated[StrictStr, Field(max_length=512)] | None = Field(
        default=None, description="Hash of the raw input, when raw features can't leave the server."
    )
    probabilities: ProbabilityVector = Field(
        default=None, description="Model output as a list or a {label: probability} mapping."
    )
    prediction: StrictInt | StrictStr = Field(description="The predicted class or label.")
    latency_ms: Annotated[FiniteFloat, Field(ge=0)] | None = None
    attributes: dict[StrictStr, StrictStr | Number] | None = Field(
        default=None, description="Free-form context such as source_ip or route."
    )

    @property
    def event_time(self) -> datetime:
        """The event timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, tz=UTC)
