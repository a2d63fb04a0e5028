"""The event-source file of a running ``gateway run webhook`` process, edited as people do: broken files
never stop the watch or the sources, ``/readyz`` says why the last good config is kept, the fix is
followed, and a source that clashes with a running one is refused without touching it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.configmaps import configmap
from tests.harness.processes import free_port, showing_log_on_failure, spawn, terminate, wait_until
from tests.webhook.conftest import source_yaml

pytestmark = pytest.mark.slow

STARTUP = 30.0
"""Seconds a gateway process may take to load its config and serve its first source."""


@dataclass
class Gateway:
    """A ``gateway run webhook`` process watching ``config``, its ops port and an HTTP session."""

    config: Path
    ops: int
    http: aiohttp.ClientSession

    async def readyz(self) -> dict[str, Any]:
        async with self.http.get(f"http://127.0.0.1:{self.ops}/readyz") as resp:
            body: dict[str, Any] = await resp.json()
            body["status"] = resp.status
            return body

    async def until(self, what: str, check: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Poll ``/readyz`` until ``check(body)`` holds; the body."""
        seen: dict[str, Any] = {}

        async def holds() -> bool:
            nonlocal seen
            try:
                seen = await self.readyz()
            except aiohttp.ClientError:
                return False
            return bool(check(seen))

        try:
            await wait_until(holds, what=what, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /readyz: {seen}") from None
        return seen

    async def post(self, port: int, path: str, body: bytes) -> int:
        async with self.http.post(f"http://127.0.0.1:{port}{path}", data=body) as resp:
            return resp.status


@asynccontextmanager
async def running_gateway(tmp_path: Path, text: str) -> AsyncIterator[Gateway]:
    config = tmp_path / "cm.yaml"
    config.write_text(text)
    ops = free_port()
    log = tmp_path / "gateway.log"
    cmd = [sys.executable, "-m", "common.cli", "run", "webhook", "--event-sources", str(config)]
    proc = await spawn([*cmd, "--ops-port", str(ops)], log)
    try:
        async with (
            showing_log_on_failure(log, "gateway run"),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        ):
            yield Gateway(config, ops, http)
    finally:
        assert await terminate(proc) == 0, log.read_text()


def running(*names: str) -> Any:
    return lambda body: all(body["nodes"].get(n, {}).get("phase") == "Running" for n in names)


BROKEN: list[tuple[bytes, str]] = [
    (b"data:\n  a: '\xe9t\xe9'\n", "not UTF-8 text: byte 0xe9 at offset 12"),
    (b"kind: ConfigMap\nmetadata: [x]\ndata: {}\n", "metadata: must be a mapping, got a list"),
    (b"kind: ConfigMap\nmetadata: {labels: [x]}\ndata: {}\n", "metadata.labels: must be a mapping"),
    (b"kind: ConfigMap\nmetadata: {name: cm}\ndta:\n  a: x\n", "data: missing"),
    (b"kind: ConfigMap\nmetadata: {name: cm}\ndata:\n", "data: is empty (null)"),
    (b"", "is empty"),
    (b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==}\n", "not a ConfigMap: kind Secret"),
    (b"a: {port: 1}\na: {port: 2}\n", "key 'a' is given twice: lines 1 and 2"),
    (b"'a b': {port: 1}\n", "key 'a b' is not a valid name"),
]


async def test_a_broken_file_never_stops_the_watch_and_readyz_says_why_the_last_good_config_is_kept(
    tmp_path: Path,
) -> None:
    port = free_port()
    good = configmap(old=source_yaml(port, "/old"))
    async with running_gateway(tmp_path, good) as gateway:
        first = await gateway.until("the source running", running("old"), timeout=STARTUP)
        assert first["config"] == {
            "loaded": True,
            "message": f"1 event source(s) from {gateway.config}",
            "keeping_last_good": False,
            "problem": "",
        }
        started = first["nodes"]["old"]["started_at"]

        for content, words in BROKEN:
            gateway.config.write_bytes(content)
            body = await gateway.until(
                f"/readyz saying why the last good config is kept ({words})",
                lambda b, words=words: words in b["config"]["problem"],
            )
            assert body["status"] == 200
            assert body["config"]["loaded"] is True
            assert body["config"]["keeping_last_good"] is True
            assert body["config"]["problem"].startswith(f"{gateway.config}: ")
            assert body["nodes"]["old"]["phase"] == "Running"
            assert body["nodes"]["old"]["started_at"] == started, "the running source is untouched"
            assert await gateway.post(port, "/old", b"still served") == 200

        gateway.config.write_text(configmap(old=source_yaml(port, "/old"), new=source_yaml(port, "/new")))
        fixed = await gateway.until("the fixed file followed", running("old", "new"))
        assert fixed["config"]["keeping_last_good"] is False
        assert fixed["config"]["problem"] == ""
        assert fixed["nodes"]["old"]["started_at"] == started
        assert await gateway.post(port, "/new", b"the fix is followed") == 200


async def test_a_newcomer_that_clashes_with_a_running_source_is_refused_and_the_running_one_untouched(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with running_gateway(tmp_path, configmap(old=source_yaml(port, "/hook"))) as gateway:
        first = await gateway.until("the source running", running("old"), timeout=STARTUP)
        assert await gateway.post(port, "/hook", b"before") == 200

        gateway.config.write_text(configmap(old=source_yaml(port, "/hook"), new=source_yaml(port, "/hook")))
        body = await gateway.until(
            "the newcomer refused", lambda b: b["nodes"].get("new", {}).get("phase") == "Error"
        )
        assert body["nodes"]["new"]["message"] == (
            "event source is not valid: endpoint: event source 'new' and event source 'old' both serve "
            f"POST /hook on port {port}"
        )
        assert body["nodes"]["old"]["phase"] == "Running"
        assert body["nodes"]["old"]["started_at"] == first["nodes"]["old"]["started_at"]
        assert body["nodes"]["old"]["restarts"] == 0
        assert await gateway.post(port, "/hook", b"during") == 200

        gateway.config.write_text(configmap(new=source_yaml(port, "/hook"), other=source_yaml(port, "/hook")))
        both = await gateway.until(
            "two newcomers that clash both refused",
            lambda b: "old" not in b["nodes"] and b["nodes"].get("other", {}).get("phase") == "Error",
        )
        assert "event source 'other'" in both["nodes"]["new"]["message"], "the reason follows the change"
        assert "event source 'new'" in both["nodes"]["other"]["message"]

        gateway.config.write_text(configmap(new=source_yaml(port, "/hook")))
        await gateway.until("the newcomer started once the running one is gone", running("new"))
        assert await gateway.post(port, "/hook", b"after") == 200


async def test_a_file_broken_from_the_start_says_why_on_readyz_until_it_is_fixed(tmp_path: Path) -> None:
    port = free_port()
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {token: dG9rZW4=}\n"
    async with running_gateway(tmp_path, secret) as gateway:
        body = await gateway.until(
            "the reason on /readyz", lambda b: bool(b["config"]["problem"]), timeout=STARTUP
        )
        assert body["status"] == 503 and body["config"]["loaded"] is False
        assert "not a ConfigMap: kind Secret" in body["config"]["problem"]
        gateway.config.write_text(configmap(hook=source_yaml(port, "/hook")))
        fixed = await gateway.until("loaded", lambda b: b["config"]["loaded"], timeout=STARTUP)
        assert fixed["config"]["problem"] == ""
