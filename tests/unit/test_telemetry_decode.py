"""Telemetry decoding: the contract's accepted forms, its refusals, and the DLQ guarantee."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.schemas.errors import RejectReason
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.decode import RawMessage, decode_batch

VALID: dict[str, Any] = {
    "event_id": "e-1",
    "timestamp": 1_790_000_000.5,
    "model_id": "fraud-scorer",
    "model_version": "3",
    "client_id": "c-42",
    "prediction": 1,
}


def decode_one(value: bytes | dict[str, Any]) -> tuple[list[TelemetryRecord], list[Any]]:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    decoded = decode_batch([RawMessage(raw, key=b"k", topic="t", partition=2, offset=7)])
    return decoded.records, decoded.rejects


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"features": [1, 2.5]}, lambda r: r.features == [1.0, 2.5]),
        ({"features": {"amount": 3}}, lambda r: r.features == {"amount": 3.0}),
        ({"probabilities": [0.2, 0.8]}, lambda r: r.probabilities == [0.2, 0.8]),
        ({"probabilities": {"cat": 1}}, lambda r: r.probabilities == {"cat": 1.0}),
        ({"timestamp": "2026-09-21T22:13:20Z"}, lambda r: r.timestamp == 1_790_028_800.0),
        ({"timestamp": "2026-09-22T00:13:20+02:00"}, lambda r: r.timestamp == 1_790_028_800.0),
        ({"timestamp": 1_790_000_000}, lambda r: r.timestamp == 1_790_000_000.0),
        ({"prediction": "fraud"}, lambda r: r.prediction == "fraud"),
        ({"input_hash": "ab12", "latency_ms": 0}, lambda r: r.input_hash == "ab12"),
        ({"attributes": {"source_ip": "10.0.0.1", "n": 3}}, lambda r: r.attributes["n"] == 3),
        ({"future_field": {"x": 1}}, lambda r: r.event_id == "e-1"),
    ],
)
def test_contract_forms_are_accepted(extra: dict[str, Any], check: Any) -> None:
    records, rejects = decode_one({**VALID, **extra})
    assert rejects == []
    assert check(records[0])


@pytest.mark.parametrize(
    ("value", "reason", "in_detail"),
    [
        (b"\xff\xfe{}", RejectReason.NOT_UTF8, "UTF-8"),
        (b'{"event_id": ', RejectReason.INVALID_JSON, "EOF"),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT, "object"),
        (
            {k: v for k, v in VALID.items() if k != "client_id"},
            RejectReason.MISSING_FIELD,
            "client_id",
        ),
        ({**VALID, "timestamp": 1_790_000_000_000}, RejectReason.INVALID_TIMESTAMP, "milliseconds"),
        ({**VALID, "timestamp": "2026-09-21 22:13"}, RejectReason.INVALID_TIMESTAMP, "UTC offset"),
        ({**VALID, "timestamp": True}, RejectReason.INVALID_TIMESTAMP, "boolean"),
        ({**VALID, "features": ["1"]}, RejectReason.INVALID_FIELD, "features[0]"),
        ({**VALID, "probabilities": [1.5]}, RejectReason.INVALID_FIELD, "[0, 1]"),
        ({**VALID, "probabilities": []}, RejectReason.INVALID_FIELD, "empty"),
        ({**VALID, "prediction": True}, RejectReason.INVALID_FIELD, "prediction"),
        ({**VALID, "client_id": ""}, RejectReason.INVALID_FIELD, "client_id"),
        ({**VALID, "latency_ms": -1}, RejectReason.INVALID_FIELD, "latency_ms"),
    ],
)
def test_contract_breaches_become_dead_letters(
    value: bytes | dict[str, Any], reason: RejectReason, in_detail: str
) -> None:
    records, rejects = decode_one(value)
    assert records == []
    [dead] = rejects
    assert dead.reason is reason
    assert in_detail in dead.detail
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    assert dead.original == raw
    assert (dead.key, dead.source_topic, dead.source_partition, dead.source_offset) == (
        b"k",
        "t",
        2,
        7,
    )


def test_nan_and_infinity_are_refused() -> None:
    _, rejects = decode_one(
        b'{"event_id":"e","timestamp":1.8e9,"model_id":"m","model_version":'
        b'"1","client_id":"c","prediction":1,"features":[NaN, Infinity]}'
    )
    assert rejects[0].reason is RejectReason.INVALID_FIELD


def test_oversized_records_are_refused_before_parsing() -> None:
    value = json.dumps({**VALID, "attributes": {"pad": "x" * 2000}}).encode()
    decoded = decode_batch([RawMessage(value)], max_record_bytes=1024)
    assert decoded.rejects[0].reason is RejectReason.TOO_LARGE
    assert decoded.rejects[0].original == value


def test_batch_keeps_input_order_on_both_sides() -> None:
    values = [
        json.dumps({**VALID, "event_id": f"e{i}"}).encode() if i % 3 else b"bad" for i in range(9)
    ]
    decoded = decode_batch(RawMessage(v, offset=i) for i, v in enumerate(values))
    assert [r.event_id for r in decoded.records] == ["e1", "e2", "e4", "e5", "e7", "e8"]
    assert [d.source_offset for d in decoded.rejects] == [0, 3, 6]


def test_dead_letter_headers_round_trip() -> None:
    _, [dead] = decode_one(b"nope")
    rebuilt = type(dead).from_kafka(dead.original, dead.key, dead.headers())
    assert rebuilt == dead


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.just(value)
        for name, value in {
            **VALID,
            "features": [1.0],
            "probabilities": {"a": 0.5},
            "latency_ms": 1,
            "attributes": {"route": "/"},
            "input_hash": "h",
        }.items()
    },
)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_nothing_is_lost(value: bytes) -> None:
    decoded = decode_batch([RawMessage(value)])
    assert len(decoded.records) + len(decoded.rejects) == 1
    for dead in decoded.rejects:
        assert dead.original == value
        assert dead.detail


# Generation of nested JSON is slow on a loaded 2-core machine; the inputs are still small.
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid)
def test_near_valid_objects_are_a_record_or_a_reasoned_dead_letter(obj: dict[str, Any]) -> None:
    value = json.dumps(obj).encode()
    decoded = decode_batch([RawMessage(value)])
    assert len(decoded.records) + len(decoded.rejects) == 1
    if decoded.records:
        record = decoded.records[0]
        # What was accepted round-trips through the canonical JSON unchanged.
        again = TelemetryRecord.model_validate_json(record.model_dump_json())
        assert again == record
    else:
        assert decoded.rejects[0].original == value
