"""Bad SIP and RTP input never takes the server down; misbehaving callers are refused or cut off."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import numpy as np
import pytest

from cascade.conversation import Conversation
from cascade.telephony import g711, sip_message
from cascade.telephony.rtp import RtpPacket
from cascade.telephony.sip_auth import SipAccess, digest_response, parse_authorization
from cascade.telephony.sip_call import MediaSettings
from tests.telephony.sip_caller import SipCaller, offer
from tests.telephony.test_sip_server import settled, sip_server


def errors(server: object, kind: str) -> float:
    metrics = server.metrics.render().decode()  # type: ignore[attr-defined]
    for line in metrics.splitlines():
        if line.startswith(f'cascade_phone_errors_total{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_garbage_datagrams_then_the_server_still_answers() -> None:
    async with sip_server() as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        invite, _ = caller.request("INVITE", offer(caller.rtp_port))
        for junk in (b"\x00\xff" * 50, b"HELLO\r\n\r\n", b"INVITE sip:x SIP/2.0\r\n\r\n",
                     invite.replace("Content-Length: ", "Content-Length: 9").encode(),
                     invite.replace("CSeq: 1 INVITE", "CSeq: one INVITE").encode(),
                     invite.replace("Call-ID", "X-Call-ID").encode(),
                     b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
                     "INVITE sip:\u00e9 SIP/2.0\r\n".encode("latin-1") + b"\r\n",
                     caller.request("OPTIONS")[0].replace("Content-Length: 0",
                                                          "Content-Length: \u00b2").encode(),
                     "SIP/2.0 \u00b2\u00b2\u00b2 OK\r\n\r\n".encode(),
                     b"\r\n\r\n"):
            caller.send(junk)
        caller.send(caller.request("OPTIONS")[0])
        options = await caller.expect(200)
        assert "INVITE" in options.get("Allow") and "BYE" in options.get("Allow")
        caller.send(caller.request("REGISTER")[0])
        await caller.expect(405)
        caller.send(caller.request("BYE")[0])  # no such call
        await caller.expect(481)
        assert errors(server, "sip_malformed") >= 9
        assert errors(server, "internal") == 0
        caller.close()


async def test_no_common_codec_is_488_and_retransmissions_get_the_same_answer() -> None:
    async with sip_server() as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        text, _ = caller.request("INVITE", offer(caller.rtp_port, (18,)))
        caller.send(text)
        refused = await caller.expect(488)
        assert "G729" in refused.get("Warning")
        caller.send(text)  # the caller did not hear us: the same final answer again
        assert (await caller.expect(488)).to_tag == refused.to_tag
        no_sdp, _ = SipCaller(("127.0.0.1", server.port)).request("INVITE")
        caller.send(no_sdp)
        await caller.expect(488)
        odd_port, _ = SipCaller(("127.0.0.1", server.port)).request(
            "INVITE", offer(caller.rtp_port).replace(f"audio {caller.rtp_port}", "audio 4\u00b2"))
        caller.send(odd_port)  # a digit int() refuses: still a final answer, not a stall
        assert "not a port number" in (await caller.expect(488)).get("Warning")
        caller.close()


async def test_cancel_while_ringing_gives_487() -> None:
    async with sip_server(ring_seconds=1.0) as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        invite, branch = caller.request("INVITE", offer(caller.rtp_port))
        caller.send(invite)
        await caller.expect(180)
        caller.send(caller.request("CANCEL", branch=branch, cseq=1)[0])
        assert (await caller.expect(200)).cseq == (1, "CANCEL")
        await caller.expect(487)
        await asyncio.sleep(1.2)
        assert not server.dialogs and not server.calls.active
        caller.close()


async def test_cancel_while_the_stages_start_ends_the_call_unanswered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CANCEL that lands while the conversation's stages start (a stage connecting to a
    remote service) must not be answered with 200 OK afterwards, nor leave the call."""
    started = Conversation.start

    async def slow_start(self: Conversation) -> None:
        await asyncio.sleep(0.3)
        await started(self)

    monkeypatch.setattr(Conversation, "start", slow_start)
    async with sip_server() as (server, _, events):
        caller = SipCaller(("127.0.0.1", server.port))
        invite, branch = caller.request("INVITE", offer(caller.rtp_port))
        caller.send(invite)
        await caller.expect(180)
        await asyncio.sleep(0.1)  # the call is admitted; its stages are starting
        assert len(server.calls.active) == 1
        caller.send(caller.request("CANCEL", branch=branch, cseq=1)[0])
        answers = []
        with contextlib.suppress(TimeoutError):
            while True:
                reply = await caller.receive(1.0)
                answers.append((reply.status, reply.cseq[1]))
        assert (200, "CANCEL") in answers and (487, "INVITE") in answers
        assert (200, "INVITE") not in answers
        assert not server.calls.active and not server.dialogs
        assert not events  # no on_call hook, no call_start: the call never began
        assert await server.drain(1.0)
        caller.close()


