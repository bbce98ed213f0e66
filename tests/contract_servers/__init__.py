"""Local HTTP servers that enforce the documented contracts of services tests cannot reach.

Slack's Web API (`slack.py`) and PagerDuty's Events API v2 (`pagerduty.py`) run in a thread on
a free loopback port; the real clients (`slack_sdk`, httpx) talk to them. `fixtures.py` holds
the pytest fixtures (one server per session, state cleared for every test).
"""
