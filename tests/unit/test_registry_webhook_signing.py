"""Webhook request signing: every signed request verifies; every alteration fails."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mlwarden.responders.registry_webhook import (
    WebhookSignatureError,
    sign,
    verify_signature,
)

NOW = 1_800_000_000
secrets = st.binary(min_size=1, max_size=64)
bodies = st.binary(max_size=2048)
methods = st.sampled_from(["GET", "POST", "PUT"])
paths = st.from_regex(
    r"/models/[A-Za-z0-9%._-]{1,20}/(aliases|versions|records)(/[a-z0-9]+)?", fullmatch=True
)


@given(secrets, methods, paths, bodies)
def test_any_signed_request_verifies(secret: bytes, method: str, path: str, body: bytes) -> None:
    header = sign(secret, method, path, body, timestamp=NOW)
    assert verify_signature(secret, header, method, path, body, now=NOW) == NOW


@given(secrets, methods, paths, bodies, st.data())
def test_any_altered_body_fails(
    secret: bytes, method: str, path: str, body: bytes, data: st.DataObject
) -> None:
    header = sign(secret, method, path, body, timestamp=NOW)
    altered = data.draw(bodies.filter(lambda other: other != body), label="altered body")
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(secret, header, method, path, altered, now=NOW)


@given(secrets, secrets, methods, paths, bodies)
def test_another_secret_fails(
    secret: bytes, other: bytes, method: str, path: str, body: bytes
) -> None:
    assume(other != secret)
    header = sign(secret, method, path, body, timestamp=NOW)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(other, header, method, path, body, now=NOW)


@given(secrets, paths, paths, bodies)
def test_replay_against_another_method_or_path_fails(
    secret: bytes, path: str, other_path: str, body: bytes
) -> None:
    header = sign(secret, "POST", path, body, timestamp=NOW)
    assume(other_path != path)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(secret, header, "PUT", path, body, now=NOW)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(secret, header, "POST", other_path, body, now=NOW)


@given(secrets, bodies, st.integers(-10_000, 10_000).filter(lambda shift: shift != 0))
def test_a_rewritten_timestamp_fails(secret: bytes, body: bytes, shift: int) -> None:
    header = sign(secret, "POST", "/models/m/aliases/champion", body, timestamp=NOW)
    signature = header.split(",v1=")[1]
    forged = f"t={NOW + shift},v1={signature}"
    with pytest.raises(WebhookSignatureError):
        verify_signature(
            secret, forged, "POST", "/models/m/aliases/champion", body, now=NOW + shift
        )


@given(secrets, st.integers(0, 10), st.integers(1, 1000), st.booleans())
def test_stale_or_future_timestamps_are_rejected(
    secret: bytes, tolerance: int, beyond: int, future: bool
) -> None:
    header = sign(secret, "GET", "/models/m/versions", b"", timestamp=NOW)
    skew = tolerance + beyond
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(
            secret, header, "GET", "/models/m/versions", b"",
            tolerance_s=tolerance, now=NOW - skew if future else NOW + skew,
        )  # fmt: skip


def test_within_tolerance_is_accepted_at_both_edges() -> None:
    header = sign("s3cret", "GET", "/models/m/versions", b"", timestamp=NOW)
    for now in (NOW - 300, NOW + 300):
        verify_signature("s3cret", header, "GET", "/models/m/versions", b"", now=now)


def test_any_of_several_secrets_verifies_during_rotation() -> None:
    header = sign("new", "PUT", "/models/m/records/abc", b"{}", timestamp=NOW)
    verify_signature(["old", "new"], header, "PUT", "/models/m/records/abc", b"{}", now=NOW)
    with pytest.raises(WebhookSignatureError):
        verify_signature(["old"], header, "PUT", "/models/m/records/abc", b"{}", now=NOW)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=abc,v1=00", "v1=00", f"t={NOW}", f"t={NOW},v1"],
)
def test_malformed_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_signature("s3cret", header, "GET", "/models/m/versions", b"", now=NOW)


def test_a_second_v1_entry_lets_a_sender_sign_with_two_secrets() -> None:
    old = sign("old", "GET", "/x", b"", timestamp=NOW)
    new = sign("new", "GET", "/x", b"", timestamp=NOW)
    both = old + ",v1=" + new.split(",v1=")[1]
    verify_signature("new", both, "GET", "/x", b"", now=NOW)
    verify_signature("old", both, "GET", "/x", b"", now=NOW)
