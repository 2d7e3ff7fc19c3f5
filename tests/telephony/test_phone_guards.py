"""Small guards of the phone servers: ticket lifetimes, remembered digest nonces, ports."""

from __future__ import annotations

import pytest

from cascade.errors import ConfigError
from cascade.telephony import sip_auth, twilio_server
from cascade.telephony.calls import CallBook
from cascade.telephony.operations import OperationsServer
from cascade.telephony.sip_auth import SipAccess
from cascade.telephony.telemetry import PhoneMetrics
from cascade.telephony.twilio_server import TicketBook


def test_a_retried_webhook_gets_the_same_ticket_with_a_fresh_lifetime(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(twilio_server.time, "monotonic", lambda: now[0])
    calls = CallBook(PhoneMetrics("twilio"), max_calls=5)
    book = TicketBook(calls, seconds=30.0)
    first = book.issue("CA1", {"from": "+1"})
    now[0] += 20.0  # Twilio retried after its timeout
    again = book.issue("CA1", {"from": "+2"})
    assert again is first and again.expires == 150.0 and again.parameters == {"from": "+2"}
    assert calls.reserved == 1  # one call, one place
    now[0] += 25.0  # 45 s after the first webhook, 25 s after the retry: still good
    assert book.redeem(first.token) is first and calls.reserved == 0
    assert book.issue("CA2", {}) is not None and calls.reserved == 1


def test_remembered_nonces_are_forgotten_once_expired_not_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(sip_auth.time, "time", lambda: now[0])
    access = SipAccess(allow=[], users={"alice": "x"}, nonce_seconds=60.0)
    old = access.nonce()
    assert access._first_use(old, "auth", "00000001")
    assert not access._first_use(old, "auth", "00000001")  # the same count again: replay
    assert access._first_use(old, "auth", "00000002")
    now[0] += 30.0
    assert access._first_use(access.nonce(), "", "")
    assert old in access._used  # still valid, so still remembered
    now[0] += 45.0  # the first nonce expired (75 s > 60 s)
    assert access._first_use(access.nonce(), "", "")
    assert old not in access._used and len(access._used) == 2


async def test_an_http_port_out_of_range_is_a_clear_error() -> None:
    metrics = PhoneMetrics("sip")
    server = OperationsServer(CallBook(metrics), metrics, "127.0.0.1", 65536)
    with pytest.raises(ConfigError, match="--http-port"):
        await server.start()
