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