async def test_untrusted_callers_need_the_right_password() -> None:
    access = SipAccess(allow=[], users={"alice": "wonderland"})
    async with sip_server(access=access) as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        caller.send(caller.request("INVITE", offer(caller.rtp_port))[0])
        challenge = parse_authorization(
            (await caller.expect(401)).get("WWW-Authenticate"))
        uri = f"sip:agent@127.0.0.1:{server.port}"

        def login(password: str, nonce: str) -> str:
            response = digest_response("alice", password, "cascade", "INVITE", uri, nonce,
                                       "auth", "00000001", "abc")
            return (f'Authorization: Digest username="alice", realm="cascade", '
                    f'nonce="{nonce}", uri="{uri}", response="{response}", qop=auth, '
                    'nc=00000001, cnonce="abc", algorithm=MD5')

        caller.send(caller.request("INVITE", offer(caller.rtp_port),
                                   [login("guess", challenge["nonce"])])[0])
        await caller.expect(403)
        caller.send(caller.request("INVITE", offer(caller.rtp_port),
                                   [login("wonderland", "forged.nonce")])[0])
        await caller.expect(401)  # a nonce we never issued: challenged again
        await caller.call_with([login("wonderland", challenge["nonce"])])
        await caller.hang_up()
        replay = SipCaller(("127.0.0.1", server.port))  # the same header, captured
        replay.send(replay.request("INVITE", offer(replay.rtp_port),
                                   [login("wonderland", challenge["nonce"])])[0])
        await replay.expect(401)  # a nonce count already used: challenged, not let in
        other_uri = login("wonderland", challenge["nonce"]).replace(
            f'uri="{uri}"', 'uri="sip:agent@10.9.8.7:5060"')
        replay.send(replay.request("INVITE", offer(replay.rtp_port), [other_uri])[0])
        await replay.expect(403)  # a digest for another request URI
        replay.close()
        nobody = SipAccess(allow=["10.0.0.0/8"])
        assert nobody.check(caller_invite(caller), "127.0.0.1") == "refuse"
        caller.close()


def caller_invite(caller: SipCaller) -> sip_message.SipMessage:
    return sip_message.parse(caller.request("INVITE", offer(caller.rtp_port))[0].encode())


async def test_bad_rtp_is_dropped_and_a_flooding_or_silent_caller_is_hung_up() -> None:
    media = MediaSettings(media_timeout=1.0)
    async with sip_server(media=media) as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        await caller.call()
        speech = RtpPacket(0, 1, 0, 7, g711.ulaw_encode(np.full(160, 3000, np.int16)))
        for junk in (b"", b"\x80", b"\x00" * 40, b"\xbf" + b"\x00" * 11, b"\x90\x00" + b"\0" * 12):
            caller.send_rtp(junk)
        caller.send_rtp(RtpPacket(18, 2, 160, 7, b"\x00" * 20))  # G.729: not negotiated
        caller.send_rtp(RtpPacket(0, 3, 320, 7, b"\xff" * 4000))  # 0.5 s in one packet
        caller.send_rtp(speech)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))
        assert caller.remote_rtp is not None
        stranger.sendto(speech.encode(), caller.remote_rtp)
        stranger.close()
        await asyncio.sleep(0.1)
        assert errors(server, "rtp_malformed") == 5
        assert errors(server, "rtp_wrong_codec") == 1
        assert errors(server, "rtp_oversized") == 1
        assert errors(server, "rtp_wrong_source") == 1
        assert server.dialogs  # still up
        # silence on the wire for longer than media_timeout: the server hangs up
        bye = await caller.receive(3.0)
        assert bye.method == "BYE"
        caller.answer(bye)
        await settled(server)
        assert not server.dialogs and errors(server, "media_timeout") == 1

        flood = SipCaller(("127.0.0.1", server.port))
        await flood.call()
        for burst in range(50):  # 100 packets every 10 ms: 100 times real time
            for sequence in range(burst * 100, burst * 100 + 100):
                flood.send_rtp(RtpPacket(0, sequence, sequence * 160, 9, b"\xff" * 160))
            await asyncio.sleep(0.01)
        bye = await flood.receive(3.0)
        assert bye.method == "BYE" and errors(server, "flooding") == 1
        flood.answer(bye)
        await settled(server)
        assert not server.dialogs
        caller.close()
        flood.close()
