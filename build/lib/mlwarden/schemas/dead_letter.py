"""Dead letter: a telemetry record that broke the contract, kept whole with the reason.

On Kafka the DLQ record's value is the *original bytes*, unchanged, and its key the original
key; the reason and the source coordinates travel as headers (the convention Kafka Connect's
`errors.deadletterqueue.context.headers.enable` uses), so a fixed record can be re-published
verbatim. In files (backtest `--rejects-out`) the same facts are one JSON object per line.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from mlwarden.schemas.errors import RejectReason

HEADER_PREFIX: Final = "mlwarden.dlq."


class DeadLetter(BaseModel):
    """Why a record was refused and where it came from; `original` is its exact bytes."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    original: bytes = Field(description="The record's bytes as received (base64 in JSON).")
    key: bytes | None = Field(default=None, description="The record's Kafka key, if any.")
    reason: RejectReason
    detail: str = Field(description="What is wrong, for a human; first problem first.")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers carrying everything but the original bytes and key."""
        pairs: list[tuple[str, str | int | None]] = [
            ("reason", self.reason.value),
            ("detail", self.detail),
            ("source.topic", self.source_topic),
            ("source.partition", self.source_partition),
            ("source.offset", self.source_offset),
        ]
        return [(HEADER_PREFIX + name, str(v).encode()) for name, v in pairs if v is not None]

    @classmethod
    def from_kafka(
        cls, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> DeadLetter:
        """Rebuild a dead letter read back from the DLQ topic (for tools and tests)."""
        found = {
            name.removeprefix(HEADER_PREFIX): raw.decode()
            for name, raw in headers
            if name.startswith(HEADER_PREFIX)
        }

        def as_int(name: str) -> int | None:
            return int(found[name]) if name in found else None

        return cls(
            original=value,
            key=key,
            reason=RejectReason(found["reason"]),
            detail=found.get("detail", ""),
            source_topic=found.get("source.topic"),
            source_partition=as_int("source.partition"),
            source_offset=as_int("source.offset"),
        )
