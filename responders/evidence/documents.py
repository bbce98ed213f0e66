"""Evidence documents: the incident's alerts and queries as ECS documents, chained.

One document per alert (`event.kind: alert`) and one per raw telemetry record
(`event.kind: event`), in Elastic Common Schema fields where ECS has one (`@timestamp`,
`event.*`, `rule.*`, `labels`, `observer`, `client.id`, `message`) and under `mlwarden.*`
otherwise. `mlwarden.incident.id` is the field everything links to (the Slack page's Kibana
link, the saved searches). Queries carry the alert's `rule.*` too, so
`client.id:abc AND rule.name:prada*` finds an incident's queries as well as its alerts.

Building is pure: the same alerts and records give the same documents (no clock, no random), so
a replayed snapshot produces the same ids and content. Ids derive from the step's idempotency
key and the document's position in its snapshot, so a re-sent document is recognised as
already stored instead of becoming a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from mlwarden.responders.evidence.chain import GENESIS_HASH, content_hash, json_safe
from mlwarden.schemas.alert import Alert

DATASET: Final = "mlwarden.evidence"
MAX_SNAPSHOT_DOCUMENTS: Final = 100_000
"""Documents per snapshot the id scheme allows (5-digit positions)."""


def _package_version() -> str:
    try:
        return version("mlwarden")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


OBSERVER: Final = {
    "vendor": "mlwarden",
    "product": "mlwarden",
    "type": "ml-inference-monitor",
    "version": _package_version(),
}


@dataclass(frozen=True)
class ChainLink:
    """Where an incident's chain ends: the last document's seq and hash."""

    seq: int
    hash: str


GENESIS: Final = ChainLink(0, GENESIS_HASH)


@dataclass(frozen=True)
class EvidenceDocument:
    """A stored evidence document: its id and its source (the JSON that is hashed)."""

    id: str
    source: dict[str, Any]

    @property
    def _mlwarden(self) -> dict[str, Any]:
        value: dict[str, Any] = self.source.get("mlwarden", {})
        return value

    @property
    def incident_id(self) -> str:
        return str(self._mlwarden.get("incident", {}).get("id", ""))

    @property
    def seq(self) -> int:
        return int(self._mlwarden.get("chain", {}).get("seq", 0))

    @property
    def hash(self) -> str:
        return str(self._mlwarden.get("chain", {}).get("hash", ""))

    @property
    def prev_hash(self) -> str:
        return str(self._mlwarden.get("chain", {}).get("prev_hash", ""))

    @property
    def snapshot_key(self) -> str:
        return str(self._mlwarden.get("snapshot", {}).get("key", ""))

    @property
    def snapshot_index(self) -> int:
        return int(self._mlwarden.get("snapshot", {}).get("index", -1))

    @property
    def timestamp(self) -> datetime:
        return parse_timestamp(str(self.source["@timestamp"]))

    @property
    def link(self) -> ChainLink:
        return ChainLink(self.seq, self.hash)


def format_timestamp(moment: datetime | float) -> str:
    """RFC 3339 UTC with millisecond precision: what Elasticsearch's `date` type keeps, so both
    stores compare the same instants."""
    if isinstance(moment, datetime):
        moment = moment.timestamp()
    millis = round(moment * 1000)
    whole = datetime.fromtimestamp(millis // 1000, tz=UTC)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def document_id(idempotency_key: str, index: int) -> str:
    """`<sha256(key)[:32]>-<index>`: stable across replays of the same step."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"{digest}-{index:05d}"


@dataclass(frozen=True)
class SnapshotScope:
    """What every document of one snapshot shares."""

    incident_id: str
    idempotency_key: str
    playbook: str
    trigger: Alert
    """The alert the snapshot was taken for: its rule and labels go on every query document."""
    note: str | None = None


def alert_body(alert: Alert, scope: SnapshotScope) -> dict[str, Any]:
    """An alert as an ECS document body (no chain or snapshot fields yet)."""
    subject = f" client {alert.client_id}" if alert.client_id else ""
    note = f" — note: {scope.note}" if scope.note else ""
    body = _common(scope, alert.client_id, alert.model_id, alert.model_version)
    body["@timestamp"] = format_timestamp(alert.detected_at)
    body["message"] = (
        f"{alert.severity.value} {alert.kind.value} alert from {alert.detector} on model "
        f"{alert.model_id} v{alert.model_version}{subject}: {alert.summary}{note}"
    )
    body["event"] |= {
        "kind": "alert",
        "id": alert.alert_id,
        "created": format_timestamp(alert.emitted_at),
    }
    body["rule"] = _rule(alert, scope)
    body["labels"] = dict(alert.labels)
    body["mlwarden"]["alert"] = {
        "id": alert.alert_id,
        "fingerprint": alert.fingerprint,
        "severity": alert.severity.value,
        "score": json_safe(float(alert.score)),
        "threshold": json_safe(float(alert.threshold)),
        "summary": alert.summary,
        "evidence": json_safe(alert.model_dump(mode="python")["evidence"]),
    }
    if scope.note:
        body["mlwarden"]["note"] = scope.note
    return body


