"""`mlwarden evidence …`: install templates, search, verify and flush incident evidence.

Settings come from options or `MLWARDEN_EVIDENCE__*` variables (until they are read from the
one Settings object, where they nest as `evidence`). Exit codes: 0 done, 1 verify found
problems, 2 the request could not be carried out (bad query, store unreachable).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape

from mlwarden.responders.evidence.backends import open_store
from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument
from mlwarden.responders.evidence.elastic_store import elasticsearch_client
from mlwarden.responders.evidence.errors import EvidenceQueryError, EvidenceStoreError
from mlwarden.responders.evidence.install import import_kibana_objects, install_elasticsearch
from mlwarden.responders.evidence.query import parse_query
from mlwarden.responders.evidence.settings import EvidenceBackend, EvidenceSettings
from mlwarden.responders.evidence.spooling import SpoolingStore
from mlwarden.responders.evidence.verify import verify_incident
from mlwarden.schemas.duration import EXAMPLES, parse_duration

T = TypeVar("T")
_ENV = "MLWARDEN_EVIDENCE__"

evidence_app = typer.Typer(
    help="Incident evidence: set up Elasticsearch/Kibana, search, verify the hash chain.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


@evidence_app.callback()
def configure(
    context: typer.Context,
    backend: Annotated[
        EvidenceBackend, typer.Option(envvar=_ENV + "BACKEND", help="Where evidence is kept.")
    ] = EvidenceBackend.SQLITE,
    sqlite_path: Annotated[
        Path, typer.Option(envvar=_ENV + "SQLITE_PATH", help="The embedded store's file.")
    ] = Path(".mlwarden/evidence.sqlite3"),
    elasticsearch_url: Annotated[
        str, typer.Option(envvar=_ENV + "ELASTICSEARCH_URL")
    ] = "http://127.0.0.1:9200",
    api_key: Annotated[
        str | None,
        typer.Option(envvar=_ENV + "API_KEY", help="Prefer the variable: options show in ps."),
    ] = None,
    plain_json_media_type: Annotated[
        bool,
        typer.Option(
            envvar=_ENV + "PLAIN_JSON_MEDIA_TYPE",
            help="Plain application/json (OpenSearch-compatible servers only).",
        ),
    ] = False,
    data_stream: Annotated[
        str, typer.Option(envvar=_ENV + "DATA_STREAM")
    ] = "logs-mlwarden.evidence-default",
    use_data_stream: Annotated[bool, typer.Option(envvar=_ENV + "USE_DATA_STREAM")] = True,
    install_ilm: Annotated[bool, typer.Option(envvar=_ENV + "INSTALL_ILM")] = True,
    spool_dir: Annotated[Path, typer.Option(envvar=_ENV + "SPOOL_DIR")] = Path(
        ".mlwarden/evidence-spool"
    ),
    kibana_url: Annotated[str | None, typer.Option(envvar=_ENV + "KIBANA_URL")] = None,
) -> None:
    try:
        context.obj = EvidenceSettings(
            backend=backend,
            sqlite_path=sqlite_path,
            elasticsearch_url=elasticsearch_url,
            api_key=SecretStr(api_key) if api_key else None,
            plain_json_media_type=plain_json_media_type,
            data_stream=data_stream,
            use_data_stream=use_data_stream,
            install_ilm=install_ilm,
            spool_dir=spool_dir,
            kibana_url=kibana_url,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(f"evidence settings: {first['loc']}: {first['msg']}") from None


def _settings(context: typer.Context) -> EvidenceSettings:
    settings = context.obj
    assert isinstance(settings, EvidenceSettings), "the evidence callback sets context.obj"
    return settings


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work())
    except (EvidenceStoreError, EvidenceQueryError) as exc:
        raise _fail(str(exc)) from None


@evidence_app.command()
def setup(context: typer.Context) -> None:
    """Install the index/component templates and ILM policy; import Kibana's saved objects."""
    settings = _settings(context)
    console = Console()
    if settings.backend is EvidenceBackend.SQLITE:
        console.print(f"SQLite evidence needs no setup: {settings.sqlite_path} is created on use.")
        return

    async def work() -> None:
        client = elasticsearch_client(settings)
        try:
            for step in await install_elasticsearch(client, settings):
                console.print(f"installed {escape(step)}")
        finally:
            await client.close()
        if settings.kibana_url:
            count = await import_kibana_objects(settings.kibana_url, settings.api_key)
            console.print(f"imported {count} Kibana saved objects into {settings.kibana_url}")
        else:
            console.print("no Kibana URL configured (MLWARDEN_EVIDENCE__KIBANA_URL): skipped")

    _run(work)


