"""Evidence documents: ECS shape, deterministic ids, and the per-incident hash chain."""

from __future__ import annotations

import copy
import itertools
import json

import pytest

from mlwarden.responders.evidence.chain import (
    GENESIS_HASH,
    canonical_json,
    content_hash,
    json_safe,
)
from mlwarden.responders.evidence.documents import (
    GENESIS,
    ChainLink,
    SnapshotScope,
    chain_documents,
    document_id,
    format_timestamp,
    snapshot_bodies,
)
from mlwarden.responders.evidence.verify import ProblemKind, verify_documents
from tests.unit.test_evidence_support import make_alert


def scope(key: str = "inc/pb/snap") -> SnapshotScope:
    return SnapshotScope("inc", key, "extraction", make_alert(), note="seen in canary")


def test_an_alert_becomes_an_ecs_alert_document_with_the_incident_link() -> None:
    bodies = snapshot_bodies([make_alert()], scope(), max_records=0, client_id="acct-1", model=None)
    [alert] = bodies
    assert alert["@timestamp"] == "2026-11-23T14:01:00.000Z"
    assert alert["event"]["kind"] == "alert"
    assert alert["event"]["id"] == "alert-1"
    assert alert["rule"] == {
        "name": "prada",
        "id": "prada",
        "category": "extraction",
        "ruleset": "extraction",
    }
    assert alert["labels"] == {"team": "fraud"}
    assert alert["observer"]["vendor"] == "mlwarden"
    assert alert["client"] == {"id": "acct-1"}
    assert alert["mlwarden"]["incident"] == {"id": "inc"}
    assert alert["mlwarden"]["model"] == {"id": "fraud-scorer", "version": "3"}
    assert alert["mlwarden"]["alert"]["score"] == 5.5
    assert alert["mlwarden"]["alert"]["evidence"]["shapiro_w"] == 0.81
    assert "seen in canary" in alert["message"]


def test_queries_carry_the_raw_record_and_the_alerts_rule() -> None:
    bodies = snapshot_bodies([make_alert()], scope(), max_records=3, client_id="acct-1", model=None)
    queries = bodies[1:]
    assert [q["event"]["kind"] for q in queries] == ["event"] * 3
    assert [q["event"]["id"] for q in queries] == [f"acct-1-evt-{i:04d}" for i in (12, 13, 14)]
    query = queries[0]
    assert query["rule"]["name"] == "prada"
    assert query["mlwarden"]["query"]["prediction"] == "0"
    assert query["mlwarden"]["query"]["raw"]["features"] == [6.0, 1.0, 2.25]
    assert query["mlwarden"]["query"]["attributes"] == {
        "route": "/v1/score",
        "source_ip": "10.0.0.7",
    }


def test_queries_are_deduplicated_across_alerts_filtered_to_the_subject_and_capped() -> None:
    first, second = make_alert(1), make_alert(2)  # records 5..14 and 10..19 overlap
    other = make_alert(3, client="acct-2")
    bodies = snapshot_bodies(
        [second, first, other, first], scope(), max_records=100, client_id="acct-1", model=None
    )
    kinds = [b["event"]["kind"] for b in bodies]
    assert kinds.count("alert") == 3
    ids = [b["event"]["id"] for b in bodies if b["event"]["kind"] == "event"]
    assert ids == [f"acct-1-evt-{i:04d}" for i in range(5, 20)]
    assert [b["event"]["id"] for b in bodies[:3]] == ["alert-1", "alert-2", "alert-3"]


def test_model_subject_keeps_every_client_of_that_model() -> None:
    alert = make_alert(client=None)
    bodies = snapshot_bodies(
        [alert], scope(), max_records=100, client_id=None, model=("fraud-scorer", "3")
    )
    assert len(bodies) == 11
    assert "client" not in bodies[0]


