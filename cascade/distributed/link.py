"""One MQTT v5 connection that survives broker restarts.

``BrokerLink`` keeps a connection to the broker (reconnecting with exponential
backoff and jitter), re-subscribes after every reconnect, routes each incoming
message to the handler of its topic, and publishes without waiting. A message
published while the link is down is dropped on purpose: the remote-stage
protocol notices the gap (sequence numbers, a ``sync`` after each reconnect) and
resends from its own log, which a blind resend queue here could not do right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable

import aiomqtt

from cascade.distributed.topics import BrokerAddress
from cascade.errors import CascadeError

Handler = Callable[[str, bytes], None]
Farewell = Callable[[int, bool], bytes]
"""(connection generation, goodbye?) -> the payload of the last will or of a goodbye."""
log = logging.getLogger("cascade.distributed")


class BrokerUnavailable(CascadeError):
    """The MQTT broker could not be reached or refused us."""


def _filter_part(subscription: str) -> str:
    """The topic filter inside ``$share/<group>/<filter>``."""
    if subscription.startswith("$share/"):
        return subscription.split("/", 2)[2]
    return subscription


def _is_refusal(code: object) -> bool:
    """CONNACK codes that retrying will not fix: bad login, not authorised."""
    return getattr(code, "value", code) in (4, 5, 134, 135)


class BrokerLink:
    """A reconnecting MQTT client shared by everything in one process and loop."""

    min_backoff = 0.05
    max_backoff = 2.0

    def __init__(self, address: BrokerAddress, client_id: str, *,
                 will: tuple[str, Farewell] | None = None, keepalive: int = 5) -> None:
        self.address = address
        self.client_id = client_id
        self.will = will
        self.keepalive = keepalive
        self.generation = 0
        """How many times this link has connected; bumps at every reconnect."""
        self.connected = asyncio.Event()
        self.connected_since = 0.0
        self._client: aiomqtt.Client | None = None
        self._exact: dict[str, Handler] = {}
        self._patterns: dict[str, Handler] = {}
        self._subscriptions: set[str] = set()
        self._listeners: list[Callable[[], None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_error = "not connected yet"
        self._closing = False
        self._refused = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------

    async def start(self, timeout: float = 5.0) -> None:
        """Connect; ``BrokerUnavailable`` when the broker is not reachable in ``timeout``."""
        self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.client_id}")
        connected = asyncio.create_task(self.connected.wait())
        refused = asyncio.create_task(self._refused.wait())
        try:
            await asyncio.wait({connected, refused}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            refused.cancel()
        if self.connected.is_set():
            return
        await self.close()
        if self._refused.is_set():
            raise BrokerUnavailable(f"the MQTT broker at {self.address} refused the login "
                                    f"({self._last_error}); check the user name and password")
        raise BrokerUnavailable(
            f"cannot reach the MQTT broker at {self.address} within {timeout:g} s "
            f"({self._last_error}); is it running, and is the address right?")

    async def close(self) -> None:
        self._closing = True
        client = self._client
        if client is not None and self.will is not None:
            # A graceful exit says goodbye itself: unlike the will (sent on a crash, and
            # by some brokers on their own shutdown), a goodbye is final.
            goodbye = self.will[1](self.generation, True)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(client.publish(self.will[0], goodbye, qos=1), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._sending):
            task.cancel()

    def on_connect(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every (re)connection, once subscriptions are back."""
        self._listeners.append(listener)

    # --- routing -------------------------------------------------------------

    def route(self, topic: str, handler: Handler) -> None:
        """Hand messages on exactly ``topic`` to ``handler`` (no new subscription)."""
        self._exact[topic] = handler

    def unroute(self, topic: str) -> None:
        self._exact.pop(topic, None)

    async def subscribe(self, subscription: str, handler: Handler | None = None) -> None:
        """Subscribe (now and after every reconnect); ``handler`` gets matching messages."""
        if handler is not None:
            self._patterns[_filter_part(subscription)] = handler
        if subscription in self._subscriptions:
            return
        self._subscriptions.add(subscription)
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.subscribe(subscription, qos=1)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        handler = self._exact.get(topic)
        if handler is None:
            for pattern, candidate in self._patterns.items():
                if aiomqtt.Topic(topic).matches(pattern):
                    handler = candidate
                    break
        if handler is None:
            return
        try:
            handler(topic, payload)
        except Exception:  # one bad handler must not take the connection down
            log.exception("handler for %s failed", topic)

    # --- publishing ----------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Send without waiting, in call order; False (dropped) while disconnected."""
        client = self._client
        if client is None:
            return False
        task = asyncio.create_task(self._publish(client, topic, payload, qos))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return True

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes,
                       qos: int) -> None:
        try:
            await client.publish(topic, payload, qos=qos, timeout=10.0)
        except aiomqtt.MqttError as exc:
            log.debug("publish to %s failed: %s", topic, exc)

    # --- connection loop -----------------------------------------------------

    def _client_for_connection(self) -> aiomqtt.Client:
        address = self.address
        will = None
        if self.will is not None:
            will = aiomqtt.Will(self.will[0], self.will[1](self.generation + 1, False), qos=1)
        client = aiomqtt.Client(
            address.host, address.port, username=address.username,
            password=address.password, identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5, will=will, keepalive=self.keepalive,
            tls_context=address.tls_context(), timeout=10.0, max_inflight_messages=200,
            # small frames every 20 ms: Nagle's algorithm would hold them for ~40 ms
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        client.pending_calls_threshold = 1 << 20  # we publish without waiting, by design
        return client

    async def _run(self) -> None:
        backoff = self.min_backoff
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                async with self._client_for_connection() as client:
                    for subscription in sorted(self._subscriptions):
                        await client.subscribe(subscription, qos=1)
                    self._client = client
                    self.generation += 1
                    self.connected_since = loop.time()
                    self.connected.set()
                    if self.generation > 1:
                        log.info("reconnected to %s", self.address)
                    backoff = self.min_backoff
                    for listener in list(self._listeners):
                        listener()
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            self._dispatch(message.topic.value, bytes(payload))
            except aiomqtt.MqttError as exc:
                self._last_error = str(exc)
                if isinstance(exc, aiomqtt.MqttCodeError) and _is_refusal(exc.rc):
                    self._refused.set()
                if self.connected.is_set():
                    log.warning("lost the broker at %s (%s); reconnecting", self.address, exc)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff)
