"""Where remote-stage messages go: broker addresses and the MQTT topic layout.

Topics carry ids only (pipeline, stage, a hash of the stage's settings, worker,
caller and conversation ids), never transcript text. For one served stage,
``S = cascade/v1/<pipeline>/<stage>/<settings hash>``:

==========================================  ========================================
``$share/cascade-<stage>-<hash>/S/new``     new conversations; one worker of the group
``S/w/<worker>/<caller>/<conv>/in``         ordered frames to the worker (QoS 1)
``S/w/<worker>/<caller>/<conv>/ctl``        control frames, sync, close (QoS 1, ahead)
``S/alive/<worker>``                        heartbeats; the worker's last will
``cascade/v1/reply/<caller>/<conv>/<stage>``  everything back from the worker (QoS 1)
``cascade/v1/caller/<caller>``              the caller's last will
==========================================  ========================================

Workers whose stage settings differ get a different hash, so a caller never
lands on a worker configured differently from its own pipeline file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from cascade.config import PipelineConfig
from cascade.errors import ConfigError

ROOT = "cascade/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
PASSWORD_ENV = "CASCADE_MQTT_PASSWORD"


def topic_id(text: str) -> str:
    """``text`` made safe as one topic level (no ``/``, ``+``, ``#``, ``$``)."""
    return _UNSAFE.sub("_", text)[:64] or "_"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is and how to log in; ``str()`` never shows the password."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://host:1883`` or ``mqtts://user:pass@host:8883?ca=/path/ca.pem``.

        A username without a password takes it from ``$CASCADE_MQTT_PASSWORD``, which
        keeps secrets out of pipeline files.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"broker '{_redact(url)}': use mqtt://host:1883 or "
                              "mqtts://user:password@host:8883")
        if not parts.hostname:
            raise ConfigError(f"broker '{_redact(url)}' names no host")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError(f"broker '{_redact(url)}': the port is not a number") from None
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca"}
        if unknown:
            raise ConfigError(f"broker '{_redact(url)}': unknown option(s) "
                              f"{', '.join(sorted(unknown))}; the only one is ca=/path/ca.pem")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username and password is None:
            password = os.environ.get(PASSWORD_ENV)
        ca = query.get("ca", [None])[0]
        if ca and not tls:
            raise ConfigError(f"broker '{_redact(url)}': ca= needs TLS; use mqtts://")
        return cls(parts.hostname, port, tls, username, password, ca)

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def settings_hash(config: PipelineConfig, stage: str) -> str:
    """Eight hex digits naming the stage's adapter, options and the pipeline rate."""
    spec = config.stages[stage]
    text = json.dumps([spec.adapter, spec.options, config.sample_rate], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class ServiceTopics:
    """The topics of one served stage (see the module docstring)."""

    pipeline: str
    stage: str
    digest: str

    @classmethod
    def of(cls, config: PipelineConfig, stage: str) -> ServiceTopics:
        if stage not in config.stages:
            raise ConfigError(f"pipeline '{config.name}' has no stage '{stage}' "
                              f"(stages: {', '.join(config.stages)})")
        return cls(topic_id(config.name), topic_id(stage), settings_hash(config, stage))

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.pipeline}/{self.stage}/{self.digest}"

    @property
    def new(self) -> str:
        return f"{self.base}/new"

    @property
    def shared_new(self) -> str:
        return f"$share/cascade-{self.stage}-{self.digest}/{self.new}"

    def alive(self, worker: str = "+") -> str:
        return f"{self.base}/alive/{worker}"

    def inbound(self, worker: str, caller: str = "+", conversation: str = "+") -> str:
        return f"{self.base}/w/{worker}/{_level(caller)}/{_level(conversation)}/in"

    def control(self, worker: str, caller: str = "+", conversation: str = "+") -> str:
        return f"{self.base}/w/{worker}/{_level(caller)}/{_level(conversation)}/ctl"


def _level(text: str) -> str:
    return text if text == "+" else topic_id(text)


def reply_topic(caller: str, conversation: str = "+", stage: str = "+") -> str:
    return f"{ROOT}/reply/{_level(caller)}/{_level(conversation)}/{_level(stage)}"


def caller_topic(caller: str = "+") -> str:
    return f"{ROOT}/caller/{caller}"
