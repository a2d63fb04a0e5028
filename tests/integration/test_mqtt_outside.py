"""The MQTT gateway tested from the outside: ``gateway run mqtt`` and ``gateway validate mqtt`` as
processes, a real mosquitto of each test's own, messages published with Debian's ``mosquitto_pub``
(the C client: no paho, which the gateway uses), and a subscriber that is a bare asyncio HTTP/1.1
server parsing the CloudEvent headers itself (``RawSink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from tests.harness.brokers import Mosquitto, mosquitto
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.kafka import node, phase_is
from tests.harness.processes import wait_until
from tests.harness.raw_sink import RawSink, run

pytestmark = pytest.mark.slow

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
needs_pub = pytest.mark.skipif(
    MOSQUITTO_PUB is None, reason="no mosquitto_pub: apt-get install mosquitto-clients"
)
_ids = itertools.count()


async def mosquitto_pub(broker: Mosquitto, topic: str, *args: str, v5: bool = True) -> None:
    """One ``mosquitto_pub`` run (``-m``/``-n``/``-q``/``-r``/``-D`` in ``args``); it must exit 0."""
    assert MOSQUITTO_PUB is not None
    version = ["-V", "mqttv5"] if v5 else []
    code, out = await run([MOSQUITTO_PUB, "-p", str(broker.port), *version, "-t", topic, *args])
    assert code == 0, f"mosquitto_pub failed: {out}"


# --- a subscriber that parses HTTP by hand ---------------------------------------------------------------


def source(broker: Mosquitto, topic: str, *lines: str) -> str:
    return "\n".join(
        [
            f"url: {broker.url}",
            f"topic: '{topic}'",
            f"clientId: gw-outside-{next(_ids)}",
            "backoff: {duration: 200ms, factor: 1, jitter: 0, steps: 0}",
            *lines,
        ]
    )


@contextlib.asynccontextmanager
async def standalone(tmp: Path, sink: RawSink, **sources: str) -> AsyncIterator[Gateway]:
    """``gateway run mqtt`` with ``sources``, every one of them Running; stopped after."""
    config = tmp / "cm.yaml"
    config.write_text(configmap(**sources))
    gateway = Gateway(tmp, config, [sink.url], pod=False, kind="mqtt")
    try:
        await gateway.start()
        for name in sources:
            await wait_until(partial(phase_is, gateway, name, "Running"), what=f"{name} Running", timeout=20)
        yield gateway
    finally:
        await gateway.stop()


def _cm(tmp: Path, **sources: str) -> Path:
    path = tmp / "cm.yaml"
    path.write_text(configmap(**sources))
    return path


# --- the tests ----------------------------------------------------------------------------------------


@needs_pub
async def test_mqtt_5_metadata_from_mosquitto_pub_reaches_the_subscriber_as_the_readme_maps_it(
    tmp_path: Path,
) -> None:
    """Pinned: user properties with an empty, a quoted and a non-ASCII name, one name twice (its
    values in order); content types valid, invalid and JSON; an empty payload; a non-ASCII topic;
    QoS 0, 1 and 2; a retained message sent on subscribing flagged ``retain``."""
    async with mosquitto() as broker, RawSink() as sink:
        await mosquitto_pub(broker, "t/kept", "-m", "kept", "-q", "1", "-r")
        m5 = source(broker, "t/#", "qos: 2", 'protocol: "5"')
        async with standalone(tmp_path, sink, m5=m5):
            await wait_until(lambda: len(sink.arrivals) >= 1, what="the retained message")
            await mosquitto_pub(broker, "t/a", "-m", "plain", "-q", "1")
            await mosquitto_pub(broker, "t/a", "-n", "-q", "2")
            props = ["-D", "publish", "user-property", "", "empty-name"]
            props += ["-D", "publish", "user-property", 'a b"c', "v1", "-D", "publish", "user-property"]
            props += ['a b"c', "v2", "-D", "publish", "user-property", "ünï", "ü"]
            await mosquitto_pub(broker, "t/a", "-m", "x", "-q", "1", *props)
            for kind in ("text/plain; charset=utf-8", "garbage type", "application/json"):
                await mosquitto_pub(
                    broker, "t/a", "-m", "{}", "-q", "1", "-D", "publish", "content-type", kind
                )
            await mosquitto_pub(broker, "t/ü/🎉", "-m", "uni", "-q", "0")
            await wait_until(lambda: len(sink.arrivals) >= 8, what="every message")
    kept, plain, empty, users, text, garbage, jsonish, uni = sink.arrivals
    assert kept.body == b"kept" and kept.ce("retain") == "true" and kept.ce("eventsubject") == "t/kept"
    assert plain.body == b"plain" and plain.ce("qos") == "1" and plain.ce("retain") == "false"
    assert plain.ce("dup") == "false" and plain.id.startswith("m5:") and plain.ce("subject") == "m5"
    assert empty.body == b"" and empty.ce("qos") == "2"
    assert json.loads(users.ce("userproperties") or "{}") == {
        "": ["empty-name"],
        'a b"c': ["v1", "v2"],
        "ünï": ["ü"],
    }
    assert plain.ce("userproperties") is None, "only when it has any"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert garbage.headers["content-type"] == "application/octet-stream"
    assert jsonish.headers["content-type"] == "application/json" and jsonish.body == b"{}"
    assert uni.ce("eventsubject") == "t/ü/🎉" and uni.ce("qos") == "0"
    assert len({a.id for a in sink.arrivals}) == 8


@needs_pub
async def test_restarting_a_persistent_mqtt_5_session_does_not_deliver_its_retained_message_again(
    tmp_path: Path,
) -> None:
    """A persistent session keeps its subscription in the broker; MQTT 5 lets a subscriber say
    "retained messages only for a new subscription" (Retain Handling 1), and a session that is
    present needs no new SUBSCRIBE at all. Seen: each restart of ``gateway run`` (SIGTERM, clean)
    subscribes again with Retain Handling 0 and the subscriber gets the retained message once more
    (``retain: true``), on every restart: an at-least-once source repeating, without any crash, a
    message it had acknowledged. Expected: once."""
    async with mosquitto() as broker, RawSink() as sink:
        await mosquitto_pub(broker, "r/state", "-m", "kept", "-q", "1", "-r")
        persistent = source(broker, "r/#", "qos: 1", 'protocol: "5"', "persistentSession: true")
        for _ in range(2):
            async with standalone(tmp_path, sink, p=persistent):
                await wait_until(lambda: len(sink.arrivals) >= 1, what="the retained message")
                await mosquitto_pub(broker, "r/live", "-m", "live", "-q", "1")
                await wait_until(lambda: b"live" in [a.body for a in sink.arrivals], what="a live message")
                await asyncio.sleep(0.5)  # a repeat would come on subscribing, before the live one
    kept = [a for a in sink.arrivals if a.body == b"kept"]
    assert len(kept) == 1, f"the retained message arrived {len(kept)} times across one clean restart"


async def test_a_broker_outage_shows_in_readyz_within_5s_and_running_after_with_no_empty_events(
    tmp_path: Path,
) -> None:
    """Pinned: mosquitto stopped -> the node is ``Error`` naming the disconnect within 5 s, started
    -> ``Running`` (reconnected) and delivery goes on; nothing empty arrives meanwhile."""
    async with mosquitto() as broker, RawSink() as sink:  # noqa: SIM117 (the gateway needs both)
        async with standalone(tmp_path, sink, q=source(broker, "o/#", "qos: 1")) as gateway:
            await broker.stop()
            await wait_until(lambda: phase_is(gateway, "q", "Error", "disconnected"), what="Error", timeout=5)
            await broker.start()
            await wait_until(lambda: phase_is(gateway, "q", "Running"), what="Running again", timeout=10)
            status = await node(gateway, "q")
            assert "reconnected" in str(status.get("message")), status
    assert sink.arrivals == [], "no event at all, let alone an empty one"


async def test_validate_refuses_two_sources_with_one_client_id_naming_each_other_and_passes_the_rest(
    tmp_path: Path,
) -> None:
    """Pinned: a client id shared on one broker (the port defaulted on one side) is refused for both,
    each naming the other; YAML garbage and bad values are named per key; a good key is OK."""
    path = _cm(
        tmp_path,
        a="url: tcp://127.0.0.1:1883\ntopic: t\nclientId: same",
        b="url: tcp://127.0.0.1\ntopic: u\nclientId: same",
        c="url: tcp://127.0.0.1\ntopic: t\nclientId: c\nqos: true",
        d="url: tcp://127.0.0.1\ntopic: '$share/g'\nclientId: d",
        e="url: tcp://127.0.0.1\ntopic: t\nclientId: e\nsessionExpiry: 1h",
        garbage="{{{{ : : ]",
        good="url: tcp://127.0.0.1\ntopic: t\nclientId: good",
    )
    code, out = await run([*GATEWAY, "validate", "mqtt", str(path)])
    assert code == 1, out
    lines = dict(
        line.split(None, 1)[1].split(":", 1) for line in out.splitlines() if line.startswith("INVALID")
    )
    assert "OK      good" in out
    assert "'b'" in lines["a"] and "'a'" in lines["b"]
    assert "qos" in lines["c"] and "topic" in lines["d"] and "sessionExpiry" in lines["e"]
    assert "YAML" in lines["garbage"]


async def test_validate_refuses_a_backoff_duration_that_is_not_a_number(tmp_path: Path) -> None:
    """``duration: .nan`` is YAML's NaN (``NaN < 0`` is false, so it passes the sign check). Seen:
    ``OK``; the source's retry then cannot sleep NaN seconds. Expected: refused naming
    ``backoff.duration``."""
    path = _cm(tmp_path, n="url: tcp://127.0.0.1\ntopic: t\nclientId: n\nbackoff: {duration: .nan}")
    code, out = await run([*GATEWAY, "validate", "mqtt", str(path)])
    assert code == 1 and "backoff.duration" in out, f"a NaN backoff duration passes: rc={code} {out!r}"
