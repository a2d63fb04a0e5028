"""The file config source: changes seen (including atomic renames and symlink swaps), bad files survived."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.client.config_source import FileConfigSource, Reporter, Snapshot, StaticConfigSource

CM = "kind: ConfigMap\nmetadata: {{name: cm}}\ndata:\n{body}"


def configmap(**sources: str) -> str:
    return CM.format(body="".join(f"  {k}: '{v}'\n" for k, v in sources.items()))


@dataclass(frozen=True)
class Report:
    loaded: bool
    message: str
    keeping: str = ""


def recorder(reports: list[Report]) -> Reporter:
    def report(loaded: bool, message: str, *, keeping: str = "") -> None:
        reports.append(Report(loaded, message, keeping))

    return report


async def next_snapshot(it: AsyncIterator[Snapshot]) -> Snapshot:
    async with asyncio.timeout(5):
        return await anext(it)


async def test_a_file_is_read_at_start_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(configmap(a="interval: 1s"))
    it = FileConfigSource(path, poll_interval=0.01).snapshots()
    first = await next_snapshot(it)
    assert [(s.name, s.data) for s in first.specs] == [("a", "interval: 1s")]
    path.write_text(configmap(a="interval: 1s", b="interval: 2s"))
    second = await next_snapshot(it)
    assert [s.name for s in second.specs] == ["a", "b"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_an_atomic_rename_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(configmap(a="interval: 1s"))
    it = FileConfigSource(path, poll_interval=0.01).snapshots()
    await next_snapshot(it)
    tmp = tmp_path / ".cm.yaml.tmp"
    tmp.write_text(configmap(c="interval: 3s"))
    os.replace(tmp, path)
    assert [s.name for s in (await next_snapshot(it)).specs] == ["c"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_the_symlink_swap_of_a_mounted_configmap_volume_is_seen(tmp_path: Path) -> None:
    # Kubernetes mounts key files as links through ..data -> ..<timestamp>/, swapped atomically.
    for version, body in (("v1", configmap(a="interval: 1s")), ("v2", configmap(a="interval: 5s"))):
        (tmp_path / f"..{version}").mkdir()
        (tmp_path / f"..{version}" / "config.yaml").write_text(body)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    it = FileConfigSource(tmp_path / "config.yaml", poll_interval=0.01).snapshots()
    assert (await next_snapshot(it)).specs[0].data == "interval: 1s"
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert (await next_snapshot(it)).specs[0].data == "interval: 5s"
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_broken_file_keeps_the_last_good_config_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(configmap(a="interval: 1s"))
    reports: list[Report] = []
    it = FileConfigSource(path, poll_interval=0.01, report=recorder(reports)).snapshots()
    good = await next_snapshot(it)

    path.write_text("kind: ConfigMap\nmetadata: {}\ndata: [1, 2]\n")
    kept = await next_snapshot(it)

    assert kept.specs == good.specs, "the last good sources stay in force"
    assert kept.keeping == f"{path}: data: must be a mapping of event-source names to configs, got a list"
    assert kept.specs.keeping == kept.keeping
    assert reports[-1] == Report(True, f"keeping the last good config: {kept.keeping}", kept.keeping)
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_missing_file_is_reported_and_picked_up_once_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.yaml"
    reports: list[Report] = []
    it = FileConfigSource(path, poll_interval=0.01, report=recorder(reports)).snapshots()
    waiting = asyncio.ensure_future(next_snapshot(it))
    async with asyncio.timeout(5):
        while not reports:
            await asyncio.sleep(0.01)  # polling the reporter
    assert reports[0].loaded is False
    assert "cannot read" in reports[0].message
    path.write_text(configmap(a="interval: 1s"))
    assert [s.name for s in (await waiting).specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_static_source_yields_once() -> None:
    it = StaticConfigSource(configmap(a="interval: 1s"), "demo").snapshots()
    assert [s.name for s in (await next_snapshot(it)).specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
"""Nine levels of nine aliases: 9**9 copies of ``x`` once expanded."""

UNUSABLE: list[bytes] = [
    b"\xff\xfe\x00k\x00i\x00n\x00d",  # UTF-16
    b"data:\n  a: '\xe9t\xe9'\n",  # Latin-1
    b"\x89PNG\r\n\x1a\n\x00\x00",
    b"",  # truncated to nothing
    b"kind: ConfigMap\nmetadata: [x]\ndata: {}\n",
    b"kind: ConfigMap\nmetadata: {labels: [x]}\ndata: {}\n",
    b"kind: ConfigMap\nmetadata: {labels: text}\ndata: {}\n",
    b"kind: ConfigMap\nmetadata:\n  name: cm\ndta:\n  a: 'interval: 1s'\n",
    b"kind: ConfigMap\nmetadata:\n  name: cm\ndata:\n",
    b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==}\n",
    b"- a\n- b\n",
    b"42\n",
    b"a: [unclosed\n",
    b"a: 'interval: 1s'\na: 'interval: 2s'\n",
    b"'a b': 'interval: 1s'\n",
    b"null: 'interval: 1s'\n",
    b"a: 'x\x00'\n",
    b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    b"a: " + b"7" * 10000 + b"\n",
    b'a: "\\ud800"\n',
    b"a: &me {again: *me}\n",
    BOMB.encode(),
]


@pytest.mark.parametrize("content", UNUSABLE, ids=range(len(UNUSABLE)))
async def test_the_watch_survives_any_file_keeps_the_last_good_config_and_follows_the_fix(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(configmap(a="interval: 1s"))
    it = FileConfigSource(path, poll_interval=0.01).snapshots()
    good = await next_snapshot(it)

    path.write_bytes(content)
    kept = await next_snapshot(it)
    assert kept.keeping.startswith(f"{path}: ")
    assert kept.specs == good.specs

    path.write_text(configmap(a="interval: 1s", b="interval: 2s"))
    fixed = await next_snapshot(it)
    assert [s.name for s in fixed.specs] == ["a", "b"]
    assert fixed.keeping == ""
    await it.aclose()  # type: ignore[attr-defined]


async def test_going_back_to_the_last_good_content_says_it_is_no_longer_kept(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    good = configmap(a="interval: 1s")
    path.write_text(good)
    it = FileConfigSource(path, poll_interval=0.01).snapshots()
    await next_snapshot(it)
    path.write_bytes(b"")
    assert "is empty" in (await next_snapshot(it)).keeping

    path.write_text(good)
    again = await next_snapshot(it)
    assert again.keeping == ""
    assert [s.name for s in again.specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_file_broken_from_the_start_yields_nothing_until_it_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_bytes(b"\xff")
    reports: list[Report] = []
    it = FileConfigSource(path, poll_interval=0.01, report=recorder(reports)).snapshots()
    waiting = asyncio.ensure_future(next_snapshot(it))
    async with asyncio.timeout(5):
        while not reports:
            await asyncio.sleep(0.01)  # polling the reporter
    assert reports[0].loaded is False
    assert reports[0].message.startswith(f"no event-source config loaded yet: {path}: not UTF-8 text")
    assert not waiting.done()

    path.write_text(configmap(a="interval: 1s"))
    assert [s.name for s in (await waiting).specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
async def test_a_fifo_swapped_in_for_the_file_is_refused_at_once_and_the_next_good_file_followed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(configmap(a="interval: 1s"))
    it = FileConfigSource(path, poll_interval=0.01).snapshots()
    good = await next_snapshot(it)

    os.mkfifo(tmp_path / "f.fifo")
    os.symlink(tmp_path / "f.fifo", tmp_path / "f.new")
    os.replace(tmp_path / "f.new", path)  # opening it for reading would wait for a writer forever
    kept = await next_snapshot(it)
    assert "a FIFO" in kept.keeping
    assert kept.specs == good.specs

    (tmp_path / "good.yaml").write_text(configmap(a="interval: 1s", b="interval: 2s"))
    os.replace(tmp_path / "good.yaml", path)
    fixed = await next_snapshot(it)
    assert [s.name for s in fixed.specs] == ["a", "b"]
    await it.aclose()  # type: ignore[attr-defined]
