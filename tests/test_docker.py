"""Each Dockerfile copies paths that exist and runs a command the CLI has (no Docker engine here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common.cli import _parser
from common.kinds import available_kinds

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_there_is_one_image_per_gateway_kind_and_one_for_the_client() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} == {*available_kinds(), "client"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_a_dockerfile_copies_existing_paths_installs_tzdata_and_has_a_real_entrypoint(path: Path) -> None:
    text = path.read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name} copies {source}, which does not exist"
    assert "tzdata" in text
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entrypoint[0] == "gateway"
    kind = path.name.removesuffix(".Dockerfile")
    expected = ["client"] if kind == "client" else ["serve", kind]
    assert entrypoint[1:] == expected
    _parser().parse_args([*entrypoint[1:], *(["--event-sources", "x"] if kind == "client" else [])])


def test_the_compose_file_builds_from_real_dockerfiles_mounts_real_paths_and_runs_real_commands() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    built = set()
    for name, service in compose["services"].items():
        if "build" in service:
            context = (ROOT / "docker" / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
            built.add(service["build"]["dockerfile"])
        for volume in service.get("volumes", []):
            assert (ROOT / "docker" / volume.split(":")[0]).resolve().exists(), f"{name} mounts {volume}"
        if service.get("build", {}).get("dockerfile") == "docker/client.Dockerfile":
            args = _parser().parse_args(["client", *service["command"]])
            assert args.kind in available_kinds()
            mounted = service["volumes"][0].split(":")
            config = ROOT / "docker" / mounted[0] / Path(args.event_sources).relative_to(mounted[1])
            assert config.is_file(), f"{name} reads {args.event_sources}, which the mount does not hold"
    assert built == {f"docker/{p.name}" for p in DOCKERFILES}, "every image is in the compose file"
