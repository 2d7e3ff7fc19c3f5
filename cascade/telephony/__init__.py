"""Phone backends: many calls per process over Twilio Media Streams or SIP/RTP.

Install with ``pip install 'voice-cascade[phone]'``; run with
``cascade serve --protocol twilio`` (or ``--phone``) or ``--protocol sip``. One
``Pipeline`` serves every call, so models load once per process; each call gets
its own conversation (``calls.CallSession``).

In reading order:

* ``g711``        - μ-law/A-law codec as numpy look-up tables.
* ``resampler``/``line`` - 8 kHz line audio <-> the pipeline rate, 20 ms at a time.
* ``calls``/``telemetry`` - admission, draining, each call's conversation; Prometheus.
* ``twilio_protocol``/``twilio_call``/``twilio_server`` - the Media Streams endpoint
  (ASGI app with signed webhook, one-time stream tokens, marks and clear).
* ``sip_message``/``sdp``/``sip_auth``/``rtp``/``jitter``/``sip_call``/``sip_server`` -
  a SIP user agent server on UDP with RTP, a jitter buffer and RFC 4733 DTMF.
* ``impairments`` - loss, jitter, reordering, duplicates and DTX for tests and evaluation.

* ``operations``  - ``/healthz``, ``/readyz``, ``/metrics`` for both servers.

Importing this package loads nothing; its modules need the ``phone`` extra
(Starlette, uvicorn, twilio, prometheus-client), and nothing in the core imports them.
"""


def is_number(text: str) -> bool:
    """ASCII digits only: what every number on the wire must be (``str.isdigit`` also
    takes '²', which ``int`` then refuses, so untrusted input is checked with this)."""
    return text.isascii() and text.isdigit()
