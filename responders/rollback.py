"""`rollback_model`: move a registered model's serving alias back, once per incident step.

The flow is the same for every registry (`registry_base.RegistryAdapter`):

1. Find this step's record in the registry (keyed by a hash of the idempotency key). A
   finished record means the step already ran: return its result with `noop: true`.
2. Read where the alias points now and choose the target: `previous` is the highest usable
   (ready, not deleted) version below the current one; an int names the version outright.
3. Guard rails, each a permanent error that says what to do: no earlier version; the target is
   missing or not ready; the target has an open incident of its own (`open_incident_versions`,
   supplied by the engine), since rolling back onto a version that is itself under attack or
   drifting trades one incident for another.
4. Write a *pending* record `{before, after}`, move the alias, read it back (a mismatch is
   retryable), then write the *done* record and return it.

Why the pending record: "previous" is relative to the alias, so a step that crashed after
moving the alias would, on replay, find the alias at v2 and roll on to v1. With the target
written down first, a replay sees `alias == after` and only finishes the record, sees
`alias == before` and moves it, or sees a third version (a human moved it meanwhile) and
refuses to touch it. The records live in the registry, next to the alias they describe, so the
guarantee survives a restarted worker with an empty memory.

Result (also the record, minus bookkeeping): `{registry, model, alias, before_version,
after_version, verified, noop}`; versions are strings, as registries and alerts spell them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mlwarden.responders.base import StepContext, StepResult
from mlwarden.responders.params import RollbackParams
from mlwarden.responders.registry_base import RegistryAdapter, RegistryVersion
from mlwarden.responders.registry_mlflow import MlflowRegistry
from mlwarden.responders.registry_webhook import WebhookRegistry
from mlwarden.schemas.errors import ConfigError, ResponderError

_LOG: Final = logging.getLogger(__name__)
_PENDING: Final = "pending"
_DONE: Final = "done"
_RESULT_KEYS: Final = ("registry", "model", "alias", "before_version", "after_version")
_SETTINGS_TO_FILL: Final = {
    "mlflow": "MLWARDEN_REGISTRY__MLFLOW_URL",
    "webhook": "MLWARDEN_REGISTRY__WEBHOOK_URL and MLWARDEN_REGISTRY__WEBHOOK_SECRET",
}

OpenIncidentVersions = Callable[[str], Collection[str]]
"""`model name -> versions (as strings) that have an open incident of their own`."""


def _no_open_incidents(model: str) -> Collection[str]:
    return ()


class RegistrySettings(BaseModel):
    """Where the model registries are (nested in `Settings` as `registry`).

    A registry left unset makes `rollback_model` steps that name it fail with a message saying
    which setting to fill in; the other responders are unaffected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mlflow_url: str | None = Field(
        default=None, description="MLflow tracking server, e.g. http://mlflow:5000."
    )
    mlflow_token: SecretStr | None = Field(
        default=None, description="Bearer token for MLflow (Databricks PAT or a gateway's)."
    )
    webhook_url: str | None = Field(
        default=None, description="Base URL of a registry speaking the signed webhook contract."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key that signs every webhook request."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, description="Cap on each registry request (the step deadline too)."
    )