@evidence_app.command()
def search(
    context: typer.Context,
    query: Annotated[str, typer.Argument(help="e.g. 'client.id:abc AND rule.name:prada*'")],
    since: Annotated[
        str | None, typer.Option(help=f"Only documents newer than this ({EXAMPLES}).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document per line.")] = False,
) -> None:
    """Search evidence with Lucene/KQL-style syntax, newest first."""
    settings = _settings(context)
    try:
        parsed = parse_query(query)
        after = None if since is None else datetime.now(UTC) - parse_duration(since)
    except EvidenceQueryError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(f"--since: {exc}") from None

    async def work() -> list[EvidenceDocument]:
        store = open_store(settings, spool=False)
        try:
            return await store.search(parsed, after, limit)
        finally:
            await store.close()

    hits = _run(work)
    console = Console(highlight=False)
    for hit in hits:
        if as_json:
            typer.echo(json.dumps({"_id": hit.id, **hit.source}, ensure_ascii=False))
        else:
            console.print(
                f"{hit.source['@timestamp']}  {hit.source['event']['kind']:<5}  "
                f"{escape(hit.incident_id)}#{hit.seq}  {escape(str(hit.source.get('message')))}"
            )
    if not as_json:
        Console(stderr=True).print(f"{len(hits)} document(s)")


def _tail(text: str | None) -> ChainLink | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise _fail("--tail takes SEQ:HASH from the step result (last_seq:last_hash)")
    return ChainLink(int(seq), digest)


@evidence_app.command()
def verify(
    context: typer.Context,
    incident: Annotated[str, typer.Argument(help="The incident id (mlwarden.incident.id).")],
    tail: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH the snapshot step recorded, to detect a removed tail."),
    ] = None,
) -> None:
    """Recompute the incident's hash chain: exit 0 if intact, 1 with every problem listed."""
    settings = _settings(context)
    expected = _tail(tail)

    async def work() -> int:
        store = open_store(settings, spool=False)
        try:
            report = await verify_incident(store, incident, expected)
        finally:
            await store.close()
        console = Console(highlight=False)
        if report.ok:
            last = report.last
            console.print(
                f"[green]intact[/green]: {report.documents} documents of incident "
                f"{escape(incident)}, chain ends at seq {last.seq if last else 0} "
                f"({last.hash if last else ''})"
            )
            return 0
        console.print(
            f"[red]NOT intact[/red]: incident {escape(incident)}, {report.documents} documents, "
            f"{len(report.problems)} problem(s):"
        )
        for problem in report.problems:
            console.print(f"  {escape(str(problem))}")
        return 1

    raise typer.Exit(_run(work))


@evidence_app.command()
def flush(context: typer.Context) -> None:
    """Deliver evidence spooled while Elasticsearch was away."""
    settings = _settings(context)
    if settings.backend is EvidenceBackend.SQLITE:
        typer.echo("SQLite evidence is never spooled.")
        return

    async def work() -> int:
        store = open_store(settings)
        assert isinstance(store, SpoolingStore)
        try:
            return await store.flush()
        finally:
            await store.close()

    typer.echo(f"delivered {_run(work)} spooled document(s)")
