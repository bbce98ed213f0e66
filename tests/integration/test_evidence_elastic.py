"""Evidence on a real Elasticsearch-compatible server (osmem): templates, bulk, search parity
with SQLite, spooling while the server is away, and verify against tampering."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mlwarden.responders.evidence.backends import open_store
from mlwarden.responders.evidence.chain import content_hash
from mlwarden.responders.evidence.elastic_store import ElasticEvidenceStore, elasticsearch_client
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.install import install_elasticsearch
from mlwarden.responders.evidence.query import parse_query
from mlwarden.responders.evidence.responder import SnapshotEvidenceResponder
from mlwarden.responders.evidence.settings import EvidenceSettings
from mlwarden.responders.evidence.spooling import SpoolingStore
from mlwarden.responders.evidence.sqlite_store import SqliteEvidenceStore
from mlwarden.responders.evidence.templates import MAPPINGS_COMPONENT
from mlwarden.responders.evidence.verify import ProblemKind, verify_incident
from mlwarden.responders.params import EvidenceSubject, SnapshotEvidenceParams
from tests.integration.osmem_server import OsmemProcess, evidence_settings, osmem  # noqa: F401
from tests.unit.test_evidence_support import make_alert, make_context

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(osmem: OsmemProcess, tmp_path: Path) -> EvidenceSettings:  # noqa: F811
    return evidence_settings(osmem.url, tmp_path / "spool")


@pytest.fixture
async def elastic(settings: EvidenceSettings) -> AsyncIterator[ElasticEvidenceStore]:
    store = ElasticEvidenceStore.from_settings(settings)
    await install_elasticsearch(store.client, settings)
    yield store
    await store.close()


async def snapshot_two_incidents(store: object) -> None:
    responder = SnapshotEvidenceResponder(store)  # type: ignore[arg-type]
    await responder(
        SnapshotEvidenceParams(max_records=10), make_context(make_alert(1), make_alert(2))
    )
    other = make_alert(1, client="acct-2", fingerprint="fp-2", detector="blacklight")
    await responder(
        SnapshotEvidenceParams(max_records=10), make_context(other, key="k2", incident="fp-2")
    )
    drift = make_alert(
        4, client=None, fingerprint="fp-3", detector="feature_drift", labels={"team": "ml"}
    )
    await responder(
        SnapshotEvidenceParams(subject=EvidenceSubject.MODEL, max_records=3),
        make_context(drift, key="k3", incident="fp-3"),
    )


QUERIES = [
    "*",
    "client.id:acct-1 AND rule.name:prada*",
    "event.kind:alert",
    "event.kind:alert AND NOT rule.name:prada",
    "NOT client.id:acct-1",
    "_exists_:client.id",
    "mlwarden.alert.score:>5.5",
    "mlwarden.alert.score:[5.5 TO 6.5}",
    "mlwarden.chain.seq:[3 TO 5]",
    "rule.name:(prada OR blacklight) AND event.kind:event",
    "rule.category:extr?ction",
    "extraction",
    '"model extraction"',
    "scrap* OR synth*",
    "labels.team:ml",
    "mlwarden.query.attributes.source_ip:10.0.0.*",
    r"mlwarden.query.attributes.route:\/v1\/score",
    "mlwarden.query.prediction:1 AND client.id:acct-2",
    "@timestamp:[2026-11-23T13:50:10Z TO 2026-11-23T13:50:16Z}",
    "@timestamp:>=2026-11-23T14:00:00Z",
    "mlwarden.model.version:3 -event.kind:event",
]


async def test_the_same_query_strings_find_the_same_documents_in_both_stores(
    elastic: ElasticEvidenceStore, tmp_path: Path
) -> None:
    sqlite = SqliteEvidenceStore(tmp_path / "evidence.sqlite3")
    try:
        await snapshot_two_incidents(elastic)
        await snapshot_two_incidents(sqlite)
        for text in QUERIES:
            query = parse_query(text)
            in_es = [d.id for d in await elastic.search(query, limit=500)]
            in_sqlite = [d.id for d in await sqlite.search(query, limit=500)]
            assert in_es == in_sqlite, text  # same hits, same order (newest first)
            assert in_es or text.startswith("scrap"), f"{text} should find something"
    finally:
        await sqlite.close()


async def test_templates_are_applied_to_the_evidence_index(
    elastic: ElasticEvidenceStore, settings: EvidenceSettings
) -> None:
    await snapshot_two_incidents(elastic)
    client = elastic.client
    component = await client.cluster.get_component_template(name=MAPPINGS_COMPONENT)
    assert component["component_templates"][0]["name"] == MAPPINGS_COMPONENT
    mapping = (await client.indices.get_mapping(index=settings.data_stream))[settings.data_stream][
        "mappings"
    ]["properties"]
    assert mapping["client"]["properties"]["id"]["type"] == "keyword"
    assert mapping["mlwarden"]["properties"]["chain"]["properties"]["seq"]["type"] == "long"
    assert mapping["mlwarden"]["properties"]["query"]["properties"]["raw"]["enabled"] is False


async def test_ilm_and_data_streams_are_refused_by_osmem_with_a_clear_error(
    settings: EvidenceSettings,
) -> None:
    client = elasticsearch_client(settings)
    try:
        with pytest.raises(EvidenceStoreError, match="INSTALL_ILM=false"):
            await install_elasticsearch(client, settings.model_copy(update={"install_ilm": True}))
        stream = settings.model_copy(update={"use_data_stream": True})
        await install_elasticsearch(client, stream)  # osmem stores the template…
        store = ElasticEvidenceStore(client, stream.data_stream)
        with pytest.raises(EvidenceStoreError, match="data streams are not supported"):
            await snapshot_two_incidents(store)  # …but cannot create the data stream
    finally:
        await client.close()


async def test_bulk_writes_are_idempotent(elastic: ElasticEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(elastic)
    ctx = make_context(make_alert(1))
    first = await responder(SnapshotEvidenceParams(max_records=10), ctx)
    assert first["written"] == 11
    documents = await elastic.incident_documents("fp-incident-1")
    again = await elastic.write(documents)
    assert (again.written, again.existing) == (0, 11)
    replay = await responder(SnapshotEvidenceParams(max_records=10), ctx)
    assert (replay["written"], replay["already_stored"]) == (0, 11)
    assert len(await elastic.incident_documents("fp-incident-1")) == 11


async def test_evidence_spools_while_elasticsearch_is_away_and_is_flushed_in_order(
    tmp_path: Path,
) -> None:
    server = OsmemProcess().start()
    settings = evidence_settings(server.url, tmp_path / "spool")
    store = open_store(settings)
    assert isinstance(store, SpoolingStore)
    responder = SnapshotEvidenceResponder(store)
    try:
        await install_elasticsearch(store.inner.client, settings)
        before = await responder(SnapshotEvidenceParams(max_records=3), make_context(make_alert(1)))
        assert (before["spooled"], before["last_seq"]) == (0, 4)
        stored = await store.incident_documents("fp-incident-1")  # osmem forgets on restart

        server.stop()
        away = await responder(
            SnapshotEvidenceParams(max_records=3),
            make_context(make_alert(1), make_alert(2), key="fp-incident-1/x/again"),
        )
        assert away["spooled"] == away["documents"] == 5
        assert away["first_seq"] == 5  # the chain continues from the tail it remembered
        other = await responder(
            SnapshotEvidenceParams(max_records=2),
            make_context(make_alert(3, fingerprint="fp-9"), key="k9", incident="fp-9"),
        )
        assert other["spooled"] == 3
        with pytest.raises(EvidenceStoreError):
            await store.flush()
        assert await store.pending() == 8

        server.start()
        await install_elasticsearch(store.inner.client, settings)
        await store.inner.write(stored)  # what the real server would still hold
        assert await store.flush() == 8
        assert await store.pending() == 0
        assert await store.flush() == 0
        report = await verify_incident(store, "fp-incident-1")
        assert report.ok, report.problems
        assert report.documents == 9
        assert (await verify_incident(store, "fp-9")).documents == 3
    finally:
        await store.close()
        server.stop()


async def test_a_resent_spool_duplicates_nothing(
    elastic: ElasticEvidenceStore, tmp_path: Path
) -> None:
    spooling = SpoolingStore(elastic, tmp_path / "spool")
    responder = SnapshotEvidenceResponder(elastic)
    await responder(SnapshotEvidenceParams(max_records=5), make_context(make_alert(1)))
    documents = await elastic.incident_documents("fp-incident-1")
    spooling.spool.append(documents)  # a flush that crashed before truncating the spool
    assert await spooling.flush() == 6
    assert len(await elastic.incident_documents("fp-incident-1")) == 6


async def test_verify_detects_an_altered_and_a_deleted_document(
    elastic: ElasticEvidenceStore,
) -> None:
    responder = SnapshotEvidenceResponder(elastic)
    result = await responder(SnapshotEvidenceParams(max_records=6), make_context(make_alert(1)))
    assert (await verify_incident(elastic, "fp-incident-1")).ok
    documents = await elastic.incident_documents("fp-incident-1")
    altered = copy.deepcopy(documents[2].source)
    altered["client"]["id"] = "someone-else"
    await elastic.client.index(
        index=elastic.target, id=documents[2].id, document=altered, refresh=True
    )
    await elastic.client.delete(index=elastic.target, id=documents[4].id, refresh=True)
    report = await verify_incident(elastic, "fp-incident-1")
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.ALTERED, 3),
        (ProblemKind.GAP, 6),
    ]
    assert content_hash(altered) != documents[2].hash
    assert result["last_seq"] == 7


def test_the_cli_sets_up_searches_and_verifies_on_elasticsearch(
    osmem: OsmemProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from mlwarden.streams.cli_evidence import evidence_app

    settings = evidence_settings(osmem.url, tmp_path / "spool")
    env = {
        "MLWARDEN_EVIDENCE__BACKEND": "elasticsearch",
        "MLWARDEN_EVIDENCE__ELASTICSEARCH_URL": osmem.url,
        "MLWARDEN_EVIDENCE__PLAIN_JSON_MEDIA_TYPE": "true",
        "MLWARDEN_EVIDENCE__USE_DATA_STREAM": "false",
        "MLWARDEN_EVIDENCE__INSTALL_ILM": "false",
        "MLWARDEN_EVIDENCE__DATA_STREAM": settings.data_stream,
        "MLWARDEN_EVIDENCE__SPOOL_DIR": str(settings.spool_dir),
        "MLWARDEN_EVIDENCE__API_KEY": "c2VjcmV0",
    }
    runner = CliRunner()
    result = runner.invoke(evidence_app, ["setup"], env=env)
    assert result.exit_code == 0, result.output
    assert "index template mlwarden-evidence (index" in result.stdout
    assert "c2VjcmV0" not in result.output

    async def fill() -> None:
        store = ElasticEvidenceStore.from_settings(settings)
        await snapshot_two_incidents(store)
        await store.close()

    asyncio.run(fill())
    result = runner.invoke(
        evidence_app, ["search", "client.id:acct-1 AND rule.name:prada*", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 12  # 2 alerts + 10 queries
    result = runner.invoke(evidence_app, ["verify", "fp-2"], env=env)
    assert result.exit_code == 0, result.output
    assert "intact: 11 documents" in result.stdout
    away = {**env, "MLWARDEN_EVIDENCE__ELASTICSEARCH_URL": "http://127.0.0.1:9"}
    result = runner.invoke(evidence_app, ["search", "*"], env=away)
    assert result.exit_code == 2
    assert "unreachable" in result.output
