"""Sources that cannot run side by side: the same (port, path, method), a reserved port, mixed TLS."""

from __future__ import annotations

import time

import pytest

from common.configmap import EventSourceSpec
from common.errors import ConfigError
from common.validate import validate_all
from gateways.webhook import KIND
from gateways.webhook.clashes import clashes
from gateways.webhook.config import WebhookConfig, parse

TLS = "serverCertPath: /tls/c.pem\nserverKeyPath: /tls/k.pem"


def cfg(endpoint: str = "/a", method: str = "POST", port: int = 12000, extra: str = "") -> WebhookConfig:
    return parse(f"endpoint: {endpoint}\nmethod: {method}\nport: {port}\n{extra}")


def test_the_same_port_path_and_method_clash_and_the_message_names_both_sources() -> None:
    with pytest.raises(ConfigError) as caught:
        KIND.check_clashes("new", cfg(), {"old": cfg(), "elsewhere": cfg(port=12001)})

    assert str(caught.value) == (
        "event source 'new' is invalid: endpoint: event source 'new' and event source 'old' both serve "
        "POST /a on port 12000"
    )


def test_different_methods_on_one_path_do_not_clash() -> None:
    assert clashes("put", cfg(method="PUT"), {"post": cfg(method="POST")}, frozenset()) == {}


def test_the_same_path_on_two_ports_does_not_clash() -> None:
    assert clashes("b", cfg(port=12001), {"a": cfg(port=12000)}, frozenset()) == {}


def test_a_trailing_slash_makes_another_path() -> None:
    assert clashes("b", cfg(endpoint="/a/"), {"a": cfg(endpoint="/a")}, frozenset()) == {}


@pytest.mark.parametrize("port", [9330, 9331])
def test_a_reserved_port_is_refused(port: int) -> None:
    found = clashes("hook", cfg(port=port), {}, frozenset({9330, 9331}))

    assert "is reserved for the gateway itself" in found["port"]
    assert "'hook'" in found["port"]


def test_tls_and_plain_http_on_one_port_clash_naming_both_sources() -> None:
    found = clashes("secure", cfg(endpoint="/b", extra=TLS), {"plain": cfg()}, frozenset())

    assert found["serverCertPath"] == (
        "event source 'secure' serves port 12000 with TLS (/tls/c.pem, /tls/k.pem), but event source "
        "'plain' serves it without TLS; every source on one port must use the same TLS settings"
    )


def test_two_certificates_on_one_port_clash() -> None:
    other = "serverCertPath: /other/c.pem\nserverKeyPath: /other/k.pem"

    found = clashes("b", cfg(endpoint="/b", extra=TLS), {"a": cfg(extra=other)}, frozenset())

    assert "'a'" in found["serverCertPath"] and "'b'" in found["serverCertPath"]


def test_the_same_tls_files_on_one_port_do_not_clash() -> None:
    assert clashes("b", cfg(endpoint="/b", extra=TLS), {"a": cfg(extra=TLS)}, frozenset()) == {}


def test_a_route_clash_and_a_tls_clash_are_both_reported() -> None:
    found = clashes("b", cfg(extra=TLS), {"a": cfg()}, frozenset())

    assert set(found) == {"endpoint", "serverCertPath"}


def test_offline_validation_reports_a_clash_on_each_side() -> None:
    specs = [EventSourceSpec(n, "endpoint: /a\nmethod: POST\nport: 12000") for n in ("one", "two")]

    verdicts = validate_all(KIND, specs)

    assert [v.ok for v in verdicts] == [False, False]
    assert "'one'" in str(verdicts[1].error) and "'two'" in str(verdicts[1].error)


def test_checking_against_thousands_of_sources_on_other_ports_stays_fast() -> None:
    others = {f"s{i}": WebhookConfig(f"/e{i}", "POST", 10000 + i % 500) for i in range(5000)}
    config = WebhookConfig("/new", "POST", 20000)

    started = time.perf_counter()
    for _ in range(100):
        assert clashes("new", config, others, frozenset()) == {}

    assert time.perf_counter() - started < 2.0