def query_body(record: dict[str, Any], scope: SnapshotScope) -> dict[str, Any]:
    """A raw telemetry record (as the ring buffer keeps it) as an ECS document body."""
    trigger = scope.trigger
    client_id = _text(record.get("client_id"))
    model_id = _text(record.get("model_id")) or trigger.model_id
    model_version = _text(record.get("model_version")) or trigger.model_version
    prediction = record.get("prediction")
    body = _common(scope, client_id, model_id, model_version)
    body["@timestamp"] = format_timestamp(_epoch(record.get("timestamp")))
    body["message"] = (
        f"query {record.get('event_id')} by client {client_id} to model {model_id} "
        f"v{model_version}: prediction {prediction}; evidence of the {trigger.kind.value} "
        f"alert from {trigger.detector}"
    )
    body["event"] |= {"kind": "event", "id": _text(record.get("event_id"))}
    body["rule"] = _rule(trigger, scope)
    body["labels"] = dict(trigger.labels)
    query: dict[str, Any] = {"prediction": None if prediction is None else str(prediction)}
    for name in ("input_hash", "latency_ms"):
        if record.get(name) is not None:
            query[name] = json_safe(record[name])
    attributes = record.get("attributes")
    if isinstance(attributes, dict) and attributes:
        query["attributes"] = {str(k): _text(v) for k, v in attributes.items()}
    raw = {name: record[name] for name in ("features", "probabilities") if name in record}
    if raw:
        query["raw"] = json_safe(raw)
    body["mlwarden"]["query"] = query
    return body


def _common(
    scope: SnapshotScope, client_id: str | None, model_id: str, model_version: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": {"dataset": DATASET, "module": "mlwarden", "category": ["intrusion_detection"]},
        "observer": dict(OBSERVER),
        "mlwarden": {
            "incident": {"id": scope.incident_id},
            "playbook": scope.playbook,
            "model": {"id": model_id, "version": model_version},
        },
    }
    if client_id:
        body["client"] = {"id": client_id}
    return body


def _rule(alert: Alert, scope: SnapshotScope) -> dict[str, Any]:
    return {
        "name": alert.detector,
        "id": alert.detector,
        "category": alert.kind.value,
        "ruleset": scope.playbook,
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _epoch(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_timestamp(value).timestamp()
    raise ValueError(f"telemetry record without a usable timestamp: {value!r}")


def chain_documents(
    bodies: Sequence[dict[str, Any]],
    scope: SnapshotScope,
    start: ChainLink,
    *,
    first_index: int = 0,
    size: int | None = None,
) -> list[EvidenceDocument]:
    """Give `bodies` their snapshot position, seq, prev_hash and hash, continuing `start`.

    `first_index` is the position of `bodies[0]` in its snapshot and `size` the snapshot's
    total; both are recorded so a replay can tell a complete snapshot from a partial one.
    """
    total = len(bodies) + first_index if size is None else size
    if total > MAX_SNAPSHOT_DOCUMENTS:
        raise ValueError(f"a snapshot holds at most {MAX_SNAPSHOT_DOCUMENTS} documents")
    documents: list[EvidenceDocument] = []
    link = start
    for offset, body in enumerate(bodies):
        index = first_index + offset
        source = {**body, "mlwarden": dict(body["mlwarden"])}
        source["mlwarden"]["snapshot"] = {
            "key": scope.idempotency_key,
            "index": index,
            "size": total,
        }
        source["mlwarden"]["chain"] = {"seq": link.seq + 1, "prev_hash": link.hash}
        digest = content_hash(source)
        source["mlwarden"]["chain"]["hash"] = digest
        documents.append(EvidenceDocument(document_id(scope.idempotency_key, index), source))
        link = ChainLink(link.seq + 1, digest)
    return documents


def snapshot_bodies(
    alerts: Iterable[Alert],
    scope: SnapshotScope,
    *,
    max_records: int,
    client_id: str | None,
    model: tuple[str, str] | None,
) -> list[dict[str, Any]]:
    """The bodies of one snapshot: alerts oldest first, then the subject's latest queries.

    Queries come from every alert's `recent_telemetry`, deduplicated by `event_id`, filtered to
    the subject (`client_id`, or `model` = (id, version)), and capped at the `max_records`
    newest, in time order.
    """
    unique_alerts: dict[str, Alert] = {}
    for alert in alerts:  # a copy that kept its telemetry beats one stored without it
        if alert.recent_telemetry or alert.alert_id not in unique_alerts:
            unique_alerts[alert.alert_id] = alert
    ordered = sorted(unique_alerts.values(), key=lambda a: (a.detected_at, a.alert_id))
    records: dict[str, dict[str, Any]] = {}
    for alert in ordered:
        for record in alert.recent_telemetry:
            event_id = record.get("event_id")
            if not isinstance(event_id, str) or event_id in records:
                continue
            if client_id is not None and record.get("client_id") != client_id:
                continue
            if (
                model is not None
                and (
                    record.get("model_id"),
                    record.get("model_version"),
                )
                != model
            ):
                continue
            records[event_id] = record
    newest = sorted(records.values(), key=lambda r: (_epoch(r.get("timestamp")), r["event_id"]))
    kept = newest[len(newest) - max_records :] if max_records > 0 else []
    return [alert_body(a, scope) for a in ordered] + [query_body(r, scope) for r in kept]
