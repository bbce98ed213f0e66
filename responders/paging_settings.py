"""Paging configuration (`MLWARDEN_PAGING__…`) and the factory that builds the pagers from it.

Only what is configured is built: the console unless turned off, Slack when a token and a
channel are set, PagerDuty when a routing key is set. `build_pagers` returns the pagers and the
two step responders over them (`page`, `notify`); the worker keeps the `Paging` for its life
and closes it at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, TextIO

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from mlwarden.responders.notify import NotifyResponder
from mlwarden.responders.page import ConsolePager, EvidenceLink, Pager, PageResponder
from mlwarden.responders.pagerduty import PagerDutyPager
from mlwarden.responders.slack import SlackPager

PAGERDUTY_KEY_LENGTH: Final = 32


class PagingSettings(BaseModel):
    """Where pages and notifications go; secrets are `SecretStr` and print masked."""

    model_config = ConfigDict(extra="forbid")

    console: bool = Field(
        default=True, description="Print pages to stdout and the log (the demo's pager)."
    )
    slack_token: SecretStr | None = Field(
        default=None, description="Bot token (xoxb-…) of a Slack app with chat:write."
    )
    slack_channel: str | None = Field(default=None, description="Channel id that gets pages.")
    slack_notify_channel: str | None = Field(
        default=None, description="Channel id for notify steps (default: slack_channel)."
    )
    slack_mention: str | None = Field(
        default=None, description="Put in front of pages, e.g. <!here> or <!subteam^S0123>."
    )
    slack_base_url: str = Field(default="https://slack.com/api/")
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Verifies Approve / Reject clicks sent back by Slack."
    )
    pagerduty_routing_key: SecretStr | None = Field(
        default=None, description="Integration key (32 characters) of an Events API v2 integration."
    )
    pagerduty_url: str = Field(default="https://events.pagerduty.com")
    pagerduty_source: str | None = Field(
        default=None, description="Event source (default: model:<model_id>)."
    )
    kibana_url: str | None = Field(
        default=None, description="Kibana base URL for evidence links, e.g. https://kibana:5601."
    )
    kibana_data_view_id: str | None = Field(
        default=None, description="The evidence data view's id (default: Kibana's default view)."
    )

    @model_validator(mode="after")
    def _complete(self) -> PagingSettings:
        if (self.slack_token is None) != (self.slack_channel is None):
            raise ValueError(
                "Slack needs both MLWARDEN_PAGING__SLACK_TOKEN and MLWARDEN_PAGING__SLACK_CHANNEL"
            )
        key = self.pagerduty_routing_key
        if key is not None and len(key.get_secret_value()) != PAGERDUTY_KEY_LENGTH:
            raise ValueError(
                "MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY must be the 32-character integration "
                "key of an Events API v2 integration (PagerDuty service → Integrations)"
            )
        return self


@dataclass
class Paging:
    """The configured pagers and the `page` / `notify` responders over them."""

    pagers: dict[str, Pager]
    page: PageResponder
    notify: NotifyResponder
    slack: SlackPager | None = None
    pagerduty: PagerDutyPager | None = None
    console: ConsolePager | None = field(default=None)

    async def aclose(self) -> None:
        """Close the HTTP clients (PagerDuty's connection pool; Slack opens one per call)."""
        if self.pagerduty is not None:
            await self.pagerduty.aclose()


def build_pagers(settings: PagingSettings, *, console_stream: TextIO | None = None) -> Paging:
    """Build what `settings` configures. `console_stream` defaults to stdout."""
    console = ConsolePager(console_stream) if settings.console else None
    slack = None
    if settings.slack_token is not None and settings.slack_channel is not None:
        slack = SlackPager(
            settings.slack_token,
            settings.slack_channel,
            notify_channel=settings.slack_notify_channel,
            base_url=settings.slack_base_url,
            mention=settings.slack_mention,
        )
    pagerduty = None
    if settings.pagerduty_routing_key is not None:
        pagerduty = PagerDutyPager(
            settings.pagerduty_routing_key,
            url=settings.pagerduty_url,
            source=settings.pagerduty_source,
        )
    evidence = (
        EvidenceLink(settings.kibana_url, settings.kibana_data_view_id)
        if settings.kibana_url
        else None
    )
    pagers: dict[str, Pager] = {}
    if console is not None:
        pagers["console"] = console
    if slack is not None:
        pagers["slack"] = slack
    if pagerduty is not None:
        pagers["pagerduty"] = pagerduty
    notify_console = console if console is not None or slack is not None else ConsolePager()
    return Paging(
        pagers=pagers,
        page=PageResponder(pagers, evidence=evidence),
        notify=NotifyResponder(slack=slack, console=notify_console, evidence=evidence),
        slack=slack,
        pagerduty=pagerduty,
        console=console,
    )
