"""The SIP server as ``cascade serve --protocol sip`` runs it: on uvloop (the phone extra)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cascade.telephony import g711
from cascade.telephony.calls import run_server
from cascade.telephony.rtp import RtpSender
from tests.telephony.sip_caller import SipCaller
from tests.telephony.test_sip_server import settled, sip_server


async def _call_on_the_running_loop() -> tuple[str, int, int]:
    loop_kind = type(asyncio.get_running_loop()).__module__
    async with sip_server() as (server, _, _):
        caller = SipCaller(("127.0.0.1", server.port))
        await caller.call()
        sender = RtpSender(0)
        tone = g711.ulaw_encode((np.sin(np.arange(160) * 0.2) * 6000).astype(np.int16))
        for _ in range(25):  # half a second of caller audio, at the caller's pace
            caller.send_rtp(sender.packet(tone))
            await asyncio.sleep(0.02)
        heard = len(caller.received_rtp())
        await caller.hang_up()
        await settled(server)
        left = len(server.dialogs) + len(server.calls.active)
        caller.close()
    return loop_kind, heard, left


async def test_a_call_on_uvloop_gets_media_back_and_hangs_up_cleanly() -> None:
    pytest.importorskip("uvloop")  # not on Windows, where the phone extra leaves it out
    loop_kind, heard, left = await asyncio.to_thread(run_server, _call_on_the_running_loop())
    assert loop_kind.startswith("uvloop")
    assert heard >= 15  # a packet every 20 ms (silence until the agent speaks)
    assert left == 0
