"""What the detectors' unit tests share: running a detector over records in batches, alerts in
comparable form, a crowd of one-off clients, the checks every incident alert must pass, and
the replay / batch-split / state round-trip check.

The stream builders (`behaviour_streams`, `drift_streams`, `feature_streams`,
`extraction_streams`) make telemetry; this module only runs detectors over it and judges what
they raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0


def batches(records: Sequence[TelemetryRecord], size: int) -> list[TelemetryBatch]:
    return [TelemetryBatch(records[i : i + size]) for i in range(0, len(records), size)]


def run(detector: Detector, records: Sequence[TelemetryRecord], size: int = 500) -> list[Alert]:
    """`detector`'s alerts over `records`, fed `size` records a batch."""
    return [alert for batch in batches(records, size) for alert in detector.update(batch)]


def dumped(alerts: list[Alert]) -> list[str]:
    """Alerts as JSON text: equal lists mean equal alerts, field for field, in order."""
    return [alert.model_dump_json() for alert in alerts]


def simple_records(
    count: int,
    *,
    client: Callable[[int], str] = lambda i: f"one-off-{i}",
    model: str = "m",
    prediction: Callable[[int], int | str] = lambda i: 0,
    **fields: Callable[[int], Any],
) -> list[TelemetryRecord]:
    """`count` records a second apart from T0, by default each from a client of its own (what
    a detector must not keep state for once the clients are idle), with only the required
    fields unless `fields` gives more. Every callable gets the record's index, in order."""
    return [
        TelemetryRecord(
            event_id=f"e{i}",
            timestamp=T0 + i,
            model_id=model,
            model_version="1",
            client_id=client(i),
            prediction=prediction(i),
            **{name: value(i) for name, value in fields.items()},
        )
        for i in range(count)
    ]


def flagged_attackers(
    alerts: list[Alert],
    clients: dict[str, list[TelemetryRecord]],
    prefixes: tuple[str, ...],
    apart_from: str,
) -> list[tuple[Alert, list[TelemetryRecord]]]:
    """(alert, the client's queries) for every attacker of a scenario (the clients named with
    one of `prefixes`), after checking that the alerts name the attackers and no one else
    (no benign client, no special client), `apart_from` one client the caller checks alone."""
    by_client = {a.client_id: a for a in alerts if a.client_id != apart_from}
    attackers = {c: q for c, q in clients.items() if c.startswith(prefixes)}
    assert set(by_client) == set(attackers)
    return [(by_client[client], queries) for client, queries in attackers.items()]


def assert_opened_by(alert: Alert, detector: str, queries: Sequence[TelemetryRecord]) -> None:
    """`alert` is a per-client incident alert opened by one of `queries` (one client's): it
    fires at that query's time, is fingerprinted by it, and its samples are that client's."""
    client = alert.client_id
    assert client is not None
    tripping = alert.evidence["opening_event_id"]
    [opening] = [r for r in queries if r.event_id == tripping]
    assert opening.timestamp == pytest.approx(alert.detected_at.timestamp(), abs=1e-6)
    assert alert.fingerprint == incident_fingerprint(detector, opening.model_id, client, tripping)
    assert set(alert.evidence["sample_event_ids"]) <= {r.event_id for r in queries}


def assert_two_incidents(alerts: list[Alert], client: str, second_after: float) -> None:
    """`client` had two incidents, the second one after `second_after` (a quiet spell ended
    the first): two alerts, two fingerprints."""
    mine = [a for a in alerts if a.client_id == client]
    assert len(mine) == 2
    assert mine[0].fingerprint != mine[1].fingerprint
    assert mine[1].detected_at.timestamp() > second_after


def assert_conformant(
    make: Callable[[], Detector], records: list[TelemetryRecord], sizes: Sequence[int] = (1, 777)
) -> None:
    """Same alerts for any batch split and across a JSON state round trip mid-stream.

    The caller picks a stream on which the detector fires, so the checks are not vacuous.
    """
    expected = dumped(run(make(), records, size=len(records)))
    assert expected, "the stream must make the detector fire"
    for size in sizes:
        assert dumped(run(make(), records, size)) == expected
    for cut in (len(records) // 3, 2 * len(records) // 3):
        first = make()
        head = dumped(run(first, records[:cut], 1_000))
        saved = json.dumps(first.state_dict(), allow_nan=False)
        resumed = make()
        resumed.load_state_dict(json.loads(saved))
        assert json.dumps(resumed.state_dict(), allow_nan=False) == saved  # restored exactly
        tail = dumped(run(resumed, records[cut:], 1_000))
        assert head + tail == expected
