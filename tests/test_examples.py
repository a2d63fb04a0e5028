"""Every example validates, so examples never rot; Gateway resources are what the v0.11 controller accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.client.app import ClientSettings
from common.configmap import parse_event_sources
from common.kinds import available_kinds, load_kind
from common.settings import ServerSettings
from common.validate import validate_all
from common.versions import VERSION_LABEL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _kinds(path: Path) -> set[str]:
    return {doc.get("kind", "") for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)}


CONFIGMAPS = sorted(p for p in EXAMPLES.glob("*/*.yaml") if "ConfigMap" in _kinds(p))
GATEWAYS = sorted(p for p in EXAMPLES.glob("*/*.yaml") if "Gateway" in _kinds(p))


def test_every_gateway_kind_has_examples() -> None:
    assert {p.parent.name for p in CONFIGMAPS} >= set(available_kinds())
    assert {p.parent.name for p in GATEWAYS} >= set(available_kinds())


@pytest.mark.parametrize("path", CONFIGMAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_key_of_every_example_configmap_is_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["metadata"]["labels"][VERSION_LABEL] == "v0.10"
    specs = parse_event_sources(path.read_text(), origin=str(path))
    assert specs, f"{path} has no event sources"
    verdicts = validate_all(load_kind(path.parent.name), specs)
    assert [str(v.error) for v in verdicts if not v.ok] == []


@pytest.mark.parametrize("path", GATEWAYS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_gateway_is_what_the_v0_11_controller_selects_and_accepts(path: Path) -> None:
    gw = yaml.safe_load(path.read_text())
    labels = gw["metadata"]["labels"]
    assert labels["argo-events-gateway-version"] == "v0.10"
    assert labels["gateways.argoproj.io/gateway-controller-instanceid"]
    spec = gw["spec"]
    assert isinstance(spec["processorPort"], str)
    assert int(spec["processorPort"]) > 0
    assert spec["type"]
    assert spec["eventSource"]
    assert spec["template"]["spec"]["containers"]
    assert spec["eventProtocol"]["type"] in ("HTTP", "NATS")
    if spec["eventProtocol"]["type"] == "HTTP":
        assert spec["eventProtocol"]["http"]["port"]
        assert spec["watchers"]["sensors"] or spec["watchers"].get("gateways")
    images = {c["image"].split(":")[0] for c in spec["template"]["spec"]["containers"]}
    assert images == {"gateways/client", f"gateways/{path.parent.name}"}
    configmap_names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in CONFIGMAPS}
    assert spec["eventSource"] in configmap_names


@pytest.mark.parametrize("path", GATEWAYS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_pod_gives_the_staged_stop_its_time(path: Path) -> None:
    client = ClientSettings()
    pod = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
    needed = client.drain_grace + client.grace_period + 5
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert ServerSettings().grace_period <= client.drain_grace, "the server's drain ends within the client's"
