"""Checking a whole set of sources: alone, then against each other, and never against what runs."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from common.configmap import EventSourceSpec
from common.events import SourceEvent
from common.kinds import GatewayKind, SourceContext
from common.validate import precheck_for, validate_all
from gateways.webhook import KIND as WEBHOOK


def hook(name: str, endpoint: str = "/a", port: int = 12000) -> EventSourceSpec:
    return EventSourceSpec(name, f"endpoint: {endpoint}\nmethod: POST\nport: {port}")


def refused(specs: list[EventSourceSpec], settled: frozenset[str] = frozenset()) -> dict[str, str]:
    return {v.name: v.error.reason for v in validate_all(WEBHOOK, specs, settled=settled) if v.error}


def test_a_newcomer_that_clashes_with_a_running_source_is_refused_alone() -> None:
    found = refused([hook("old"), hook("new")], settled=frozenset({"old"}))

    assert found == {
        "new": "endpoint: event source 'new' and event source 'old' both serve POST /a on port 12000"
    }


def test_newcomers_that_clash_with_each_other_are_refused_on_each_side() -> None:
    assert set(refused([hook("one"), hook("two"), hook("other", "/b")])) == {"one", "two"}


def test_a_newcomer_refused_for_a_running_source_does_not_count_against_other_newcomers() -> None:
    specs = [hook("old"), hook("first"), hook("second")]

    found = refused(specs, settled=frozenset({"old"}))

    assert set(found) == {"first", "second"}
    assert all("'old'" in reason for reason in found.values())


def test_a_running_source_is_never_refused_even_when_it_no_longer_validates() -> None:
    specs = [EventSourceSpec("old", "endpoint: /a\nport: nonsense"), hook("new")]

    assert refused(specs, settled=frozenset({"old"})) == {}


async def _never(ctx: SourceContext, config: object) -> AsyncGenerator[SourceEvent, None]:
    return
    yield


def _explode(data: str) -> object:
    if data == "boom":
        raise RuntimeError("the parser broke")
    return data


FRAGILE: GatewayKind[object] = GatewayKind(name="fragile", parse=_explode, run=_never)


def test_a_kind_that_raises_unexpectedly_gives_that_source_a_verdict_not_an_exception() -> None:
    verdicts = validate_all(FRAGILE, [EventSourceSpec("bad", "boom"), EventSourceSpec("good", "fine")])

    assert [v.ok for v in verdicts] == [False, True]
    assert str(verdicts[0].error) == (
        "event source 'bad' is invalid: data: could not be checked: RuntimeError: the parser broke"
    )


def test_the_client_precheck_parses_an_unchanged_source_once() -> None:
    parsed: list[str] = []

    def counting(data: str) -> object:
        parsed.append(data)
        return data

    kind: GatewayKind[object] = GatewayKind(name="counting", parse=counting, run=_never)
    check = precheck_for(kind, frozenset())
    specs = [EventSourceSpec("a", "one"), EventSourceSpec("b", "two")]

    assert check(specs, frozenset()) == {}
    assert check([*specs, EventSourceSpec("c", "three")], frozenset({"a", "b"})) == {}
    assert check([EventSourceSpec("a", "changed")], frozenset()) == {}

    assert parsed == ["one", "two", "three", "changed"]