def record_id(idempotency_key: str) -> str:
    """The registry-side name of a step's record: short, fixed-length, safe in tags and URLs."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def choose_target(
    current: int, versions: Sequence[RegistryVersion], to_version: Literal["previous"] | int
) -> int:
    """The version to move the alias to, or a permanent `ResponderError` saying why none.

    `previous` = the highest usable version below `current`; an int must exist and be usable.
    """
    if to_version == "previous":
        earlier = [v.number for v in versions if v.number < current and v.usable]
        if not earlier:
            raise ResponderError(
                f"no ready version earlier than {current} to roll back to; register one or "
                "name a version in the step (to_version: N)",
                retryable=False,
            )
        return max(earlier)
    named = {v.number: v for v in versions}.get(to_version)
    if named is None:
        raise ResponderError(
            f"version {to_version} does not exist (or was deleted); the versions are "
            f"{sorted(v.number for v in versions)}",
            retryable=False,
        )
    if not named.usable:
        raise ResponderError(
            f"version {to_version} is not ready (its registration failed or is pending); "
            "name a ready version",
            retryable=False,
        )
    return to_version


class RollbackResponder:
    """The `rollback_model` step: dispatches to the registry adapter named by `params.registry`.

    `registries` maps `mlflow`/`webhook` to adapters (build them from settings with
    `from_settings`). `open_incident_versions(model)` lists the versions of a model with an
    open incident of their own; the default knows of none.
    """

    def __init__(
        self,
        registries: Mapping[str, RegistryAdapter],
        *,
        open_incident_versions: OpenIncidentVersions = _no_open_incidents,
    ) -> None:
        self._registries = dict(registries)
        self._open_incident_versions = open_incident_versions

    @classmethod
    def from_settings(
        cls,
        settings: RegistrySettings,
        *,
        open_incident_versions: OpenIncidentVersions = _no_open_incidents,
    ) -> RollbackResponder:
        """An adapter for every registry the settings configure."""
        registries: dict[str, RegistryAdapter] = {}
        if settings.mlflow_url:
            registries["mlflow"] = MlflowRegistry(
                settings.mlflow_url, token=settings.mlflow_token, timeout_s=settings.timeout_s
            )
        if settings.webhook_url:
            if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
                raise ConfigError(
                    "registry.webhook_url is set without registry.webhook_secret: mlwarden "
                    "signs every webhook request; set MLWARDEN_REGISTRY__WEBHOOK_SECRET"
                )
            registries["webhook"] = WebhookRegistry(
                settings.webhook_url, settings.webhook_secret, timeout_s=settings.timeout_s
            )
        return cls(registries, open_incident_versions=open_incident_versions)

    async def aclose(self) -> None:
        for registry in self._registries.values():
            await registry.aclose()

    async def __aenter__(self) -> RollbackResponder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _registry(self, name: str) -> RegistryAdapter:
        registry = self._registries.get(name)
        if registry is None:
            setting = _SETTINGS_TO_FILL.get(name, "the registry settings")
            raise ResponderError(
                f"rollback_model asks for the {name} registry, which is not configured: "
                f"set {setting}",
                retryable=False,
            )
        return registry

    def _guard(self, model: str, target: int) -> None:
        if str(target) in {str(v) for v in self._open_incident_versions(model)}:
            raise ResponderError(
                f"refusing to roll {model!r} back onto version {target}: it has an open "
                "incident of its own; resolve that incident first or name another version "
                "(to_version: N)",
                retryable=False,
            )

    async def __call__(self, params: RollbackParams, ctx: StepContext) -> StepResult:
        registry = self._registry(params.registry)
        model = params.model_name or ctx.alert.model_id
        alias = params.alias
        rid = record_id(ctx.idempotency_key)

        record = await registry.load_record(model, rid, ctx.remaining_s())
        if record is not None and record.get("state") == _DONE:
            if not all(isinstance(record.get(key), str) for key in _RESULT_KEYS):
                raise _unreadable_record(model)
            _LOG.info("rollback of %s@%s already done by this step; not repeating", model, alias)
            return _result(record, noop=True)

        current = await registry.alias_version(model, alias, ctx.remaining_s())
        if current is None:
            raise ResponderError(
                f"registered model {model!r} has no alias {alias!r} to roll back; set the "
                "step's alias to the one your servers load",
                retryable=False,
            )

        if record is not None:  # an earlier attempt wrote down its target, then stopped
            before, target = _pending_versions(record, model)
            record = {**record, "registry": registry.name, "model": model, "alias": alias}
            if current not in (before, target):
                raise ResponderError(
                    f"alias {alias!r} of {model!r} moved to version {current} while this step "
                    f"was rolling it from {before} to {target}; someone else is acting on it, "
                    "so mlwarden leaves it alone",
                    retryable=False,
                )
        else:
            before = current
            target = choose_target(
                current, await registry.versions(model, ctx.remaining_s()), params.to_version
            )
            record = {
                "registry": registry.name,
                "model": model,
                "alias": alias,
                "before_version": str(before),
                "after_version": str(target),
                "incident_id": ctx.incident_id,
                "playbook": ctx.playbook,
                "idempotency_key": ctx.idempotency_key,
            }
            if target == current:  # a named version the alias already serves
                return await self._finish(registry, model, rid, record, noop=True, ctx=ctx)

        if current != target:
            self._guard(model, target)
            await registry.save_record(model, rid, {**record, "state": _PENDING}, ctx.remaining_s())
            await registry.set_alias(model, alias, target, ctx.idempotency_key, ctx.remaining_s())
        seen = await registry.alias_version(model, alias, ctx.remaining_s())
        if seen != target:
            raise ResponderError(
                f"alias {alias!r} of {model!r} reads back version {seen} after being moved to "
                f"{target}; will retry",
                retryable=True,
            )
        _LOG.info("rolled %s@%s back from version %s to %s", model, alias, before, target)
        return await self._finish(registry, model, rid, record, noop=False, ctx=ctx)

    async def _finish(
        self,
        registry: RegistryAdapter,
        model: str,
        rid: str,
        record: dict[str, Any],
        *,
        noop: bool,
        ctx: StepContext,
    ) -> StepResult:
        done = {**record, "state": _DONE, "noop": noop, "finished_at": time.time()}
        await registry.save_record(model, rid, done, ctx.remaining_s())
        return _result(done, noop=noop)


def _pending_versions(record: Mapping[str, Any], model: str) -> tuple[int, int]:
    try:
        return int(record["before_version"]), int(record["after_version"])
    except (KeyError, TypeError, ValueError):
        raise _unreadable_record(model) from None


def _unreadable_record(model: str) -> ResponderError:
    return ResponderError(
        f"the rollback record of this step on {model!r} is unreadable (was it edited?); "
        "check the alias by hand, then delete the record to let the step run again",
        retryable=False,
    )


def _result(record: Mapping[str, Any], *, noop: bool) -> StepResult:
    return {
        **{key: record[key] for key in _RESULT_KEYS},
        "verified": True,
        "noop": noop,
    }
