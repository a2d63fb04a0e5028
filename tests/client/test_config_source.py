"""The file config source: changes seen (including atomic renames and symlink swaps), bad files survived."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from common.client.config_source import FileConfigSource, Snapshot, StaticConfigSource

CM = "kind: ConfigMap\nmetadata: {{name: cm}}\ndata:\n{body}"


def configmap(**sources: str) -> str:
    return CM.format(body="".join(f"  {k}: '{v}'\n" for k, v in sources.items()))


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
    reports: list[tuple[bool, str]] = []
    seen: list[Snapshot] = []
    changed = asyncio.Event()

    def report(ok: bool, msg: str) -> None:
        reports.append((ok, msg))
        changed.set()

    async def consume() -> None:
        async for snapshot in FileConfigSource(path, poll_interval=0.01, report=report).snapshots():
            seen.append(snapshot)

    consumer = asyncio.ensure_future(consume())
    try:
        async with asyncio.timeout(5):
            while not seen:
                changed.clear()
                await changed.wait()
            path.write_text("kind: ConfigMap\nmetadata: {}\ndata: [1, 2]\n")
            while reports[-1][0]:
                changed.clear()
                await changed.wait()
        assert "keeping the last good config" in reports[-1][1]
        assert "'data' must be a mapping" in reports[-1][1]
        assert len(seen) == 1, "a broken file yields no snapshot: the last good one stays in force"
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)


async def test_a_missing_file_is_reported_and_picked_up_once_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.yaml"
    reports: list[tuple[bool, str]] = []
    it = FileConfigSource(
        path, poll_interval=0.01, report=lambda ok, msg: reports.append((ok, msg))
    ).snapshots()
    waiting = asyncio.ensure_future(next_snapshot(it))
    async with asyncio.timeout(5):
        while not reports:
            await asyncio.sleep(0.01)  # polling the reporter
    assert reports[0][0] is False
    assert "cannot read" in reports[0][1]
    path.write_text(configmap(a="interval: 1s"))
    assert [s.name for s in (await waiting).specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_static_source_yields_once() -> None:
    it = StaticConfigSource(configmap(a="interval: 1s"), "demo").snapshots()
    assert [s.name for s in (await next_snapshot(it)).specs] == ["a"]
    await it.aclose()  # type: ignore[attr-defined]
