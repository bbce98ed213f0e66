"""Pytest fixtures for the contract servers: one server per session, cleared for every test.

Use them from a test module with
`from tests.contract_servers.fixtures import pagerduty_api, pagerduty_server, slack_api,
slack_server` (or list this module in the root conftest's `pytest_plugins`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract_servers.pagerduty import PagerDutyContractServer
from tests.contract_servers.slack import SlackContractServer


@pytest.fixture(scope="session")
def slack_server() -> Iterator[SlackContractServer]:
    server = SlackContractServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slack_api(slack_server: SlackContractServer) -> SlackContractServer:
    """The Slack contract server with no messages and no injected failures."""
    slack_server.reset()
    return slack_server


@pytest.fixture(scope="session")
def pagerduty_server() -> Iterator[PagerDutyContractServer]:
    server = PagerDutyContractServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pagerduty_api(pagerduty_server: PagerDutyContractServer) -> PagerDutyContractServer:
    """The PagerDuty contract server with no alerts and no injected failures."""
    pagerduty_server.reset()
    return pagerduty_server