def test_chain_links_each_document_to_the_one_before() -> None:
    bodies = snapshot_bodies([make_alert()], scope(), max_records=4, client_id="acct-1", model=None)
    documents = chain_documents(bodies, scope(), GENESIS)
    assert [d.seq for d in documents] == [1, 2, 3, 4, 5]
    assert documents[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(documents):
        assert after.prev_hash == before.hash
    assert all(content_hash(d.source) == d.hash for d in documents)
    more = chain_documents(bodies[:1], scope("inc/pb/other"), documents[-1].link)
    assert more[0].seq == 6
    assert more[0].prev_hash == documents[-1].hash


def test_ids_depend_on_key_and_position_only() -> None:
    bodies = snapshot_bodies([make_alert()], scope(), max_records=2, client_id="acct-1", model=None)
    once = chain_documents(bodies, scope(), GENESIS)
    again = chain_documents(bodies, scope(), ChainLink(7, "f" * 64))
    assert [d.id for d in once] == [d.id for d in again]
    assert once[0].id == document_id("inc/pb/snap", 0)
    assert once[0].id != chain_documents(bodies, scope("other"), GENESIS)[0].id
    assert len({d.id for d in once}) == len(once)


def test_canonical_json_survives_a_store_that_prints_integral_floats_as_integers() -> None:
    body = {"b": 1.0, "a": [2.5, 3.0, {"z": -0.0}], "n": "x"}
    assert canonical_json(body) == '{"a":[2.5,3,{"z":0}],"b":1,"n":"x"}'
    reserialised = json.loads(json.dumps(body).replace("1.0", "1").replace("3.0", "3"))
    assert canonical_json(reserialised) == canonical_json(body)


def test_non_finite_numbers_become_text_before_hashing() -> None:
    assert json_safe({"w": float("nan"), "v": [float("inf"), -float("inf")]}) == {
        "w": "NaN",
        "v": ["Infinity", "-Infinity"],
    }
    with pytest.raises(ValueError, match="finite"):
        canonical_json({"w": float("nan")})
    alert = make_alert(evidence={"p": float("nan")})
    [body] = snapshot_bodies([alert], scope(), max_records=0, client_id="acct-1", model=None)
    assert body["mlwarden"]["alert"]["evidence"] == {"p": "NaN"}


def test_timestamps_have_millisecond_precision() -> None:
    assert format_timestamp(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"
    assert format_timestamp(1_800_000_000.9996) == "2027-01-15T08:00:01.000Z"


def chained(n: int = 4) -> list:  # type: ignore[type-arg]
    bodies = snapshot_bodies(
        [make_alert()], scope(), max_records=n - 1, client_id="acct-1", model=None
    )
    return chain_documents(bodies, scope(), GENESIS)


def test_verify_accepts_an_intact_chain_and_its_recorded_tail() -> None:
    documents = chained()
    report = verify_documents("inc", documents, expected_tail=documents[-1].link)
    assert report.ok, report.problems
    assert report.documents == 4


def test_verify_names_the_altered_document() -> None:
    documents = chained()
    tampered = copy.deepcopy(documents[2].source)
    tampered["mlwarden"]["query"]["prediction"] = "fraud"
    documents[2] = type(documents[2])(documents[2].id, tampered)
    report = verify_documents("inc", documents)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.ALTERED, 3)]


def test_verify_names_a_dropped_document_by_gap_and_broken_link() -> None:
    documents = chained()
    del documents[1]
    report = verify_documents("inc", documents)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.GAP, 3)]
    assert "seq 2 missing" in str(report.problems[0])


def test_verify_reports_a_link_broken_by_recomputed_hashes() -> None:
    documents = chained()
    forged = copy.deepcopy(documents[1].source)
    forged["message"] = "nothing to see"
    forged["mlwarden"]["chain"]["hash"] = content_hash(forged)  # forger rehashes one document
    documents[1] = type(documents[1])(documents[1].id, forged)
    report = verify_documents("inc", documents)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.BROKEN_LINK, 3)]


def test_verify_reports_a_removed_tail_only_against_the_recorded_tail() -> None:
    documents = chained()
    assert verify_documents("inc", documents[:-1]).ok
    report = verify_documents("inc", documents[:-1], expected_tail=documents[-1].link)
    assert [p.kind for p in report.problems] == [ProblemKind.TRUNCATED]


def test_verify_reports_forks_and_ignores_repeated_ids() -> None:
    documents = chained()
    fork = chain_documents(
        [documents[1].source], scope("inc/pb/fork"), documents[0].link
    )  # a second document at seq 2
    report = verify_documents("inc", [*documents, documents[0], *fork])
    assert [p.kind for p in report.problems] == [ProblemKind.DUPLICATE_SEQ]
    assert verify_documents("inc", []).problems[0].kind is ProblemKind.EMPTY
