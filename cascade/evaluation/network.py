"""A telephone caller heard through a packet network: loss, jitter, reordering, DTX.

``received`` cuts the caller's μ-law line into 20 ms RTP packets, sends them
through ``cascade.telephony.impairments.impair`` and plays them out of the phone
server's own ``JitterBuffer`` on a 20 ms tick, as the SIP server would hear
them: lost and late packets concealed, reordered and duplicated ones put right
within the buffer's delay, suppressed silence played as silence. The buffer's
fixed delay is taken out (each frame goes back to its own timestamp), so the
track keeps its timeline and the scenario's event times stay true; only what
the network lost or spoiled differs. The network is seeded: every system hears
the same packets lost.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cascade.evaluation.scenarios import Network
from cascade.frames import PCM
from cascade.telephony import g711
from cascade.telephony.impairments import Impairment, Timed, impair, paced
from cascade.telephony.jitter import JitterBuffer
from cascade.telephony.line import FRAME_SAMPLES as FRAME
from cascade.telephony.rtp import RtpPacket

SSRC = 0x0CA11E12
QUIET = bytes([g711.SILENCE["PCMU"]]) * FRAME


def received(line: bytes, network: Network) -> PCM:
    """The 8 kHz PCM a receiver plays from μ-law ``line`` sent over ``network``
    (as long as ``line``; a last partial packet is sent padded with silence)."""
    padded = line + QUIET[: -len(line) % FRAME]
    frames = len(padded) // FRAME
    packets = paced(RtpPacket(0, i & 0xFFFF, (i * FRAME) & 0xFFFFFFFF, SSRC,
                              padded[i * FRAME:(i + 1) * FRAME]) for i in range(frames))
    threshold = 32768 * 10 ** (network.silent_below_dbfs / 20)

    def silent(packet: RtpPacket) -> bool:
        return int(np.abs(g711.ulaw_decode(packet.payload).astype(np.int32)).max()) < threshold

    def comfort_noise(packet: Timed[RtpPacket]) -> RtpPacket:
        hiss = np.random.default_rng(packet.item.sequence).normal(0.0, threshold / 8, FRAME)
        payload = g711.ulaw_encode(hiss.astype(np.int16))
        return RtpPacket(0, packet.item.sequence, packet.item.timestamp, SSRC, payload)

    impairment = Impairment(loss=network.loss, burst=network.burst, jitter=network.jitter,
                            reorder=network.reorder, duplicate=network.duplicate,
                            dtx=network.dtx, seed=network.seed)
    arriving = deque(impair(packets, impairment, silent, comfort_noise))
    buffer = JitterBuffer(delay=network.jitter_buffer,
                          max_delay=max(10, 2 * network.jitter_buffer))
    out = np.zeros(frames * FRAME, np.int16)
    last_tick = frames + network.jitter_buffer + int(network.jitter / 0.02) + 2
    for tick in range(last_tick + 1):
        now = tick * 0.02 + 1e-3  # the receiver's tick, just after the sender's
        while arriving and arriving[0].at <= now:
            packet = arriving.popleft().item
            buffer.push(packet.sequence, packet.timestamp, packet.ssrc,
                        g711.ulaw_decode(packet.payload))
        frame = buffer.pop()
        at = buffer.played
        if frame is not None and at is not None and 0 <= at < len(out):
            out[at : at + FRAME] = frame[: len(out) - at]
    return out[: len(line)]
