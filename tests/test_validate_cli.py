"""``gateway validate`` on files that cannot give event sources, run as a person runs it: a process.

Exit codes: 0 every key valid, 1 the file or any key invalid, 2 a usage error (no such file)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    max_rss_kib: int
    seconds: float


MEASURED = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and writes its peak memory (KiB) to a file. The command is started from this small
process: a child's peak counts what its parent held when it forked, and pytest's grows large."""


def validate(tmp_path: Path, content: str | bytes, kind: str = "calendar") -> Run:
    path = tmp_path / "cm.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    rss = tmp_path / "max_rss_kib"
    cmd = [sys.executable, "-c", MEASURED, str(rss), sys.executable, "-m", "common.cli"]
    started = time.monotonic()
    proc = subprocess.run(
        [*cmd, "validate", kind, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, int(rss.read_text()), time.monotonic() - started)


def refused(run: Run, path_words: str) -> None:
    assert run.code == 1, run
    assert "Traceback" not in run.err, run.err
    lines = run.out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("INVALID ")
    assert path_words in lines[0]
    assert "OK" not in run.out


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (CM + "dta:\n  a: 'interval: 1s'\n", "data: missing: the event sources are the ConfigMap's data"),
        (CM, "data: missing"),
        (CM + "data:\na: 'interval: 1s'\n", "unknown field 'a' in the ConfigMap"),
        ("", "is empty (expected a ConfigMap whose data maps event-source names to configs"),
        (
            "apiVersion: argoproj.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec: {type: calendar}\n",
            "not a ConfigMap: kind Gateway (expected a ConfigMap",
        ),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {a: YQ==}\n", "kind Secret"),
    ],
)
def test_a_file_with_no_data_or_no_configmap_is_invalid_and_says_what_it_expected(
    tmp_path: Path, content: str, words: str
) -> None:
    refused(validate(tmp_path, content), words)


def test_an_explicit_empty_data_is_valid_and_has_no_sources(tmp_path: Path) -> None:
    run = validate(tmp_path, CM + "data: {}\n")

    assert (run.code, run.out.splitlines()) == (0, [f"(no event sources in {tmp_path / 'cm.yaml'})"])


def test_the_plain_name_config_mapping_still_validates(tmp_path: Path) -> None:
    run = validate(tmp_path, "a: {interval: 10s}\nb: |-\n  schedule: '*/5 * * * *'\n")

    assert (run.code, run.out.splitlines()) == (0, ["OK      a", "OK      b"])


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ('""', "key '' is not a valid name"),
        ("'two words'", "key 'two words' is not a valid name"),
        ("'events.>'", "key 'events.>' is not a valid name"),
        ("'events.*'", "key 'events.*' is not a valid name"),
        ("null", "a key is null"),
        ("1", "key 1 is a number, not text"),
        ("true", "key true is true/false, not text"),
    ],
)
def test_a_name_that_cannot_work_is_invalid(tmp_path: Path, key: str, words: str) -> None:
    refused(validate(tmp_path, f"{CM}data:\n  {key}: 'interval: 1s'\n"), words)


def test_a_key_given_twice_is_invalid_naming_both_lines(tmp_path: Path) -> None:
    run = validate(tmp_path, f"{CM}data:\n  a: 'interval: 1s'\n  a: 'interval: 2s'\n")

    refused(run, "key 'a' is given twice: lines 6 and 7")


def test_a_five_megabyte_user_payload_is_invalid(tmp_path: Path) -> None:
    payload = "x" * (5 * 1024 * 1024)

    refused(
        validate(tmp_path, f"{CM}data:\n  big: |-\n    interval: 1s\n    userPayload: {payload}\n"),
        "key 'big': the config is 5242906 bytes, more than the 1 MiB (1048576 bytes) a source's config "
        "may hold",
    )


def bomb(levels: int) -> str:
    lines = ["userPayload:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "interval: 1s\n" + "".join(f"{line}\n" for line in lines)


@pytest.mark.parametrize("levels", [6, 12])
def test_an_alias_bomb_is_invalid_at_once_in_little_memory(tmp_path: Path, levels: int) -> None:
    config = "".join(f"    {line}\n" for line in bomb(levels).splitlines())
    run = validate(tmp_path, f"{CM}data:\n  bomb: |-\n{config}")

    assert run.code == 1, run
    assert run.out.splitlines() == [
        "INVALID bomb: data: expands to more than 1 MiB (1048576 bytes) once its aliases are followed"
    ]
    assert run.max_rss_kib < 200 * 1024
    assert run.seconds < 30


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
        (b"kind: ConfigMap\nmetadata: [x]\ndata: {}\n", "metadata: must be a mapping, got a list"),
        (b"kind: ConfigMap\nmetadata: {labels: [x]}\ndata: {}\n", "metadata.labels: must be a mapping"),
        (b"kind: ConfigMap\nmetadata: {}\ndata: {a: 'x\x00'}\n", "character #x0000 is not allowed"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than 64 levels deep"),
        (b"a: &me {again: *me}\n", "refers to itself"),
    ],
)
def test_a_file_that_is_not_a_usable_configmap_is_invalid_without_a_traceback(
    tmp_path: Path, content: bytes, words: str
) -> None:
    refused(validate(tmp_path, content), words)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli", "validate", "calendar", str(tmp_path / "missing.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
