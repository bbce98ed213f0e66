"""`mlwarden controls`: see, lift and re-sync the rate-limit and block decisions gateways enforce.

Kafka comes from `Settings` (bootstrap, controls topic); Redis from `--redis-url`, which
defaults to `MLWARDEN_RATE_LIMIT__REDIS_URL`. A lift goes to the controls topic first (the
record of truth), then to Redis (what gateways read).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from mlwarden.responders.controls_store import (
    DEFAULT_KEY_PREFIX,
    ApplyOutcome,
    ControlsStore,
    no_retries,
    sync_from_topic,
)
from mlwarden.schemas.control import ControlAction, ControlDecision
from mlwarden.schemas.errors import MlwardenError
from mlwarden.streams.cli_support import load_settings
from mlwarden.streams.settings import Settings

controls_app = typer.Typer(
    help="Rate-limit and block decisions that gateways enforce.", no_args_is_help=True
)
_err = Console(stderr=True)

RedisUrl = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar="MLWARDEN_RATE_LIMIT__REDIS_URL",
        help="Redis holding the decisions gateways read.",
    ),
]
KeyPrefix = Annotated[
    str,
    typer.Option(
        "--key-prefix", envvar="MLWARDEN_RATE_LIMIT__KEY_PREFIX", help="Redis key prefix."
    ),
]
_DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _store(redis_url: str, key_prefix: str) -> ControlsStore:
    client: Redis[Any] = Redis.from_url(
        redis_url, socket_connect_timeout=3, socket_timeout=3, retry=no_retries()
    )
    return ControlsStore(client, key_prefix)


def _redis_failed(store: ControlsStore, exc: BaseException, then: str = "") -> typer.Exit:
    _err.print(
        f"[red]Redis at {store.location} is unreachable[/red] ({type(exc).__name__}: {exc}). "
        f"{then}Check --redis-url / MLWARDEN_RATE_LIMIT__REDIS_URL and that Redis runs."
    )
    return typer.Exit(1)


def _expires_in(decision: ControlDecision, now: datetime) -> str:
    if decision.expires_at is None:
        return "-"
    seconds = max(0, int((decision.expires_at - now).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


@controls_app.command("list")
def list_controls(
    client: Annotated[str | None, typer.Argument(help="Only this client.")] = None,
    redis_url: RedisUrl = _DEFAULT_URL,
    key_prefix: KeyPrefix = DEFAULT_KEY_PREFIX,
) -> None:
    """Show the decisions in force (read from Redis)."""
    store = _store(redis_url, key_prefix)

    async def run() -> list[ControlDecision]:
        try:
            return await store.list(client)
        finally:
            await store.aclose()

    try:
        decisions = asyncio.run(run())
    except (RedisError, OSError) as exc:
        raise _redis_failed(store, exc) from None
    now = datetime.now(UTC)
    table = Table("client", "model", "action", "limit/min", "expires in", "reason", "incident")
    for d in decisions:
        table.add_row(
            d.client_id,
            d.model_id or "(all)",
            d.action.value,
            "-" if d.limit_per_minute is None else str(d.limit_per_minute),
            _expires_in(d, now),
            d.reason,
            d.incident_id or "-",
        )
    Console(width=200).print(table)
    if not decisions:
        _err.print("no decisions in force")


@controls_app.command()
def lift(
    client: Annotated[str, typer.Argument(help="The client id to lift.")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Lift only the decision on this model (default: all)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded on the lift.")] = "lifted by hand",
    redis_url: RedisUrl = _DEFAULT_URL,
    key_prefix: KeyPrefix = DEFAULT_KEY_PREFIX,
) -> None:
    """End a client's throttle or block now: publish a lift, then delete it from Redis.

    Without --model it lifts the client's decision on all models and every model-scoped one
    Redis knows of.
    """
    settings = load_settings()
    store = _store(redis_url, key_prefix)
    try:
        lifted = asyncio.run(
            _lift(settings, store, client, model, reason),
        )
    except (RedisError, OSError) as exc:
        raise _redis_failed(
            store,
            exc,
            "The lift is on the controls topic, but gateways keep enforcing the old decision "
            "until it expires or Redis gets it: run `mlwarden controls sync` once Redis is "
            "back. ",
        ) from None
    except MlwardenError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    for scope in lifted:
        print(f"lifted {client} on {scope}")


async def _lift(
    settings: Settings, store: ControlsStore, client: str, model: str | None, reason: str
) -> list[str]:
    try:
        models: list[str | None] = [model]
        if model is None:
            try:
                models += [d.model_id for d in await store.list(client) if d.model_id]
            except (RedisError, OSError):
                _err.print("Redis unreachable: lifting the all-models decision only")
        now = datetime.now(UTC)
        lifts = [
            ControlDecision(
                client_id=client,
                action=ControlAction.LIFT,
                model_id=m,
                decided_at=now,
                reason=reason,
            )
            for m in dict.fromkeys(models)
        ]
        await _publish(settings, lifts)
        for decision in lifts:
            await store.apply(decision, now=now)
        return [d.model_id or "all models" for d in lifts]
    finally:
        await store.aclose()


async def _publish(settings: Settings, decisions: list[ControlDecision]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap.split(","),
        acks="all",
        request_timeout_ms=10_000,
    )
    try:
        await producer.start()
        for decision in decisions:
            await producer.send_and_wait(
                settings.kafka.topics.controls,
                key=decision.key.encode(),
                value=decision.model_dump_json().encode(),
            )
    except Exception as exc:  # the broker client fails in many ways; all end the command
        raise MlwardenError(
            f"could not publish to {settings.kafka.topics.controls} at "
            f"{settings.kafka.bootstrap} ({type(exc).__name__}: {exc}); nothing was lifted. "
            "Check MLWARDEN_KAFKA__BOOTSTRAP and the broker"
        ) from exc
    finally:
        await producer.stop()


@controls_app.command()
def sync(
    redis_url: RedisUrl = _DEFAULT_URL,
    key_prefix: KeyPrefix = DEFAULT_KEY_PREFIX,
    timeout_s: Annotated[float, typer.Option(help="Longest time to read the topic.")] = 60.0,
) -> None:
    """Rebuild Redis from the controls topic (after a Redis outage, flush or move)."""
    settings = load_settings()
    store = _store(redis_url, key_prefix)

    async def run() -> Any:
        try:
            return await sync_from_topic(
                settings.kafka.bootstrap,
                settings.kafka.topics.controls,
                store,
                now=datetime.now(UTC),
                timeout_s=timeout_s,
            )
        finally:
            await store.aclose()

    try:
        report = asyncio.run(run())
    except (RedisError, OSError) as exc:
        raise _redis_failed(store, exc) from None
    except MlwardenError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    print(
        f"read {report.records} records: {report.count(ApplyOutcome.WRITTEN)} decisions "
        f"written, {report.count(ApplyOutcome.DELETED)} lifted or expired, "
        f"{report.count(ApplyOutcome.STALE)} kept (Redis newer), {report.unreadable} unreadable"
    )
