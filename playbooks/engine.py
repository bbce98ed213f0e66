"""The playbook engine: alerts in, incidents and audited steps out, each effect at most once.

    engine = PlaybookEngine(playbooks, responders, incidents, clock)
    out = await engine.handle(alert)      # fold into incidents, run what is due
    out = await engine.command(command)   # approve / reject / resolve / acknowledge / silences
    out = await engine.tick()             # waits that ended, approval timeouts, quiet periods,
                                          # expiry of closed incidents; call it every second

Each returns an `EngineOutput`: action records for `mlwarden.actions` (keyed by idempotency
key), incident summaries for the compacted `mlwarden.incidents` (keyed by incident id), and the
ids of expired incidents (publish a tombstone). Everything the engine knows lives in the
`incidents` mapping (a Faust table in the worker), written before any record is returned, so a
restarted engine over the same mapping resumes every incident where it stood. Time is read only
through `clock`. One engine owns one mapping: the worker feeds it every alert and command
(single-partition topics), so no two engines can run the same step.

Grouping: each matching playbook folds the alert into the incident of its `group_by` values
(the fingerprint by default, so one detector incident is one engine incident, whose id is the
fingerprint). Playbooks with the same `group_by` share an incident. A closed incident's group
opens a new incident (`<key>~<generation>`) on its next alert, unless within `realert`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from mlwarden.playbooks.conditions import holds
from mlwarden.playbooks.execution import Session, StepRunner
from mlwarden.playbooks.grouping import (
    check_responders,
    folded,
    group_key,
    is_recovery,
    opened,
    policy,
)
from mlwarden.playbooks.incidents import MAX_IDS, Incident, IncidentStore, bounded
from mlwarden.playbooks.locks import KeyedLocks
from mlwarden.playbooks.matching import severity_rank
from mlwarden.playbooks.model import Playbook, escalation_run
from mlwarden.playbooks.reload import PlaybookSet
from mlwarden.playbooks.silences import inhibiting, silencing
from mlwarden.playbooks.summaries import summarize, when_data
from mlwarden.responders.base import IncidentChange, Responder
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.incident import (
    AcknowledgeCommand,
    ApproveCommand,
    Command,
    IncidentStatus,
    IncidentSummary,
    RejectCommand,
    ResolveCommand,
    SilenceAddCommand,
    SilenceRemoveCommand,
)

DEFAULT_RETENTION: Final = timedelta(days=7)


@dataclass(frozen=True)
class SuppressedAlert:
    """An alert that opened nothing, and why: `silenced`, `inhibited` or `realert`."""

    alert_id: str
    reason: str
    by: str = field(metadata={"doc": "The silence id or the incident id responsible."})


@dataclass
class EngineOutput:
    """What one engine call changed; the worker publishes it."""

    actions: list[ActionRecord] = field(default_factory=list)
    incidents: list[IncidentSummary] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    suppressed: list[SuppressedAlert] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    """Why a command did nothing (unknown incident, nothing awaiting approval, ...)."""

    def extend(self, other: EngineOutput) -> None:
        self.actions += other.actions
        self.incidents += other.incidents
        self.expired += other.expired
        self.suppressed += other.suppressed
        self.refusals += other.refusals


class PlaybookEngine:
    """Matches alerts to playbooks, keeps incidents, runs their steps through the responders."""

    def __init__(
        self,
        playbooks: Sequence[Playbook] | PlaybookSet,
        responders: Mapping[str, Responder[Any]],
        incidents: MutableMapping[str, Any],
        clock: Callable[[], datetime],
        *,
        retention: timedelta = DEFAULT_RETENTION,
        unserved: Literal["refuse", "fail"] = "refuse",
    ) -> None:
        """`unserved="refuse"` (default) raises ValueError when a playbook uses a step type with
        no responder; `"fail"` starts anyway and records those steps as failed, saying what to
        configure (for installs without, say, a model registry)."""
        self._set = playbooks if isinstance(playbooks, PlaybookSet) else PlaybookSet(playbooks)
        if unserved == "refuse":
            check_responders(self._set.current, responders)
        self._responders = responders
        self._store = IncidentStore(incidents)
        self._clock = clock
        self._retention = retention
        self._locks = KeyedLocks()
        self._runner = StepRunner(responders, self._by_name)

    def _by_name(self) -> dict[str, Playbook]:
        return {playbook.name: playbook for playbook in self._set.current}

    def _session(self, incident: Incident) -> Session:
        return Session(incident, self._store, self._clock, self._retention)

    def _out(self, session: Session) -> EngineOutput:
        summary = summarize(session.incident, self._by_name())
        return EngineOutput(actions=session.records, incidents=[summary])

    async def handle(self, alert: Alert) -> EngineOutput:
        """Fold `alert` into the incidents of every matching playbook and run what is due."""
        now = self._clock()
        if is_recovery(alert):
            return await self._recover(alert)
        silence = silencing(self._store.silences(), alert, now)
        if silence is not None:
            return EngineOutput(
                suppressed=[SuppressedAlert(alert.alert_id, "silenced", silence.silence_id)]
            )
        playbooks = self._set.current
        inhibitor = inhibiting(playbooks, self._store.incidents(), alert)
        if inhibitor is not None:
            return EngineOutput(
                suppressed=[SuppressedAlert(alert.alert_id, "inhibited", inhibitor.incident_id)]
            )
        groups: dict[str, tuple[dict[str, str | None], list[Playbook]]] = {}
        for playbook in playbooks:
            if playbook.matches(alert):
                key, group = group_key(playbook, alert)
                groups.setdefault(key, (group, []))[1].append(playbook)
        out = EngineOutput()
        for key, (group, members) in groups.items():
            async with self._locks.hold(key):
                out.extend(await self._fold(key, group, members, alert))
        return out

    async def _fold(
        self, key: str, group: dict[str, str | None], members: list[Playbook], alert: Alert
    ) -> EngineOutput:
        now = self._clock()
        incident = self._store.get(key)
        generation = 1
        if incident is not None and incident.closed:
            assert incident.resolved_at is not None
            if alert.alert_id in incident.alert_ids or now < incident.resolved_at + timedelta(
                seconds=incident.realert_s
            ):
                session = self._session(incident)
                if alert.alert_id not in incident.alert_ids:
                    session.save(**folded(incident, alert, now))
                out = self._out(session)
                out.suppressed.append(
                    SuppressedAlert(alert.alert_id, "realert", incident.incident_id)
                )
                return out
            generation, incident = incident.generation + 1, None
        repeat = incident is not None and alert.alert_id not in incident.alert_ids
        if incident is None:
            incident = opened(key, generation, group, alert, now)
        elif repeat:
            incident = incident.model_copy(update=folded(incident, alert, now))
        names = [
            *incident.playbooks,
            *(p.name for p in members if p.name not in incident.playbooks),
        ]
        runs = dict(incident.runs)
        for playbook in members:
            runs.setdefault(playbook.name, "active")
        incident = incident.model_copy(
            update=policy(incident, members) | {"playbooks": names, "runs": runs}
        )
        session = self._session(incident)
        session.save()
        if repeat:
            await self._repeat(session, now)
        for playbook in members:
            self._runner.escalate(session, playbook, self._triggered(session, playbook, alert))
        await self._runner.advance(session, retry_failed=True)
        return self._out(session)

    def _triggered(self, session: Session, playbook: Playbook, alert: Alert) -> list[int]:
        """Escalation rules of `playbook` whose trigger holds now (not yet started)."""
        incident = session.incident
        fired: list[int] = []
        for index, rule in enumerate(playbook.escalate):
            if escalation_run(playbook.name, index) in incident.runs:
                continue
            severe = rule.min_severity is not None and severity_rank(
                incident.severity
            ) >= severity_rank(rule.min_severity)
            repeated = False
            if rule.repeated is not None and rule.within is not None:
                since = alert.detected_at - rule.within
                repeated = sum(t >= since for t in incident.alert_times) >= rule.repeated
            condition = rule.condition is not None and holds(
                rule.condition, when_data(alert, incident, self._by_name())
            )
            if severe or repeated or condition:
                fired.append(index)
        return fired

    async def _repeat(self, session: Session, now: datetime) -> None:
        interval = session.incident.repeat_interval_s
        last = session.incident.last_repeat_at
        if interval is None or (last is not None and now - last < timedelta(seconds=interval)):
            return
        session.save(last_repeat_at=now)
        suffix = f"repeat-{session.incident.alert_count}"
        await self._runner.follow_up(session, IncidentChange.REPEAT, suffix)

    async def _recover(self, alert: Alert) -> EngineOutput:
        """A detector's recovery alert resolves the open incidents of its group; opens none."""
        out = EngineOutput()
        for playbook in self._set.current:
            match = playbook.match
            if not playbook.resolve.on_recovery or alert.kind not in match.kinds:
                continue
            if match.detectors is not None and alert.detector not in match.detectors:
                continue
            key, _ = group_key(playbook, alert)
            async with self._locks.hold(key):
                incident = self._store.get(key)
                if incident is not None and not incident.closed:
                    session = self._session(incident)
                    await self._resolve(session, f"recovery reported by {alert.detector}")
                    out.extend(self._out(session))
        return out

    async def _resolve(self, session: Session, reason: str) -> None:
        self._runner.drop_parked(session)
        now = self._clock()
        session.save(status=IncidentStatus.RESOLVED, resolved_at=now, resolved_reason=reason)
        await self._runner.follow_up(session, IncidentChange.RESOLVED, "resolved")

    async def command(self, command: Command) -> EngineOutput:
        """Apply a human's command; a command id seen before does nothing."""
        if isinstance(command, SilenceAddCommand):
            self._store.put_silence(command.silence)
            return EngineOutput()
        if isinstance(command, SilenceRemoveCommand):
            if self._store.delete_silence(command.silence_id):
                return EngineOutput()
            return EngineOutput(refusals=[f"no silence {command.silence_id!r}"])
        incident = self._store.find(command.incident_id)
        if incident is None:
            return EngineOutput(refusals=[f"no incident {command.incident_id!r}"])
        async with self._locks.hold(incident.key):
            incident = self._store.find(command.incident_id)
            assert incident is not None
            if command.command_id in incident.commands:
                return EngineOutput()
            session = self._session(incident)
            refusal = await self._apply(session, command)
            if refusal is not None:
                return EngineOutput(refusals=[refusal])
            session.save(commands=bounded(session.incident.commands, command.command_id, MAX_IDS))
            return self._out(session)

    async def _apply(
        self,
        session: Session,
        command: ApproveCommand | RejectCommand | ResolveCommand | AcknowledgeCommand,
    ) -> str | None:
        incident = session.incident
        if incident.closed:
            return f"incident {incident.incident_id} is already resolved"
        if isinstance(command, ResolveCommand):
            await self._resolve(
                session,
                f"resolved by {command.by}" + (f": {command.comment}" if command.comment else ""),
            )
            return None
        if isinstance(command, AcknowledgeCommand):
            session.save(status=IncidentStatus.ACKNOWLEDGED, acknowledged_by=command.by)
            await self._runner.follow_up(session, IncidentChange.ACKNOWLEDGED, "acknowledged")
            return None
        waiting = [
            skey
            for skey, entry in incident.steps.items()
            if entry.parked
            and entry.awaiting_approval
            and (command.playbook is None or skey.split("/", 1)[0] == command.playbook)
            and (command.step is None or skey.rsplit("/", 1)[1] == str(command.step))
            and (command.step_key is None or skey == command.step_key)
        ]
        if len(waiting) != 1:
            found = ", ".join(waiting) or "none"
            return (
                f"incident {incident.incident_id}: {len(waiting)} approvals match ({found}); "
                "name the one you mean with --step"
            )
        skey = waiting[0]
        approvers = incident.steps[skey].result.get("approvers") or []
        if approvers and command.by not in approvers:
            return f"{command.by!r} may not decide {skey}; approvers: {', '.join(approvers)}"
        run, index = skey.rsplit("/", 1)
        playbook = self._by_name().get(run.split("/", 1)[0])
        if playbook is None:
            return f"playbook of {skey} is no longer loaded"
        self._runner.decide(
            session,
            playbook,
            run,
            int(index),
            approved=isinstance(command, ApproveCommand),
            by=command.by,
            comment=command.comment,
        )
        await self._runner.advance(session, retry_failed=False)
        return None

    async def tick(self) -> EngineOutput:
        """Resume what time has freed: ended waits, approval timeouts, quiet-period resolves,
        interrupted steps, and expire closed incidents past retention and ended silences."""
        now = self._clock()
        out = EngineOutput()
        for silence in self._store.silences():
            if silence.ends_at <= now:
                self._store.delete_silence(silence.silence_id)
        for key in self._store.due_keys(now):
            if self._locks.busy(key):
                continue  # being handled right now; the next tick looks again
            async with self._locks.hold(key):
                incident = self._store.get(key)
                if incident is not None:
                    out.extend(await self._tick_one(incident, now))
        return out

    async def _tick_one(self, incident: Incident, now: datetime) -> EngineOutput:
        session = self._session(incident)
        if incident.closed:
            assert incident.resolved_at is not None
            if now >= incident.resolved_at + self._retention:
                self._store.delete(incident.key)
                return EngineOutput(expired=[incident.incident_id])
            await self._runner.follow_up(session, IncidentChange.RESOLVED, "resolved")
            return self._out(session)
        quiet = timedelta(seconds=incident.resolve_after_s)
        if now >= incident.last_alert_at + quiet:
            await self._resolve(session, f"no alert for {quiet}")
            return self._out(session)
        playbooks = self._by_name()
        for skey, entry in incident.steps.items():
            if (
                entry.parked
                and entry.awaiting_approval
                and entry.until is not None
                and now >= entry.until
            ):
                run, index = skey.rsplit("/", 1)
                playbook = playbooks.get(run.split("/", 1)[0])
                if playbook is not None:
                    self._runner.expire_approval(session, playbook, run, int(index))
        await self._runner.advance(session, retry_failed=False)
        session.save()  # refresh due_at even when nothing moved
        return self._out(session)


__all__ = [
    "EngineOutput",
    "PlaybookEngine",
    "StepState",
    "SuppressedAlert",
    "group_key",
    "is_recovery",
]
