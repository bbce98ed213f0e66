"""Target selection, record naming and wiring of the rollback responder (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from mlwarden.responders.base import Responder, StepContext
from mlwarden.responders.params import RollbackParams
from mlwarden.responders.registry_base import RegistryVersion
from mlwarden.responders.rollback import (
    RegistrySettings,
    RollbackResponder,
    choose_target,
    record_id,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ConfigError, ResponderError


def versions(*numbers: int, unusable: tuple[int, ...] = ()) -> list[RegistryVersion]:
    return [RegistryVersion(n, usable=n not in unusable) for n in numbers]


def test_previous_is_the_highest_usable_version_below_the_current() -> None:
    assert choose_target(3, versions(1, 2, 3), "previous") == 2
    assert choose_target(5, versions(1, 2, 4, 5, 6), "previous") == 4  # 3 was deleted
    assert choose_target(3, versions(1, 2, 3, unusable=(2,)), "previous") == 1  # 2 failed


def test_previous_never_moves_forward() -> None:
    # The alias was already rolled back to 2 by hand: "previous" means 1, never the newer 3.
    assert choose_target(2, versions(1, 2, 3), "previous") == 1


@pytest.mark.parametrize(
    ("current", "available"),
    [(1, versions(1, 2, 3)), (3, versions(3)), (3, versions(1, 2, 3, unusable=(1, 2)))],
)
def test_no_earlier_usable_version_is_a_permanent_error(
    current: int, available: list[RegistryVersion]
) -> None:
    with pytest.raises(ResponderError, match="no ready version earlier than") as raised:
        choose_target(current, available, "previous")
    assert raised.value.retryable is False


def test_named_version_must_exist_and_be_ready() -> None:
    assert choose_target(3, versions(1, 2, 3), 1) == 1
    assert choose_target(2, versions(1, 2, 3), 3) == 3  # a named roll-forward is allowed
    with pytest.raises(ResponderError, match="version 7 does not exist") as missing:
        choose_target(3, versions(1, 2, 3), 7)
    with pytest.raises(ResponderError, match="version 2 is not ready") as failed:
        choose_target(3, versions(1, 2, 3, unusable=(2,)), 2)
    assert missing.value.retryable is False
    assert failed.value.retryable is False


@given(
    st.dictionaries(st.integers(1, 50), st.booleans(), min_size=1),
    st.integers(1, 51),
)
def test_previous_matches_its_definition(table: dict[int, bool], current: int) -> None:
    available = [RegistryVersion(n, usable=ok) for n, ok in table.items()]
    candidates = [n for n, ok in table.items() if ok and n < current]
    if candidates:
        target = choose_target(current, available, "previous")
        assert target == max(candidates)
        assert target < current
    else:
        with pytest.raises(ResponderError):
            choose_target(current, available, "previous")


def test_record_id_is_stable_short_and_distinct() -> None:
    key = "incident-1/extraction/2"
    assert record_id(key) == record_id(key)
    assert record_id(key) != record_id("incident-1/extraction/3")
    assert len(record_id(key)) == 32
    assert record_id(key).isalnum()


def test_webhook_without_a_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MLWARDEN_REGISTRY__WEBHOOK_SECRET"):
        RollbackResponder.from_settings(RegistrySettings(webhook_url="https://registry.example"))


def test_settings_never_print_secrets() -> None:
    settings = RegistrySettings(
        mlflow_url="http://mlflow:5000",
        mlflow_token=SecretStr("dapi-very-secret"),
        webhook_url="https://registry.example",
        webhook_secret=SecretStr("whsec-very-secret"),
    )
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "very-secret" not in shown


def test_the_responder_is_a_rollback_params_responder() -> None:
    responder: Responder[RollbackParams] = RollbackResponder({})  # checked by mypy --strict
    assert callable(responder)


async def test_a_registry_that_is_not_configured_is_a_permanent_error_naming_the_setting() -> None:
    alert = Alert(
        alert_id="a1",
        fingerprint="f1",
        kind=AlertKind.DRIFT,
        detector="prediction_drift",
        severity=Severity.CRITICAL,
        model_id="fraud",
        model_version="3",
        client_id=None,
        detected_at=datetime(2026, 1, 1, tzinfo=UTC),
        emitted_at=datetime(2026, 1, 1, tzinfo=UTC),
        score=9.0,
        threshold=3.0,
        summary="drift",
    )
    ctx = StepContext(idempotency_key="i/p/0", incident_id="i", playbook="p", alert=alert)
    async with RollbackResponder.from_settings(RegistrySettings()) as responder:
        with pytest.raises(ResponderError, match="MLWARDEN_REGISTRY__MLFLOW_URL") as raised:
            await responder(RollbackParams(registry="mlflow"), ctx)
    assert raised.value.retryable is False
