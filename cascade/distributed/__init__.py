"""Remote stages: run any stage of a pipeline on worker processes behind an MQTT broker.

``remote.RemoteStage`` is the proxy in the caller's graph, ``worker.run_worker``
serves a stage, ``wire`` is the binary message format and ``topics`` the topic
layout. Everything here needs the ``[mqtt]`` extra (aiomqtt, msgpack); see
``docs/mqtt.md``.
"""
