"""rollback_model against a real `mlflow server` (SQLite store): move, verify, never twice."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from mlwarden.responders.base import StepContext
from mlwarden.responders.params import RollbackParams
from mlwarden.responders.registry_mlflow import RECORD_TAG_PREFIX
from mlwarden.responders.rollback import RegistrySettings, RollbackResponder, record_id
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ResponderError
from tests.integration.mlflow_server import MlflowServer, free_port, mlflow_server

pytestmark = pytest.mark.integration
__all__ = ["mlflow_server"]  # the session fixture, imported so pytest finds it here

TOKEN = "dapi-integration-secret"


def context(model: str, key: str | None = None) -> StepContext:
    now = datetime.now(UTC)
    alert = Alert(
        alert_id=uuid.uuid4().hex,
        fingerprint="fp",
        kind=AlertKind.DRIFT,
        detector="prediction_drift",
        severity=Severity.CRITICAL,
        model_id=model,
        model_version="3",
        client_id=None,
        detected_at=now,
        emitted_at=now,
        score=12.0,
        threshold=4.0,
        summary="rollout: regression",
    )
    return StepContext(
        idempotency_key=key or f"incident-{uuid.uuid4().hex[:8]}/drift-rollback/0",
        incident_id="incident-1",
        playbook="drift-rollback",
        alert=alert,
        deadline=time.monotonic() + 30,
    )


def responder(
    server: MlflowServer, open_versions: dict[str, set[str]] | None = None
) -> RollbackResponder:
    settings = RegistrySettings(mlflow_url=server.url, mlflow_token=SecretStr(TOKEN))
    table = open_versions or {}
    return RollbackResponder.from_settings(
        settings, open_incident_versions=lambda model: table.get(model, set())
    )


@pytest.fixture
async def rollback(mlflow_server: MlflowServer) -> AsyncIterator[RollbackResponder]:
    async with responder(mlflow_server) as running:
        yield running


async def test_previous_moves_the_alias_back_one_version_and_verifies(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=3)
    ctx = context(model)

    result = await rollback(RollbackParams(), ctx)  # model_name None: the alert's model

    assert result == {
        "registry": "mlflow",
        "model": model,
        "alias": "champion",
        "before_version": "3",
        "after_version": "2",
        "verified": True,
        "noop": False,
    }
    assert mlflow_server.alias(model) == "2"
    record = json.loads(
        mlflow_server.tags(model)[RECORD_TAG_PREFIX + record_id(ctx.idempotency_key)]
    )
    assert record["state"] == "done"
    assert record["incident_id"] == "incident-1"
    assert TOKEN not in json.dumps(record)


async def test_a_second_run_of_the_step_is_a_noop_even_after_a_restart(
    mlflow_server: MlflowServer,
) -> None:
    model = mlflow_server.register(versions=3)
    ctx = context(model)
    async with responder(mlflow_server) as first_worker:
        first = await first_worker(RollbackParams(model_name=model), ctx)
        again = await first_worker(RollbackParams(model_name=model), ctx)
    async with responder(mlflow_server) as restarted_worker:  # no memory but the registry's
        after_restart = await restarted_worker(RollbackParams(model_name=model), ctx)

    assert first["after_version"] == "2"
    assert again == after_restart == {**first, "noop": True}
    assert mlflow_server.alias(model) == "2"  # not rolled on to 1


async def test_another_step_key_rolls_back_further(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=3)
    await rollback(RollbackParams(model_name=model), context(model))
    second = await rollback(RollbackParams(model_name=model), context(model))
    assert (second["before_version"], second["after_version"]) == ("2", "1")
    assert mlflow_server.alias(model) == "1"


async def test_a_named_version(mlflow_server: MlflowServer, rollback: RollbackResponder) -> None:
    model = mlflow_server.register(versions=3)
    result = await rollback(RollbackParams(model_name=model, to_version=1), context(model))
    assert (result["before_version"], result["after_version"]) == ("3", "1")
    assert mlflow_server.alias(model) == "1"


async def test_the_version_already_served_is_a_verified_noop(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=3)
    result = await rollback(RollbackParams(model_name=model, to_version=3), context(model))
    assert result["noop"] is True
    assert (result["before_version"], result["after_version"]) == ("3", "3")
    assert mlflow_server.alias(model) == "3"


async def test_a_custom_alias(mlflow_server: MlflowServer, rollback: RollbackResponder) -> None:
    model = mlflow_server.register(versions=3, alias="production")
    result = await rollback(RollbackParams(model_name=model, alias="production"), context(model))
    assert result["after_version"] == "2"
    assert mlflow_server.alias(model, "production") == "2"


async def test_deleted_versions_are_skipped(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=3)
    httpx.request(
        "DELETE",
        f"{mlflow_server.api}/model-versions/delete",
        json={"name": model, "version": "2"},
        timeout=30,
    ).raise_for_status()
    result = await rollback(RollbackParams(model_name=model), context(model))
    assert result["after_version"] == "1"
    assert mlflow_server.alias(model) == "1"


async def test_guard_rail_refuses_a_version_with_its_own_open_incident(
    mlflow_server: MlflowServer,
) -> None:
    model = mlflow_server.register(versions=3)
    async with responder(mlflow_server, open_versions={model: {"2"}}) as guarded:
        with pytest.raises(ResponderError, match="open incident of its own") as raised:
            await guarded(RollbackParams(model_name=model), context(model))
    assert raised.value.retryable is False
    assert mlflow_server.alias(model) == "3"
    assert not mlflow_server.tags(model)  # nothing recorded: a later run may go ahead


async def test_no_earlier_version_is_a_permanent_error(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=1)
    with pytest.raises(ResponderError, match="no ready version earlier than 1") as raised:
        await rollback(RollbackParams(model_name=model), context(model))
    assert raised.value.retryable is False
    assert mlflow_server.alias(model) == "1"


async def test_unknown_model_and_unset_alias_are_permanent_errors(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    with pytest.raises(ResponderError, match="HTTP 404") as unknown:
        await rollback(RollbackParams(model_name="no-such-model"), context("no-such-model"))
    model = mlflow_server.register(versions=2)
    with pytest.raises(ResponderError, match="has no alias 'canary'") as unset:
        await rollback(RollbackParams(model_name=model, alias="canary"), context(model))
    assert unknown.value.retryable is False
    assert unset.value.retryable is False


async def test_a_step_that_stopped_after_moving_the_alias_finishes_without_moving_it_again(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    # The earlier attempt wrote its pending record and moved 3 -> 2, then its worker died.
    model = mlflow_server.register(versions=3)
    ctx = context(model)
    pending = {
        "state": "pending",
        "registry": "mlflow",
        "model": model,
        "alias": "champion",
        "before_version": "3",
        "after_version": "2",
    }
    tag = RECORD_TAG_PREFIX + record_id(ctx.idempotency_key)
    mlflow_server.post(
        "registered-models/set-tag", {"name": model, "key": tag, "value": json.dumps(pending)}
    )
    mlflow_server.set_alias(model, "champion", 2)

    result = await rollback(RollbackParams(model_name=model), ctx)

    assert (result["before_version"], result["after_version"]) == ("3", "2")
    assert result["noop"] is False
    assert mlflow_server.alias(model) == "2"  # "previous" of 2 would have been 1
    assert json.loads(mlflow_server.tags(model)[tag])["state"] == "done"


async def test_a_step_whose_alias_a_human_moved_meanwhile_leaves_it_alone(
    mlflow_server: MlflowServer, rollback: RollbackResponder
) -> None:
    model = mlflow_server.register(versions=3)
    ctx = context(model)
    pending = {"state": "pending", "before_version": "3", "after_version": "2"}
    tag = RECORD_TAG_PREFIX + record_id(ctx.idempotency_key)
    mlflow_server.post(
        "registered-models/set-tag", {"name": model, "key": tag, "value": json.dumps(pending)}
    )
    mlflow_server.set_alias(model, "champion", 1)

    with pytest.raises(ResponderError, match="someone else is acting on it") as raised:
        await rollback(RollbackParams(model_name=model), ctx)
    assert raised.value.retryable is False
    assert mlflow_server.alias(model) == "1"


async def test_a_registry_that_is_down_is_a_retryable_error() -> None:
    url = f"http://admin:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    settings = RegistrySettings(mlflow_url=url, mlflow_token=SecretStr(TOKEN))
    async with RollbackResponder.from_settings(settings) as down:
        with pytest.raises(ResponderError, match="cannot reach the mlflow registry") as raised:
            await down(RollbackParams(model_name="fraud"), context("fraud"))
    assert raised.value.retryable is True
    assert TOKEN not in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "edited", [{"state": "done"}, {"state": "pending", "before_version": "three"}]
)
async def test_an_edited_record_is_refused_rather_than_guessed_at(
    mlflow_server: MlflowServer, rollback: RollbackResponder, edited: dict[str, str]
) -> None:
    model = mlflow_server.register(versions=3)
    ctx = context(model)
    tag = RECORD_TAG_PREFIX + record_id(ctx.idempotency_key)
    mlflow_server.post(
        "registered-models/set-tag", {"name": model, "key": tag, "value": json.dumps(edited)}
    )
    with pytest.raises(ResponderError, match="unreadable") as raised:
        await rollback(RollbackParams(model_name=model), ctx)
    assert raised.value.retryable is False
    assert mlflow_server.alias(model) == "3"
