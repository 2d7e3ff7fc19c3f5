"""Broker URLs and the topic layout: logins from the URL, ids only in topics."""

from __future__ import annotations

import pytest

from cascade import PipelineConfig, parse_pipeline
from cascade.distributed.topics import BrokerAddress, ServiceTopics, reply_topic, topic_id
from cascade.errors import ConfigError


def test_plain_and_tls_urls() -> None:
    plain = BrokerAddress.parse("mqtt://broker.internal")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.internal", 1883,
                                                                   False, None)
    secure = BrokerAddress.parse("mqtts://agent:p%40ss%2Fword@10.0.0.5?ca=/etc/ca.pem")
    assert (secure.port, secure.tls, secure.username, secure.password, secure.ca_file) == (
        8883, True, "agent", "p@ss/word", "/etc/ca.pem")
    assert str(secure) == "mqtts://agent@10.0.0.5:8883"  # never the password


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_MQTT_PASSWORD", "from-env")
    assert BrokerAddress.parse("mqtts://agent@host:8883").password == "from-env"


@pytest.mark.parametrize(("url", "message"), [
    ("http://host:1883", "use mqtt://host:1883"),
    ("mqtt://:1883", "names no host"),
    ("mqtt://host:port", "port is not a number"),
    ("mqtt://host?ca=/x.pem", "ca= needs TLS"),
    ("mqtts://host?insecure=1", "unknown option"),
    ("ftp://agent:hunter2@host", r"agent:\*\*\*@host"),
])
def test_bad_urls_say_what_to_fix(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        BrokerAddress.parse(url)
    assert "hunter2" not in str(caught.value)


def pipeline(options: dict[str, object]) -> PipelineConfig:
    return parse_pipeline({"name": "my pipeline/v2", "stages": {
        "asr": {"adapter": "scripted-asr", "options": options}}})


def test_topics_carry_ids_and_a_settings_hash() -> None:
    topics = ServiceTopics.of(pipeline({"script": ["secret words"]}), "asr")
    assert topics.base.startswith("cascade/v1/my_pipeline_v2/asr/")
    assert topics.shared_new == f"$share/cascade-asr-{topics.digest}/{topics.base}/new"
    assert topics.inbound("w1", "c1", "call/7#") == f"{topics.base}/w/w1/c1/call_7_/in"
    other = ServiceTopics.of(pipeline({"script": ["other"]}), "asr")
    assert other.digest != topics.digest, "differently configured workers are kept apart"
    assert "secret" not in topics.base
    assert reply_topic("c1", "+", "asr") == "cascade/v1/reply/c1/+/asr"
    assert topic_id("a+b#c$") == "a_b_c_"


def test_unknown_stage_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no stage 'tts'"):
        ServiceTopics.of(pipeline({}), "tts")
