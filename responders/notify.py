"""The `notify` step: tell a channel without paging anyone (the "ticket" of the alert guidance).

With Slack configured, the message goes to the notify channel (or the step's `channel`) as the
same Block Kit message a page uses, without the mention; repeats and the resolution follow it
in its thread like a page's. Without Slack it is a `NOTIFY …` line on the console and in the
log, so the demo and single-node installs still show it.
"""

from __future__ import annotations

from typing import Any

from mlwarden.responders.base import IncidentChange, StepContext, StepResult
from mlwarden.responders.page import ConsolePager, EvidenceLink, page_for, update_from
from mlwarden.responders.params import NotifyParams
from mlwarden.responders.slack import SlackPager


class NotifyResponder:
    """Posts notify steps to Slack when configured, else to the console."""

    def __init__(
        self,
        *,
        slack: SlackPager | None = None,
        console: ConsolePager | None = None,
        evidence: EvidenceLink | None = None,
    ) -> None:
        if slack is None and console is None:
            raise ValueError("NotifyResponder needs Slack or the console to write to")
        self._slack = slack
        self._console = console
        self._evidence = evidence

    async def __call__(self, params: NotifyParams, ctx: StepContext) -> StepResult:
        page = page_for(ctx.alert, ctx, params.message, evidence=self._evidence)
        delivered: dict[str, Any]
        if self._slack is not None:
            delivered = {
                "slack": await self._slack.notify(
                    page, ctx.idempotency_key, channel=params.channel, timeout_s=ctx.remaining_s()
                )
            }
        else:
            assert self._console is not None
            delivered = {"console": await self._console.notify(page, ctx.idempotency_key)}
        return {"page": page.model_dump(mode="json"), "delivered": delivered, "failed": {}}

    async def follow_up(
        self, ctx: StepContext, earlier: StepResult, change: IncidentChange
    ) -> StepResult:
        """Thread repeats and the resolution under the Slack message; the console says nothing.

        A console notification is a ticket line, not a page: its resolution is in the log
        of the page step (if any) and the incident record.
        """
        update = update_from(ctx, earlier, change, self._evidence)
        slack_earlier = earlier.get("delivered", {}).get("slack")
        if update is None or self._slack is None or not isinstance(slack_earlier, dict):
            return {"change": change.value, "delivered": {}, "failed": {}}
        result = await self._slack.follow_up(
            update, slack_earlier, ctx.idempotency_key, timeout_s=ctx.remaining_s()
        )
        return {"change": change.value, "delivered": {"slack": result}, "failed": {}}
